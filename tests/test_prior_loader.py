"""The prior loader: name matching, nearest resizing, validation, warnings and the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from priors import PriorError
from priors.masks import MaskSet, save_mask_set
from scene.cameras import Camera
from scene.priors import attach_priors, prior_candidates, resize_nearest


def _cam(name: str, w: int, h: int) -> Camera:
    return Camera(0, name, np.eye(3), np.zeros(3), 50.0, 50.0, w / 2, h / 2, w, h)


def _write_masks(path, h, w):
    m = np.zeros((2, h, w), bool)
    m[0, :, : w // 2] = True
    m[1, : h // 4, : w // 4] = True
    save_mask_set(
        str(path), str(path).replace(".npz", ".png"), MaskSet(m, [1, 1], [1, 1], [0, 1], "x")
    )
    return m


def test_candidates_cover_the_naming_variants():
    assert prior_candidates("depth", "IMG_1.JPG") == ["IMG_1.JPG.npy", "IMG_1.npy"]
    assert prior_candidates("masks", "sub/a.png") == ["sub/a.npz", "sub/a.png.npz"]
    roi = prior_candidates("roi", "IMG_1.JPG")
    assert roi[:3] == ["IMG_1.JPG", "IMG_1.png", "IMG_1.jpg"]


def test_attach_all_priors_with_name_variants_and_resizing(tmp_path, capsys):
    scene = tmp_path
    (scene / "masks" / "sub").mkdir(parents=True)
    (scene / "pure_masks").mkdir()
    (scene / "depth_pro").mkdir()
    H, W = 40, 60  # on disk
    m = _write_masks(scene / "masks" / "IMG_1.npz", H, W)
    _write_masks(scene / "masks" / "sub" / "b.npz", H, W)
    roi = np.zeros((H, W), np.uint8)
    roi[10:30, 20:50] = 255
    Image.fromarray(roi).save(scene / "pure_masks" / "IMG_1.png")  # .png for a .JPG image
    Image.fromarray(roi).save(scene / "pure_masks" / "b.jpg", quality=100)
    depth = np.arange(H * W, dtype=np.float32).reshape(H, W) + 1
    np.save(scene / "depth_pro" / "img_1.jpg.npy", depth)  # other case, with extension
    np.save(scene / "depth_pro" / "b.npy", depth.astype(np.float64))  # bare stem
    cams = [_cam("IMG_1.JPG", 30, 20), _cam("sub/b.jpg", 60, 40)]
    (scene / "pure_masks" / "sub").mkdir()
    (scene / "pure_masks" / "sub" / "b.jpg").write_bytes(
        (scene / "pure_masks" / "b.jpg").read_bytes()
    )
    (scene / "depth_pro" / "sub").mkdir()
    np.save(scene / "depth_pro" / "sub" / "b.npy", depth)

    report = attach_priors(cams, str(scene), {"masks", "roi", "depth"})
    out = capsys.readouterr().out
    assert report.found == {"masks": 2, "roi": 2, "depth": 2}
    assert out.strip().splitlines()[-1] == report.line()
    assert "masks 2/2 (K 2-2)" in report.line()

    c = cams[0]  # half resolution
    assert c.priors["masks"].dtype == torch.bool and c.priors["masks"].shape == (2, 20, 30)
    torch.testing.assert_close(c.priors["masks"], torch.from_numpy(m[:, 1::2, 1::2]))
    assert c.priors["mask_levels"].tolist() == [0, 1]
    assert c.priors["roi_mask"].dtype == torch.float32 and c.priors["roi_mask"].shape == (1, 20, 30)
    assert set(c.priors["roi_mask"].unique().tolist()) == {0.0, 1.0}
    assert c.priors["depth"].dtype == torch.float32 and c.priors["depth"].shape == (1, 20, 30)
    # Nearest sampling: every value is one of the originals (no blending across edges).
    assert np.isin(c.priors["depth"].numpy(), depth).all()
    torch.testing.assert_close(c.priors["depth"][0], torch.from_numpy(depth[1::2, 1::2]))
    b = cams[1]
    assert b.priors["masks"].shape == (2, 40, 60)
    torch.testing.assert_close(b.priors["roi_mask"][0], torch.from_numpy(roi > 127).float())


def test_missing_files_warn_once_and_folders_turn_off(tmp_path, capsys):
    (tmp_path / "depth_pro").mkdir()
    np.save(tmp_path / "depth_pro" / "a.npy", np.ones((10, 10), np.float32))
    cams = [_cam("a.png", 10, 10), _cam("b.png", 10, 10)]
    report = attach_priors(cams, str(tmp_path), ["depth", "masks"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum("no depth prior for b.png" in ln for ln in lines) == 1
    assert sum("masks prior off" in ln for ln in lines) == 1
    assert report.missing["depth"] == ["b.png"] and "masks" in report.off
    assert "depth 1/2 (missing 1)" in report.line() and "masks off" in report.line()
    assert "depth" in cams[0].priors and "depth" not in cams[1].priors
    with pytest.raises(PriorError, match="extract_mask.py"):
        attach_priors(cams, str(tmp_path), ["masks"], required=["masks"])


def test_bad_prior_files_stop_with_the_file_name(tmp_path):
    (tmp_path / "depth_pro").mkdir()
    np.save(tmp_path / "depth_pro" / "a.npy", np.ones((10, 10), np.int32))
    with pytest.raises(PriorError, match=r"a\.npy: depth is int32"):
        attach_priors([_cam("a.png", 10, 10)], str(tmp_path), ["depth"])
    np.save(tmp_path / "depth_pro" / "a.npy", np.ones((10, 20), np.float32))
    with pytest.raises(PriorError, match="aspect ratio differs"):
        attach_priors([_cam("a.png", 10, 10)], str(tmp_path), ["depth"])
    (tmp_path / "masks").mkdir()
    np.savez(tmp_path / "masks" / "a.npz", masks=np.ones((1, 10, 10), np.float32))
    with pytest.raises(PriorError, match="expected bool"):
        attach_priors([_cam("a.png", 10, 10)], str(tmp_path), ["masks"])
    (tmp_path / "pure_masks").mkdir()
    (tmp_path / "pure_masks" / "a.png").write_bytes(b"nope")
    with pytest.raises(PriorError, match="cannot read the ROI mask"):
        attach_priors([_cam("a.png", 10, 10)], str(tmp_path), ["roi"])


def test_resize_nearest_keeps_dtype_and_values():
    x = torch.rand(3, 7, 9) > 0.5
    y = resize_nearest(x, 14, 18)
    assert y.dtype == torch.bool and y.shape == (3, 14, 18)
    torch.testing.assert_close(y[:, ::2, ::2], x)
