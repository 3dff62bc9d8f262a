"""The dense-prior alignment stage of a scene folder (``python -m alignment``).

Reads the training split's cameras through the project's ``Scene`` (training resolution,
K and world-to-camera), the train-only SfM model ``colmap_<N>views/sparse/0`` (keypoints
with 3D point ids, points), one dense prior per training view (``alignment.dense_prior``)
and, for the semantic step, ``masks/<stem>.npz``. Aligns every view
(``alignment.fusion.align_view``) and writes, each file through a temporary name:

- ``<scene>/alignment/sparse/0/{cameras,images,points3D}.bin``: the train-only model's
  cameras and images as they are, points = its SfM points (ids and tracks kept) plus the
  aligned dense points (ids from 1000000, error 0, empty tracks), voxel-downsampled so that
  the model holds at most ``--max_points`` points;
- ``<scene>/alignment/points3D.ply``: the same points, x y z nx ny nz red green blue
  (float32 / uchar, binary little endian; SfM points take the normal of the nearest dense
  point);
- ``<scene>/alignment/residuals/<stem>.png``: per view, the residual at every
  correspondence after each step (green 0, red >= 2 x the outlier threshold);
- ``<scene>/alignment/report.json`` (written last; a run cut short leaves none):
  thresholds, scene unit, per-view inlier ratios, residuals before and after each step,
  segments, skipped views with the reason.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from alignment.dense_prior import (
    DEFAULT_FOLDERS,
    MAKERS,
    PRIOR_KINDS,
    DensePrior,
    backproject,
    find_prior_file,
    grid_normals,
    load_depth,
    load_pointmap,
)
from alignment.fusion import AlignParams, ViewAlignment, align_view, view_correspondences
from mvs.fusion import voxel_downsample
from priors.io import save_json
from scene.colmap_io import (
    ColmapPoint3D,
    read_model,
    write_cameras_binary,
    write_images_binary,
)
from scene.errors import SceneError
from scene.points import store_ply
from scene.stage_inputs import (
    SceneViews,
    colmap_command,
    load_training_scene,
    require_train_only_model,
    train_only_model_dir,
)

OUT_DIR = "alignment"
DENSE_ID_START = 1_000_000
STAGES = ("raw", "depth_fit", "global", "semantic")
# Default threshold unit = scene scale (median SfM depth) / UNIT_DIVISOR, so that SPARS3R's
# 0.1 / 0.3 / 1.5 are 2 % / 6 % / 30 % of the typical depth. With / 10 the inlier threshold
# (1 % of depth) sat below the real disagreement of fern's 3-view SfM points and stereo
# depth (median 1.2 %, heavy tail) and the semantic step missed warped segments
# (bench/alignment_corruption.py, docs/ALIGNMENT.md).
UNIT_DIVISOR = 5.0


@dataclass
class AlignRequest(SceneViews):
    """What ``run_alignment`` does (the flags of ``python -m alignment``)."""

    prior: str = "depth_pro"
    prior_dir: str = ""  # default: the kind's folder in the scene
    masks_dir: str = ""  # default: <scene>/masks
    out_dir: str = ""  # default: <scene>/alignment
    max_points: int = 200_000
    scene_unit: float = 0.0  # > 0: absolute length of one threshold unit
    min_confidence: float = 0.0  # pointmaps with a float confidence
    seed: int = 0
    write_png: bool = True
    progress: bool = True
    params: AlignParams = field(default_factory=AlignParams)


@dataclass
class AlignResult:
    report: dict
    lines: list[str]
    views: dict[str, ViewAlignment]
    out_dir: str


# --------------------------------------------------------------------------- inputs
def model_dir_of(scene_dir: str, n_train: int) -> str:
    return train_only_model_dir(scene_dir, n_train)


def require_model(req: AlignRequest, n_train: int) -> str:
    return require_train_only_model(
        req, n_train, "the train-only SfM model is the alignment's reference"
    )


def prior_folder(req: AlignRequest, n_train: int) -> str:
    """The prior folder of the request, or a ``SceneError`` naming the command."""
    if req.prior not in PRIOR_KINDS:
        raise SceneError(f"--prior {req.prior}: unknown; choose from {', '.join(PRIOR_KINDS)}")
    folder = req.prior_dir or os.path.join(req.scene_dir, DEFAULT_FOLDERS[req.prior])
    if not os.path.isdir(folder):
        make = MAKERS[req.prior].format(
            scene=req.scene_dir, n=n_train or "<N>", protocol=req.split_protocol
        )
        raise SceneError(f"{folder}: no {req.prior} prior folder; make it with: {make}")
    return os.path.abspath(folder)


def load_scene(req: AlignRequest):
    """The project's ``Scene`` for the request's split (as ``python -m mvs`` builds it)."""
    return load_training_scene(req, "cpu")


def load_masks(folder: str, image_name: str, height: int, width: int) -> np.ndarray | None:
    """bool [K, H, W] segments of ``masks/<stem>.npz`` at training size, None when absent."""
    from scene.priors import load_masks_prior, prior_candidates

    for cand in prior_candidates("masks", image_name):
        path = os.path.join(folder, cand)
        if os.path.isfile(path):
            masks, _ = load_masks_prior(path, height, width)
            return masks.numpy()
    return None


def scene_scale(model, w2cs: dict[str, np.ndarray]) -> float:
    """Median camera depth of the SfM points over every training observation."""
    _, ims, pts = model
    z = []
    for im in ims.values():
        w2c = w2cs.get(im.name)
        if w2c is None:
            continue
        ids = [int(i) for i in im.point3D_ids if i >= 0 and int(i) in pts]
        if ids:
            X = np.stack([pts[i].xyz for i in ids])  # [n, 3]
            z.append(X @ w2c[2, :3] + w2c[2, 3])
    z = np.concatenate(z) if z else np.zeros(0)
    z = z[z > 0]
    if not len(z):
        raise SceneError("no SfM point lies in front of a training camera; rerun colmap_match.py")
    return float(np.median(z))


def load_prior(req: AlignRequest, folder: str, cam, K: np.ndarray, w2c: np.ndarray) -> DensePrior:
    """One view's dense prior (``alignment.dense_prior``), or a ``SceneError``."""
    H, W = cam.image_height, cam.image_width
    path = find_prior_file(folder, req.prior, cam.image_name)
    if path is None:
        stem = os.path.splitext(os.path.basename(cam.image_name))[0]
        raise SceneError(
            f"{folder}: no {req.prior} prior for {cam.image_name} (looked for "
            f"{cam.image_name}.npy and {stem}.npy); re-create the prior folder"
        )
    if req.prior == "pointmap":
        pts, valid, conf, notes = load_pointmap(path, H, W, req.min_confidence)
        return DensePrior(req.prior, path, pts, valid, conf, None, notes)
    depth, valid, notes = load_depth(path, H, W)
    pts = backproject(depth, K, w2c)
    return DensePrior(req.prior, path, pts, valid, np.ones((H, W)), depth, notes)


# --------------------------------------------------------------------------- outputs
def write_points_binary(
    path: str, sfm: dict[int, ColmapPoint3D], dense: np.ndarray, rgb: np.ndarray
) -> None:
    """COLMAP ``points3D.bin``: the SfM points (tracks kept) then the dense points, ids
    ``DENSE_ID_START + i``, error 0, no track. The dense block is one packed structured
    array (``scene.colmap_io.write_points3D_binary`` packs point by point, seconds for
    200k points); the bytes are the same as its.

    Args:
        dense: [N, 3] positions; rgb: [N, 3] uint8 colours.
    """
    rec = np.dtype(
        [("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("n", "<u8")]
    )  # packed: 8 + 24 + 3 + 8 + 8 = 51 bytes, as COLMAP writes one point without track
    block = np.zeros(len(dense), dtype=rec)
    block["id"] = DENSE_ID_START + np.arange(len(dense), dtype=np.uint64)
    block["xyz"] = dense
    block["rgb"] = rgb
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(sfm) + len(dense)))
        for p in sfm.values():
            f.write(struct.pack("<Qddd", p.id, *np.asarray(p.xyz, dtype=float)))
            f.write(struct.pack("<BBBd", *np.asarray(p.rgb, dtype=np.uint8).tolist(), p.error))
            f.write(struct.pack("<Q", len(p.image_ids)))
            track = np.stack([p.image_ids, p.point2D_idxs], axis=1).astype("<i4")
            f.write(track.tobytes())
        f.write(block.tobytes())


def write_model_atomic(cams, ims, sfm, dense: np.ndarray, rgb: np.ndarray, path: str) -> None:
    """The model (cameras, images, SfM + dense points) into a temporary folder, then each
    file renamed into ``path``."""
    tmp = path.rstrip(os.sep) + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_cameras_binary(cams, os.path.join(tmp, "cameras.bin"))
    write_images_binary(ims, os.path.join(tmp, "images.bin"))
    write_points_binary(os.path.join(tmp, "points3D.bin"), sfm, dense, rgb)
    os.makedirs(path, exist_ok=True)
    for f in os.listdir(tmp):
        os.replace(os.path.join(tmp, f), os.path.join(path, f))
    shutil.rmtree(tmp, ignore_errors=True)


def _colormap(t: np.ndarray) -> np.ndarray:
    """[N] in [0, 1] -> [N, 3] uint8, green -> yellow -> red."""
    t = np.clip(t, 0, 1)[:, None]
    green, yellow, red = np.array([0, 200, 0]), np.array([255, 220, 0]), np.array([230, 0, 0])
    c = np.where(t < 0.5, green + (yellow - green) * 2 * t, yellow + (red - yellow) * (2 * t - 1))
    return c.astype(np.uint8)


def residual_png(path: str, image: np.ndarray, view: ViewAlignment, unit: float, full: float):
    """Side-by-side panels, one per step: the dimmed image (accepted segments tinted in the
    last panel) with a dot per correspondence coloured by its residual (green 0, red at
    ``full`` units and above), written atomically.

    Args:
        image: [H, W, 3] float in [0, 1].
    """
    from PIL import Image, ImageDraw

    H, W = image.shape[:2]
    r, c = view.corr.rows, view.corr.cols
    panels = []
    for stage in STAGES:
        if stage not in view.residuals:
            continue
        base = (image * 0.4 * 255).astype(np.uint8).copy()  # [H, W, 3]
        if stage == "semantic" and view.labels is not None:
            seg = view.labels > 0
            base[seg] = (0.5 * base[seg] + [0, 40, 110]).astype(np.uint8)
        col = _colormap(view.residuals[stage] / unit / full)  # [M, 3]
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                base[np.clip(r + dr, 0, H - 1), np.clip(c + dc, 0, W - 1)] = col
        im = Image.fromarray(base)
        med = float(np.median(view.residuals[stage])) / unit
        ImageDraw.Draw(im).text((4, 4), f"{stage}: median {med:.3f} u", fill=(255, 255, 255))
        panels.append(np.asarray(im))
    out = np.concatenate(panels, 1) if panels else (image * 255).astype(np.uint8)
    tmp = path + ".tmp"
    Image.fromarray(out).save(tmp, format="PNG")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the stage
def run_alignment(req: AlignRequest, scene=None) -> AlignResult:
    """Run the alignment for ``req`` (module docstring); ``scene`` may be given to reuse a
    loaded ``Scene`` (its training cameras must hold their images)."""
    t0 = time.time()
    scene_dir = os.path.abspath(req.scene_dir)
    if not os.path.isdir(scene_dir):
        raise SceneError(f"{scene_dir}: no such scene folder (-s)")
    n_asked = len(req.train_views) or req.n_views
    if scene is None and n_asked:  # fail before loading any image
        require_model(req, n_asked)
        prior_folder(req, n_asked)
    scene = scene or load_scene(req)
    train = scene.train_cameras
    n = len(train)
    model_dir = require_model(req, n)
    folder = prior_folder(req, n)
    try:
        cams, ims, pts = read_model(model_dir)
    except (ValueError, OSError) as e:
        raise SceneError(f"{model_dir}: {e}; rerun {colmap_command(req, n)}") from None
    by_name = {im.name: im for im in ims.values()}
    if set(by_name) != {c.image_name for c in train}:
        raise SceneError(
            f"{model_dir} was built for other training views; rerun "
            f"{colmap_command(req, n)} --overwrite"
        )
    if req.prior == "mvs" and not req.prior_dir:
        from scene.priors import check_mvs_depth_split

        check_mvs_depth_split(scene_dir, [c.image_name for c in train])
    Ks = {c.image_name: c.K.cpu().double().numpy() for c in train}  # [3, 3]
    w2cs = {c.image_name: c.viewmat.cpu().double().numpy() for c in train}  # [4, 4]
    for c in train:  # same world frame as the scene's cameras?
        im = by_name[c.image_name]
        centre = -im.rotmat().T @ im.tvec
        ours = np.linalg.inv(w2cs[c.image_name])[:3, 3]
        if np.abs(centre - ours).max() > 1e-2 * max(scene.cameras_extent, 1e-6):
            raise SceneError(
                f"{model_dir}: camera {c.image_name} is not at the scene's pose (another "
                f"frame); rerun {colmap_command(req, n)} --overwrite"
            )
    depth_scale = scene_scale((cams, ims, pts), w2cs)
    unit = req.scene_unit if req.scene_unit > 0 else depth_scale / UNIT_DIVISOR
    params = AlignParams(**{**asdict(req.params), "unit": unit})
    xyz_by_id = {pid: p.xyz for pid, p in pts.items()}

    lines: list[str] = []
    masks_dir = req.masks_dir or os.path.join(scene_dir, "masks")
    have_masks = os.path.isdir(masks_dir)
    if params.semantic and not have_masks:
        lines.append(
            f"warning: {masks_dir} not found, semantic step off (make the masks with: "
            f"python extract_mask.py -s {req.scene_dir} --mode auto)"
        )
    rng = np.random.default_rng(req.seed)
    views: dict[str, ViewAlignment] = {}
    notes: list[str] = []
    bar = tqdm(train, desc="alignment", unit="view", disable=not req.progress)
    for cam in bar:
        name = cam.image_name
        bar.set_postfix_str(name)
        K, w2c = Ks[name], w2cs[name]
        prior = load_prior(req, folder, cam, K, w2c)
        notes += prior.notes
        im = by_name[name]
        mcam = cams[im.camera_id]
        corr = view_correspondences(
            im.xys,
            im.point3D_ids,
            xyz_by_id,
            (mcam.width, mcam.height),
            (cam.image_width, cam.image_height),
            prior.valid,
        )
        masks = None
        if params.semantic and have_masks:
            masks = load_masks(masks_dir, name, cam.image_height, cam.image_width)
            if masks is None:
                notes.append(f"{masks_dir}: no masks for {name}; semantic step off there")
        v = align_view(name, prior, corr, K, w2c, masks, params, rng)
        v.report["prior_file"] = prior.source
        views[name] = v
        if v.skipped:
            lines.append(f"{name}: skipped ({v.skipped})")
    bar.close()
    aligned = [v for v in views.values() if v.skipped is None]
    if not aligned:
        raise SceneError(
            f"{scene_dir}: every training view was skipped ({'; '.join(lines)}); check the "
            f"{req.prior} prior and {model_dir}"
        )

    # Dense points of every aligned view: positions, colours, normals.
    cam_by_name = {c.image_name: c for c in train}
    P, F = [], []
    for v in aligned:
        cam = cam_by_name[v.name]
        img = cam.original_image.permute(1, 2, 0).cpu().numpy().astype(np.float64)  # [H,W,3]
        centre = np.linalg.inv(w2cs[v.name])[:3, 3]
        nrm = grid_normals(v.points, v.valid, centre)  # [H, W, 3]
        P.append(v.points[v.valid])
        F.append(np.concatenate([img[v.valid], nrm[v.valid]], 1))  # [n, 6]
    dense = np.concatenate(P)
    feats = np.concatenate(F)
    n_dense = len(dense)
    budget = max(req.max_points - len(pts), 0)
    dense, feats, voxel = voxel_downsample(dense, feats, budget)
    colors = feats[:, :3]
    normals = feats[:, 3:]
    nn = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(nn > 1e-12, normals / np.maximum(nn, 1e-12), 0.0)

    out_dir = req.out_dir or os.path.join(scene_dir, OUT_DIR)
    os.makedirs(out_dir, exist_ok=True)
    report_path = os.path.join(out_dir, "report.json")
    if os.path.exists(report_path):
        os.remove(report_path)
    rgb8 = np.clip(np.round(colors * 255), 0, 255).astype(np.uint8)
    sparse_dir = os.path.join(out_dir, "sparse", "0")
    write_model_atomic(cams, ims, pts, dense, rgb8, sparse_dir)

    sfm_xyz = np.stack([p.xyz for p in pts.values()]) if pts else np.zeros((0, 3))
    sfm_rgb = np.stack([p.rgb for p in pts.values()]) / 255.0 if pts else np.zeros((0, 3))
    sfm_nrm = np.zeros_like(sfm_xyz)
    if len(sfm_xyz) and len(dense):
        from scipy.spatial import cKDTree

        _, j = cKDTree(dense).query(sfm_xyz)
        sfm_nrm = normals[j]
    ply_path = os.path.join(out_dir, "points3D.ply")
    store_ply(
        ply_path,
        np.concatenate([sfm_xyz, dense]),
        np.concatenate([sfm_rgb, colors]),
        np.concatenate([sfm_nrm, normals]),
    )
    if req.write_png:
        png_dir = os.path.join(out_dir, "residuals")
        os.makedirs(png_dir, exist_ok=True)
        for v in aligned:
            img = cam_by_name[v.name].original_image.permute(1, 2, 0).cpu().numpy()
            stem = os.path.splitext(os.path.basename(v.name))[0]
            residual_png(
                os.path.join(png_dir, f"{stem}.png"), img, v, unit, 2 * params.outlier_thresh
            )

    # Summary over every correspondence of the aligned views, per step.
    summary = {}
    for stage in STAGES:
        res = [v.residuals[stage] for v in aligned if stage in v.residuals]
        if res:
            r = np.concatenate(res) / unit
            summary[stage] = {
                "median": float(np.median(r)),
                "mean": float(r.mean()),
                "p90": float(np.percentile(r, 90)),
            }
    seconds = time.time() - t0
    skipped = {v.name: v.skipped for v in views.values() if v.skipped}
    report = {
        "scene": scene_dir,
        "prior": req.prior,
        "prior_dir": folder,
        "masks_dir": masks_dir if have_masks else None,
        "n_views": n,
        "train": [c.image_name for c in train],
        "sfm_model": model_dir,
        "scene_scale": depth_scale,
        "unit": unit,
        "unit_note": "residuals and thresholds are in units of `unit` (scene length); default "
        f"unit = scene_scale / {UNIT_DIVISOR:g}, scene_scale = median SfM depth in the "
        "training views",
        "thresholds_scene_units": {
            k: getattr(params, k) * unit
            for k in ("inlier_thresh", "outlier_thresh", "align_error_thresh")
        },
        "params": asdict(params),
        "residuals": summary,
        "per_view": {name: v.report for name, v in views.items()},
        "skipped": skipped,
        "n_skipped": len(skipped),
        "points": {
            "sfm": len(pts),
            "dense_before_downsampling": int(n_dense),
            "dense": int(len(dense)),
            "voxel_size": voxel,
            "dense_id_start": DENSE_ID_START,
        },
        "notes": notes,
        "outputs": {"sparse": sparse_dir, "ply": ply_path},
        "seconds": seconds,
        "seed": req.seed,
    }
    save_json(report_path, report, indent=1)

    def fmt(stage: str) -> str:
        s = summary.get(stage)
        return "-" if s is None else f"{s['median']:.3f}/{s['mean']:.3f}"

    used = sum(v.report.get("semantic", {}).get("segments_used", 0) for v in aligned)
    lines = [
        f"alignment ({n} views, {req.prior} prior, unit {unit:.4g}, scene scale "
        f"{depth_scale:.4g}): {seconds:.1f} s",
        "  residual median/mean (units): "
        + ", ".join(f"{s} {fmt(s)}" for s in STAGES if s in summary),
        f"  {len(aligned)} views aligned, {len(skipped)} skipped, {used} segments used",
        f"  points: {len(pts)} SfM + {len(dense)} dense ({n_dense} before voxel downsampling)",
        f"wrote {sparse_dir}, {ply_path}, {report_path}",
    ] + lines
    return AlignResult(report, lines + [f"note: {x}" for x in notes], views, out_dir)
