"""Dense-prior alignment (alignment/ransac.py, dense_prior.py, fusion.py, stage.py): CPU.

The synthetic scene: three neighbouring cameras of a ring looking at an object sphere
(radius 1.2) at the centre, over a ground plane and before a back wall; depth is ray cast
exactly. Each view's prior has
its own depth scale and shift and, inside the object, an extra depth factor of 1.15 (a local
warp that one global transform cannot undo; a similarity about the camera centre, so the
object's own Sim(3) can).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scene_fixtures import look_at, write_image

from alignment.dense_prior import (
    DensePrior,
    backproject,
    load_depth,
    load_pointmap,
    pixel_rays,
)
from alignment.fusion import AlignParams, align_view, select_segments, view_correspondences
from alignment.ransac import ransac_affine_1d, ransac_sim3, umeyama_batched, weighted_umeyama
from alignment.registration import Sim3
from alignment.stage import UNIT_DIVISOR
from scene.errors import SceneError

W, H, F = 96, 72, 80.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])
OBJ_R, WALL, WARP = 1.2, 3.0, 1.15
WALL_N = np.array([np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0])  # faces the cameras


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def ray_cast(w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact z-depth [H, W] of the scene and the object mask [H, W].

    Scene: the object sphere (radius OBJ_R at the origin), a ground plane z = -1 and a back
    wall n.x = -WALL; the background spans the object's depths, so one depth scale and
    shift cannot absorb the object's warp.
    """
    R, t = w2c[:3, :3], w2c[:3, 3]
    c = -R.T @ t
    d = pixel_rays(K, H, W) @ R  # [H, W, 3] world directions with camera z = 1
    a = (d * d).sum(-1)
    b = 2 * (d @ c)
    s_obj = np.full((H, W), np.inf)
    disc = b * b - 4 * a * (c @ c - OBJ_R**2)
    hit = disc >= 0
    s_obj[hit] = ((-b - np.sqrt(np.maximum(disc, 0))) / (2 * a))[hit]
    with np.errstate(divide="ignore", invalid="ignore"):
        s_wall = (-WALL - WALL_N @ c) / (d @ WALL_N)
        s_ground = (-1.0 - c[2]) / d[..., 2]
    s_wall = np.where(s_wall > 0, s_wall, np.inf)
    s_ground = np.where(s_ground > 0, s_ground, np.inf)
    s_bg = np.minimum(s_wall, s_ground)
    obj = s_obj < s_bg
    return np.where(obj, s_obj, s_bg), obj


def surface_distance(X: np.ndarray) -> np.ndarray:
    """[N] distance of points [N, 3] to the nearest surface of the scene."""
    return np.minimum.reduce(
        [
            np.abs(np.linalg.norm(X, axis=1) - OBJ_R),
            np.abs(X[:, 2] + 1.0),
            np.abs(X @ WALL_N + WALL),
        ]
    )


def make_views(n: int = 3, seed: int = 0, n_kp: int = 300, noise: float = 0.0):
    """Per view: w2c, true depth, object mask, keypoints (rows, cols) and SfM points."""
    rng = np.random.default_rng(seed)
    views = []
    for i in range(n):
        a = 2 * np.pi * i / 12  # neighbouring cameras of a ring, as a sparse capture
        R, t = look_at(np.array([4 * np.cos(a), 4 * np.sin(a), 1.0]))
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = R, t
        depth, obj = ray_cast(w2c)
        flat = rng.choice(H * W, n_kp, replace=False)
        rows, cols = flat // W, flat % W
        X = backproject(depth, K, w2c)[rows, cols]
        X = X + rng.normal(scale=noise, size=X.shape)
        views.append(dict(w2c=w2c, depth=depth, obj=obj, rows=rows, cols=cols, X=X))
    return views


def view_masks(obj: np.ndarray) -> np.ndarray:
    """Segments as an automatic mask generator gives them: nested and overlapping."""
    full = np.ones_like(obj)
    left = np.zeros_like(obj)
    left[:, : W // 2] = True
    return np.stack([full, ~obj, left, obj, obj & left])


def corrupt(depth, obj, rng):
    s, b = rng.uniform(0.6, 1.6), rng.uniform(-1.0, 1.0)
    return s * depth * np.where(obj, WARP, 1.0) + b


def correspondences(v, valid):
    ids = np.arange(len(v["rows"])) + 1
    xys = np.stack([v["cols"] + 0.5, v["rows"] + 0.5], 1)
    pts = {int(i): x for i, x in zip(ids, v["X"])}
    return view_correspondences(xys, ids, pts, (W, H), (W, H), valid)


def scene_scale(views) -> float:
    return float(np.median(np.concatenate([v["depth"][v["rows"], v["cols"]] for v in views])))


# ----------------------------------------------------------------------------- RANSAC
def test_ransac_sim3_recovers_similarity_with_40pct_outliers():
    rng = np.random.default_rng(1)
    n = 500
    src = rng.normal(size=(n, 3)) * 3
    T = Sim3(2.7, random_rotation(rng), rng.normal(size=3) * 5)
    dst = T.apply(src)
    bad = rng.random(n) < 0.4
    dst[bad] = rng.normal(size=(bad.sum(), 3)) * 10
    res = ransac_sim3(src, dst, inlier_thresh=0.05, rng=rng)
    assert res.transform is not None
    assert abs(res.transform.scale - T.scale) < 1e-6
    assert np.abs(res.transform.R - T.R).max() < 1e-6
    assert np.abs(res.transform.t - T.t).max() < 1e-6
    assert np.array_equal(res.inliers, ~bad)
    assert res.hypotheses <= 3000


def test_ransac_early_stop_on_clean_data_and_failure_on_noise():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(200, 3))
    T = Sim3(0.5, random_rotation(rng), np.ones(3))
    res = ransac_sim3(src, T.apply(src), 1e-3, rng=rng)
    assert res.hypotheses < 3000 and res.inlier_ratio == 1.0
    junk = ransac_sim3(src, rng.normal(size=(200, 3)) * 100, 1e-6, rng=rng, iterations=200)
    assert junk.transform is None and not junk.inliers.any()


def test_umeyama_batched_is_proper_and_weighted():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(4, 12, 3))
    Ts = [Sim3(rng.uniform(0.5, 2), random_rotation(rng), rng.normal(size=3)) for _ in range(4)]
    dst = np.stack([T.apply(s) for T, s in zip(Ts, src)])
    s, R, t = umeyama_batched(src, dst)
    for i, T in enumerate(Ts):
        assert abs(s[i] - T.scale) < 1e-9 and np.abs(R[i] - T.R).max() < 1e-9
    assert np.allclose(np.linalg.det(R), 1.0)
    # Zero weight on corrupted points: the weighted fit ignores them.
    d0 = dst[0].copy()
    d0[:3] += 50
    w = np.ones(12)
    w[:3] = 0
    T0 = weighted_umeyama(src[0], d0, w)
    assert abs(T0.scale - Ts[0].scale) < 1e-9


def test_ransac_affine_1d():
    rng = np.random.default_rng(4)
    x = rng.uniform(1, 10, 300)
    y = 1.7 * x - 0.4
    y[:100] += rng.uniform(1, 5, 100)
    a, b, inl = ransac_affine_1d(x, y, 1e-3, rng=rng)
    assert abs(a - 1.7) < 1e-9 and abs(b + 0.4) < 1e-9
    assert inl[100:].all() and not inl[:100].any()


# ------------------------------------------------------------------------ segments
def test_select_segments_prefers_pure_segment_then_merges_and_disjoins():
    obj = np.zeros((H, W), bool)
    obj[10:40, 20:60] = True
    rng = np.random.default_rng(5)
    flat = rng.choice(H * W, 600, replace=False)
    rows, cols = flat // W, flat % W
    outl = obj[rows, cols]
    masks = view_masks(obj)
    segs = select_segments(masks, rows, cols, outl, 10, 0.5)
    assert len(segs) == 1
    assert np.array_equal(segs[0].mask, obj)  # the object, not the whole image or halves
    assert set(segs[0].sources) >= {3}
    # Two overlapping halves of one outlier region are merged.
    a = np.zeros_like(obj)
    a[10:40, 20:45] = True
    b = np.zeros_like(obj)
    b[10:40, 30:60] = True
    segs = select_segments(np.stack([a, b]), rows, cols, outl, 10, 0.5)
    assert len(segs) == 1 and np.array_equal(segs[0].mask, obj)
    # Below T outliers: no segment.
    assert select_segments(masks, rows, cols, outl & (rows < 12), 10, 0.5) == []


# ------------------------------------------------------------------ synthetic scene
def _align_all(views, semantic: bool, rng, kind="depth"):
    D = scene_scale(views)
    params = AlignParams(unit=D / UNIT_DIVISOR, semantic=semantic, **NO_MEDIAN_RULE)
    out = []
    for i, v in enumerate(views):
        if kind == "depth":
            d = corrupt(v["depth"], v["obj"], rng)
            valid = np.ones((H, W), bool)
            prior = DensePrior(
                "depth_pro", "mem", backproject(d, K, v["w2c"]), valid, valid * 1.0, d
            )
        else:  # a pointmap in its own frame, object warped about the camera centre
            c = np.linalg.inv(v["w2c"])[:3, 3]
            P = backproject(v["depth"], K, v["w2c"])
            P = np.where(v["obj"][..., None], c + WARP * (P - c), P)
            T = Sim3(rng.uniform(0.3, 3), random_rotation(rng), rng.normal(size=3) * 4)
            valid = np.ones((H, W), bool)
            prior = DensePrior("pointmap", "mem", T.apply(P), valid, valid * 1.0, None)
        corr = correspondences(v, prior.valid)
        masks = view_masks(v["obj"])
        out.append(align_view(f"v{i}", prior, corr, K, v["w2c"], masks, params, rng))
    return out, D


# SfM noise per axis, as a fraction of the scene scale: a median 3D residual of about 1.2 %,
# the disagreement of fern's 3-view SfM points with its stereo depth.
SFM_NOISE = 0.008
# SPARS3R skips SOA when the median residual after GFA is below 0.1 units: here 73 % of the
# correspondences fit within it, so the synthetic tests turn that rule off (its own test
# below keeps it on).
NO_MEDIAN_RULE = {"min_median_residual": 0.0}


@pytest.mark.parametrize("kind", ["depth", "pointmap"])
def test_synthetic_scene_aligned_below_one_percent(kind):
    views = make_views(3, seed=0)
    D = scene_scale(views)
    views = make_views(3, seed=0, noise=SFM_NOISE * D)
    res, D = _align_all(views, True, np.random.default_rng(0), kind)
    glob, _ = _align_all(views, False, np.random.default_rng(0), kind)
    for v, a, g in zip(views, res, glob):
        assert a.skipped is None
        truth = backproject(v["depth"], K, v["w2c"])
        err = np.linalg.norm(a.points - truth, axis=-1)[a.valid] / D
        assert np.percentile(err, 99) < 0.01 and err.max() < 0.02, (err.max(), np.median(err))
        # The object is fixed by the semantic step only.
        err_g = np.linalg.norm(g.points - truth, axis=-1)[v["obj"]] / D
        assert np.median(err_g) > 0.05
        assert np.median(np.linalg.norm(a.points - truth, axis=-1)[v["obj"]] / D) < 0.01
        assert a.report["semantic"]["segments_used"] == 1
        assert np.array_equal(a.labels > 0, v["obj"])
        r = a.report["residuals"]
        assert r["semantic"]["mean"] < 0.5 * r["global"]["mean"]


def test_median_rule_skips_semantic_step_and_noise_free_data_is_exact():
    views = make_views(1, seed=0)
    v = views[0]
    D = scene_scale(views)
    d = corrupt(v["depth"], v["obj"], np.random.default_rng(0))
    valid = np.ones((H, W), bool)
    prior = DensePrior("depth_pro", "mem", backproject(d, K, v["w2c"]), valid, valid * 1.0, d)
    corr = correspondences(v, valid)
    masks = view_masks(v["obj"])
    a = align_view("v", prior, corr, K, v["w2c"], masks, AlignParams(unit=D / UNIT_DIVISOR))
    assert a.report["semantic"]["skipped"].startswith("median residual 0.000 < 0.1")
    params = AlignParams(unit=D / UNIT_DIVISOR, **NO_MEDIAN_RULE)  # rule off: exact
    a = align_view("v", prior, corr, K, v["w2c"], masks, params)
    truth = backproject(v["depth"], K, v["w2c"])
    assert np.abs(a.points - truth).max() / D < 1e-6


# ------------------------------------------------------------------------ bad input
def test_too_few_correspondences_skips_the_view():
    v = make_views(1, n_kp=12)[0]
    valid = np.ones((H, W), bool)
    prior = DensePrior(
        "mvs", "mem", backproject(v["depth"], K, v["w2c"]), valid, valid * 1.0, v["depth"]
    )
    a = align_view("v", prior, correspondences(v, valid), K, v["w2c"], None, AlignParams(), None)
    assert a.points is None and "12 correspondences" in a.skipped and "< 20" in a.skipped


def test_depth_loader_masks_resizes_and_rejects(tmp_path):
    d = np.full((36, 48), 2.0, np.float32)
    d[0, 0], d[1, 1], d[2, 2] = np.nan, 0.0, -1.0
    p = str(tmp_path / "a.png.npy")
    np.save(p, d)
    depth, valid, notes = load_depth(p, 72, 96)  # same aspect: resampled with a note
    assert depth.shape == (72, 96) and valid.sum() == 72 * 96 - 3 * 4
    assert any("resampled" in n for n in notes) and any("masked out" in n for n in notes)
    np.save(p, np.ones((40, 40), np.float32))
    with pytest.raises(SceneError, match="a.png.npy is 40x40 .*aspect ratio differs"):
        load_depth(p, 72, 96)
    np.save(p, np.zeros((72, 96), np.float32))
    with pytest.raises(SceneError, match="no finite positive depth"):
        load_depth(p, 72, 96)
    with open(p, "wb") as f:
        f.write(b"junk")
    with pytest.raises(SceneError, match="cannot read"):
        load_depth(p, 72, 96)


def test_pointmap_loader_confidence(tmp_path):
    P = np.random.default_rng(0).normal(size=(36, 48, 3)).astype(np.float32)
    P[0, 0] = np.nan
    np.save(tmp_path / "x.npy", P)
    pts, valid, conf, notes = load_pointmap(str(tmp_path / "x.npy"), 36, 48)
    assert not valid[0, 0] and valid.sum() == 36 * 48 - 1 and "not found" in notes[0]
    c = np.full((36, 48), 3.0, np.float32)
    c[5, 5] = 0.5
    np.save(tmp_path / "x_mask.npy", c)
    pts, valid, conf, _ = load_pointmap(str(tmp_path / "x.npy"), 36, 48, min_confidence=1.0)
    assert not valid[5, 5] and conf[6, 6] == 3.0


# ------------------------------------------------------------------- the stage
def make_scene_folder(root: str, n_train: int = 3, seed: int = 0) -> dict:
    """A COLMAP scene folder: images, sparse/0 (4 views), colmap_3views/sparse/0 (3 train
    views with keypoints), depth_pro/ (corrupted depth) and masks/."""
    from priors.masks import MaskSet, save_mask_set
    from scene.colmap_io import ColmapCamera, ColmapImage, ColmapPoint3D, rotmat_to_qvec
    from scene.colmap_io import write_model as write_colmap

    D = scene_scale(make_views(n_train, seed=seed))
    views = make_views(n_train + 1, seed=seed, n_kp=300, noise=SFM_NOISE * D)
    cams = {1: ColmapCamera(1, "PINHOLE", W, H, np.array([F, F, W / 2, H / 2]))}
    ims_all, ims_train, pts = {}, {}, {}
    rng = np.random.default_rng(seed)
    names = [f"img_{i:03d}.png" for i in range(len(views))]
    for i, (v, name) in enumerate(zip(views, names)):
        write_image(os.path.join(root, "images", name), W, H, seed=i)
        q, t = rotmat_to_qvec(v["w2c"][:3, :3]), v["w2c"][:3, 3]
        ims_all[i + 1] = ColmapImage(i + 1, q, t, 1, name)
        if i == len(views) - 1:
            continue  # the test view
        ids = 1000 * (i + 1) + np.arange(len(v["rows"]))
        xys = np.stack([v["cols"] + 0.5, v["rows"] + 0.5], 1)
        ims_train[i + 1] = ColmapImage(i + 1, q, t, 1, name, xys, ids)
        for k, (pid, X) in enumerate(zip(ids, v["X"])):
            pts[int(pid)] = ColmapPoint3D(
                int(pid),
                X,
                np.array([128, 128, 128], np.uint8),
                0.5,
                np.array([i + 1]),
                np.array([k]),
            )
        os.makedirs(os.path.join(root, "depth_pro"), exist_ok=True)
        np.save(os.path.join(root, "depth_pro", name + ".npy"), corrupt(v["depth"], v["obj"], rng))
        ms = MaskSet(view_masks(v["obj"]), np.ones(5), np.ones(5), np.zeros(5), "classical")
        stem = os.path.splitext(name)[0]
        save_mask_set(
            os.path.join(root, "masks", stem + ".npz"),
            os.path.join(root, "masks", stem + ".png"),
            ms,
        )
    write_colmap(cams, ims_all, {}, os.path.join(root, "sparse", "0"))
    write_colmap(cams, ims_train, pts, os.path.join(root, f"colmap_{n_train}views", "sparse", "0"))
    return {"views": views, "names": names, "train": names[:n_train]}


def test_stage_writes_model_ply_report_and_pngs(tmp_path):
    from alignment.stage import DENSE_ID_START, AlignRequest, run_alignment
    from scene.colmap_io import read_model
    from scene.readers.blender import read_ply_points

    root = str(tmp_path / "scene")
    info = make_scene_folder(root)
    req = AlignRequest(
        root,
        split_protocol="custom",
        train_views=info["train"],
        max_points=8000,
        progress=False,
        params=AlignParams(**NO_MEDIAN_RULE),
    )
    result = run_alignment(req)
    out = os.path.join(root, "alignment")
    cams, ims, pts = read_model(os.path.join(out, "sparse", "0"))
    assert sorted(im.name for im in ims.values()) == info["train"]
    dense_ids = [p for p in pts if p >= DENSE_ID_START]
    assert 0 < len(pts) <= 8000 and len(dense_ids) == len(pts) - 900
    assert min(dense_ids) == DENSE_ID_START and len(pts[DENSE_ID_START].image_ids) == 0
    # Every point lies on the true surfaces (object, ground or wall) to < 1% of the scale.
    xyz = np.stack([pts[p].xyz for p in dense_ids])
    surf = surface_distance(xyz)
    D = scene_scale(info["views"][:3])
    assert np.percentile(surf, 95) / D < 0.01
    pc = read_ply_points(os.path.join(out, "points3D.ply"))
    assert len(pc.points) == len(pts)
    assert np.mean(np.abs(np.linalg.norm(pc.normals, axis=1) - 1) < 1e-3) > 0.9
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["n_skipped"] == 0 and report["train"] == info["train"]
    for name in info["train"]:
        pv = report["per_view"][name]
        assert pv["semantic"]["segments_used"] == 1
        assert set(pv["residuals"]) == {"raw", "depth_fit", "global", "semantic"}
        res = pv["residuals"]
        assert res["semantic"]["mean"] < 0.5 * res["global"]["mean"] < res["raw"]["mean"]
        assert os.path.isfile(os.path.join(out, "residuals", os.path.splitext(name)[0] + ".png"))
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert result.lines[0].startswith("alignment (3 views")


def test_stage_missing_inputs_name_the_command(tmp_path, capsys):
    from alignment.__main__ import main
    from alignment.stage import AlignRequest, run_alignment

    root = str(tmp_path / "scene")
    info = make_scene_folder(root)
    req = AlignRequest(root, n_views=2, progress=False)
    with pytest.raises(SceneError, match="colmap_2views.*colmap_match.py -s .* --n_views 2"):
        run_alignment(req)
    req = AlignRequest(root, split_protocol="custom", train_views=info["train"], prior="mvs")
    with pytest.raises(
        SceneError, match="depth_mvs: no mvs prior folder; make it with: python -m mvs"
    ):
        run_alignment(req)
    assert (
        main(
            [
                "-s",
                root,
                "--train_views",
                *info["train"],
                "--split_protocol",
                "custom",
                "--prior",
                "pointmap",
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MASt3R" in err[0]


def test_stage_skips_a_view_and_reports_it(tmp_path):
    from alignment.stage import AlignRequest, run_alignment

    root = str(tmp_path / "scene")
    info = make_scene_folder(root)
    bad = os.path.join(root, "depth_pro", info["train"][1] + ".npy")
    d = np.load(bad)
    d[:, :] = np.nan
    d[:4, :4] = 5.0  # a few valid pixels: too few correspondences
    np.save(bad, d)
    req = AlignRequest(root, split_protocol="custom", train_views=info["train"], progress=False)
    result = run_alignment(req)
    assert result.report["n_skipped"] == 1
    assert "correspondences" in result.report["skipped"][info["train"][1]]
    assert any(line.startswith(f"{info['train'][1]}: skipped (") for line in result.lines)
