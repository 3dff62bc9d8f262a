"""Geometric consistency check of per-view depth maps and fusion into one point cloud.

A reference pixel with depth d is checked against every other view j: its 3D point is
projected into j, j's depth is read at the nearest pixel there, that depth is back-projected
(at the projected, sub-pixel position) and the resulting point is reprojected into the
reference. View j *agrees* when the round trip lands within ``max_reproj_px`` pixels of the
start and its depth within ``max_rel_depth`` (relative) of d. A pixel survives when at least
``min_views`` views agree, the reference counting as one. Survivors are back-projected with
their reference colour, concatenated over views and voxel-downsampled to a point budget.

Conventions as in ``mvs.plane_sweep``: ``K`` [3, 3] with pixel centres at +0.5, ``w2c``
[4, 4] world-to-camera, depth = camera z, 0 = no depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def filter_speckles(
    depth: np.ndarray,
    near: float,
    far: float,
    num_planes: int,
    max_size: int,
    max_diff: float = 2.0,
) -> np.ndarray:
    """Zero the small islands of a depth map (OpenCV's ``filterSpeckles``).

    An island is a 4-connected region whose neighbouring depths differ by at most
    ``max_diff`` plane steps (in inverse depth, the sweep's own unit) and which holds at
    most ``max_size`` pixels. Wrong matches on repeated texture come as such islands; the
    consistency check alone lets the few that two views happen to share through.

    Args:
        depth: [H, W] float depth (0 = none); near, far, num_planes: the sweep's planes.
    Returns:
        [H, W] float32 depth with the islands set to 0.
    """
    import cv2

    if max_size <= 0 or num_planes < 2:
        return depth.astype(np.float32)
    step = (1.0 / near - 1.0 / far) / (num_planes - 1)
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-12), 0.0)
    # 1/16-plane fixed point, as SGBM's disparities; 0 stays the "no depth" value.
    code = np.where(depth > 0, np.round(16.0 * ((inv - 1.0 / far) / step + 1.0)), 0)
    code = np.clip(code, 0, 32767).astype(np.int16)
    cv2.filterSpeckles(code, 0, int(max_size), int(round(16 * max_diff)))
    return np.where(code > 0, depth, 0.0).astype(np.float32)


def backproject(depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """World points of every pixel of ``depth`` [H, W]: returns [H, W, 3]."""
    h, w = depth.shape
    v, u = torch.meshgrid(
        torch.arange(h, device=depth.device, dtype=torch.float32) + 0.5,
        torch.arange(w, device=depth.device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    cam = rays * depth[..., None]
    c2w = torch.linalg.inv(w2c)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def project(
    points: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates [..., 2] and camera depth [...] of world ``points`` [..., 3]."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[..., 2]
    zs = z.clamp_min(1e-8)
    u = K[0, 0] * cam[..., 0] / zs + K[0, 2]
    v = K[1, 1] * cam[..., 1] / zs + K[1, 2]
    return torch.stack([u, v], -1), z


@dataclass
class ConsistencyResult:
    """Outcome of the check for one reference view.

    Attributes:
        mask: [H, W] bool, pixels kept (enough views agree).
        n_agree: [H, W] int, views agreeing (reference included; 0 where no depth).
        reproj_err: [H, W] mean forward-backward reprojection error (px) over the agreeing
            views (NaN where none agree).
        rel_depth_err: [H, W] mean relative depth error over the agreeing views.
    """

    mask: torch.Tensor
    n_agree: torch.Tensor
    reproj_err: torch.Tensor
    rel_depth_err: torch.Tensor


def check_consistency(
    ref: int,
    depths: list[torch.Tensor],
    Ks: list[torch.Tensor],
    w2cs: list[torch.Tensor],
    max_reproj_px: float = 1.0,
    max_rel_depth: float = 0.01,
    min_views: int = 2,
) -> ConsistencyResult:
    """Forward-backward check of view ``ref``'s depth against every other view.

    Args:
        ref: index of the reference view in the lists.
        depths: per view [H_i, W_i] depth (0 = none); Ks: [3, 3]; w2cs: [4, 4].
        max_reproj_px, max_rel_depth, min_views: see the module docstring.
    """
    d_ref = depths[ref]
    h, w = d_ref.shape
    has = d_ref > 0
    X = backproject(d_ref, Ks[ref], w2cs[ref])  # [H, W, 3]
    v0, u0 = torch.meshgrid(
        torch.arange(h, device=d_ref.device, dtype=torch.float32) + 0.5,
        torch.arange(w, device=d_ref.device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    start = torch.stack([u0, v0], -1)
    n_agree = has.int()
    err_sum = torch.zeros(h, w, device=d_ref.device)
    rel_sum = torch.zeros(h, w, device=d_ref.device)
    for j in range(len(depths)):
        if j == ref:
            continue
        d_j = depths[j]
        hj, wj = d_j.shape
        uv, z = project(X, Ks[j], w2cs[j])
        col = torch.floor(uv[..., 0]).long()
        row = torch.floor(uv[..., 1]).long()
        inside = has & (z > 0) & (col >= 0) & (col < wj) & (row >= 0) & (row < hj)
        dj = d_j[row.clamp(0, hj - 1), col.clamp(0, wj - 1)]
        inside &= dj > 0
        # Back-project the source depth at the projected position, reproject into ref.
        rays = torch.stack(
            [
                (uv[..., 0] - Ks[j][0, 2]) / Ks[j][0, 0],
                (uv[..., 1] - Ks[j][1, 2]) / Ks[j][1, 1],
                torch.ones_like(dj),
            ],
            -1,
        )
        c2w_j = torch.linalg.inv(w2cs[j])
        Y = (rays * dj[..., None]) @ c2w_j[:3, :3].T + c2w_j[:3, 3]
        uv_back, z_back = project(Y, Ks[ref], w2cs[ref])
        err = (uv_back - start).norm(dim=-1)
        rel = (z_back - d_ref).abs() / d_ref.clamp_min(1e-12)
        agree = inside & (err < max_reproj_px) & (rel < max_rel_depth)
        n_agree = n_agree + agree.int()
        err_sum = err_sum + torch.where(agree, err, torch.zeros_like(err))
        rel_sum = rel_sum + torch.where(agree, rel, torch.zeros_like(rel))
    others = (n_agree - 1).clamp_min(0).float()
    nan = torch.full_like(err_sum, float("nan"))
    mean_err = torch.where(others > 0, err_sum / others.clamp_min(1), nan)
    mean_rel = torch.where(others > 0, rel_sum / others.clamp_min(1), nan)
    mask = has & (n_agree >= min_views)
    return ConsistencyResult(mask, n_agree, mean_err, mean_rel)


def points_from_depth(
    depth: torch.Tensor, mask: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, image: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """World points [M, 3] and colours [M, 3] (in [0, 1]) of the ``mask`` [H, W] pixels.

    Args:
        depth: [H, W]; image: [3, H, W] the view's colours.
    """
    X = backproject(depth, K, w2c)[mask]
    rgb = image.permute(1, 2, 0)[mask]
    return X.cpu().numpy().astype(np.float64), rgb.cpu().numpy().astype(np.float64)


def _voxel_keys(points: np.ndarray, origin: np.ndarray, size: float) -> np.ndarray:
    """One int64 key per point for the voxel of side ``size`` holding it."""
    idx = np.floor((points - origin) / size).astype(np.int64)
    dims = idx.max(0) + 1
    return (idx[:, 0] * dims[1] + idx[:, 1]) * dims[2] + idx[:, 2]


def count_voxels(points: np.ndarray, size: float) -> int:
    """Number of occupied voxels of side ``size``."""
    return len(np.unique(_voxel_keys(points, points.min(0), size)))


def voxel_downsample(
    points: np.ndarray, feats: np.ndarray, max_points: int, iterations: int = 30
) -> tuple[np.ndarray, np.ndarray, float]:
    """At most ``max_points`` points: one per voxel, the mean position and features of its
    points, with the smallest voxel side (found by bisection in log scale) that fits.

    Args:
        points: [N, 3]; feats: [N, F] averaged per voxel (colours, normals ...).
    Returns:
        points [M, 3], feats [M, F] with M <= max_points (none when ``max_points`` < 1), and
        the voxel side (0 when no downsampling was needed).
    """
    n = len(points)
    if n <= max_points:
        return points, feats, 0.0
    if max_points < 1:
        return points[:0], feats[:0], float("inf")
    origin = points.min(0)
    extent = float((points.max(0) - origin).max())
    lo, hi = extent * 1e-7, extent * 1.01 + 1e-12  # count(lo) > max_points >= count(hi)
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        if count_voxels(points, mid) > max_points:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.002:
            break
    keys = _voxel_keys(points, origin, hi)
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    m = len(counts)
    both = np.concatenate([points, feats], 1)
    mean = np.stack([np.bincount(inv, col, m) for col in both.T], 1) / counts[:, None]
    return mean[:, :3], mean[:, 3:], hi


def estimate_normals(points: np.ndarray) -> np.ndarray:
    """[N, 3] normals of the fused points: zeros (3DGS ignores them at initialisation)."""
    return np.zeros_like(points)
