"""Dataset readers on synthetic folders built from known cameras, bad input, real scenes."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest
from conftest import require_scene
from PIL import Image
from scene_fixtures import (
    make_blender_scene,
    make_colmap_scene,
    make_idr_scene,
    make_llff_scene,
    make_ngp_scene,
    write_image,
)

from scene.errors import SceneError
from scene.images import build_cameras
from scene.points import focus_sphere
from scene.readers import read_scene
from scene.readers.blender import read_transforms_file
from scene.readers.idr import decompose_projection


def assert_pose(cam, truth, atol=1e-6):
    """CameraInfo (R = c2w rotation, T) against a world-to-camera (Rw, t)."""
    np.testing.assert_allclose(cam.R.T, truth["Rw"], atol=atol)
    np.testing.assert_allclose(cam.T, truth["t"], atol=atol)


def assert_K(cam, K, atol=1e-6):
    np.testing.assert_allclose([cam.fx, cam.fy, cam.cx, cam.cy], K, atol=atol)


# ----------------------------------------------------------------------------- COLMAP


@pytest.mark.parametrize("ext", [".bin", ".txt"])
@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_PINHOLE"])
def test_colmap_reads_known_cameras(tmp_path, ext, model):
    gt = make_colmap_scene(str(tmp_path), ext=ext, model=model)
    info = read_scene(str(tmp_path))
    assert info.reader == "colmap"
    assert [c.image_name for c in info.cameras] == gt["names"]
    assert [c.uid for c in info.cameras] == list(range(len(gt["names"])))
    for c in info.cameras:
        assert_pose(c, gt["cameras"][c.image_name])
        assert_K(c, gt["cameras"][c.image_name]["K"])
        assert (c.width, c.height) == (32, 24)
    assert len(info.point_cloud.points) == len(gt["points"]) == len(info.point_tracks)
    # Point 1 is seen by every image, point 6 (k=5) by images 5 and 6 (ids 6, 7).
    assert info.point_tracks[0] == gt["names"]
    assert info.point_tracks[5] == [gt["names"][5], gt["names"][6]]
    np.testing.assert_allclose(info.point_cloud.colors[0], gt["points"][1].rgb / 255.0)


def test_colmap_sparse_without_0(tmp_path):
    make_colmap_scene(str(tmp_path))
    shutil.move(tmp_path / "sparse" / "0", tmp_path / "sp")
    shutil.rmtree(tmp_path / "sparse")
    shutil.move(tmp_path / "sp", tmp_path / "sparse")
    assert len(read_scene(str(tmp_path)).cameras) == 10


def test_colmap_distorted_model_is_refused(tmp_path):
    make_colmap_scene(str(tmp_path), model="OPENCV")
    with pytest.raises(SceneError, match=r"cameras\.bin.*OPENCV.*undistort"):
        read_scene(str(tmp_path))


def test_colmap_unknown_model_name(tmp_path):
    make_colmap_scene(str(tmp_path), ext=".txt")
    p = tmp_path / "sparse" / "0" / "cameras.txt"
    p.write_text(p.read_text().replace(" PINHOLE ", " WEIRD_MODEL "))
    with pytest.raises(SceneError, match=r"cameras\.txt: unknown camera model WEIRD_MODEL"):
        read_scene(str(tmp_path))


def test_colmap_unregistered_images_noted(tmp_path, capsys):
    make_colmap_scene(str(tmp_path))
    write_image(str(tmp_path / "images" / "zz_extra.png"), 32, 24)
    assert len(read_scene(str(tmp_path)).cameras) == 10
    assert "1 image(s) in" in capsys.readouterr().out


def test_colmap_missing_image(tmp_path):
    make_colmap_scene(str(tmp_path))
    os.remove(tmp_path / "images" / "img_003.png")
    with pytest.raises(SceneError, match=r"images/img_003\.png.*images\.bin"):
        read_scene(str(tmp_path))


def test_colmap_mixed_sizes_for_one_camera(tmp_path):
    make_colmap_scene(str(tmp_path))
    write_image(str(tmp_path / "images" / "img_004.png"), 40, 24)
    with pytest.raises(SceneError, match=r"img_004\.png.*same camera"):
        read_scene(str(tmp_path))


def test_colmap_images_stored_smaller(tmp_path, capsys):
    gt = make_colmap_scene(str(tmp_path))
    for name in gt["names"]:
        write_image(str(tmp_path / "half" / name), 16, 12)
    info = read_scene(str(tmp_path), images="half")
    assert "intrinsics rescaled" in capsys.readouterr().out
    fx, fy, cx, cy = gt["cameras"][gt["names"][0]]["K"]
    assert_K(info.cameras[0], (fx / 2, fy / 2, cx / 2, cy / 2))
    assert info.cameras[0].image_path.endswith(os.path.join("half", gt["names"][0]))


def test_colmap_wrong_aspect(tmp_path):
    gt = make_colmap_scene(str(tmp_path))
    for name in gt["names"]:
        write_image(str(tmp_path / "other" / name), 32, 32)
    with pytest.raises(SceneError, match=r"other/img_000\.png.*aspect"):
        read_scene(str(tmp_path), images="other")


def test_colmap_corrupt_image(tmp_path):
    make_colmap_scene(str(tmp_path))
    (tmp_path / "images" / "img_002.png").write_bytes(b"not an image at all")
    with pytest.raises(SceneError, match=r"img_002\.png.*cannot read"):
        read_scene(str(tmp_path))


def test_colmap_truncated_model(tmp_path):
    make_colmap_scene(str(tmp_path))
    p = tmp_path / "sparse" / "0" / "images.bin"
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(SceneError, match=r"images\.bin.*colmap_match"):
        read_scene(str(tmp_path))


def test_empty_images_folder(tmp_path):
    make_colmap_scene(str(tmp_path))
    shutil.rmtree(tmp_path / "images")
    os.makedirs(tmp_path / "images")
    with pytest.raises(SceneError, match=r"/images: folder holds no images"):
        read_scene(str(tmp_path))


def test_images_without_cameras(tmp_path):
    write_image(str(tmp_path / "images" / "a.png"), 8, 8)
    with pytest.raises(SceneError, match=r"holds images but no cameras.*colmap_match"):
        read_scene(str(tmp_path))


def test_missing_scene_folder(tmp_path):
    with pytest.raises(SceneError, match="scene folder not found"):
        read_scene(str(tmp_path / "nope"))


def test_incomplete_colmap_model(tmp_path):
    make_colmap_scene(str(tmp_path))
    os.remove(tmp_path / "sparse" / "0" / "images.bin")
    with pytest.raises(SceneError, match=r"sparse/0: incomplete COLMAP model"):
        read_scene(str(tmp_path))


def test_incomplete_colmap_model_falls_back(tmp_path, capsys):
    make_llff_scene(str(tmp_path))
    os.makedirs(tmp_path / "sparse" / "0")
    (tmp_path / "sparse" / "0" / "cameras.bin").write_bytes(b"\0" * 8)
    assert read_scene(str(tmp_path)).reader == "llff"
    assert "incomplete COLMAP model ignored" in capsys.readouterr().out


# ---------------------------------------------------------------------------- Blender


@pytest.mark.parametrize("test_file", ["test", "val"])
def test_blender_train_test(tmp_path, test_file):
    gt = make_blender_scene(str(tmp_path), test_file=test_file)
    info = read_scene(str(tmp_path))
    assert info.reader == "blender"
    assert [c.image_name for c in info.cameras] == sorted(gt)
    for c in info.cameras:
        assert_pose(c, gt[c.image_name], atol=1e-6)
        assert_K(c, gt[c.image_name]["K"])
    assert info.predefined_split["train"] == [f"train/r_{k}.png" for k in range(8)]
    assert info.predefined_split["test"] == [f"{test_file}/r_{k}.png" for k in range(3)]
    assert info.point_cloud is None


def test_blender_train_only_has_no_predefined_split(tmp_path):
    make_blender_scene(str(tmp_path))
    os.remove(tmp_path / "transforms_test.json")
    info = read_scene(str(tmp_path))
    assert info.predefined_split is None and len(info.cameras) == 8


def test_instant_ngp_transforms(tmp_path, capsys):
    gt = make_ngp_scene(str(tmp_path))
    info = read_scene(str(tmp_path))
    out = capsys.readouterr().out
    warn = [ln for ln in out.splitlines() if "have no image file" in ln]
    assert len(warn) == 1 and "3 of 8 frames" in warn[0]
    assert [c.image_name for c in info.cameras] == sorted(gt)  # relative to images/
    for c in info.cameras:
        assert_pose(c, gt[c.image_name])
        assert_K(c, (30.0, 29.0, 11.5, 20.5))
        np.testing.assert_allclose(c.distortion, [0.05, -0.01, 0.001, -0.002, 0.0])
    assert info.predefined_split is None


def test_transforms_per_frame_intrinsics_and_stored_size(tmp_path):
    make_ngp_scene(str(tmp_path), n_missing=0)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    for k in ("k1", "k2", "p1", "p2"):
        meta.pop(k)
    meta["frames"][0].update({"fl_x": 40.0, "fl_y": 41.0, "cx": 12.0, "cy": 19.0})
    meta["frames"][1]["file_path"] = "images/0001"  # without extension
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    write_image(str(tmp_path / "images" / "0002.jpg"), 12, 20)  # stored at half size
    cams = {c.image_name: c for c in read_scene(str(tmp_path)).cameras}
    assert_K(cams["0000.jpg"], (40.0, 41.0, 12.0, 19.0))
    assert "0001.jpg" in cams and cams["0001.jpg"].distortion is None
    assert_K(cams["0002.jpg"], (15.0, 14.5, 5.75, 10.25))
    assert (cams["0002.jpg"].width, cams["0002.jpg"].height) == (12, 20)


def test_transforms_all_images_missing(tmp_path):
    make_ngp_scene(str(tmp_path), n_missing=0)
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(SceneError, match=r"transforms\.json: none of the listed images"):
        read_scene(str(tmp_path))


def test_transforms_fisheye_refused(tmp_path):
    make_ngp_scene(str(tmp_path), n_missing=0)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["camera_model"] = "OPENCV_FISHEYE"
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match=r"transforms\.json.*OPENCV_FISHEYE"):
        read_scene(str(tmp_path))


def test_transforms_bad_json(tmp_path):
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(SceneError, match=r"transforms\.json: cannot parse"):
        read_scene(str(tmp_path))


# ------------------------------------------------------------------------------- LLFF


def test_llff_known_cameras(tmp_path):
    gt = make_llff_scene(str(tmp_path))
    info = read_scene(str(tmp_path))
    assert info.reader == "llff"
    assert info.extras["images_dir"].endswith("images_8")
    for i, c in enumerate(info.cameras):
        assert_pose(c, gt[c.image_name])
        assert_K(c, gt[c.image_name]["K"])
        assert c.downscale == 8.0
        assert info.extras["bounds"][c.image_name] == (2.0 + i, 50.0)


def test_llff_images_folder_preferred(tmp_path):
    make_llff_scene(str(tmp_path), folder="images_4")
    make_llff_scene(str(tmp_path), folder="images_2")
    info = read_scene(str(tmp_path))
    assert info.extras["images_dir"].endswith("images_4")  # images_8 absent: next in order
    info = read_scene(str(tmp_path), images="images_2")
    assert info.extras["images_dir"].endswith("images_2") and info.cameras[0].downscale == 2


def test_llff_count_mismatch(tmp_path):
    make_llff_scene(str(tmp_path))
    os.remove(tmp_path / "images_8" / "image004.png")
    with pytest.raises(SceneError, match=r"poses_bounds\.npy: 10 poses but .*images_8 holds 9"):
        read_scene(str(tmp_path))


def test_llff_bad_array(tmp_path):
    make_llff_scene(str(tmp_path))
    np.save(tmp_path / "poses_bounds.npy", np.zeros((10, 15)))
    with pytest.raises(SceneError, match=r"poses_bounds\.npy: expected an \[N, 17\]"):
        read_scene(str(tmp_path))


# -------------------------------------------------------------------------------- IDR


def test_idr_decomposition_recovers_cameras(tmp_path):
    gt = make_idr_scene(str(tmp_path))
    info = read_scene(str(tmp_path))
    assert info.reader == "idr"
    for c in info.cameras:
        assert_pose(c, gt[c.image_name], atol=1e-8)
        assert_K(c, gt[c.image_name]["K"], atol=1e-8)  # +0.5: IDR's integer pixel centres
        near, far = info.extras["bounds"][c.image_name]
        assert 0 < near < np.linalg.norm(c.T) < far
    assert info.extras["bounding_sphere"][1] == 1.0


def test_decompose_projection_signs():
    rng = np.random.default_rng(3)
    K = np.array([[100.0, 0.5, 40.0], [0, 90.0, 30.0], [0, 0, 1]])
    for _ in range(10):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        R = q * np.sign(np.linalg.det(q))
        t = rng.normal(size=3)
        P = rng.choice([-1, 1]) * rng.uniform(0.1, 10) * K @ np.concatenate([R, t[:, None]], 1)
        K2, R2, t2 = decompose_projection(P)
        np.testing.assert_allclose(K2, K, atol=1e-8)
        np.testing.assert_allclose(R2, R, atol=1e-8)
        np.testing.assert_allclose(t2, t, atol=1e-8)


def test_idr_rgb_folder_and_count(tmp_path):
    make_idr_scene(str(tmp_path), folder="rgb")
    assert len(read_scene(str(tmp_path)).cameras) == 6
    write_image(str(tmp_path / "rgb" / "999999.png"), 40, 30)
    with pytest.raises(SceneError, match=r"cameras\.npz: 6 cameras but .*rgb holds 7"):
        read_scene(str(tmp_path))


def test_idr_principal_point_outside_image(tmp_path):
    make_idr_scene(str(tmp_path), w=400, h=300)
    for p in (tmp_path / "image").iterdir():
        write_image(str(p), 10, 8)  # smaller aspect-mismatched images
    with pytest.raises(SceneError, match=r"cameras\.npz: world_mat_0.*outside"):
        read_scene(str(tmp_path))


# ---------------------------------------------------------------------- eval masks


def test_masks_object_attached(tmp_path):
    gt = make_colmap_scene(str(tmp_path))
    os.makedirs(tmp_path / "masks_object")
    stem = gt["names"][1][:-4]
    Image.fromarray(np.full((24, 32), 255, np.uint8)).save(
        tmp_path / "masks_object" / f"{stem}.png"
    )
    info = read_scene(str(tmp_path))
    assert info.cameras[1].mask_path.endswith(f"masks_object/{stem}.png")
    assert info.cameras[0].mask_path is None


# ------------------------------------------------------------------ real scenes


def _triangulate(ca, cb):
    """SIFT matches of two loaded cameras triangulated with their poses; returns the
    reprojection error [M] (max over both views) and the smaller depth [M] per match."""
    sift = cv2.SIFT_create(1500)

    def feats(c):
        g = (c.original_image.mean(0).numpy() * 255).astype(np.uint8)
        return sift.detectAndCompute(g, None)

    (ka, da), (kb, db) = feats(ca), feats(cb)
    good = [m for m, n in cv2.BFMatcher().knnMatch(da, db, k=2) if m.distance < 0.75 * n.distance]
    pa = np.array([ka[m.queryIdx].pt for m in good]) + 0.5  # OpenCV -> +0.5 pixel centres
    pb = np.array([kb[m.trainIdx].pt for m in good]) + 0.5

    def P(c):
        return (c.K.double() @ c.viewmat.double()[:3]).numpy()

    X = cv2.triangulatePoints(P(ca), P(cb), pa.T, pb.T)
    X = (X[:3] / X[3]).T
    errs, depths = [], []
    for c, p in ((ca, pa), (cb, pb)):
        Xc = X @ c.viewmat.double()[:3, :3].numpy().T + c.viewmat.double()[:3, 3].numpy()
        uv = Xc[:, :2] / Xc[:, 2:] * [c.fx, c.fy] + [c.cx, c.cy]
        errs.append(np.linalg.norm(uv - p, axis=1))
        depths.append(Xc[:, 2])
    return np.maximum(*errs), np.minimum(*depths)


def _load(info, names, source, resolution=1):
    cams = [c for c in info.cameras if c.image_name in names]
    return build_cameras(cams, source, "images", resolution, False, "cpu")


def _check_two_view(info, names, source, resolution=1, max_median_err=0.5):
    err, depth = _triangulate(*_load(info, names, source, resolution))
    inl = err < 2.0
    assert len(err) >= 20 and inl.mean() > 0.7, (len(err), inl.mean())
    assert np.median(err) < max_median_err
    assert (depth[inl] > 0).all()
    return depth[inl]


def test_real_fern():
    path = require_scene("llff_fern")
    info = read_scene(str(path))
    assert info.reader == "llff" and len(info.cameras) == 20
    c = info.cameras[0]
    assert (c.width, c.height, c.downscale) == (504, 378, 8.0)
    assert abs(c.fx - 3260.52633 / 8) < 1e-3
    fwd = np.stack([c.R[:, 2] for c in info.cameras])
    mean = fwd.mean(0) / np.linalg.norm(fwd.mean(0))
    assert (fwd @ mean).min() > 0.95  # forward-facing: all cameras look the same way
    near, far = info.extras["bounds"]["image000.png"]
    # LLFF captures converge slightly: on the subject, between the near and far bounds.
    center, _ = focus_sphere(info.cameras)
    assert near < (info.cameras[0].R.T @ center + info.cameras[0].T)[2] < far
    depth = _check_two_view(info, ["image000.png", "image003.png"], str(path))
    assert near > 0 and np.percentile(depth, 5) > 0.9 * near
    assert np.percentile(depth, 95) < far


def test_real_lego():
    path = require_scene("nerf_synthetic_lego_400")
    info = read_scene(str(path))
    assert info.reader == "blender" and len(info.cameras) == 125
    assert len(info.predefined_split["train"]) == 100 and len(info.predefined_split["test"]) == 25
    for c in info.cameras:  # Blender cameras look at the origin
        p = c.T  # the origin in camera coordinates
        assert p[2] > 3.5
        assert abs(c.fx * p[0] / p[2] + c.cx - 200) < 1 and abs(c.fy * p[1] / p[2] + c.cy - 200) < 1
    _check_two_view(info, ["train/r_0.png", "train/r_1.png"], str(path))


def test_real_dtu_scan24():
    path = require_scene("dtu_scan24_monosdf")
    info = read_scene(str(path))
    assert info.reader == "idr" and len(info.cameras) == 49
    for c in info.cameras:
        p = c.T  # the unit sphere's centre in camera coordinates
        u, v = c.fx * p[0] / p[2] + c.cx, c.fy * p[1] / p[2] + c.cy
        assert p[2] > 1.0 and 0 < u < c.width and 0 < v < c.height
        # The whole unit sphere is in front of the camera.
        assert np.linalg.norm(p) > 1.0
    depth = _check_two_view(info, ["000022_rgb.png", "000023_rgb.png"], str(path))
    assert np.percentile(depth, 95) < 2 * np.linalg.norm(info.cameras[22].T)


def test_real_fox():
    path = require_scene("instant_ngp_fox")
    cams, missing = read_transforms_file(str(path / "transforms.json"), str(path))
    assert len(cams) == 50 and len(missing) == 17
    info = read_scene(str(path))  # transforms_train.json: the 50 present frames
    assert len(info.cameras) == 50 and info.cameras[0].image_name == "0001.jpg"
    assert info.cameras[0].distortion is not None
    assert focus_sphere(info.cameras) is not None  # the cameras circle the fox
    _check_two_view(info, ["0001.jpg", "0003.jpg"], str(path), resolution=4)


def test_real_maryrose():
    path = require_scene("nerd_maryrose")
    info = read_scene(str(path))
    assert info.reader == "llff" and len(info.cameras) == 69
    c = info.cameras[0]
    assert info.extras["images_dir"].endswith("images_4") and c.downscale == 4.0
    assert abs(c.fx - 10547.2437 / 4) < 1e-2
    assert all(c.mask_path and "masks_4" in c.mask_path for c in info.cameras)
    assert focus_sphere(info.cameras) is not None  # object-centric
    # IMG_9669 and IMG_9670 share a camera centre; 9670/9671 have a baseline.
    depth = _check_two_view(info, ["IMG_9670.jpg", "IMG_9671.jpg"], str(path), resolution=8)
    near, far = info.extras["bounds"]["IMG_9670.jpg"]
    assert np.percentile(depth, 5) > 0.9 * near and np.percentile(depth, 95) < 1.1 * far
