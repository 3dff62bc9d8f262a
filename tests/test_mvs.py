"""Dense initialisation (mvs/): plane sweep, consistency check, fusion, the stage's CLI."""

from __future__ import annotations

import contextlib
import io
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvs.__main__ import main as mvs_main
from mvs.fusion import backproject, check_consistency, project, voxel_downsample
from mvs.plane_sweep import MVSWarning, StereoView, SweepSettings, plane_sweep_depth
from tests.conftest import require_scene
from tests.scene_fixtures import make_colmap_scene

H, W, F_PX = 48, 64, 60.0
# The plane n . X = D (world), tilted so that depth varies over the image.
PLANE_N = np.array([0.15, -0.1, 1.0]) / np.linalg.norm([0.15, -0.1, 1.0])
PLANE_D = 4.0


def intrinsics() -> torch.Tensor:
    return torch.tensor([[F_PX, 0.0, W / 2], [0.0, F_PX, H / 2], [0.0, 0.0, 1.0]])


def camera_at(x: float, y: float = 0.0, yaw_deg: float = 0.0) -> torch.Tensor:
    """[4, 4] world-to-camera of a camera at (x, y, 0) looking along +z (turned by yaw)."""
    a = math.radians(yaw_deg)
    R = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ np.array([x, y, 0.0])
    return torch.tensor(w2c, dtype=torch.float32)


def plane_depth(K: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """[H, W] exact camera z of the plane (ray-plane intersection at pixel centres)."""
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    c2w = torch.linalg.inv(w2c)
    n = torch.tensor(PLANE_N, dtype=torch.float32)
    dirs = rays @ c2w[:3, :3].T  # world direction of a ray with camera z = 1
    centre = c2w[:3, 3]
    return (PLANE_D - n @ centre) / (dirs @ n)


def render_plane(K: torch.Tensor, w2c: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
    """[3, H, W] image of the textured plane (texture indexed by world x, y in [-3, 3])."""
    X = backproject(plane_depth(K, w2c), K, w2c)
    grid = (X[..., :2] / 3.0)[None]
    return F.grid_sample(texture[None], grid, mode="bilinear", align_corners=False)[0]


@pytest.fixture
def texture() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(3, 96, 96, generator=g)
    return F.interpolate(coarse[None], size=(384, 384), mode="bilinear")[0]


# --------------------------------------------------------------------------- fusion
def test_consistency_keeps_a_plane_seen_by_three_views_and_rejects_a_lone_view():
    K = intrinsics()
    w2cs = [camera_at(x) for x in (-0.4, 0.0, 0.4)]
    depths = [plane_depth(K, w) for w in w2cs]
    Ks = [K] * 3
    res = check_consistency(1, depths, Ks, w2cs, min_views=2)
    assert res.mask.float().mean() > 0.95  # the centre view sees most pixels in the others
    assert res.n_agree[res.mask].max() == 3
    assert float(np.nanmax(res.reproj_err[res.mask].numpy())) < 1e-2
    # All three must agree: only the overlap of all views survives, still most of it.
    assert check_consistency(1, depths, Ks, w2cs, min_views=3).mask.float().mean() > 0.5

    # View 0 sees a surface 10 % further away than the others: nothing of it is confirmed,
    # and the other two still confirm each other.
    wrong = [depths[0] * 1.1, depths[1], depths[2]]
    assert not check_consistency(0, wrong, Ks, w2cs, min_views=2).mask.any()
    assert check_consistency(2, wrong, Ks, w2cs, min_views=2).mask.float().mean() > 0.5
    assert check_consistency(1, wrong, Ks, w2cs, min_views=3).mask.sum() == 0


def test_voxel_downsample_respects_the_budget():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (20000, 3))
    cols = rng.uniform(0, 1, (20000, 3))
    p, c, voxel = voxel_downsample(pts, cols, 1000)
    assert 800 <= len(p) <= 1000 and voxel > 0
    assert p.min() >= -1 and p.max() <= 1 and c.min() >= 0 and c.max() <= 1
    same, _, v0 = voxel_downsample(pts, cols, 50000)
    assert len(same) == 20000 and v0 == 0.0


# --------------------------------------------------------------------------- plane sweep
def test_plane_sweep_recovers_a_textured_plane(texture):
    K = intrinsics()
    w2cs = [camera_at(-0.8), camera_at(0.0, 0.05), camera_at(0.8)]
    views = [StereoView(f"v{i}", render_plane(K, w, texture), K, w) for i, w in enumerate(w2cs)]
    truth = plane_depth(K, w2cs[1])
    res = plane_sweep_depth(
        views[1], [views[0], views[2]], 2.5, 7.0, SweepSettings(num_planes=96, window=7)
    )
    valid = res.depth > 0
    assert valid.float().mean() > 0.8
    rel = ((res.depth - truth).abs() / truth)[valid]
    assert float(rel.median()) < 0.01
    assert float((rel < 0.03).float().mean()) > 0.9


def test_non_overlapping_views_warn_and_do_not_crash(texture):
    K = intrinsics()
    ref = StereoView("front.png", render_plane(K, camera_at(0.0), texture), K, camera_at(0.0))
    back_w2c = camera_at(0.0, yaw_deg=180.0)  # looks away from the plane
    back = StereoView("back.png", torch.rand(3, H, W), K, back_w2c)
    with pytest.warns(MVSWarning, match="front.png and back.png do not overlap"):
        res = plane_sweep_depth(ref, [back], 2.5, 7.0, SweepSettings(num_planes=16))
    assert res.valid_fraction["back.png"] == 0.0
    assert not (res.depth > 0).any()


# --------------------------------------------------------------------------- the stage
def test_missing_train_only_folder_names_the_command(tmp_path, capsys):
    scene = tmp_path / "scene"
    make_colmap_scene(str(scene), n=6, w=32, h=24)
    with contextlib.redirect_stdout(io.StringIO()):
        rc = mvs_main(["-s", str(scene), "--n_views", "3", "--split_protocol", "llff", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "colmap_3views" in err[0]
    assert f"python colmap_match.py -s {scene} --n_views 3 --split_protocol llff" in err[0]
    assert not (scene / "depth_mvs").exists()


def test_fern_mvs_points_land_on_sift_matches(tmp_path):
    cv2 = pytest.importorskip("cv2")
    src = require_scene("llff_fern")
    from mvs.stage import MVSRequest, load_scene, reader_bounds, stereo_views
    from scripts.prepare_llff import prepare_llff

    out = str(tmp_path / "fern")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        prepare_llff(str(src), out, 8, 3, False)
        scene = load_scene(MVSRequest(out, n_views=3, split_protocol="llff"))  # 504x378
    views = stereo_views(scene.train_cameras, "cpu")
    assert len(views) == 3
    a, b, third = views  # image001, image010, image019
    settings = SweepSettings(num_planes=96)
    depths = []
    for ref, src_view in ((a, b), (b, a)):
        near, far = reader_bounds(scene, ref.name)
        depths.append(plane_sweep_depth(ref, [src_view], near * 0.9, far * 1.1, settings).depth)
    chk = check_consistency(0, depths, [a.K, b.K], [a.w2c, b.w2c], min_views=2)
    depth = torch.where(chk.mask, depths[0], 0.0)
    assert chk.mask.float().mean() > 0.3

    def grey(v: StereoView) -> np.ndarray:
        rgb = (v.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    sift = cv2.SIFT_create()
    kp1, d1 = sift.detectAndCompute(grey(a), None)
    kp2, d2 = sift.detectAndCompute(grey(third), None)
    pairs = cv2.BFMatcher().knnMatch(d1, d2, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < 0.75 * n.distance]
    errors = []
    for m in good:
        x, y = kp1[m.queryIdx].pt  # OpenCV: pixel centres at integers
        col, row = int(x + 0.5), int(y + 0.5)
        if not (0 <= row < depth.shape[0] and 0 <= col < depth.shape[1]) or depth[row, col] <= 0:
            continue
        d = depth[row, col]
        X = backproject(depth, a.K, a.w2c)[row, col]
        uv, z = project(X[None], third.K, third.w2c)
        assert float(z[0]) > 0 and float(d) > 0
        target = torch.tensor(kp2[m.trainIdx].pt) + 0.5
        errors.append(float((uv[0] - target).norm()))
    assert len(errors) >= 50
    # Depth is read at the nearest pixel centre, not at the keypoint: half a pixel of slack.
    print(f"fern: {len(errors)} SIFT matches with depth, median error {np.median(errors):.2f} px")
    assert np.median(errors) < 3.0, np.median(errors)


def test_stage_end_to_end_on_a_synthetic_scene(tmp_path, texture, monkeypatch):
    """The whole stage on the three plane views: files written atomically, report fields."""
    import json
    from dataclasses import replace
    from types import SimpleNamespace

    from mvs.stage import MVSRequest, run_mvs_stage
    from scene.cameras import Camera
    from scene.colmap_io import ColmapCamera, ColmapImage, ColmapPoint3D, write_model
    from scene.errors import SceneError

    K = intrinsics()
    w2cs = [camera_at(-0.35), camera_at(0.0, 0.05), camera_at(0.35), camera_at(0.1)]
    names = ["a.png", "b.png", "c.png", "t.png"]
    cams = []
    for i, (n, w) in enumerate(zip(names, w2cs)):
        wn = w.double().numpy()
        cams.append(
            Camera(i, n, wn[:3, :3].T, wn[:3, 3], F_PX, F_PX, W / 2, H / 2, W, H,
                   render_plane(K, w, texture))
        )  # fmt: skip
    scene_dir = tmp_path / "plane"
    # Train-only SfM points: samples of the plane seen by the three training views.
    X = backproject(plane_depth(K, w2cs[1]), K, w2cs[1])[::6, ::6].reshape(-1, 3).numpy()
    pts = {
        k + 1: ColmapPoint3D(k + 1, x, np.zeros(3, np.uint8), 0.1, np.array([2]), np.array([k]))
        for k, x in enumerate(X)
    }
    uv, _ = project(torch.tensor(X, dtype=torch.float32), K, w2cs[1])
    images = {}
    for i, n in enumerate(names[:3]):
        wn = w2cs[i].double().numpy()
        from scene.colmap_io import rotmat_to_qvec

        xys = uv.numpy() if i == 1 else np.zeros((0, 2))
        ids = np.arange(1, len(X) + 1) if i == 1 else np.zeros(0, np.int64)
        images[i + 1] = ColmapImage(i + 1, rotmat_to_qvec(wn[:3, :3]), wn[:3, 3], 1, n, xys, ids)
    model_dir = scene_dir / "colmap_3views" / "sparse" / "0"
    cam = ColmapCamera(1, "PINHOLE", W, H, np.array([F_PX, F_PX, W / 2, H / 2]))
    write_model({1: cam}, images, pts, str(model_dir), ".bin")
    fake = SimpleNamespace(
        train_cameras=cams[:3],
        test_cameras=cams[3:],
        source_path=str(scene_dir),
        scene_info=SimpleNamespace(extras={}),
    )
    req = MVSRequest(str(scene_dir), n_views=3, num_planes=64, device="cpu", progress=False)
    res = run_mvs_stage(req, scene=fake)
    rep = json.loads((scene_dir / "colmap_3views" / "dense" / "report.json").read_text())
    assert rep["points_after_downsampling"] > 1000
    assert rep["sfm_depth_agreement"]["median_rel_diff"] < 0.01
    assert rep["reprojection_error_px"]["median"] < 0.5
    assert rep["test_coverage"]["per_view"]["t.png"] > 0.5
    meta = json.loads((scene_dir / "depth_mvs" / "meta.json").read_text())
    assert meta["train"] == names[:3] and (meta["width"], meta["height"]) == (W, H)
    d = np.load(scene_dir / "depth_mvs" / "b.png.npy")
    assert d.dtype == np.float32 and d.shape == (H, W)
    assert np.array_equal(d, res.depths["b.png"])
    leftovers = [f for _, _, fs in os.walk(scene_dir) for f in fs if ".tmp" in f]
    assert not leftovers
    with pytest.raises(Exception, match="--overwrite"):
        run_mvs_stage(req, scene=fake)
    # --fill_segments: without masks/ a one-line error naming extract_mask.py; with one mask
    # over each whole view, the holes of the plane are filled and reported.
    fill = replace(req, overwrite=True, fill_segments=True)
    with pytest.raises(SceneError, match="extract_mask.py"):
        run_mvs_stage(fill, scene=fake)
    (scene_dir / "masks").mkdir()
    for n in names[:3]:
        np.savez(scene_dir / "masks" / n.replace(".png", ".npz"), masks=np.ones((1, H, W), bool))
    run_mvs_stage(fill, scene=fake)
    rep2 = json.loads((scene_dir / "colmap_3views" / "dense" / "report.json").read_text())
    assert rep2["points_before_downsampling"] > rep2["points_consistent"]
    assert sum(r["planes"] for r in rep2["segment_fill"].values()) >= 1
    assert rep2["test_coverage"]["per_view"]["t.png"] >= rep["test_coverage"]["per_view"]["t.png"]


def test_sources_are_the_views_facing_most_alike():
    """12 cameras on a circle looking at its centre: each reference sweeps its 4 nearest
    neighbours (the far side shares nothing with it); with 3 views, both others."""
    from mvs.stage import select_sources

    def looking_at_centre(angle: float) -> torch.Tensor:
        centre = torch.tensor([math.sin(angle), 0.0, -math.cos(angle)]) * 4.0
        z = -centre / centre.norm()  # towards the origin
        x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), z)
        x = x / x.norm()
        R = torch.stack([x, torch.linalg.cross(z, x), z])  # rows: camera axes in world
        w2c = torch.eye(4)
        w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
        return w2c

    K = torch.eye(3)
    ring = [StereoView(f"v{i}", torch.zeros(3, 4, 4), K, looking_at_centre(i * math.pi / 6))
            for i in range(12)]  # fmt: skip
    assert sorted(select_sources(ring, 0, 4)) == [1, 2, 10, 11]
    assert sorted(select_sources(ring, 5, 2)) == [4, 6]
    assert select_sources(ring[:3], 1, 4) == [0, 2]


# --------------------------------------------------------------------------- segment fill
def test_segment_fill_recovers_a_plane_and_leaves_a_two_face_segment_empty():
    """A segment on one plane with 6% of its pixels measured is filled with that plane's
    depth; a segment straddling two planes at different depths is not."""
    from mvs.segment_fill import fill_depth

    K = intrinsics()
    truth = plane_depth(K, camera_at(0.0)).numpy()
    measured = np.zeros((H, W), bool)
    measured[2::4, 2::4] = True  # 6% of the pixels, none further than 3 px from a measure
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True
    # The right half: the plane's depth in its upper half, 1.5x further in its lower half.
    two_face = truth.copy()
    two_face[H // 2 :, W // 2 :] *= 1.5
    depth = np.where(measured, two_face, 0.0).astype(np.float32)
    filled, summary = fill_depth(depth, K.double().numpy(), np.stack([left, ~left]))
    hole = left & ~measured
    assert (filled[hole] > 0).all()
    np.testing.assert_allclose(filled[hole], truth[hole], rtol=1e-4)
    assert (filled[~left] == 0).all() and (filled[measured] == 0).all()
    assert summary["planes"] == 1


def test_free_space_check_drops_a_point_floating_in_front_of_a_seen_surface():
    from mvs.segment_fill import free_space_violations

    K, w2c = intrinsics(), camera_at(0.0)
    depth = plane_depth(K, w2c)
    surface = backproject(depth, K, w2c)[H // 2, W // 2]
    ray = surface / surface.norm()
    pts = torch.stack([surface * 0.7, surface + 0.5 * ray, surface])  # in front, behind, on
    bad = free_space_violations(pts, [depth], [K], [w2c], tol=0.03)
    assert bad.tolist() == [True, False, False]
