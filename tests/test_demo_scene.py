"""The embedded demo scene (scripts/make_demo_scene.py): layout, geometric consistency of
cameras, points, depth and masks, determinism, and safe writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scene.colmap_io import qvec_to_rotmat, read_model
from scripts.make_demo_scene import main, make_demo_scene, split_views

TINY = dict(width=64, height=48, n_train=4, n_test=3, seed=3, n_points=600, progress=False)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "scene"
    make_demo_scene(out, **TINY)
    return out


def _names(scene_dir: Path) -> list[str]:
    return sorted(p.name for p in (scene_dir / "images").iterdir())


def _camera(cams, im):
    fx, fy, cx, cy = cams[im.camera_id].intrinsics()
    return qvec_to_rotmat(im.qvec), np.asarray(im.tvec), fx, fy, cx, cy


def test_layout_and_split(scene_dir: Path):
    names = _names(scene_dir)
    assert names == [f"view_{k:03d}.png" for k in range(7)]
    split = json.loads((scene_dir / "split.json").read_text())
    assert split["protocol"] == "custom" and split["n_views"] == 4
    assert sorted(split["train"] + split["test"]) == names
    assert not set(split["train"]) & set(split["test"])
    for name in names:
        stem = name[:-4]
        img = np.array(Image.open(scene_dir / "images" / name))
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        depth = np.load(scene_dir / "depth_gt" / f"{name}.npy")
        assert depth.shape == (48, 64) and depth.dtype == np.float32
        labels = np.array(Image.open(scene_dir / "masks_gt" / f"{stem}.png"))
        assert labels.shape == (48, 64) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
        for folder in ("pure_masks", "masks_object"):
            m = np.array(Image.open(scene_dir / folder / name))
            np.testing.assert_array_equal(m, np.where(labels > 0, 255, 0))
    info = json.loads((scene_dir / "scene.json").read_text())
    assert [o["label"] for o in info["objects"]] == [1, 2, 3, 4]
    assert (scene_dir / "README.md").read_text().startswith("# Demo scene")
    # Every object shows up in some view.
    seen = set()
    for name in names:
        seen |= set(np.unique(np.array(Image.open(scene_dir / "masks_gt" / name))).tolist())
    assert seen == {0, 1, 2, 3, 4}


def test_colmap_model_reads_back(scene_dir: Path):
    cams, images, points = read_model(str(scene_dir / "sparse" / "0"))
    split = json.loads((scene_dir / "split.json").read_text())
    assert len(cams) == 1 and cams[1].model == "PINHOLE"
    assert (cams[1].width, cams[1].height) == (64, 48)
    assert sorted(im.name for im in images.values()) == _names(scene_dir)
    for im in images.values():
        if im.name in split["test"]:
            assert len(im.xys) == 0, "test views must not carry SfM observations"
        else:
            assert len(im.xys) > 20
    assert len(points) > 200
    train_ids = {im.id for im in images.values() if im.name in split["train"]}
    for p in points.values():
        assert len(p.image_ids) >= 2
        assert set(p.image_ids.tolist()) <= train_ids
        assert len(set(p.image_ids.tolist())) == len(p.image_ids)


def test_pycolmap_reads_the_model(scene_dir: Path):
    pycolmap = pytest.importorskip("pycolmap")
    rec = pycolmap.Reconstruction(str(scene_dir / "sparse" / "0"))
    assert rec.num_images() == 7
    assert rec.num_points3D() == len(read_model(str(scene_dir / "sparse" / "0"))[2])


def test_points_reproject_onto_keypoints(scene_dir: Path):
    cams, images, points = read_model(str(scene_dir / "sparse" / "0"))
    n_obs = 0
    for pid, p in points.items():
        for img_id, idx in zip(p.image_ids, p.point2D_idxs):
            im = images[int(img_id)]
            R, t, fx, fy, cx, cy = _camera(cams, im)
            x = R @ p.xyz + t
            uv = np.array([fx * x[0] / x[2] + cx, fy * x[1] / x[2] + cy])
            np.testing.assert_allclose(uv, im.xys[idx], atol=1e-6)
            assert im.point3D_ids[idx] == pid
            n_obs += 1
    # Every keypoint belongs to exactly one track entry.
    assert n_obs == sum(len(im.xys) for im in images.values())


def test_depth_maps_agree_with_points(scene_dir: Path):
    """Camera depth of each observed point vs the depth map at the pixel holding its
    keypoint. Sub-pixel offsets on slanted surfaces and silhouettes allow small misses."""
    cams, images, points = read_model(str(scene_dir / "sparse" / "0"))
    rel = []
    for p in points.values():
        for img_id, idx in zip(p.image_ids, p.point2D_idxs):
            im = images[int(img_id)]
            R, t, *_ = _camera(cams, im)
            z = (R @ p.xyz + t)[2]
            depth = np.load(scene_dir / "depth_gt" / f"{im.name}.npy")
            u, v = np.floor(im.xys[idx]).astype(int)
            rel.append(abs(depth[v, u] - z) / z)
    rel = np.array(rel)
    assert np.median(rel) < 0.01
    assert np.mean(rel < 0.05) > 0.95


def test_depth_unprojects_onto_the_surfaces(scene_dir: Path):
    """Pixel-centre rays scaled by the depth map land on the ground plane (label 0) and on
    the sphere (label 1): exact checks of the depth and camera conventions."""
    cams, images, _ = read_model(str(scene_dir / "sparse" / "0"))
    info = json.loads((scene_dir / "scene.json").read_text())
    sphere = next(o for o in info["objects"] if o["name"] == "sphere")
    for im in images.values():
        R, t, fx, fy, cx, cy = _camera(cams, im)
        depth = np.load(scene_dir / "depth_gt" / f"{im.name}.npy").astype(np.float64)
        labels = np.array(Image.open(scene_dir / "masks_gt" / im.name))
        v, u = np.mgrid[0:48, 0:64] + 0.5
        x_cam = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)
        finite = np.isfinite(depth)
        world = (x_cam[finite] - t) @ R  # R^T (x - t)
        lab = labels[finite]
        ground = world[lab == 0]
        assert np.abs(ground[:, 2]).max() < 1e-5 * depth[finite].max()
        on_sphere = np.linalg.norm(world[lab == sphere["label"]] - sphere["center"], axis=1)
        np.testing.assert_allclose(on_sphere, sphere["radius"], atol=1e-5)


def test_masks_line_up_with_depth_discontinuities(scene_dir: Path):
    """Objects have finite depth, and every large depth jump between neighbouring pixels
    (over 25%: more than a surface at a grazing angle produces at this size) is an instance
    boundary; two different objects never meet without a depth step (none touch)."""
    for name in _names(scene_dir):
        depth = np.load(scene_dir / "depth_gt" / f"{name}.npy").astype(np.float64)
        labels = np.array(Image.open(scene_dir / "masks_gt" / name))
        assert np.isfinite(depth[labels > 0]).all()
        for axis in (0, 1):
            d, lab = np.moveaxis(depth, axis, 0), np.moveaxis(labels, axis, 0)
            d0, d1, l0, l1 = d[:-1], d[1:], lab[:-1], lab[1:]
            both = np.isfinite(d0) & np.isfinite(d1)
            with np.errstate(invalid="ignore"):  # inf - inf off the ground
                ratio = np.where(both, np.abs(d0 - d1) / np.minimum(d0, d1), 0.0)
            assert (l0[ratio > 0.25] != l1[ratio > 0.25]).all()
            between_objects = both & (l0 > 0) & (l1 > 0) & (l0 != l1)
            assert (ratio[between_objects] > 0.05).all()


def test_labels_and_depth_come_from_the_same_hits(scene_dir: Path):
    """Each object cast alone through the written cameras: where the label map says k, the
    depth map is object k's own hit; where it says something else, k is absent or behind."""
    from scripts.make_demo_scene import PinholeView, build_scene

    info = json.loads((scene_dir / "scene.json").read_text())
    scene = build_scene(info["seed"])
    cams, images, _ = read_model(str(scene_dir / "sparse" / "0"))
    for im in images.values():
        R, t, fx, fy, cx, cy = _camera(cams, im)
        view = PinholeView(R, t, fx, fy, cx, cy, 64, 48)
        o, d = view.pixel_rays(np.array([[0.5, 0.5]]))
        depth = np.load(scene_dir / "depth_gt" / f"{im.name}.npy").ravel()
        labels = np.array(Image.open(scene_dir / "masks_gt" / im.name)).ravel()
        for surface in scene.surfaces:
            t_k = surface.intersect(o, d)
            mine = (labels == surface.label) & np.isfinite(depth)
            np.testing.assert_allclose(depth[mine], t_k[mine], rtol=1e-6)
            others = (labels != surface.label) & np.isfinite(t_k)
            assert (t_k[others] >= depth[others] * (1 - 1e-6)).all()


def test_same_seed_same_bytes_other_seed_differs(scene_dir: Path, tmp_path: Path):
    again = tmp_path / "again"
    make_demo_scene(again, **TINY)
    files = sorted(p.relative_to(scene_dir) for p in scene_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (scene_dir / f).read_bytes() == (again / f).read_bytes(), f
    other = tmp_path / "other"
    make_demo_scene(other, **{**TINY, "seed": 4})
    a = np.array(Image.open(scene_dir / "images" / "view_000.png"))
    b = np.array(Image.open(other / "images" / "view_000.png"))
    assert np.abs(a.astype(int) - b).mean() > 5


def test_refuses_non_empty_output_unless_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "scene"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    small = {**TINY, "width": 24, "height": 16, "n_points": 100}
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_demo_scene(out, **small)
    assert (out / "keep.txt").exists()
    rc = main(["-o", str(out), "--width", "24", "--height", "16", "--n_points", "100"])
    assert rc == 1 and capsys.readouterr().err.startswith("error: ")
    make_demo_scene(out, overwrite=True, **small)
    assert not (out / "keep.txt").exists() and (out / "split.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]  # no temporary leftovers


def test_cli_writes_scene(tmp_path: Path):
    out = tmp_path / "cli"
    argv = ["-o", str(out), "--width", "32", "--height", "24", "--n_train", "3"]
    assert main([*argv, "--n_test", "2", "--n_points", "100", "--seed", "1"]) == 0
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) == 3 and len(split["test"]) == 2


@pytest.mark.parametrize("n_train,n_test", [(8, 8), (6, 8), (3, 1), (4, 10)])
def test_split_views_interleaves(n_train: int, n_test: int):
    train, test = split_views(n_train, n_test)
    assert len(train) == n_train and len(test) == n_test
    assert train[0] == 0 and train[-1] == n_train + n_test - 1
    assert sorted(train + test) == list(range(n_train + n_test))
