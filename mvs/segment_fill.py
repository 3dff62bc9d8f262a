"""Segment-planar completion of the stereo depth: fill each 2D segment's holes with the
plane its consistent pixels lie on.

At 3 views the plane sweep keeps little: on DTU scan24 10 to 19% of the pixels pass the
consistency check, because walls, roofs and the table are weakly textured. Those surfaces
are also where the 2D segments of ``masks/`` (SAM 2 or the classical backend) follow the
object's faces. So, per training view and per segment, from the finest to the coarsest:

1. back-project the segment's consistent pixels to camera space and fit a plane by RANSAC
   (inliers: distance below ``plane_tol`` times the segment's median depth), refined by
   least squares on its inliers;
2. accept the plane when the segment has at least ``min_support`` consistent pixels (and
   ``min_support_frac`` of its area) and ``min_inlier_ratio`` of them are inliers: a segment
   spanning several faces fails this and leaves its pixels to a coarser segment;
3. give every still-empty pixel of the segment that lies within ``max_gap`` (a fraction
   of the image size) of an inlier the depth where its ray meets the plane, if the ray is
   not grazing the plane (|cos| >= ``min_cos``) and the depth stays within
   ``max_extrapolation`` of the inliers' depth range. The gap bound keeps a plane where its
   evidence is: a coarse segment whose consistent pixels all lie on one face of an object
   passes step 2, and would otherwise extend that face over the others.

Filled points are then checked against the other views' consistent depths
(``free_space_violations``): a filled point that another view sees in front of a surface
it measured (nearer by more than ``free_space_tol``) would hide that surface, and is
dropped. Pure functions, numpy and torch arrays in and out; the stage (mvs/stage.py,
``--fill_segments``) wires them. Conventions as in mvs/fusion.py (``K`` with pixel centres
at +0.5, depth = camera z, 0 = none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mvs.fusion import project


@dataclass(frozen=True)
class FillSettings:
    min_support: int = 40
    min_support_frac: float = 0.02
    min_inlier_ratio: float = 0.85
    plane_tol: float = 0.01
    min_cos: float = 0.15
    max_extrapolation: float = 1.5
    max_gap: float = 0.05
    ransac_iters: int = 256
    ransac_sample: int = 4000
    free_space_tol: float = 0.03


@dataclass
class SegmentPlane:
    normal: np.ndarray  # [3] unit, camera space
    offset: float  # points X on the plane: normal @ X + offset = 0
    inlier_ratio: float
    z_range: tuple[float, float]  # depth range of the inliers
    inliers: np.ndarray  # [H, W] bool, the segment's pixels on the plane


def pixel_rays(h: int, w: int, K: np.ndarray) -> np.ndarray:
    """[H, W, 3] camera-space rays with z = 1 through the pixel centres."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)


def fit_plane_ransac(
    points: np.ndarray,  # [M, 3]
    tol: float,
    iters: int = 256,
    sample: int = 4000,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Plane (normal [3], offset) with the most inliers within ``tol``, refined by least
    squares on them, and its inlier mask [M]; None with fewer than 3 points. All
    hypotheses are scored at once on a subsample of at most ``sample`` points."""
    m = len(points)
    if m < 3:
        return None
    rng = rng or np.random.default_rng(0)
    sub = points[rng.choice(m, size=min(m, sample), replace=False)]
    tri = sub[rng.integers(0, len(sub), size=(iters, 3))]  # [I, 3, 3]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1)
    ok = norm > 1e-12
    if not ok.any():
        return None
    normals = normals[ok] / norm[ok, None]
    offsets = -np.einsum("id,id->i", normals, tri[ok, 0])
    score = (np.abs(sub @ normals.T + offsets) < tol).sum(0)
    best = int(np.argmax(score))
    inliers = np.abs(points @ normals[best] + offsets[best]) < tol
    if inliers.sum() >= 3:  # least-squares refinement: the inliers' principal plane
        p = points[inliers]
        centre = p.mean(0)
        normal = np.linalg.eigh((p - centre).T @ (p - centre))[1][:, 0]
        offset = -float(normal @ centre)
        refined = np.abs(points @ normal + offset) < tol
        if refined.sum() >= inliers.sum():
            return normal, offset, refined
    return normals[best], float(offsets[best]), inliers


def segment_plane(
    depth: np.ndarray,  # [H, W] consistent depth, 0 = none
    rays: np.ndarray,  # [H, W, 3]
    segment: np.ndarray,  # [H, W] bool
    s: FillSettings,
    rng: np.random.Generator,
) -> SegmentPlane | None:
    """The plane of one segment's consistent pixels, or None when it does not qualify."""
    support = segment & (depth > 0)
    n = int(support.sum())
    if n < s.min_support or n < s.min_support_frac * segment.sum():
        return None
    z = depth[support]
    X = rays[support] * z[:, None]
    fit = fit_plane_ransac(X, s.plane_tol * float(np.median(z)), s.ransac_iters,
                           s.ransac_sample, rng)  # fmt: skip
    if fit is None:
        return None
    normal, offset, inl = fit
    ratio = float(inl.mean())
    if ratio < s.min_inlier_ratio:
        return None
    on_plane = np.zeros_like(support)
    on_plane[support] = inl
    z_range = (float(z[inl].min()), float(z[inl].max()))
    return SegmentPlane(normal, offset, ratio, z_range, on_plane)


def near_support(plane: SegmentPlane, max_gap_px: float) -> np.ndarray:
    """[H, W] bool: pixels within ``max_gap_px`` of one of the plane's inlier pixels."""
    import cv2

    far = (~plane.inliers).astype(np.uint8)
    return cv2.distanceTransform(far, cv2.DIST_L2, 5) <= max_gap_px


def plane_depth(plane: SegmentPlane, rays: np.ndarray, s: FillSettings) -> np.ndarray:
    """[...] depth where each ray [..., 3] meets the plane; 0 where it grazes the plane,
    meets it behind the camera or beyond ``max_extrapolation`` of the inliers' depths."""
    dot = rays @ plane.normal
    cos = np.abs(dot) / np.linalg.norm(rays, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -plane.offset / dot
    lo, hi = plane.z_range
    ok = (cos >= s.min_cos) & (z > lo / s.max_extrapolation) & (z < hi * s.max_extrapolation)
    return np.where(ok, z, 0.0)


def fill_depth(
    depth: np.ndarray,  # [H, W] consistent depth, 0 = none
    K: np.ndarray,  # [3, 3]
    masks: np.ndarray,  # [S, H, W] bool, any order
    s: FillSettings = FillSettings(),
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Depth [H, W] for the pixels without consistent depth that a qualifying segment
    covers (0 elsewhere, and at every pixel that had depth), and a summary dict. Segments
    are tried from the smallest up, so a pixel takes the plane of the finest segment that
    has one."""
    h, w = depth.shape
    rays = pixel_rays(h, w, K)
    rng = np.random.default_rng(seed)
    filled = np.zeros((h, w), dtype=np.float64)
    open_ = depth <= 0  # pixels still to fill
    planes = 0
    for k in np.argsort(masks.reshape(len(masks), -1).sum(1), kind="stable"):
        seg = masks[k]
        todo = seg & open_
        if not todo.any():
            continue
        plane = segment_plane(depth, rays, seg, s, rng)
        if plane is None:
            continue
        planes += 1
        todo &= near_support(plane, s.max_gap * max(h, w))
        z = plane_depth(plane, rays[todo], s)
        filled[todo] = z
        open_[todo] = z <= 0
    summary = {
        "segments": int(len(masks)),
        "planes": planes,
        "filled_fraction": float((filled > 0).mean()),
        "consistent_fraction": float((depth > 0).mean()),
    }
    return filled.astype(np.float32), summary


def free_space_violations(
    points: torch.Tensor,  # [M, 3] world
    depths: list[torch.Tensor],  # other views' consistent depth [H, W], 0 = none
    Ks: list[torch.Tensor],  # [3, 3] each
    w2cs: list[torch.Tensor],  # [4, 4] each
    tol: float = 0.03,
) -> torch.Tensor:
    """[M] bool: the points that some view sees nearer than its own consistent depth at
    that pixel by more than ``tol`` (relative), i.e. points floating in space that view
    saw through."""
    bad = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    for d, K, w2c in zip(depths, Ks, w2cs):
        h, w = d.shape
        uv, z = project(points, K, w2c)
        col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        seen = torch.zeros_like(z)
        seen[inside] = d[row[inside], col[inside]]
        bad |= inside & (seen > 0) & (z < seen * (1.0 - tol))
    return bad
