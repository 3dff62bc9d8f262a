"""Scene: splits, resolution rules, image loading, init points, model-folder files."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import require_scene
from PIL import Image
from plyfile import PlyData
from scene_fixtures import (
    make_blender_scene,
    make_colmap_scene,
    make_idr_scene,
    make_llff_scene,
)

from scene import Scene
from scene.colmap_io import ColmapCamera, ColmapImage, ColmapPoint3D, rotmat_to_qvec, write_model
from scene.errors import SceneError
from scene.images import training_size, undistort
from scene.points import _inside, depth_bounds_from_points


def dataset(source, **kw):
    d = dict(
        source_path=str(source),
        model_path="",
        images="images",
        resolution=-1,
        white_background=False,
        data_device="cpu",
        eval=False,
    )
    d.update(kw)
    return SimpleNamespace(**d)


def sparse(**kw):
    d = dict(n_views=0, split_protocol="llff", train_views=[], random_init=0)
    d.update(kw)
    return SimpleNamespace(**d)


# ------------------------------------------------------------------ resolution rule


@pytest.mark.parametrize(
    "w, h, r, down, expected",
    [
        (4032, 3024, 8, 1.0, (504, 378)),
        (504, 378, 8, 8.0, (504, 378)),  # LLFF images_8/ read as the base folder
        (864, 864, 8, 4.0, (432, 432)),
        (864, 864, 2, 4.0, (864, 864)),  # never upsample
        (100, 75, 4, 1.0, (25, 19)),  # round(18.75)
        (1700, 20, -1, 1.0, (1600, 18)),  # int(20 / 1.0625)
        (1600, 900, -1, 1.0, (1600, 900)),
        (100, 50, 30, 1.0, (30, 15)),  # a width
    ],
)
def test_training_size(w, h, r, down, expected):
    assert training_size(w, h, r, down) == expected


def test_training_size_rejects_zero():
    with pytest.raises(SceneError, match="resolution"):
        training_size(10, 10, 0)


# ------------------------------------------------------------------ Scene basics


def test_scene_3dgs_mode_and_extent(tmp_path):
    gt = make_colmap_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path, resolution=1), None)
    assert sc.split["protocol"] == "3dgs" and sc.test_cameras == []
    assert [c.image_name for c in sc.getTrainCameras()] == gt["names"]
    C = np.stack([-c.R @ c.T for c in sc.scene_info.cameras])
    assert sc.cameras_extent == pytest.approx(1.1 * np.linalg.norm(C - C.mean(0), axis=1).max())
    assert len(sc.point_cloud.points) == 60  # rule 4: every scene point
    cam = sc.train_cameras[0]
    assert cam.original_image.shape == (3, 24, 32) and cam.original_image.dtype == torch.float32
    arr = np.asarray(Image.open(tmp_path / "images" / gt["names"][0]), dtype=np.float32) / 255
    np.testing.assert_allclose(cam.original_image.permute(1, 2, 0).numpy(), arr, atol=1e-6)
    sc = Scene(dataset(tmp_path, eval=True), None)
    assert [c.image_name for c in sc.test_cameras] == [gt["names"][0], gt["names"][8]]


def test_scene_resolution_and_images_n(tmp_path):
    gt = make_colmap_scene(str(tmp_path))
    fx, fy, cx, cy = gt["cameras"][gt["names"][0]]["K"]
    cam = Scene(dataset(tmp_path, resolution=2), None).train_cameras[0]
    assert (cam.image_width, cam.image_height) == (16, 12)
    np.testing.assert_allclose([cam.fx, cam.fy, cam.cx, cam.cy], [fx / 2, fy / 2, cx / 2, cy / 2])
    # images_2/ holds a hand-made copy: it is read instead of resampling images/.
    os.makedirs(tmp_path / "images_2")
    for name in gt["names"]:
        Image.fromarray(np.full((12, 16, 3), 77, np.uint8)).save(tmp_path / "images_2" / name)
    cam = Scene(dataset(tmp_path, resolution=2), None).train_cameras[0]
    assert torch.allclose(cam.original_image, torch.full((3, 12, 16), 77 / 255))
    cam = Scene(dataset(tmp_path, resolution=24), None, load_images=False).train_cameras[0]
    assert (cam.image_width, cam.image_height) == (24, 18) and cam.original_image is None
    assert cam.fx == pytest.approx(fx * 0.75)


def test_scene_shrinks_wide_images_with_one_notice(tmp_path, capsys):
    make_colmap_scene(str(tmp_path), n=10, w=1700, h=20)
    sc = Scene(dataset(tmp_path, eval=True), None, load_images=False)
    assert len(sc.test_cameras) == 2
    assert (sc.train_cameras[0].image_width, sc.train_cameras[0].image_height) == (1600, 18)
    assert capsys.readouterr().out.count("shrunk to 1600 px") == 1


@pytest.mark.parametrize("white", [False, True])
def test_rgba_composited_with_alpha_mask(tmp_path, white):
    make_blender_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path, white_background=white, eval=True), None)
    assert len(sc.train_cameras) == 8 and len(sc.test_cameras) == 3
    cam = sc.train_cameras[0]
    assert cam.alpha_mask.shape == (1, 20, 20)
    assert cam.alpha_mask[0, 0, 0] == 0 and cam.alpha_mask[0, 10, 10] == 1
    assert torch.all(cam.original_image[:, 0, 0] == (1.0 if white else 0.0))
    raw = np.asarray(Image.open(tmp_path / "train" / "r_0.png"))
    np.testing.assert_allclose(cam.original_image[:, 10, 10].numpy(), raw[10, 10, :3] / 255)


def test_eval_masks_loaded_nearest(tmp_path):
    gt = make_colmap_scene(str(tmp_path))
    os.makedirs(tmp_path / "masks_object")
    m = np.zeros((24, 32), np.uint8)
    m[:, 16:] = 255
    for name in gt["names"]:
        Image.fromarray(m).save(tmp_path / "masks_object" / name)
    cam = Scene(dataset(tmp_path, resolution=2), None).train_cameras[0]
    assert cam.eval_mask.shape == (1, 12, 16)
    assert set(cam.eval_mask.unique().tolist()) == {0.0, 1.0}
    assert cam.eval_mask[0, :, 8:].all() and not cam.eval_mask[0, :, :8].any()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_cuda_falls_back_to_cpu(tmp_path, capsys):
    make_colmap_scene(str(tmp_path), n=3)
    sc = Scene(dataset(tmp_path, data_device="cuda"), None)
    assert sc.train_cameras[0].original_image.device.type == "cpu"
    assert "CUDA is not available" in capsys.readouterr().out


def test_corrupt_image_data_found_while_loading(tmp_path):
    gt = make_colmap_scene(str(tmp_path), w=64, h=48)
    p = tmp_path / "images" / gt["names"][4]
    p.write_bytes(p.read_bytes()[:200])  # header intact, pixel data cut
    with pytest.raises(SceneError, match=rf"{gt['names'][4]}: cannot decode"):
        Scene(dataset(tmp_path, model_path=str(tmp_path / "out")), None)
    assert not (tmp_path / "out").exists()


def test_errors_leave_no_model_folder(tmp_path):
    make_colmap_scene(str(tmp_path))
    out = tmp_path / "out"
    with pytest.raises(SceneError, match=r"--n_views 9 is larger than the 8"):
        Scene(dataset(tmp_path, model_path=str(out)), sparse(n_views=9))
    assert not out.exists()


# -------------------------------------------------------------------- model files


def test_model_files_and_reuse(tmp_path):
    gt = make_colmap_scene(str(tmp_path / "scene"))
    out = tmp_path / "out"
    sc = Scene(dataset(tmp_path / "scene", resolution=2, model_path=str(out)), sparse(n_views=3))
    assert sc.split["train"] == ["img_001.png", "img_005.png", "img_009.png"]  # round(3.5) = 4
    sc.write_model_files()
    assert sorted(os.listdir(out)) == ["cameras.json", "input.ply", "split.json"]

    cams = json.loads((out / "cameras.json").read_text())
    assert [c["img_name"] for c in cams] == ["img_000", "img_008", "img_001", "img_005", "img_009"]
    assert [c["id"] for c in cams] == list(range(5))
    first = cams[0]
    assert list(first) == ["id", "img_name", "width", "height", "position", "rotation", "fy", "fx"]
    truth = gt["cameras"]["img_000.png"]
    assert (first["width"], first["height"]) == (32, 24)  # full resolution
    assert (first["fx"], first["fy"]) == (30.0, 31.0)
    np.testing.assert_allclose(first["position"], -truth["Rw"].T @ truth["t"], atol=1e-9)
    np.testing.assert_allclose(first["rotation"], truth["Rw"].T, atol=1e-9)

    ply = PlyData.read(str(out / "input.ply"))
    assert ply.byte_order == "<" and not ply.text
    v = ply["vertex"]
    assert [p.name for p in v.properties] == [
        "x",
        "y",
        "z",
        "nx",
        "ny",
        "nz",
        "red",
        "green",
        "blue",
    ]
    assert [v.data.dtype[i].str for i in range(9)] == ["<f4"] * 6 + ["|u1"] * 3
    assert len(v.data) == len(sc.point_cloud.points)
    np.testing.assert_allclose(v["x"], sc.point_cloud.points[:, 0], rtol=1e-6)

    # render.py / metrics.py: the split comes back from the model folder.
    again = Scene(
        dataset(tmp_path / "scene", model_path=str(out)), sparse(n_views=5), reuse_split=True
    )
    assert again.split == sc.split
    # A trained model loads without the initial points it was trained from.
    dense = Scene(dataset(tmp_path / "scene", model_path=str(out)), sparse(n_views=5, init="dense"),
                  reuse_split=True)  # fmt: skip
    assert dense.split == sc.split and len(dense.point_cloud.points) == 0
    with pytest.raises(SceneError, match=r"split\.json: split file not found"):
        Scene(
            dataset(tmp_path / "scene", model_path=str(tmp_path / "nope")), None, reuse_split=True
        )


# -------------------------------------------------------------------- init points


def test_init_points_track_filter(tmp_path, capsys):
    gt = make_colmap_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path), sparse(n_views=5), load_images=False)
    train = set(sc.split["train"])
    names = gt["names"]
    expected = sum(
        1 for p in gt["points"].values() if sum(names[i - 1] in train for i in p.image_ids) >= 2
    )
    assert len(sc.point_cloud.points) == expected < 60
    assert "triangulated with all views" in capsys.readouterr().out


def _train_only_model(root, gt, train, shift=0.0, n_points=7):
    cams = {1: ColmapCamera(1, "PINHOLE", 32, 24, np.array(gt["cameras"][train[0]]["K"]))}
    ims = {
        i + 1: ColmapImage(
            i + 1, rotmat_to_qvec(gt["cameras"][n]["Rw"]), gt["cameras"][n]["t"] + shift, 1, n
        )
        for i, n in enumerate(train)
    }
    pts = {
        k + 1: ColmapPoint3D(
            k + 1,
            np.full(3, 0.1 * k),
            np.array([9, 9, 9], np.uint8),
            0.1,
            np.array([1, 2]),
            np.array([0, 0]),
        )
        for k in range(n_points)
    }
    write_model(cams, ims, pts, os.path.join(root, f"colmap_{len(train)}views", "sparse", "0"))


def test_init_points_train_only_model(tmp_path, capsys):
    gt = make_colmap_scene(str(tmp_path))
    train = ["img_001.png", "img_005.png", "img_009.png"]
    _train_only_model(str(tmp_path), gt, train)
    sc = Scene(dataset(tmp_path), sparse(n_views=3), load_images=False)
    assert len(sc.point_cloud.points) == 7 and "train-only SfM" in sc.init_source
    # A model of other views, or in another frame, is ignored with a notice.
    _train_only_model(str(tmp_path), gt, ["img_001.png", "img_002.png", "img_009.png"])
    sc = Scene(dataset(tmp_path), sparse(n_views=3), load_images=False)
    assert "other training views" in capsys.readouterr().out and len(sc.point_cloud.points) != 7
    _train_only_model(str(tmp_path), gt, train, shift=1.0)
    sc = Scene(dataset(tmp_path), sparse(n_views=3), load_images=False)
    assert "world frame" in capsys.readouterr().out and len(sc.point_cloud.points) != 7


def test_random_init_llff_bounds(tmp_path):
    make_llff_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path), sparse(n_views=3, random_init=5000), load_images=False)
    X = sc.point_cloud.points
    assert X.shape == (5000, 3) and "near/far bounds" in sc.init_source
    b = sc.scene_info.extras["bounds"]
    for x in X[:200]:
        hit = False
        for c in sc.train_infos:
            xc = c.R.T @ x + c.T
            u, v = c.fx * xc[0] / xc[2] + c.cx, c.fy * xc[1] / xc[2] + c.cy
            near, far = b[c.image_name]
            hit |= near <= xc[2] <= far and 0 <= u <= c.width and 0 <= v <= c.height
        assert hit
    assert 0 <= sc.point_cloud.colors.min() and sc.point_cloud.colors.max() <= 1


def test_random_init_idr_sphere_and_default(tmp_path, capsys):
    make_idr_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path), sparse(random_init=3000), load_images=False)
    assert np.linalg.norm(sc.point_cloud.points, axis=1).max() <= 1.0 + 1e-9
    sc = Scene(dataset(tmp_path), None, load_images=False)  # no points at all: rule 5
    assert len(sc.point_cloud.points) == 100_000
    assert "has no points" in capsys.readouterr().out


def test_random_init_object_centric_without_points(tmp_path):
    make_blender_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path), sparse(random_init=2000), load_images=False)
    # Ring of radius ~4.1 around the origin, FoV 0.69 rad: the ball sits at the origin.
    X = sc.point_cloud.points
    assert "look at" in sc.init_source
    assert np.linalg.norm(X.mean(0)) < 0.2 and np.linalg.norm(X, axis=1).max() < 1.5


def test_random_init_from_scene_point_depths(tmp_path):
    make_colmap_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path), sparse(random_init=2000), load_images=False)
    assert "depths of the scene points" in sc.init_source
    # Points in [-1, 1]^3, cameras on a ring of radius ~4.1: depths within about 2.4 .. 5.8.
    near, far = depth_bounds_from_points(sc.train_infos, sc.scene_info.point_cloud.points)
    assert 2.0 < near.min() and far.max() < 6.6
    X = sc.point_cloud.points
    assert len(X) == 2000 and _inside(sc.train_infos, X, near, far).all()


def test_blender_without_points_gets_upstream_cube(tmp_path):
    make_blender_scene(str(tmp_path))
    sc = Scene(dataset(tmp_path), None, load_images=False)
    X = sc.point_cloud.points
    assert X.shape == (100_000, 3) and np.abs(X).max() <= 1.3
    np.testing.assert_allclose(sc.point_cloud.colors, 0.5, atol=0.3 / 255 + 1e-3)


# -------------------------------------------------------------------- distortion


def test_undistort_moves_a_dot_to_its_pinhole_position():
    w, h = 120, 90
    K = (100.0, 98.0, 61.0, 44.0)
    dist = np.array([0.3, 0.0, 0.01, -0.01, 0.0])
    X = np.array([[0.45, -0.3, 1.0]])  # camera coordinates
    Kcv = np.array([[K[0], 0, K[2] - 0.5], [0, K[1], K[3] - 0.5], [0, 0, 1]])
    uv_dist = cv2.projectPoints(X, np.zeros(3), np.zeros(3), Kcv, dist)[0][0, 0]
    img = np.zeros((h, w), np.uint8)
    cv2.circle(img, (round(uv_dist[0] * 16), round(uv_dist[1] * 16)), 3 * 16, 255, -1, shift=4)
    out = undistort(img, K, dist).astype(float)
    ys, xs = np.mgrid[0:h, 0:w]
    centre = np.array([(xs * out).sum(), (ys * out).sum()]) / out.sum() + 0.5
    expected = np.array([K[0] * X[0, 0] + K[2], K[1] * X[0, 1] + K[3]])
    assert np.linalg.norm(centre - expected) < 0.3
    assert np.linalg.norm(uv_dist + 0.5 - expected) > 3  # the distortion was not trivial


# -------------------------------------------------------------------- real scenes


def test_real_fern_sparse_scene(tmp_path):
    path = require_scene("llff_fern")
    sc = Scene(dataset(path, resolution=8), sparse(n_views=3))
    assert sc.split["train"] == ["image001.png", "image010.png", "image019.png"]
    assert [c.image_name for c in sc.test_cameras] == [
        "image000.png",
        "image008.png",
        "image016.png",
    ]
    assert sc.train_cameras[0].original_image.shape == (3, 378, 504)
    sc.write_model_files(str(tmp_path / "m"))
    assert len(json.loads((tmp_path / "m" / "cameras.json").read_text())) == 6


def test_real_dtu_sparse_scene():
    path = require_scene("dtu_scan24_monosdf")
    sc = Scene(
        dataset(path, resolution=1), sparse(n_views=3, split_protocol="dtu"), load_images=False
    )
    assert sc.split["train"] == ["000025_rgb.png", "000022_rgb.png", "000028_rgb.png"]
    assert len(sc.test_cameras) == 25
    assert np.linalg.norm(sc.point_cloud.points, axis=1).max() <= 1.0 + 1e-9


def test_real_lego_eval_scene():
    path = require_scene("nerf_synthetic_lego_400")
    sc = Scene(dataset(path, white_background=True, eval=True), None, load_images=False)
    assert len(sc.train_cameras) == 100 and len(sc.test_cameras) == 25
    assert sc.train_cameras[0].image_width == 400
