"""The dense initialisation stage: plane-sweep depth for every training view, consistency
check, fused point cloud, depth maps and a report (``python -m mvs``; docs/COLMAP.md).

Only the training views of the split enter the stereo; the test cameras are used (poses
only) to measure how much of each test image the fused points cover.

Writes, each file through a temporary name:

- ``<scene>/colmap_<N>views/dense/points3D.ply``: fused points (x y z, normals 0, rgb);
- ``<scene>/colmap_<N>views/dense/report.json``: what was kept and how well it agrees;
- ``<scene>/depth_mvs/<image name>.npy``: float32 [H, W] camera z at the training
  resolution, 0 where there is no consistent depth; ``<image name>.mask.png`` (0/255);
  ``meta.json`` ({"n_views", "train", "width", "height", "resolution"}; written last).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from mvs.fusion import (
    backproject,
    check_consistency,
    filter_speckles,
    points_from_depth,
    project,
    voxel_downsample,
)
from mvs.plane_sweep import (
    MVSWarning,
    StereoView,
    SweepSettings,
    depth_range_from_points,
    pick_stereo_device,
    plane_sweep_depth,
    planes_for_step,
)
from mvs.segment_fill import FillSettings, fill_depth, free_space_violations
from priors.io import save_json, save_npy
from scene.colmap_io import read_model
from scene.errors import SceneError
from scene.priors import load_masks_prior
from scene.stage_inputs import (
    SceneViews,
    colmap_command,
    load_training_scene,
    require_train_only_model,
)

DENSE_DIR = "dense"
DEPTH_DIR = "depth_mvs"


@dataclass
class MVSRequest(SceneViews):
    """What ``run_mvs_stage`` does (the CLI flags of ``python -m mvs``)."""

    num_planes: int = 128
    plane_step_px: float = 2.0
    max_planes: int = 512
    speckle_size: int = 50
    window: int = 7
    top_k: int = 2
    min_ncc: float = 0.5
    max_reproj_px: float = 1.0
    max_rel_depth: float = 0.01
    min_views: int = 2
    max_points: int = 100_000
    max_sources: int = 4
    fill_segments: bool = False
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True

    def sweep_settings(self) -> SweepSettings:
        return SweepSettings(
            num_planes=self.num_planes, window=self.window, top_k=self.top_k, min_ncc=self.min_ncc
        )


@dataclass
class MVSResult:
    report: dict
    lines: list[str]
    depths: dict[str, np.ndarray]  # image name -> [H, W] consistent depth (0 = none)


# --------------------------------------------------------------------------- inputs
def train_only_folder(scene_dir: str, n_train: int) -> str:
    return os.path.join(os.path.abspath(scene_dir), f"colmap_{n_train}views")


def load_scene(req: MVSRequest, device: torch.device | str = "cpu"):
    """The project's ``Scene`` for the request's split, at the training resolution."""
    return load_training_scene(req, device)


def stereo_views(cameras, device: torch.device | str) -> list[StereoView]:
    """``StereoView`` records of ``scene.cameras.Camera`` objects (images required)."""
    out = []
    for c in cameras:
        if c.original_image is None:
            raise SceneError(f"{c.image_name}: camera has no image loaded")
        out.append(StereoView(c.image_name, c.original_image, c.K, c.viewmat).to(device))
    return out


def select_sources(views: list[StereoView], i: int, k: int) -> list[int]:
    """The ``k`` views that ``views[i]`` is matched against: those whose viewing direction
    is closest to its own (then the nearest camera centre), among the views facing less
    than 90 degrees away; every other view when there are at most ``k``.

    With 3 views this is every other view. Around an object (12 views 30 degrees apart)
    it keeps the neighbours: the far side shares no pixel with the reference, and
    sweeping it costs as much as sweeping a neighbour.
    """
    others = [j for j in range(len(views)) if j != i]
    if len(others) <= k:
        return others

    def axis_and_centre(v: StereoView) -> tuple[torch.Tensor, torch.Tensor]:
        R, t = v.w2c[:3, :3].double(), v.w2c[:3, 3].double()
        return R[2], -R.T @ t  # viewing direction (camera z in world), centre

    a_i, c_i = axis_and_centre(views[i])
    scored = []
    for j in others:
        a_j, c_j = axis_and_centre(views[j])
        cos = float(a_i @ a_j)
        if cos > 0:
            scored.append((-cos, float(torch.linalg.norm(c_j - c_i)), j))
    scored.sort()
    chosen = [j for *_, j in scored[:k]]
    return chosen or others[:k]


def reader_bounds(scene, name: str) -> tuple[float, float] | None:
    """(near, far) of ``name`` from the reader (LLFF/IDR) or the converters' near_far.json."""
    bounds = scene.scene_info.extras.get("bounds") or {}
    if name in bounds:
        return tuple(float(b) for b in bounds[name])
    path = os.path.join(scene.source_path, "near_far.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                table = json.load(f)
        except (OSError, ValueError) as e:
            raise SceneError(f"{path}: cannot read ({e})") from None
        if name in table:
            near, far = table[name]
            return float(near), float(far)
    return None


def view_depth_range(
    view: StereoView, sfm_points: np.ndarray | None, scene=None
) -> tuple[tuple[float, float], str]:
    """(near, far) of one view and where it came from: the train-only SfM points it sees,
    else the reader's bounds; a ``SceneError`` when neither exists."""
    K = view.K.cpu().double().numpy()
    w2c = view.w2c.cpu().double().numpy()
    rng = depth_range_from_points(sfm_points, K, w2c, view.hw)
    if rng is not None:
        return rng, "sfm"
    if scene is not None:
        b = reader_bounds(scene, view.name)
        if b is not None:
            return (b[0] * 0.9, b[1] * 1.1), "bounds"
    raise SceneError(
        f"{view.name}: no depth range: it sees fewer than 8 train-only SfM points and the "
        "scene has no near/far bounds (poses_bounds.npy, cameras.npz or near_far.json)"
    )


# --------------------------------------------------------------------------- statistics
def sfm_depth_agreement(
    depths: dict[str, np.ndarray], views: list[StereoView], model
) -> dict[str, float | int]:
    """Relative difference |d_mvs - z_sfm| / z_sfm at the SfM points' observed pixels.

    Args:
        depths: image name -> [H, W] consistent MVS depth (0 = none).
        model: (cameras, images, points) of the train-only COLMAP model.
    """
    cams, ims, pts = model
    by_name = {v.name: v for v in views}
    rel = []
    n_obs = 0
    for im in ims.values():
        v = by_name.get(im.name)
        if v is None or im.name not in depths or len(im.xys) == 0:
            continue
        d = depths[im.name]
        h, w = d.shape
        cam = cams[im.camera_id]
        sx, sy = w / cam.width, h / cam.height
        w2c = v.w2c.cpu().double().numpy()
        for xy, pid in zip(im.xys, im.point3D_ids):
            if pid < 0 or pid not in pts:
                continue
            n_obs += 1
            col, row = int(xy[0] * sx), int(xy[1] * sy)
            if not (0 <= col < w and 0 <= row < h) or d[row, col] <= 0:
                continue
            z = float(w2c[2, :3] @ pts[pid].xyz + w2c[2, 3])
            if z > 0:
                rel.append(abs(d[row, col] - z) / z)
    rel = np.asarray(rel)
    return {
        "observations": n_obs,
        "with_mvs_depth": len(rel),
        "median_rel_diff": float(np.median(rel)) if len(rel) else None,
        "mean_rel_diff": float(rel.mean()) if len(rel) else None,
        "frac_within_5pct": float((rel < 0.05).mean()) if len(rel) else None,
    }


def coverage(points: np.ndarray, cameras, cell: int = 4) -> dict[str, float]:
    """Fraction of each camera's ``cell`` x ``cell`` pixel cells hit by a projected point
    (poses only: no occlusion test)."""
    out = {}
    P = torch.as_tensor(points, dtype=torch.float32)
    for c in cameras:
        uv, z = project(P, c.K.cpu(), c.viewmat.cpu())
        w, h = c.image_width, c.image_height
        ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        cw, ch = -(-w // cell), -(-h // cell)
        cells = (uv[ok, 1] // cell).long() * cw + (uv[ok, 0] // cell).long()
        out[c.image_name] = float(len(torch.unique(cells))) / (cw * ch)
    return out


# --------------------------------------------------------------------------- writing
def _write_png(path: str, mask: np.ndarray) -> None:
    from PIL import Image

    tmp = path + ".tmp"
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def write_depth_maps(
    scene_dir: str, depths: dict[str, np.ndarray], n_views: int, resolution: int
) -> str:
    """``depth_mvs/``: the maps, their masks, then meta.json (last, so that a run cut short
    leaves no meta.json claiming maps it did not write)."""
    folder = os.path.join(scene_dir, DEPTH_DIR)
    os.makedirs(folder, exist_ok=True)
    meta = os.path.join(folder, "meta.json")
    if os.path.exists(meta):
        os.remove(meta)
    names = sorted(depths)
    for name in names:
        base = os.path.join(folder, name)
        os.makedirs(os.path.dirname(base), exist_ok=True)
        save_npy(base + ".npy", depths[name].astype(np.float32))
        _write_png(base + ".mask.png", depths[name] > 0)
    h, w = depths[names[0]].shape
    meta_data = {"n_views": n_views, "train": names, "width": w, "height": h,
                 "resolution": resolution}  # fmt: skip
    save_json(meta, meta_data, indent=1)
    return folder


# --------------------------------------------------------------------------- segment fill
def masks_file(scene_dir: str, name: str) -> str:
    """``masks/<stem>.npz`` of one view; a ``SceneError`` naming extract_mask.py if absent."""
    path = os.path.join(scene_dir, "masks", os.path.splitext(name)[0] + ".npz")
    if not os.path.isfile(path):
        raise SceneError(
            f"{path}: no masks for --fill_segments; run python extract_mask.py -s "
            f"{scene_dir} first (SAM 2, or --mode auto for the classical backend)"
        )
    return path


def view_masks_at(scene_dir: str, name: str, hw: tuple[int, int]) -> np.ndarray:
    """[S, H, W] bool: ``masks/<stem>.npz`` of one view at ``hw``, as training reads it
    (``scene.priors.load_masks_prior``: nearest resize, another aspect ratio refused)."""
    return load_masks_prior(masks_file(scene_dir, name), *hw)[0].numpy()


def segment_fill_points(
    scene_dir: str,
    views: list[StereoView],
    consistent: list[torch.Tensor],  # [H, W] each, 0 = none
    settings: FillSettings = FillSettings(),
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Points [M, 3] and colours [M, 3] of every view's segment-planar fill
    (mvs/segment_fill.py) that no other view sees through, and a report per view."""
    pts, cols, report = [], [], {}
    for i, v in enumerate(views):
        masks = view_masks_at(scene_dir, v.name, v.hw)
        K = v.K.cpu().double().numpy()
        filled, summary = fill_depth(consistent[i].cpu().numpy(), K, masks, settings, seed=i)
        depth = torch.from_numpy(filled).to(consistent[i].device)
        mask = depth > 0
        X = backproject(depth, v.K, v.w2c)[mask]
        others = [j for j in range(len(views)) if j != i]
        bad = free_space_violations(
            X, [consistent[j] for j in others], [views[j].K for j in others],
            [views[j].w2c for j in others], settings.free_space_tol,
        )  # fmt: skip
        keep = ~bad
        pts.append(X[keep].cpu().numpy().astype(np.float64))
        cols.append(v.image.permute(1, 2, 0)[mask][keep].cpu().numpy().astype(np.float64))
        summary["free_space_rejected"] = float(bad.float().mean()) if len(bad) else 0.0
        summary["points"] = int(keep.sum())
        report[v.name] = summary
    return np.concatenate(pts), np.concatenate(cols), report


# --------------------------------------------------------------------------- the stage
def _require_model(req: MVSRequest, n_train: int) -> str:
    return require_train_only_model(req, n_train, "train-only SfM points set the depth range")


def run_mvs_stage(req: MVSRequest, scene=None) -> MVSResult:
    """Run the dense stage for ``req`` (see the module docstring); ``scene`` may be given
    to reuse a loaded ``Scene`` (its training cameras must hold their images)."""
    t0 = time.time()
    scene_dir = os.path.abspath(req.scene_dir)
    if not os.path.isdir(scene_dir):
        raise SceneError(f"{scene_dir}: no such scene folder (-s)")
    if req.max_points < 1:
        raise SceneError(f"--max_points {req.max_points}: must be >= 1")
    if req.max_sources < 1:
        raise SceneError(f"--max_sources {req.max_sources}: must be >= 1")
    try:
        device = pick_stereo_device(req.device)
    except RuntimeError as e:
        raise SceneError(str(e)) from None
    n_asked = len(req.train_views) or req.n_views
    if scene is None and n_asked:  # fail before loading any image
        _require_model(req, n_asked)
    scene = scene or load_scene(req, "cpu")
    train = scene.train_cameras
    if len(train) < 2:
        raise SceneError(
            f"{scene_dir}: the dense stage needs >= 2 training views, got {len(train)}"
        )
    if req.fill_segments:  # before the sweep, not after it
        for c in train:
            masks_file(scene_dir, c.image_name)
    folder = train_only_folder(scene_dir, len(train))
    model_dir = _require_model(req, len(train))
    dense_dir = os.path.join(folder, DENSE_DIR)
    ply_path = os.path.join(dense_dir, "points3D.ply")
    if os.path.exists(ply_path) and not req.overwrite:
        raise SceneError(f"{ply_path}: exists already; pass --overwrite to rebuild it")
    try:
        model = read_model(model_dir)
    except (ValueError, OSError) as e:
        raise SceneError(f"{model_dir}: {e}; rerun {colmap_command(req, len(train))}") from None
    model_names = {im.name for im in model[1].values()}
    if model_names != {c.image_name for c in train}:
        raise SceneError(
            f"{model_dir} was built for other training views; rerun "
            f"{colmap_command(req, len(train))} --overwrite"
        )
    sfm_xyz = np.stack([p.xyz for p in model[2].values()]) if model[2] else None

    views = stereo_views(train, device)
    ranges, range_src = [], []
    for v in views:
        rng, src = view_depth_range(v, sfm_xyz, scene)
        ranges.append(rng)
        range_src.append(src)

    settings = req.sweep_settings()
    n_planes = []
    source_ids = [select_sources(views, i, req.max_sources) for i in range(len(views))]
    for i, v in enumerate(views):
        n = settings.num_planes
        if req.plane_step_px > 0:
            others = [views[j] for j in source_ids[i]]
            n = max(n, planes_for_step(v, others, *ranges[i], req.plane_step_px))
        n_planes.append(min(n, max(req.max_planes, settings.num_planes)))
    results = []
    warn_lines: list[str] = []
    bar = tqdm(
        total=sum(n_planes),
        desc="plane sweep",
        unit="plane",
        disable=not req.progress,
    )
    for i, ref in enumerate(views):
        sources = [views[j] for j in source_ids[i]]
        bar.set_postfix_str(ref.name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MVSWarning)
            s_i = replace(settings, num_planes=n_planes[i])
            res = plane_sweep_depth(ref, sources, *ranges[i], s_i, progress=bar.update)
        for w in caught:
            warn_lines.append(str(w.message))
        results.append(res)
    bar.close()

    depths_t = [
        torch.from_numpy(
            filter_speckles(r.depth.cpu().numpy(), *ranges[i], n_planes[i], req.speckle_size)
        ).to(device)
        for i, r in enumerate(results)
    ]
    Ks = [v.K for v in views]
    w2cs = [v.w2c for v in views]
    per_view, all_p, all_c, errs = {}, [], [], []
    consistent: list[torch.Tensor] = []  # [H, W] per view, 0 = none
    for i, v in enumerate(views):
        chk = check_consistency(
            i, depths_t, Ks, w2cs, req.max_reproj_px, req.max_rel_depth, req.min_views
        )
        h, w = v.hw
        stereo = float((results[i].depth > 0).float().mean())
        despeckled = float((depths_t[i] > 0).float().mean())
        kept = float(chk.mask.float().mean())
        per_view[v.name] = {
            "near": ranges[i][0],
            "far": ranges[i][1],
            "range_from": range_src[i],
            "planes": n_planes[i],
            "stereo_fraction": stereo,
            "after_speckle_filter": despeckled,
            "kept_fraction": kept,
            "source_overlap": results[i].valid_fraction,
        }
        if kept < 0.01:
            others = ", ".join(s.name for s in views if s is not v)
            warn_lines.append(
                f"{v.name}: only {100 * kept:.2f}% of its pixels kept by the consistency check "
                f"against {others}; do these views overlap?"
            )
        errs.append(chk.reproj_err[chk.mask].cpu().numpy())
        p, c = points_from_depth(depths_t[i], chk.mask, v.K, v.w2c, v.image)
        all_p.append(p)
        all_c.append(c)
        consistent.append(torch.where(chk.mask, depths_t[i], 0))
    for line in warn_lines:
        warnings.warn(line, MVSWarning, stacklevel=2)

    depths = {v.name: d.cpu().numpy().astype(np.float32) for v, d in zip(views, consistent)}
    n_consistent = sum(len(p) for p in all_p)
    fill_report: dict = {}
    if req.fill_segments:
        fill_p, fill_c, fill_report = segment_fill_points(scene_dir, views, consistent)
        all_p.append(fill_p)
        all_c.append(fill_c)
    points = np.concatenate(all_p)
    colors = np.concatenate(all_c)
    n_before = len(points)
    if n_before:
        pts_ds, col_ds, voxel = voxel_downsample(points, colors, req.max_points)
    else:
        pts_ds, col_ds, voxel = points, colors, 0.0
    err = np.concatenate(errs) if errs else np.zeros(0)
    err = err[np.isfinite(err)]
    agreement = sfm_depth_agreement(depths, views, model)
    cover = coverage(pts_ds, scene.test_cameras) if len(pts_ds) else {}
    seconds = time.time() - t0

    from scene.points import store_ply

    os.makedirs(dense_dir, exist_ok=True)
    store_ply(ply_path, pts_ds, col_ds)  # normals written as 0 (estimate_normals)
    write_depth_maps(scene_dir, depths, len(views), req.resolution)

    cover_vals = np.array(list(cover.values())) if cover else np.zeros(0)
    report = {
        "scene": scene_dir,
        "train": [v.name for v in views],
        "width": views[0].hw[1],
        "height": views[0].hw[0],
        "points_consistent": int(n_consistent),
        "points_before_downsampling": int(n_before),
        "segment_fill": fill_report,
        "points_after_downsampling": int(len(pts_ds)),
        "voxel_size": voxel,
        "reprojection_error_px": {
            "mean": float(err.mean()) if len(err) else None,
            "median": float(np.median(err)) if len(err) else None,
        },
        "per_view": per_view,
        "sfm_depth_agreement": agreement,
        "test_coverage": {
            "cell_px": 4,
            "mean": float(cover_vals.mean()) if len(cover_vals) else None,
            "min": float(cover_vals.min()) if len(cover_vals) else None,
            "per_view": cover,
        },
        "warnings": warn_lines,
        "seconds": seconds,
        "device": str(device),
        "settings": {k: v for k, v in asdict(req).items() if k not in ("scene_dir", "progress")},
    }
    save_json(os.path.join(dense_dir, "report.json"), report, indent=1)

    def fmt(x, spec):
        return "n/a" if x is None else format(x, spec)

    kept = np.mean([pv["kept_fraction"] for pv in per_view.values()])
    lines = [
        f"dense stage ({len(views)} training views, {views[0].hw[1]}x{views[0].hw[0]}, "
        f"{min(n_planes)}-{max(n_planes)} planes, {device}): {seconds:.1f} s",
        f"  points: {n_consistent} consistent -> {len(pts_ds)} after voxel downsampling "
        f"(mean kept fraction of pixels {100 * kept:.1f}%)",
    ]
    if fill_report:
        filled = np.mean([r["filled_fraction"] for r in fill_report.values()])
        rejected = np.mean([r["free_space_rejected"] for r in fill_report.values()])
        lines.append(
            f"  segment fill: +{n_before - n_consistent} points from "
            f"{sum(r['planes'] for r in fill_report.values())} segment planes (mean filled "
            f"fraction of pixels {100 * filled:.1f}%, {100 * rejected:.1f}% of the filled "
            "points dropped by the free-space check)"
        )
    lines += [
        f"  reprojection error of kept pixels: mean "
        f"{fmt(report['reprojection_error_px']['mean'], '.3f')} px, median "
        f"{fmt(report['reprojection_error_px']['median'], '.3f')} px",
        f"  vs train-only SfM depths: median relative difference "
        f"{fmt(agreement['median_rel_diff'], '.4f')} over {agreement['with_mvs_depth']} of "
        f"{agreement['observations']} observations",
        f"  test-view coverage (4x4 cells): mean {fmt(report['test_coverage']['mean'], '.3f')}, "
        f"min {fmt(report['test_coverage']['min'], '.3f')} over {len(cover)} test views",
        f"wrote {ply_path}, {os.path.join(scene_dir, DEPTH_DIR)}/",
    ]
    lines += [f"warning: {w}" for w in warn_lines]
    return MVSResult(report, lines, depths)
