"""What the viewer shows, as plain functions over arrays (no browser, no server).

- model folder: :func:`find_point_cloud` (the latest ``point_cloud/iteration_N`` or a given
  one, one-line :class:`SceneError` otherwise), :func:`load_model`;
- splats: :func:`splats_from_model` (centres, covariances from scales and quaternions, RGB
  from the SH DC term, activated opacities) and :func:`select` / :func:`colour_by_cluster`
  for what is on screen;
- cameras: :func:`load_cameras` reads ``cameras.json`` (3DGS format: camera-to-world
  rotation and centre, OpenCV axes) and tags each with its split from ``split.json``;
- segments: :func:`load_labels` (``segments/labels.npy``, one integer per Gaussian of the
  PLY), :func:`cluster_sizes`, :func:`visible_mask`, :func:`subset_model` and
  :func:`export_cluster` (a valid Inria PLY of one cluster, written by gaussian/ply.py);
- :func:`pick_gaussian`: the Gaussian under a click ray, to pick a cluster by clicking.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from gaussian.model import GaussianModel
from gaussian.ply import load_ply, save_ply
from scene.errors import SceneError
from utils.graphics_utils import covariance_from_scale_rot
from utils.sh_utils import SH2RGB

UNLABELLED_RGB = (0.55, 0.55, 0.55)


# ------------------------------------------------------------------ model folder


def _iterations(point_cloud_dir: str) -> list[int]:
    found = []
    for entry in os.listdir(point_cloud_dir):
        head, _, tail = entry.partition("_")
        if head == "iteration" and tail.isdigit():
            if os.path.isfile(os.path.join(point_cloud_dir, entry, "point_cloud.ply")):
                found.append(int(tail))
    return sorted(found)


def find_point_cloud(model_dir: str, iteration: int | None = None) -> tuple[int, str]:
    """``(N, <model>/point_cloud/iteration_N/point_cloud.ply)``: the highest N by default.

    Raises a one-line :class:`SceneError` when ``model_dir`` is not a trained model folder
    or holds no PLY for ``iteration``.
    """
    if not os.path.isdir(model_dir):
        raise SceneError(f"{model_dir}: no such folder; pass a model folder written by train.py")
    pc_dir = os.path.join(model_dir, "point_cloud")
    iters = _iterations(pc_dir) if os.path.isdir(pc_dir) else []
    if not iters:
        raise SceneError(
            f"{model_dir}: not a trained model (no point_cloud/iteration_N/point_cloud.ply); "
            f"train one with: python train.py -s <scene> -m {model_dir}"
        )
    if iteration is None or iteration < 0:
        iteration = iters[-1]
    elif iteration not in iters:
        raise SceneError(
            f"{pc_dir}/iteration_{iteration}/point_cloud.ply: not found; iterations saved "
            f"here: {', '.join(map(str, iters))}"
        )
    return iteration, os.path.join(pc_dir, f"iteration_{iteration}", "point_cloud.ply")


def load_model(ply_path: str) -> GaussianModel:
    """The Gaussians of an Inria PLY (gaussian/ply.py), a bad file as one-line SceneError."""
    try:
        return load_ply(ply_path)
    except ValueError as exc:
        raise SceneError(str(exc)) from exc


# ------------------------------------------------------------------ splats


@dataclass
class SplatArrays:
    """What viser's Gaussian-splat node takes: float32 arrays, N rows each."""

    centers: np.ndarray  # [N, 3]
    covariances: np.ndarray  # [N, 3, 3]
    rgbs: np.ndarray  # [N, 3] in [0, 1]
    opacities: np.ndarray  # [N, 1] in [0, 1]

    def __len__(self) -> int:
        return int(self.centers.shape[0])


def splats_from_model(model: GaussianModel) -> SplatArrays:
    """Activated arrays of ``model``: covariance R S S^T R^T, RGB = SH DC term (view
    independent, clipped to [0, 1]), opacity = sigmoid of the logit."""
    with torch.no_grad():
        p = {k: v.detach().float().cpu() for k, v in model.params.items()}
        cov = covariance_from_scale_rot(torch.exp(p["scales"]), p["quats"])
        rgb = SH2RGB(p["sh0"][:, 0, :]).clamp(0.0, 1.0)
        opacity = torch.sigmoid(p["opacities"]).reshape(-1, 1)
    return SplatArrays(
        centers=p["means"].numpy().astype(np.float32),
        covariances=cov.numpy().astype(np.float32),
        rgbs=rgb.numpy().astype(np.float32),
        opacities=opacity.numpy().astype(np.float32),
    )


def select(splats: SplatArrays, mask: np.ndarray) -> SplatArrays:
    """The rows of ``splats`` where ``mask`` is true."""
    return SplatArrays(
        splats.centers[mask], splats.covariances[mask], splats.rgbs[mask], splats.opacities[mask]
    )


def radii(splats: SplatArrays) -> np.ndarray:
    """[N] largest standard deviation of each Gaussian (square root of the top eigenvalue)."""
    return np.sqrt(
        np.clip(np.linalg.eigvalsh(splats.covariances.astype(np.float64))[:, -1], 0, None)
    )


# ------------------------------------------------------------------ cameras


@dataclass
class CameraView:
    name: str  # image stem, as cameras.json's img_name
    split: str  # "train", "test" or "camera" (no split.json / not in it)
    position: np.ndarray  # [3] camera centre in world coordinates
    rotation: np.ndarray  # [3, 3] camera-to-world, OpenCV axes (+z forward, +y down)
    fov_y: float  # radians
    aspect: float  # width / height
    width: int
    height: int

    @property
    def wxyz(self) -> np.ndarray:
        return rotmat_to_wxyz(self.rotation)


def rotmat_to_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method)."""
    R = np.asarray(R, np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 1e-12))
        q = [0.0] * 4
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


def load_cameras(model_dir: str) -> list[CameraView]:
    """The cameras of ``<model>/cameras.json`` tagged with their split (``split.json``);
    an empty list when the model folder has no cameras.json."""
    path = os.path.join(model_dir, "cameras.json")
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            entries = json.load(f)
        split_of: dict[str, str] = {}
        split_path = os.path.join(model_dir, "split.json")
        if os.path.isfile(split_path):
            with open(split_path) as f:
                split = json.load(f)
            for key in ("test", "train"):  # train wins if a view is in both
                split_of.update({_stem(n): key for n in split.get(key, [])})
        cams = []
        for e in entries:
            w, h = int(e["width"]), int(e["height"])
            cams.append(
                CameraView(
                    name=str(e["img_name"]),
                    split=split_of.get(_stem(str(e["img_name"])), "camera"),
                    position=np.asarray(e["position"], np.float64),
                    rotation=np.asarray(e["rotation"], np.float64),
                    fov_y=2.0 * math.atan(h / (2.0 * float(e["fy"]))),
                    aspect=w / h,
                    width=w,
                    height=h,
                )
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SceneError(f"{path}: not a 3DGS cameras.json ({exc})") from exc
    return cams


@dataclass
class Framing:
    """Where the browser camera starts: a training view, pulled back to show its context."""

    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov_y: float
    frustum_scale: float


def scene_framing(
    splats: SplatArrays, cameras: list[CameraView], pull_back: float = 2.0, rise: float = 0.6
) -> Framing:
    """Initial view: towards the point on the first training camera's axis (else the first
    camera's) at the depth of the Gaussians' median, from ``pull_back`` times that depth
    behind and ``rise`` times it above; scene up = mean camera up (-y). Without cameras,
    from -y and above at twice the extent of the Gaussians."""
    opaque = splats.opacities[:, 0] > 0.2
    pts = splats.centers[opaque] if opaque.sum() >= 10 else splats.centers
    centre = np.median(pts, axis=0) if len(pts) else np.zeros(3)
    extent = float(np.percentile(np.linalg.norm(pts - centre, axis=1), 90)) if len(pts) else 1.0
    extent = max(extent, 1e-3)
    if not cameras:
        up = np.array([0.0, 0.0, 1.0])
        pos = centre + np.array([0.0, -2.0, 1.0]) * extent
        return Framing(pos, centre, up, math.radians(60), 0.1 * extent)
    ups = np.stack([-c.rotation[:, 1] for c in cameras])
    up = ups.mean(0)
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else -cameras[0].rotation[:, 1]
    cam = next((c for c in cameras if c.split == "train"), cameras[0])
    forward = cam.rotation[:, 2]
    depth = max(float(np.dot(centre - cam.position, forward)), 1e-3)
    look_at = cam.position + forward * depth
    # Behind and above the camera, so that its own frustum does not hide the scene.
    position = look_at - forward * depth * pull_back + up * depth * rise
    spacing = np.median([np.linalg.norm(c.position - centre) for c in cameras])
    return Framing(position, look_at, up, cam.fov_y, 0.05 * float(spacing))


# ------------------------------------------------------------------ segments


def load_labels(model_dir: str, n_gaussians: int) -> np.ndarray | None:
    """Per-Gaussian integer labels from ``<model>/segments/labels.npy`` (negative =
    unlabelled); None when the model has no segments/ folder."""
    seg_dir = os.path.join(model_dir, "segments")
    if not os.path.isdir(seg_dir):
        return None
    path = os.path.join(seg_dir, "labels.npy")
    if not os.path.isfile(path):
        raise SceneError(f"{path}: missing (segments/ holds no per-Gaussian labels)")
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SceneError(f"{path}: not a readable .npy ({exc})") from exc
    labels = np.squeeze(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SceneError(f"{path}: expected a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != n_gaussians:
        raise SceneError(
            f"{path}: {labels.shape[0]} labels for {n_gaussians} Gaussians in the PLY; "
            "the labels must be aligned with the PLY shown (pass its --iteration)"
        )
    return labels.astype(np.int64)


def cluster_sizes(labels: np.ndarray) -> dict[int, int]:
    """{label: count} over the labels >= 0, by label."""
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts)}


def cluster_colours(labels: np.ndarray) -> np.ndarray:
    """[N, 3] a distinct colour per label (golden-ratio hues), grey for negative labels."""
    ids = np.unique(labels)
    table = {}
    for i in ids:
        if i < 0:
            table[int(i)] = UNLABELLED_RGB
        else:
            hue = (0.61803398875 * int(i) + 0.1) % 1.0
            table[int(i)] = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    lut = np.array([table[int(i)] for i in ids], np.float32)
    return lut[np.searchsorted(ids, labels)]


def visible_mask(labels: np.ndarray, hidden: set[int], isolate: int | None = None) -> np.ndarray:
    """[N] bool: only ``isolate``'s Gaussians when given, else every Gaussian whose label is
    not in ``hidden`` (negative labels count as one cluster, -1)."""
    key = np.where(labels < 0, -1, labels)
    if isolate is not None:
        return key == isolate
    if not hidden:
        return np.ones(labels.shape[0], bool)
    return ~np.isin(key, np.fromiter(hidden, np.int64))


def subset_model(model: GaussianModel, mask: np.ndarray) -> GaussianModel:
    """A new model holding the rows of ``mask``: every parameter and every per-Gaussian
    extra (first dimension N) follows."""
    n = model.params["means"].shape[0]
    idx = torch.from_numpy(np.flatnonzero(np.asarray(mask, bool)))
    out = GaussianModel(model.max_sh_degree)
    out.active_sh_degree = model.active_sh_degree
    out.params = {
        k: torch.nn.Parameter(v.detach().cpu()[idx].clone()) for k, v in model.params.items()
    }
    out.extras = {
        k: (v.detach().cpu()[idx].clone() if v.ndim and v.shape[0] == n else v.detach().cpu())
        for k, v in model.extras.items()
    }
    return out


def export_cluster(model: GaussianModel, labels: np.ndarray, cluster: int, path: str) -> int:
    """Write the Gaussians labelled ``cluster`` to ``path`` as an Inria PLY; their count."""
    mask = visible_mask(labels, set(), cluster)
    count = int(mask.sum())
    if count == 0:
        raise SceneError(f"cluster {cluster}: no Gaussians carry this label")
    save_ply(subset_model(model, mask), path)
    return count


# ------------------------------------------------------------------ picking


def pick_gaussian(
    splats: SplatArrays,
    origin,
    direction,
    mask: np.ndarray | None = None,
    min_opacity: float = 0.1,
    n_sigma: float = 2.0,
) -> int | None:
    """Index of the first Gaussian a ray meets: among those in ``mask`` in front of the
    origin, with opacity >= ``min_opacity`` and within ``n_sigma`` of their largest standard
    deviation from the ray, the nearest along it; else the one closest in angle; None when
    nothing is in front."""
    o = np.asarray(origin, np.float64)
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    cand = np.ones(len(splats), bool) if mask is None else np.asarray(mask, bool).copy()
    cand &= splats.opacities[:, 0] >= min_opacity
    rel = splats.centers.astype(np.float64) - o
    t = rel @ d
    cand &= t > 0
    if not cand.any():
        return None
    idx = np.flatnonzero(cand)
    perp = np.linalg.norm(rel[idx] - t[idx, None] * d, axis=1)
    hit = perp <= n_sigma * radii(select(splats, idx))
    if hit.any():
        return int(idx[hit][np.argmin(t[idx][hit])])
    return int(idx[np.argmin(perp / t[idx])])
