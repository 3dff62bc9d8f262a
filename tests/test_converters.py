"""scripts/prepare_{llff,dtu,blender}.py on tiny synthetic fixtures of each layout."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("pycolmap")  # the converters undistort through pycolmap
from PIL import Image
from scipy.spatial.transform import Rotation

from scene.colmap_io import read_model
from scripts.prepare_blender import main as blender_main
from scripts.prepare_dtu import dtu_name
from scripts.prepare_dtu import main as dtu_main
from scripts.prepare_llff import main as llff_main
from sfm.converters import centre_crop_transform, decompose_projection


def c2w_of(img) -> np.ndarray:
    R = img.rotmat()
    m = np.eye(4)
    m[:3, :3] = R.T
    m[:3, 3] = -R.T @ img.tvec
    return m


def by_name(images: dict) -> dict:
    return {im.name: im for im in images.values()}


def save_rgb(path, size, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    ch = 4 if mode == "RGBA" else 3
    Image.fromarray((rng.random((size[1], size[0], ch)) * 255).astype(np.uint8), mode).save(path)


# ------------------------------------------------------------------------------ LLFF


def make_llff(root, n=16, full=(192, 144), small=(24, 18), f=150.0, folder="images_8"):
    rng = np.random.default_rng(0)
    os.makedirs(root / folder)
    pb = np.zeros((n, 17))
    for i in range(n):
        R = Rotation.random(random_state=i).as_matrix()  # columns: down, right, backwards
        t = rng.normal(size=3)
        pb[i, :15] = np.concatenate([R, t[:, None], [[full[1]], [full[0]], [f]]], 1).ravel()
        pb[i, 15:] = [1.0 + i, 10.0 + i]
        save_rgb(root / folder / f"image{i:03d}.png", small, seed=i)
    np.save(root / "poses_bounds.npy", pb)
    return pb


def test_prepare_llff(tmp_path):
    pb = make_llff(tmp_path / "fern")
    out = tmp_path / "scene"
    assert llff_main(["--src", str(tmp_path / "fern"), "--out", str(out), "--n_views", "3"]) == 0
    cams, imgs, pts = read_model(str(out / "sparse" / "0"))
    assert len(cams) == 1 and not pts
    cam = cams[1]
    assert (cam.model, cam.width, cam.height) == ("PINHOLE", 24, 18)
    np.testing.assert_allclose(cam.params, [150 * 24 / 192, 150 * 18 / 144, 12, 9])
    imgs = by_name(imgs)
    for i in range(16):
        p = pb[i, :15].reshape(3, 5)
        m = c2w_of(imgs[f"image{i:03d}.png"])
        np.testing.assert_allclose(m[:3, 3], p[:, 3], atol=1e-9)  # camera centre
        np.testing.assert_allclose(m[:3, 0], p[:, 1], atol=1e-9)  # x = right
        np.testing.assert_allclose(m[:3, 1], p[:, 0], atol=1e-9)  # y = down
        np.testing.assert_allclose(m[:3, 2], -p[:, 2], atol=1e-9)  # z = forward
    near_far = json.loads((out / "near_far.json").read_text())
    assert near_far["image003.png"] == [4.0, 13.0]
    split = json.loads((out / "split.json").read_text())
    assert split["protocol"] == "llff" and split["test"] == ["image000.png", "image008.png"]
    assert len(split["train"]) == 3 and split["train"][0] == "image001.png"
    assert not os.path.exists(str(out) + ".tmp")
    # Refuses to overwrite; --overwrite replaces.
    assert llff_main(["--src", str(tmp_path / "fern"), "--out", str(out)]) == 1
    assert llff_main(["--src", str(tmp_path / "fern"), "--out", str(out), "--overwrite"]) == 0


def test_prepare_llff_resizes_full_images(tmp_path):
    make_llff(tmp_path / "s", n=9, small=(48, 36), folder="images")
    out = tmp_path / "scene"
    args = ["--src", str(tmp_path / "s"), "--out", str(out), "--factor", "2", "--n_views", "2"]
    assert llff_main(args) == 0
    cams, _, _ = read_model(str(out / "sparse" / "0"))
    assert (cams[1].width, cams[1].height) == (24, 18)
    with Image.open(out / "images" / "image004.png") as im:
        assert im.size == (24, 18)


def test_prepare_llff_keeps_nerd_object_masks(tmp_path):
    """NeRD scenes (maryrose) keep masks_<k>/ beside images_<k>/: they become masks_object/
    of the converted scene (the evaluation masks), one per image, at the image size."""
    make_llff(tmp_path / "s", n=9, folder="images_4")
    os.makedirs(tmp_path / "s" / "masks_4")
    for i in range(9):
        Image.fromarray(np.full((18, 24), 255 * (i % 2), np.uint8)).save(
            tmp_path / "s" / "masks_4" / f"image{i:03d}.png"
        )
    out = tmp_path / "scene"
    args = ["--src", str(tmp_path / "s"), "--out", str(out), "--factor", "4", "--n_views", "2"]
    assert llff_main(args) == 0
    masks = sorted(os.listdir(out / "masks_object"))
    assert len(masks) == 9
    with Image.open(out / "masks_object" / "image001.png") as m:
        assert m.size == (24, 18) and np.array(m).min() == 255


def test_prepare_llff_bad_input(tmp_path, capsys):
    make_llff(tmp_path / "s", n=9)
    os.remove(tmp_path / "s" / "images_8" / "image004.png")
    assert llff_main(["--src", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 1
    assert "8 images but" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


# ------------------------------------------------------------------------------- DTU


def random_projection(rng, w, h):
    K = np.array([[w * 1.2, 0.01, w / 2 - 0.3], [0, w * 1.1, h / 2 + 0.2], [0, 0, 1]])
    R = Rotation.random(random_state=int(rng.integers(1000))).as_matrix()
    t = rng.normal(size=3) + [0, 0, 5]
    return K, R, t, K @ np.concatenate([R, t[:, None]], 1)


def test_decompose_projection_roundtrip():
    rng = np.random.default_rng(3)
    K, R, t, P = random_projection(rng, 64, 48)
    for scale in (1.0, -2.5):  # a projection is defined up to scale, sign included
        K2, R2, t2 = decompose_projection(scale * P)
        np.testing.assert_allclose(K2, K, atol=1e-9)
        np.testing.assert_allclose(R2, R, atol=1e-9)
        np.testing.assert_allclose(t2, t, atol=1e-9)


def test_centre_crop_transform():
    off_x, off_y, s = centre_crop_transform((1600, 1200), (384, 384))
    assert (off_x, off_y) == (200.0, 0.0) and s == pytest.approx(384 / 1200)
    # The crop's edges map onto the output image's edges.
    assert (200 - off_x) * s == 0 and (1400 - off_x) * s == pytest.approx(384)


def test_prepare_dtu_idr_layout(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "scan1"
    os.makedirs(src / "image")
    os.makedirs(src / "mask")
    arrays, truth = {}, []
    for i in range(49):
        K, R, t, P = random_projection(rng, 16, 12)
        S = np.diag([2.0, 2.0, 2.0, 1.0])
        S[:3, 3] = [0.1, -0.2, 0.3]
        arrays[f"world_mat_{i}"] = np.vstack([P, [0, 0, 0, 1]])
        arrays[f"scale_mat_{i}"] = S
        truth.append((K, R, t, S))
        save_rgb(src / "image" / f"{i:06d}.png", (16, 12), seed=i)
        Image.fromarray(np.full((12, 16), 255 * (i % 2), np.uint8)).save(
            src / "mask" / f"{i:03d}.png"
        )
    np.savez(src / "cameras.npz", **arrays)
    out = tmp_path / "dtu"
    assert dtu_main(["--src", str(src), "--out", str(out)]) == 0
    cams, imgs, _ = read_model(str(out / "sparse" / "0"))
    imgs = by_name(imgs)
    K, R, t, S = truth[25]
    im = imgs[dtu_name(25)]
    cam = cams[im.camera_id]
    # Principal point in COLMAP's convention: +0.5 over the OpenCV matrix.
    np.testing.assert_allclose(cam.params[2:], K[:2, 2] + 0.5, atol=1e-9)
    np.testing.assert_allclose(im.rotmat(), R, atol=1e-9)
    # The normalised frame: camera centre C_world = S @ C_norm.
    c_world = -R.T @ t
    c_norm = c2w_of(im)[:3, 3]
    np.testing.assert_allclose(S[:3, :3] @ c_norm + S[:3, 3], c_world, atol=1e-9)
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == [dtu_name(25), dtu_name(22), dtu_name(28)]
    assert len(split["test"]) == 49 - 9 - 15
    assert sorted(os.listdir(out / "masks_object")) == sorted(dtu_name(i) for i in range(49))
    with Image.open(out / "masks_object" / dtu_name(3)) as m:
        assert np.asarray(m).max() == 255  # view 3 -> mask 003.png


def test_prepare_dtu_release_layout_with_factor(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "DTU"
    os.makedirs(src / "Rectified" / "scan7")
    os.makedirs(src / "Calibration" / "cal18")
    truth = []
    for i in range(49):
        K, R, t, P = random_projection(rng, 32, 24)
        truth.append((K, R, t))
        np.savetxt(src / "Calibration" / "cal18" / f"pos_{i + 1:03d}.txt", P)
        save_rgb(src / "Rectified" / "scan7" / dtu_name(i), (32, 24), seed=i)
    out = tmp_path / "scene"
    assert dtu_main(["--src", str(src), "--scan", "7", "--factor", "2", "--out", str(out)]) == 0
    cams, imgs, _ = read_model(str(out / "sparse" / "0"))
    im = by_name(imgs)[dtu_name(10)]
    K = truth[10][0]
    cam = cams[im.camera_id]
    assert (cam.width, cam.height) == (16, 12)
    np.testing.assert_allclose(cam.params, [K[0, 0] / 2, K[1, 1] / 2, (K[0, 2] + 0.5) / 2,
                                            (K[1, 2] + 0.5) / 2], atol=1e-9)  # fmt: skip


def test_prepare_dtu_maps_cropped_calibration(tmp_path):
    """MonoSDF-style: matrices for 64x48 images, images a centred 48x48 crop resized to 24."""
    rng = np.random.default_rng(6)
    src = tmp_path / "scan"
    os.makedirs(src / "rgb")
    arrays, Ks = {}, []
    for i in range(49):
        K, R, t, P = random_projection(rng, 64, 48)
        K[0, 2] += 40  # principal point outside the 24x24 images -> auto detection
        P = K @ np.concatenate([R, t[:, None]], 1)
        Ks.append(K)
        arrays[f"world_mat_{i}"] = np.vstack([P, [0, 0, 0, 1]])
        save_rgb(src / "rgb" / f"{i:06d}_rgb.png", (24, 24), seed=i)
    np.savez(src / "cameras.npz", **arrays)
    out = tmp_path / "o"
    assert dtu_main(["--src", str(src), "--out", str(out), "--calib_size", "64x48"]) == 0
    cams, imgs, _ = read_model(str(out / "sparse" / "0"))
    cam = cams[by_name(imgs)[dtu_name(4)].camera_id]
    K, s = Ks[4], 24 / 48
    np.testing.assert_allclose(
        cam.params, [K[0, 0] * s, K[1, 1] * s, (K[0, 2] + 0.5 - 8) * s, (K[1, 2] + 0.5) * s]
    )


# --------------------------------------------------------------------------- Blender


def test_prepare_blender_nerf_synthetic(tmp_path):
    src = tmp_path / "lego"
    rng = np.random.default_rng(7)
    frames = {}
    for split, n in (("train", 4), ("val", 2)):
        os.makedirs(src / split)
        frames[split] = []
        for i in range(n):
            save_rgb(src / split / f"r_{i}.png", (16, 16), seed=i, mode="RGBA")
            m = np.eye(4)
            m[:3, :3] = Rotation.random(random_state=i + 10 * n).as_matrix()
            m[:3, 3] = rng.normal(size=3)
            frames[split].append({"file_path": f"./{split}/r_{i}", "transform_matrix": m.tolist()})
        (src / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": 0.69, "frames": frames[split]})
        )
    out = tmp_path / "scene"
    assert blender_main(["--src", str(src), "--out", str(out)]) == 0
    cams, imgs, _ = read_model(str(out / "sparse" / "0"))
    imgs = by_name(imgs)
    assert sorted(imgs) == sorted([f"train_r_{i}.png" for i in range(4)] +
                                  [f"val_r_{i}.png" for i in range(2)])  # fmt: skip
    fx = 0.5 * 16 / np.tan(0.5 * 0.69)
    np.testing.assert_allclose(cams[1].params, [fx, fx, 8, 8])
    gl = np.asarray(frames["train"][2]["transform_matrix"])
    m = c2w_of(imgs["train_r_2.png"])
    np.testing.assert_allclose(m[:3, 3], gl[:3, 3], atol=1e-9)
    np.testing.assert_allclose(m[:3, :3], gl[:3, :3] @ np.diag([1, -1, -1]), atol=1e-9)
    with Image.open(out / "images" / "train_r_0.png") as im:
        assert im.mode == "RGBA"  # alpha kept
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == [f"train_r_{i}.png" for i in range(4)]
    assert split["test"] == ["val_r_0.png", "val_r_1.png"]


def test_prepare_blender_instant_ngp_with_distortion(tmp_path, capsys):
    src = tmp_path / "fox"
    os.makedirs(src / "images")
    frames = []
    for i in range(5):
        m = np.eye(4)
        m[:3, 3] = [0.1 * i, 0, 0]
        frames.append({"file_path": f"images/{i:04d}.jpg", "transform_matrix": m.tolist()})
        if i != 4:  # the last frame's image is missing: skipped with a warning
            Image.fromarray((np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8)
                            ).save(src / "images" / f"{i:04d}.jpg")  # fmt: skip
    meta = {"fl_x": 60.0, "fl_y": 61.0, "cx": 31.0, "cy": 25.0, "w": 64, "h": 48,
            "k1": 0.08, "k2": -0.02, "p1": 0.001, "p2": 0.0, "frames": frames}  # fmt: skip
    (src / "transforms.json").write_text(json.dumps(meta))
    out = tmp_path / "scene"
    args = ["--src", str(src), "--out", str(out), "--split", "alternate", "--n_views", "2"]
    assert blender_main(args) == 0
    assert "1 frame(s) without an image file skipped" in capsys.readouterr().out
    cams, imgs, _ = read_model(str(out / "sparse" / "0"))
    assert all(c.model == "PINHOLE" for c in cams.values())
    assert len(imgs) == 4
    for im in imgs.values():
        cam = cams[im.camera_id]
        with Image.open(out / "images" / im.name) as pic:
            assert pic.size == (cam.width, cam.height)  # undistorted images match the model
        np.testing.assert_allclose(c2w_of(im)[:3, 3], [0.1 * int(im.name[:4]), 0, 0], atol=1e-9)
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == ["0000.jpg", "0002.jpg"] and split["test"] == ["0001.jpg", "0003.jpg"]
    assert sorted(os.listdir(out)) == ["images", "sparse", "split.json"]
