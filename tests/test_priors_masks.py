"""Classical multi-level masks, the mask format, GrabCut ROI and the extract_mask.py CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import require_scene
from PIL import Image

import extract_mask
from priors import PriorError
from priors.classical import classical_masks, fill_holes, grabcut_roi, nest_labels
from priors.extract import save_roi_mask
from priors.io import load_rgb
from priors.masks import MaskSet, label_map, load_mask_set, remove_small_regions, save_mask_set
from priors.prompts import ClickState, overlay, parse_prompts


def _maryrose_scene(tmp_path, names=("IMG_9669", "IMG_9700"), size=432):
    """A scratch scene with a few maryrose views (downscaled) and their GT masks."""
    src = require_scene("nerd_maryrose")
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    gts = {}
    for n in names:
        Image.open(src / "images_4" / f"{n}.jpg").resize((size, size), Image.BILINEAR).save(
            scene / "images" / f"{n}.jpg", quality=95
        )
        gt = Image.open(src / "masks_4" / f"{n}.png").resize((size, size), Image.NEAREST)
        gts[f"{n}.jpg"] = np.asarray(gt) > 127
    return scene, gts


def test_classical_hierarchy_on_real_image():
    src = require_scene("nerd_maryrose")
    image = load_rgb(str(src / "images_4" / "IMG_9680.jpg"))
    ms = classical_masks(image, min_area=500)
    k = len(ms)
    assert k > 10 and ms.masks.dtype == bool and ms.masks.shape == (k, 864, 864)
    area = ms.area
    assert (np.diff(area) <= 0).all(), "masks must be sorted by area, largest first"
    assert area.min() >= 500
    assert set(np.unique(ms.level)) == {0, 1, 2}
    flat = ms.masks[:, ::2, ::2].reshape(k, -1).astype(np.float32)  # every 4th pixel
    inter = flat @ flat.T  # [K, K] pixel overlaps
    area = np.diag(inter)
    for i in np.flatnonzero(ms.level > 0):
        coarser = np.flatnonzero(ms.level < ms.level[i])
        inside = inter[i, coarser].max() / area[i]
        assert inside >= 0.9, f"mask {i} (level {ms.level[i]}) is only {inside:.2f} inside"
    # No two masks are the same region.
    iou = inter / (area[:, None] + area[None, :] - inter)
    np.fill_diagonal(iou, 0)
    assert iou.max() < 0.95


def test_nest_labels_makes_unions_of_fine_regions():
    fine = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    coarse = np.array([[0, 0, 0, 1], [1, 1, 1, 1]])  # cuts fine region 1 in half
    nested = nest_labels(fine, coarse)
    for f in range(4):
        assert len(np.unique(nested[fine == f])) == 1
    assert nested[0, 0] != nested[1, 0]


def test_mask_file_roundtrip_and_label_preview(tmp_path):
    m = np.zeros((3, 20, 30), bool)
    m[0, :, :20] = True  # large
    m[1, 2:12, 2:12] = True  # inside it
    m[2, 15:19, 22:28] = True
    ms = MaskSet(m[[2, 0, 1]], [0.9, 0.95, 0.99], [0.92, 0.97, 0.98], [1, 0, 1], "sam2")
    save_mask_set(str(tmp_path / "a.npz"), str(tmp_path / "a.png"), ms)
    back = load_mask_set(str(tmp_path / "a.npz"))
    assert (np.diff(back.area) <= 0).all() and back.masks.dtype == bool
    np.testing.assert_array_equal(back.masks, m)
    np.testing.assert_allclose(back.predicted_iou, [0.95, 0.99, 0.9])
    assert back.level.tolist() == [0, 1, 1] and back.backend == "sam2"
    png = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(png, label_map(back.masks))
    assert png[5, 5] == 2 and png[5, 15] == 1 and png[0, 29] == 0  # the finest mask wins
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary files


def test_load_mask_set_rejects_bad_files(tmp_path):
    np.savez(tmp_path / "u8.npz", masks=np.ones((2, 4, 4), np.uint8))
    with pytest.raises(PriorError, match="expected bool"):
        load_mask_set(str(tmp_path / "u8.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(PriorError, match="junk.npz"):
        load_mask_set(str(tmp_path / "junk.npz"))


def test_remove_small_regions():
    m = np.zeros((40, 40), bool)
    m[5:30, 5:30] = True
    m[10:12, 10:12] = False  # 4-pixel hole
    m[35:37, 35:37] = True  # 4-pixel island
    out = remove_small_regions(m, 10)
    assert out[10:12, 10:12].all() and not out[35:37, 35:37].any()
    assert out.sum() == 25 * 25


def test_grabcut_and_fill_holes_on_real_image(tmp_path):
    scene, gts = _maryrose_scene(tmp_path, names=("IMG_9700",))
    image = load_rgb(str(scene / "images" / "IMG_9700.jpg"))
    gt = gts["IMG_9700.jpg"]
    ys, xs = np.nonzero(gt)
    fg = grabcut_roi(image, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    iou = (fg & gt).sum() / (fg | gt).sum()
    assert iou > 0.85, iou
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert fill_holes(ring)[4, 4] and not fill_holes(ring)[0, 0]


def test_roi_mask_jpeg_roundtrip(tmp_path):
    m = np.zeros((31, 47), bool)
    m[5:20, 7:40] = True
    m[12, 12] = False
    save_roi_mask(str(tmp_path / "x.jpg"), m)
    back = np.asarray(Image.open(tmp_path / "x.jpg")) > 127
    np.testing.assert_array_equal(back, m)


def test_extract_mask_cli_classical(tmp_path, capsys, monkeypatch):
    scene, gts = _maryrose_scene(tmp_path)
    monkeypatch.setenv("SEGSPLAT_CACHE", str(tmp_path / "cache"))  # nothing cached: classical
    monkeypatch.chdir(tmp_path)  # no ./checkpoints either
    assert extract_mask.main(["-s", str(scene), "--device", "cpu"]) == 0
    assert "backend: classical" in capsys.readouterr().out
    for name in gts:
        stem = name[:-4]
        ms = load_mask_set(str(scene / "masks" / f"{stem}.npz"))
        assert ms.masks.shape[1:] == (432, 432) and ms.backend == "classical"
        assert (scene / "masks" / f"{stem}.png").is_file()

    # ROI from GT boxes on one view; the other view borrows it.
    ys, xs = np.nonzero(gts["IMG_9700.jpg"])
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"IMG_9700.jpg": {"box": box}}))
    argv = ["-s", str(scene), "--mode", "roi", "--prompts", str(prompts), "--device", "cpu"]
    assert extract_mask.main(argv + ["--backend", "classical", "--save_overlays"]) == 0
    for name, gt in gts.items():
        roi = np.asarray(Image.open(scene / "pure_masks" / name)) > 127
        assert roi.shape == gt.shape
        assert (roi & gt).sum() / (roi | gt).sum() > 0.6
    assert (scene / "pure_masks_overlay" / "IMG_9700.jpg").is_file()


def test_extract_mask_cli_bad_input(tmp_path, capsys):
    scene, _ = _maryrose_scene(tmp_path, names=("IMG_9669",), size=64)
    base = ["-s", str(scene), "--device", "cpu", "--backend", "classical"]
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": [{"image": "IMG_9669.jpg", "points": [[70, 5]]}]}))
    assert extract_mask.main(base + ["--mode", "roi", "--prompts", str(prompts)]) == 1
    assert "outside the 64x64 image IMG_9669.jpg" in capsys.readouterr().err
    prompts.write_text(json.dumps({"prompts": [{"image": "nope.jpg", "box": [1, 1, 9, 9]}]}))
    assert extract_mask.main(base + ["--mode", "roi", "--prompts", str(prompts)]) == 1
    assert "'nope.jpg' is not among" in capsys.readouterr().err
    assert not (scene / "pure_masks").exists()
    # A mask threshold no region passes: an error naming the image, no file.
    assert extract_mask.main(base + ["--min_area", "100000"]) == 1
    assert "IMG_9669.jpg" in capsys.readouterr().err
    assert not (scene / "masks").exists()
    (scene / "images" / "broken.png").write_bytes(b"\x89PNG garbage")
    assert extract_mask.main(base) == 1
    assert "broken.png: cannot read the image" in capsys.readouterr().err
    # An explicit checkpoint that does not exist.
    assert extract_mask.main(base[:-2] + ["--backend", "sam2", "--sam_ckpt", "x.pt"]) == 1
    assert "x.pt: no such checkpoint file" in capsys.readouterr().err


def test_click_state_and_overlay():
    st = ClickState()
    st.add(3, 4, 1)
    st.add(10, 2, 0)
    st.undo()
    st.add(5.5, 6, 0)
    p = st.prompt("a.jpg")
    assert p.points.tolist() == [[3.0, 4.0], [5.5, 6.0]] and p.labels.tolist() == [1, 0]
    st.clear()
    assert st.prompt("a.jpg").points.shape == (0, 2)
    img = np.zeros((20, 20, 3), np.uint8)
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    ov = overlay(img, m, None)
    assert ov.shape == img.shape and ov[10, 10, 0] > 0 and ov[0, 0].sum() == 0


def test_dataset_root_processes_every_scene(tmp_path):
    rng = np.random.default_rng(0)
    for s in ("a", "b/c"):
        (tmp_path / s / "images").mkdir(parents=True)
        im = (rng.random((48, 64, 3)) * 40).astype(np.uint8)
        im[10:40, 10:40] += 150  # one clear region
        Image.fromarray(im).save(tmp_path / s / "images" / "x.png")
    argv = ["--dataset_root", str(tmp_path), "--backend", "classical", "--min_area", "50"]
    assert extract_mask.main(argv + ["--device", "cpu"]) == 0
    assert (tmp_path / "a" / "masks" / "x.npz").is_file()
    assert (tmp_path / "b" / "c" / "masks" / "x.npz").is_file()
    assert extract_mask.main(["--dataset_root", str(tmp_path / "nope")]) == 1


def test_prompt_file_forms_and_validation():
    sizes = {"a.jpg": (100, 50), "sub/b.png": (40, 40)}
    ps = parse_prompts(
        {"A.JPG": [{"points": [[1, 2]]}, {"box": [0, 0, 10, 10], "obj_id": 2}]}, sizes
    )
    assert [p.image for p in ps] == ["a.jpg", "a.jpg"] and ps[0].labels.tolist() == [1]
    assert ps[1].obj_id == 2 and ps[1].box.tolist() == [0, 0, 10, 10]
    ps = parse_prompts([{"image": "b.png", "points": [[1, 1], [2, 2]], "labels": [1, 0]}], sizes)
    assert ps[0].image == "sub/b.png"  # unique file name without its folder
    bad = [
        ({"prompts": [{"image": "a.jpg"}]}, "neither points nor a box"),
        ({"prompts": [{"image": "a.jpg", "points": [[1, 1]], "labels": [2]}]}, "labels must"),
        ({"prompts": [{"image": "a.jpg", "points": [[1, 1]], "labels": [1, 0]}]}, "2 labels"),
        ({"prompts": [{"image": "a.jpg", "box": [10, 10, 5, 20]}]}, "box"),
        ({"prompts": [{"image": "a.jpg", "box": [0, 0, 101, 20]}]}, "leaves the 100x50"),
        ({"prompts": []}, "no prompts"),
        ("text", "expected"),
    ]
    for data, msg in bad:
        with pytest.raises(PriorError, match=msg):
            parse_prompts(data, sizes)


def test_load_rgb_modes_and_tiny_images(tmp_path):
    a16 = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    rgba = np.zeros((9, 11, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(np.zeros((5, 30), np.uint8)).save(tmp_path / "tiny.png")
    g = load_rgb(str(tmp_path / "g16.png"))
    assert g.shape == (12, 10, 3) and g.dtype == np.uint8 and g.max() == 255
    assert load_rgb(str(tmp_path / "rgba.png"))[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(PriorError, match="at least 8 pixels"):
        load_rgb(str(tmp_path / "tiny.png"))


def test_auto_masks_of_the_training_views_only(tmp_path, capsys):
    """--train_views_of: masks for the split's training views only (a sparse-view run needs
    no others); a file that is not a split is one line."""
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:, 32:] = 200
        Image.fromarray(img + (rng.random((64, 64, 3)) * 20).astype(np.uint8)).save(
            scene / "images" / f"{name}.png"
        )
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["b.png"], "test": ["a.png"]}))
    base = ["-s", str(scene), "--device", "cpu", "--backend", "classical", "--min_area", "50"]
    assert extract_mask.main(base + ["--train_views_of", str(split)]) == 0
    assert sorted(p.name for p in (scene / "masks").iterdir()) == ["b.npz", "b.png"]
    split.write_text("[]")
    assert extract_mask.main(base + ["--train_views_of", str(split)]) == 1
    assert "not a split.json with a 'train' list" in capsys.readouterr().err
