"""Dense priors per training view: depth maps or pointmaps read into [H, W, 3] point maps.

Three sources, all read at the camera's training resolution:

=============  ===========================================  ================================
``--prior``    files (default folder)                       becomes
=============  ===========================================  ================================
``depth_pro``  ``depth_pro/<image name>.npy`` (or <stem>)   back-projected with the
               float [H, W] metric depth (predepth.py)      training camera (world frame)
``mvs``        ``depth_mvs/<image name>.npy``, 0 = no       the same
               depth (python -m mvs)
``pointmap``   ``<stem>.npy`` float [H', W', 3] and         the pointmap as is, in the
               ``<stem>_mask.npy`` (bool, or a float        model's own frame (MASt3R,
               confidence), MASt3R layout                   DUSt3R, ...)
=============  ===========================================  ================================

``--prior_dir`` replaces the default folder of any kind (a pointmap folder has no
default: SPARS3R keeps them in ``<scene>/mast3r/individual_img_pts/``, used when present).

Rules for bad files, each a one-line ``SceneError`` naming the file or a ``notes`` line:
a prior of another size is resampled to the training size (nearest, pixel centres) with a
note when its aspect ratio matches within 2 %, an error otherwise; NaN, infinite and
non-positive depths (and non-finite pointmap entries) are masked out.

A depth map is only defined up to a scale and a shift (monocular depth), so the points of
a depth prior are *not* trusted as they come: ``alignment.fusion`` first fits each view's
own depth scale and shift against the SfM depths, and back-projects again with them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from scene.errors import SceneError

PRIOR_KINDS = ("depth_pro", "mvs", "pointmap")
DEFAULT_FOLDERS = {
    "depth_pro": "depth_pro",
    "mvs": "depth_mvs",
    "pointmap": os.path.join("mast3r", "individual_img_pts"),
}
# How to make each folder (``{scene}`` and ``{n}`` filled in by the caller).
MAKERS = {
    "depth_pro": "python predepth.py -s {scene}",
    "mvs": "python -m mvs -s {scene} --n_views {n} --split_protocol {protocol}",
    "pointmap": "run MASt3R (or DUSt3R) on the training views and pass the folder of its "
    "<stem>.npy / <stem>_mask.npy pointmaps with --prior_dir",
}
ASPECT_TOLERANCE = 0.02


@dataclass
class DensePrior:
    """One view's dense prior at training resolution.

    ``points`` are in the world frame for depth priors (back-projected with the training
    camera and the raw depth) and in the model's own frame for pointmaps.
    """

    kind: str
    source: str  # the file it came from
    points: np.ndarray  # [H, W, 3] float64
    valid: np.ndarray  # [H, W] bool: finite, positive depth, confident
    confidence: np.ndarray  # [H, W] float64 weights (1 for depth priors)
    depth: np.ndarray | None = None  # [H, W] raw depth (depth priors), 0 where invalid
    notes: list[str] = field(default_factory=list)

    @property
    def is_depth(self) -> bool:
        return self.depth is not None


def find_prior_file(folder: str, kind: str, image_name: str) -> str | None:
    """The file of ``image_name``'s prior in ``folder`` (case-sensitive first, then not)."""
    sub, base = os.path.split(image_name.replace("\\", "/"))
    stem = os.path.splitext(base)[0]
    names = [f"{stem}.npy"] if kind == "pointmap" else [f"{base}.npy", f"{stem}.npy"]
    names = [os.path.join(sub, n) if sub else n for n in names]
    for n in names:
        if os.path.isfile(os.path.join(folder, n)):
            return os.path.join(folder, n)
    wanted = {n.lower(): n for n in names}
    d = os.path.join(folder, sub)
    if os.path.isdir(d):
        for f in sorted(os.listdir(d)):
            rel = os.path.join(sub, f) if sub else f
            if rel.lower() in wanted and not f.startswith("."):
                return os.path.join(folder, rel)
    return None


def read_npy(path: str, what: str) -> np.ndarray:
    """``np.load`` of a plain array; a ``SceneError`` naming the file otherwise."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise SceneError(f"{path}: cannot read the {what} ({e}); re-create it") from None
    if not isinstance(a, np.ndarray):
        raise SceneError(f"{path}: not a single array ({what}); re-create it")
    return a


def resample_nearest(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """[h, w, ...] -> [height, width, ...] by nearest sampling at pixel centres."""
    h, w = a.shape[:2]
    if (h, w) == (height, width):
        return a
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return a[rows][:, cols]


def fit_to_image(a: np.ndarray, height: int, width: int, path: str, notes: list[str]) -> np.ndarray:
    """Resample a prior [h, w, ...] to the image size, or stop when the aspect differs."""
    h, w = a.shape[:2]
    if (h, w) == (height, width):
        return a
    if abs((w / h) / (width / height) - 1.0) > ASPECT_TOLERANCE:
        raise SceneError(
            f"{path} is {w}x{h} but its image is {width}x{height} at training resolution "
            "(aspect ratio differs): it belongs to another image or crop; re-create the prior"
        )
    notes.append(f"{path}: {w}x{h} resampled to the image's {width}x{height} (nearest)")
    return resample_nearest(a, height, width)


def load_depth(path: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Depth [H, W] float64 (0 where invalid), valid [H, W] bool and notes, from a .npy."""
    notes: list[str] = []
    d = read_npy(path, "depth map")
    if d.ndim == 3 and 1 in (d.shape[0], d.shape[-1]):
        d = d.reshape(d.shape[1:] if d.shape[0] == 1 else d.shape[:2])
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.number):
        raise SceneError(f"{path}: depth is {d.dtype} {list(d.shape)}, expected float [H, W]")
    d = fit_to_image(d.astype(np.float64), height, width, path, notes)
    valid = np.isfinite(d) & (d > 0)  # [H, W]
    n_bad = int((~valid).sum())
    if not valid.any():
        raise SceneError(f"{path}: no finite positive depth in the file; re-create it")
    if n_bad:
        notes.append(f"{path}: {n_bad} NaN, infinite or non-positive depths masked out")
    return np.where(valid, d, 0.0), valid, notes


def load_pointmap(
    path: str, height: int, width: int, min_confidence: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Points [H, W, 3], valid [H, W], confidence [H, W] and notes of a MASt3R-layout file.

    ``<stem>_mask.npy`` beside it is a bool mask or a float confidence (valid where it
    exceeds ``min_confidence``); without it every finite point is valid (noted).
    """
    notes: list[str] = []
    p = read_npy(path, "pointmap")
    if p.ndim == 4 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 3 or p.shape[-1] != 3 or not np.issubdtype(p.dtype, np.number):
        raise SceneError(f"{path}: pointmap is {p.dtype} {list(p.shape)}, expected [H, W, 3]")
    p = fit_to_image(p.astype(np.float64), height, width, path, notes)
    valid = np.isfinite(p).all(-1)  # [H, W]
    conf = np.ones((height, width))
    mask_path = path[: -len(".npy")] + "_mask.npy"
    if os.path.isfile(mask_path):
        m = read_npy(mask_path, "pointmap confidence mask")
        m = m.reshape(m.shape[1:]) if m.ndim == 3 and m.shape[0] == 1 else m
        if m.ndim != 2:
            raise SceneError(f"{mask_path}: mask is {list(m.shape)}, expected [H, W]")
        m = fit_to_image(m, height, width, mask_path, notes)
        if m.dtype == np.bool_:
            valid &= m
        else:
            m = m.astype(np.float64)
            valid &= np.isfinite(m) & (m > min_confidence)
            conf = np.where(np.isfinite(m), m, 0.0)
    else:
        notes.append(f"{mask_path}: not found; every finite point of the pointmap used")
    if not valid.any():
        raise SceneError(f"{path}: no valid point (finite and confident); re-create it")
    return np.where(valid[..., None], p, 0.0), valid, conf, notes


def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] camera-frame rays (x/z, y/z, 1) through the pixel centres (+0.5)."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)


def backproject(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """World points [H, W, 3] of a z-depth map [H, W] seen by camera (K [3, 3], w2c [4, 4])."""
    cam = pixel_rays(K, *depth.shape) * depth[..., None]  # [H, W, 3] camera frame
    c2w = np.linalg.inv(w2c)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def grid_normals(points: np.ndarray, valid: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Unit normals [H, W, 3] of a point map from its image-grid neighbours, facing the camera.

    The normal of pixel (r, c) is the cross product of the differences to its right and
    lower neighbours (central differences where both sides are valid would be smoother,
    this is enough for initialisation); pixels without valid neighbours get 0.
    """
    dx = np.zeros_like(points)  # [H, W, 3]
    dy = np.zeros_like(points)
    dx[:, :-1] = points[:, 1:] - points[:, :-1]
    dy[:-1] = points[1:] - points[:-1]
    ok = valid.copy()
    ok[:, :-1] &= valid[:, 1:]
    ok[:-1] &= valid[1:]
    ok[:, -1] = False
    ok[-1] = False
    n = np.cross(dx, dy)  # [H, W, 3]
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(ok[..., None] & (norm > 0), n / np.maximum(norm, 1e-300), 0.0)
    facing = ((center - points) * n).sum(-1, keepdims=True)  # towards the camera: > 0
    return np.where(facing < 0, -n, n)
