"""The COLMAP stage on synthetic input: known-pose triangulation, matches.npz, bad input.

No real photos here (see test_colmap_real.py): correspondences are projected from known 3D
points and written straight into a COLMAP database, so the pycolmap recipe (ids matching
the reconstruction, fixed poses) is tested without running SIFT.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")  # absent on the GPU machine
from PIL import Image
from scipy.spatial.transform import Rotation

import sfm  # noqa: F401  (imports zlib before pycolmap; see sfm/__init__.py)
from colmap_match import main as colmap_match_main  # noqa: E402
from scene.colmap_io import ColmapCamera, ColmapImage, ColmapPoint3D, read_model  # noqa: E402
from sfm import colmap_ops  # noqa: E402
from sfm.colmap_ops import ColmapSettings  # noqa: E402
from sfm.errors import SceneError, TooFewMatchesError  # noqa: E402
from sfm.full_sfm import run_full_sfm  # noqa: E402
from sfm.matches import (  # noqa: E402
    TrainMatches,
    build_train_matches,
    check_match_graph,
    format_pair_counts,
)
from sfm.register import assemble_registered_model, spars3r_pose_metrics  # noqa: E402
from sfm.train_only import run_train_only  # noqa: E402

W, H, F = 320, 240, 300.0


@pytest.fixture(autouse=True)
def quiet_colmap():
    pycolmap.logging.minloglevel = 2  # COLMAP's INFO/WARNING lines would flood the test log
    yield
    pycolmap.logging.minloglevel = 0


def synthetic_reconstruction(n_cams: int = 3) -> pycolmap.Reconstruction:
    """Cameras on an arc looking at the origin, one shared PINHOLE camera."""
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(
        pycolmap.Camera(
            model="PINHOLE", width=W, height=H, params=[F, F, W / 2, H / 2], camera_id=1
        )  # fmt: skip
    )
    for k in range(n_cams):
        angle = np.radians(-15 + 15 * k)
        centre = np.array([4 * np.sin(angle), 0.2 * k, -4 * np.cos(angle)])
        z = -centre / np.linalg.norm(centre)
        x = np.cross([0, 1, 0], z)
        x /= np.linalg.norm(x)
        R_c2w = np.stack([x, np.cross(z, x), z], axis=1)
        R = R_c2w.T
        im = pycolmap.Image(name=f"view{k}.png", camera_id=1, image_id=k + 1)
        rec.add_image_with_trivial_frame(im, pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ centre))
    return rec


def project(rec: pycolmap.Reconstruction, image_id: int, X: np.ndarray) -> np.ndarray:
    m = rec.images[image_id].cam_from_world().matrix()
    xc = X @ m[:, :3].T + m[:, 3]
    return F * xc[:, :2] / xc[:, 2:3] + np.array([W / 2, H / 2])


def test_triangulation_with_known_poses_recovers_points(tmp_path):
    rng = np.random.default_rng(0)
    rec = synthetic_reconstruction(3)
    X = rng.uniform(-1, 1, (60, 3))
    ids = sorted(rec.images)
    db_path = str(tmp_path / "database.db")
    colmap_ops.write_database_from_reconstruction(db_path, rec, ids)
    db = pycolmap.Database.open(db_path)
    kps = {}
    for i in ids:
        # Keypoint k of every image observes point k (plus unmatched clutter at the end).
        xy = np.concatenate([project(rec, i, X), rng.uniform(0, [W, H], (10, 2))])
        kps[i] = xy
        db.write_keypoints(i, xy.astype(np.float32))
    for a in ids:
        for b in ids:
            if a < b:
                g = pycolmap.TwoViewGeometry()
                g.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
                g.inlier_matches = np.stack([np.arange(60), np.arange(60)], 1).astype(np.uint32)
                db.write_two_view_geometry(a, b, g)
    db.close()
    before = {i: rec.images[i].cam_from_world().matrix() for i in ids}
    tri = colmap_ops.triangulate_known_poses(
        rec, db_path, str(tmp_path), str(tmp_path / "sparse"), ColmapSettings()
    )
    assert tri.num_points3D() == 60
    for i in ids:  # poses fixed
        np.testing.assert_allclose(tri.images[i].cam_from_world().matrix(), before[i], atol=1e-12)
    for p in tri.points3D.values():
        k = {el.point2D_idx for el in p.track.elements}
        assert len(k) == 1 and len(p.track.elements) == 3  # one point, seen by all 3 views
        np.testing.assert_allclose(p.xyz, X[k.pop()], atol=1e-6)
    assert tri.compute_mean_reprojection_error() < 1e-3  # keypoints are float32
    # The matches export reads the same database back.
    inl = colmap_ops.read_inlier_matches(db_path, ids)
    assert {k: len(m) for k, (m, _) in inl.items()} == {(1, 2): 60, (1, 3): 60, (2, 3): 60}
    xy = colmap_ops.read_keypoints_xy(db_path, ids)
    np.testing.assert_allclose(xy[2], kps[2], atol=1e-3)


def test_matches_roundtrip_and_pair_order(tmp_path):
    rng = np.random.default_rng(1)
    names = ["b.png", "a.png", "c.png"]  # the order given is kept
    name_to_id = {"b.png": 7, "a.png": 3, "c.png": 5}
    kps = {i: rng.uniform(0, 100, (20, 2)) for i in (3, 5, 7)}
    inliers = {
        (3, 7): (np.array([[0, 1], [2, 3]]), 2),  # a-b, stored with the smaller id first
        (5, 7): (np.array([[4, 5]]), 2),
        (3, 5): (np.zeros((0, 2), np.int64), 0),
    }
    sizes = {n: (100, 80) for n in names}
    tm = build_train_matches(names, sizes, name_to_id, kps, inliers)
    path = str(tmp_path / "matches.npz")
    tm.save(path)
    back = TrainMatches.load(path)
    assert back.names == names
    assert back.pair_counts() == {("b.png", "a.png"): 2, ("b.png", "c.png"): 1,
                                  ("a.png", "c.png"): 0}  # fmt: skip
    xb, xa = back.get("b.png", "a.png")
    np.testing.assert_allclose(xb, kps[7][[1, 3]], atol=1e-4)
    np.testing.assert_allclose(xa, kps[3][[0, 2]], atol=1e-4)
    xa2, xb2 = back.get("a.png", "b.png")  # reversed order swaps the arrays
    np.testing.assert_array_equal(xa2, xa)
    np.testing.assert_array_equal(xb2, xb)
    np.testing.assert_array_equal(back.sizes, [[100, 80]] * 3)
    assert not [f for f in os.listdir(tmp_path) if f != "matches.npz"]  # no temp file left


def test_match_graph_checks():
    names = ["a", "b", "c"]
    ok = {("a", "b"): 100, ("a", "c"): 40, ("b", "c"): 0}
    assert check_match_graph(ok, names, 15) is None
    lonely = {("a", "b"): 100, ("a", "c"): 3, ("b", "c"): 0}
    assert "c has no pair with >= 15" in check_match_graph(lonely, names, 15)
    four = ["a", "b", "c", "d"]
    split = {("a", "b"): 50, ("c", "d"): 50, ("a", "c"): 0, ("a", "d"): 1, ("b", "c"): 0,
             ("b", "d"): 0}  # fmt: skip
    assert "2 unconnected groups" in check_match_graph(split, four, 15)
    assert check_match_graph(split, four, 15, connected=False) is None  # known poses
    assert format_pair_counts(lonely).startswith("b-c: 0, a-c: 3")


def _noise_scene(tmp_path, n: int = 2, sizes=None) -> tuple[str, pycolmap.Reconstruction]:
    """A scene folder whose images are independent noise: SIFT fires, nothing matches."""
    rng = np.random.default_rng(2)
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    rec = synthetic_reconstruction(n)
    for k in range(n):
        w, h = sizes[k] if sizes else (W, H)
        img = (rng.random((h, w)) * 255).astype(np.uint8)
        Image.fromarray(img).resize((w, h)).save(scene / "images" / f"view{k}.png")
    os.makedirs(scene / "sparse" / "0")
    rec.write(str(scene / "sparse" / "0"))
    return str(scene), rec


def test_too_few_matches_is_one_clear_error(tmp_path):
    scene, rec = _noise_scene(tmp_path)
    out = os.path.join(scene, "colmap_2views")
    with pytest.raises(TooFewMatchesError) as exc:
        run_train_only(rec, os.path.join(scene, "images"), ["view0.png", "view1.png"], out,
                       ColmapSettings(max_image_size=320, max_num_features=500))  # fmt: skip
    msg = str(exc.value)
    assert "\n" not in msg
    assert "view0.png-view1.png:" in msg and "--n_views" in msg and "--train_views" in msg
    assert list(exc.value.pair_counts) == [("view0.png", "view1.png")]


def test_cli_bad_inputs(tmp_path, capsys):
    scene, _ = _noise_scene(tmp_path)
    argv = ["-s", scene, "--n_views", "2", "--split_protocol", "custom",
            "--train_views", "view0.png", "view1.png", "--max_image_size", "320",
            "--max_num_features", "500"]  # fmt: skip
    # Too few matches: exit 1, one line, and no half-written output folder.
    assert colmap_match_main(argv) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]  # not tqdm
    assert len(err) == 1 and err[0].startswith("error: too few matches")
    assert not [d for d in os.listdir(scene) if d.startswith("colmap_")]
    # An existing output folder is refused without --overwrite.
    os.makedirs(os.path.join(scene, "colmap_2views"))
    assert colmap_match_main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    # A training view that is not in the images folder.
    argv_missing = argv[:7] + ["nope.png", "view1.png"] + argv[9:] + ["--overwrite"]
    assert colmap_match_main(argv_missing) == 1
    assert "nope.png" in capsys.readouterr().err
    # Missing scene folder.
    assert colmap_match_main(["-s", str(tmp_path / "missing")]) == 1
    assert "no such scene folder" in capsys.readouterr().err


def test_unreadable_image_is_named(tmp_path):
    scene, rec = _noise_scene(tmp_path)
    with open(os.path.join(scene, "images", "view1.png"), "wb") as f:
        f.write(b"not a png")
    with pytest.raises(SceneError, match="view1.png: unreadable image"):
        run_train_only(rec, os.path.join(scene, "images"), ["view0.png", "view1.png"],
                       os.path.join(scene, "out"), ColmapSettings())  # fmt: skip


def test_image_size_must_match_model(tmp_path):
    scene, rec = _noise_scene(tmp_path, sizes=[(W, H), (W // 2, H // 2)])
    with pytest.raises(SceneError, match=r"view1.png: image is 160x120 but its camera"):
        run_train_only(rec, os.path.join(scene, "images"), ["view0.png", "view1.png"],
                       os.path.join(scene, "out"), ColmapSettings())  # fmt: skip


def test_full_sfm_refuses_mixed_sizes_under_one_camera(tmp_path):
    scene = tmp_path / "mixed"
    (scene / "images").mkdir(parents=True)
    for k, size in enumerate([(64, 48), (64, 48), (48, 64)]):
        Image.new("RGB", size).save(scene / "images" / f"im{k}.png")
    with pytest.raises(SceneError, match="different sizes under one camera: 64x48"):
        run_full_sfm(str(scene), "images", ColmapSettings(camera_mode="single"))
    assert sorted(os.listdir(scene)) == ["images"]  # nothing written


def test_full_sfm_refuses_stale_images_next_to_input(tmp_path):
    scene = tmp_path / "s"
    for sub in ("input", "images"):
        (scene / sub).mkdir(parents=True)
        Image.new("RGB", (32, 24)).save(scene / sub / "a.png")
    with pytest.raises(SceneError, match="images: exists next to input/.*--overwrite"):
        run_full_sfm(str(scene), "images", ColmapSettings())


def test_assemble_registered_model_adds_tests_and_drops():
    cams = {1: ColmapCamera(1, "PINHOLE", 100, 80, np.array([90.0, 90, 50, 40]))}
    imgs = {
        i: ColmapImage(
            i,
            np.array([1.0, 0, 0, 0]),
            np.array([i, 0, 0.0]),
            1,
            f"t{i}.png",
            np.zeros((2, 2)),
            np.array([10, 11]),
        )  # fmt: skip
        for i in (1, 2, 3)
    }
    pts = {
        10: ColmapPoint3D(
            10, np.zeros(3), np.zeros(3, np.uint8), 0.1, np.array([1, 2, 3]), np.array([0, 0, 0])
        ),  # fmt: skip
        11: ColmapPoint3D(
            11, np.ones(3), np.zeros(3, np.uint8), 0.1, np.array([1, 3]), np.array([1, 1])
        ),  # fmt: skip
    }
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_euler("y", 20, degrees=True).as_matrix()
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    other = ColmapCamera(9, "PINHOLE", 120, 80, np.array([100.0, 100, 60, 40]))
    c, i, p = assemble_registered_model(cams, imgs, pts, {"x.png": c2w}, {"x.png": other},
                                        ["t3.png"])  # fmt: skip
    assert sorted(im.name for im in i.values()) == ["t1.png", "t2.png", "x.png"]
    assert list(p) == [10]  # point 11 lost its second view with t3
    np.testing.assert_array_equal(p[10].image_ids, [1, 2])
    assert i[1].point3D_ids.tolist() == [10, -1]  # dangling observation cleared
    new = next(im for im in i.values() if im.name == "x.png")
    assert c[new.camera_id].width == 120 and len(c) == 2
    R = new.rotmat()
    np.testing.assert_allclose(R.T, c2w[:3, :3], atol=1e-12)
    np.testing.assert_allclose(-R.T @ new.tvec, c2w[:3, 3], atol=1e-12)
    m = spars3r_pose_metrics(np.stack([c2w, np.eye(4)]), np.stack([c2w, np.eye(4)]))
    assert max(m.values()) < 1e-9 and set(m) == {"RPE_trans_x100", "RPE_rot_deg", "ATE"}


def test_written_models_read_back(tmp_path):
    rec = synthetic_reconstruction(2)
    rec.write(str(tmp_path))
    cams, imgs, _ = read_model(str(tmp_path))  # numpy reader agrees with pycolmap's writer
    assert cams[1].model == "PINHOLE" and sorted(im.name for im in imgs.values()) == [
        "view0.png", "view1.png"]  # fmt: skip
