"""Plane-sweep stereo with known poses: a depth map per training view, in PyTorch.

For a reference view we try ``num_planes`` fronto-parallel planes, uniform in inverse depth
between a near and a far bound. At each plane every reference pixel is back-projected to that
depth, projected into each source view and the source colour is read there (bilinear
``grid_sample``; samples outside the source image or behind it are invalid). A windowed
normalised cross-correlation (NCC) between the reference patch and the warped source patch
scores the plane; the scores of the source views are combined robustly (mean of the best
``top_k`` valid ones, so that a view that is occluded there does not veto the depth), the
best plane wins, a parabola through its neighbours refines it below one plane, and pixels
whose best NCC is below ``min_ncc`` (or whose window has no texture) get depth 0.

Why a plane sweep written here rather than OpenCV's ``StereoSGBM``: SGBM matches along the
rows of a *rectified pair*. DTU's cameras converge strongly, so rectification warps the
images heavily (and resamples them twice), and each run yields a disparity map of one pair
only, to be merged by hand. The plane sweep works in the reference image directly, uses all
views with their known poses at once, and runs the same code on CPU and GPU. It has no
smoothness term (SGBM's strength); the windowed NCC and the consistency check in
``mvs.fusion`` stand in for it.

Conventions (those of ``scene.cameras.Camera``): ``K`` [3, 3] pinhole intrinsics in pixels
with pixel centres at +0.5 (the top-left pixel's centre is (0.5, 0.5)), ``w2c`` [4, 4]
world-to-camera (x_cam = R x_world + t), depth = camera z.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


class MVSWarning(UserWarning):
    """Something in the input limits the stereo (e.g. two views that do not overlap)."""


@dataclass
class StereoView:
    """One calibrated image (all tensors on the stereo device).

    Attributes:
        name: image name (used in messages).
        image: [3, H, W] float RGB in [0, 1].
        K: [3, 3] intrinsics at this image's resolution.
        w2c: [4, 4] world-to-camera.
    """

    name: str
    image: torch.Tensor
    K: torch.Tensor
    w2c: torch.Tensor

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def to(self, device: torch.device | str) -> StereoView:
        return StereoView(
            self.name,
            self.image.to(device).float(),
            self.K.to(device).float(),
            self.w2c.to(device).float(),
        )


@dataclass
class SweepSettings:
    """Knobs of ``plane_sweep_depth`` (defaults tuned on LLFF fern and DTU scan24, 3 views).

    Attributes:
        num_planes: depth hypotheses, uniform in inverse depth.
        window: side of the NCC window in pixels (odd).
        top_k: sources averaged per pixel: the best ``top_k`` valid NCC scores.
        min_ncc: best aggregated NCC below which a pixel gets no depth.
        min_std: reference window standard deviation (on [0, 1] colours) below which the
            pixel is textureless and gets no depth.
        plane_chunk: planes processed at once (bounds memory: about
            ``plane_chunk * n_sources * 4 * H * W`` floats).
    """

    num_planes: int = 128
    window: int = 7
    top_k: int = 2
    min_ncc: float = 0.5
    min_std: float = 0.01
    plane_chunk: int = 16


# --------------------------------------------------------------------------- helpers
def pick_stereo_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(device)


def planes_for_step(
    ref: StereoView, sources: list[StereoView], near: float, far: float, step_px: float
) -> int:
    """Planes needed so that consecutive planes move the reference image centre by at most
    ``step_px`` pixels in every source (NCC peaks are a few pixels wide: coarser steps
    skip them). Planes are uniform in inverse depth, so the motion per plane is nearly
    constant along the sweep."""
    h, w = ref.hw
    centre = pixel_grid(h, w, ref.image.device)[:, [(h // 2) * w + w // 2]]
    ends = torch.tensor([near, far], device=ref.image.device)
    span = 0.0
    for src in sources:
        uv, z = warp_coords(ref, src, ends, centre)
        if bool((z > 0).all()):
            span = max(span, float((uv[0, 0] - uv[1, 0]).norm()))
    return int(math.ceil(span / step_px)) + 1


def pixel_grid(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[3, H*W] homogeneous pixel centres (u + 0.5, v + 0.5, 1), row-major."""
    v, u = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) + 0.5,
        torch.arange(w, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)])


def inverse_depth_planes(near: float, far: float, n: int) -> torch.Tensor:
    """[n] depths from ``near`` to ``far``, uniform in 1 / depth (dense where it matters)."""
    if not (0 < near < far and math.isfinite(far)):
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    inv = torch.linspace(1.0 / near, 1.0 / far, n, dtype=torch.float64)
    return (1.0 / inv).float()


def depth_range_from_points(
    points: np.ndarray,
    K: np.ndarray,
    w2c: np.ndarray,
    hw: tuple[int, int],
    lo: float = 2.0,
    hi: float = 98.0,
    margin: float = 0.25,
    min_points: int = 8,
) -> tuple[float, float] | None:
    """(near, far) of one view from the depths of the points it sees, or None.

    Args:
        points: [N, 3] world points (train-only SfM).
        K: [3, 3], w2c: [4, 4] of the view; hw: its (H, W).
        lo, hi: percentiles of the visible depths (robust to a few stray points).
        margin: the range is widened to [near * (1 - margin), far * (1 + margin)].
        min_points: fewer visible points than this gives None.
    """
    if points is None or len(points) == 0:
        return None
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    front = z > 1e-9
    uv = cam[front] @ K.T
    uv = uv[:, :2] / uv[:, 2:3]
    h, w = hw
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    z = z[front][inside]
    if len(z) < min_points:
        return None
    near, far = np.percentile(z, lo), np.percentile(z, hi)
    return float(near * (1.0 - margin)), float(far * (1.0 + margin))


def box_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a k x k window (separable, replicate-padded), same shape as ``x`` [N, 1, H, W]."""
    r = k // 2
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.avg_pool2d(x, (1, k), stride=1)
    return F.avg_pool2d(x, (k, 1), stride=1)


def warp_coords(
    ref: StereoView, src: StereoView, depths: torch.Tensor, pix: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each reference pixel, put at each depth, lands in the source image.

    For a reference pixel p (homogeneous) at depth d the source pixel is
    ``K_s (R_rel d K_r^-1 p + t_rel) = d * A p + b``: one matrix product per view pair,
    then a scaled add per plane (a plane-induced homography in disguise).

    Args:
        depths: [P] plane depths; pix: [3, H*W] from ``pixel_grid``.
    Returns:
        uv [P, H*W, 2] source pixel coordinates and z [P, H*W] source camera depth.
    """
    rel = src.w2c @ torch.linalg.inv(ref.w2c)  # reference camera -> source camera
    A = src.K @ rel[:3, :3] @ torch.linalg.inv(ref.K) @ pix  # [3, HW]
    b = src.K @ rel[:3, 3]  # [3]
    p = depths.reshape(len(depths), 1, -1) * A[None] + b[None, :, None]  # [P, 3, HW]
    z = p[:, 2]
    uv = p[:, :2] / z.clamp_min(1e-8)[:, None]
    return uv.transpose(1, 2), z


def sample_source(
    image: torch.Tensor, uv: torch.Tensor, z: torch.Tensor, hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear colours of ``image`` [3, Hs, Ws] at ``uv`` [P, H*W, 2] (pixel units).

    Returns:
        colours [P, 3, H, W] and valid [P, H, W] (in front of the source and inside it).
    """
    hs, ws = image.shape[-2:]
    h, w = hw
    P = uv.shape[0]
    grid = torch.stack([uv[..., 0] * (2.0 / ws) - 1.0, uv[..., 1] * (2.0 / hs) - 1.0], -1)
    valid = (z > 1e-6) & (grid.abs() <= 1.0).all(-1)
    out = F.grid_sample(
        image[None].expand(P, -1, -1, -1),
        grid.view(P, h, w, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return out, valid.view(P, h, w)


class RefStats:
    """Window statistics of the reference image, computed once per reference view.

    NCC is pooled over the colour channels: the window holds ``3 * k * k`` samples, so the
    per-channel sums can be taken on channel means (one box filter per statistic).
    """

    def __init__(self, image: torch.Tensor, k: int):
        self.k = k
        self.img = image  # [3, H, W]
        mean_c = image.mean(0, keepdim=True)[None]  # [1, 1, H, W]
        sq_c = (image * image).mean(0, keepdim=True)[None]
        self.mu = box_filter(mean_c, k)[0, 0]  # [H, W]
        var = (box_filter(sq_c, k)[0, 0] - self.mu**2).clamp_min(0.0)
        self.std = var.sqrt()


def ncc_volume(ref: RefStats, warped: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Windowed NCC between the reference and warped source images.

    Args:
        warped: [P, 3, H, W] source colours at each plane; valid: [P, H, W].
    Returns:
        [P, H, W] NCC in [-1, 1]; NaN where any sample of the window is invalid.
    """
    k = ref.k
    mu_s = box_filter(warped.mean(1, keepdim=True), k)[:, 0]
    e_ss = box_filter((warped * warped).mean(1, keepdim=True), k)[:, 0]
    e_rs = box_filter((warped * ref.img[None]).mean(1, keepdim=True), k)[:, 0]
    var_s = (e_ss - mu_s**2).clamp_min(0.0)
    cov = e_rs - ref.mu[None] * mu_s
    ncc = cov / (ref.std[None] * var_s.sqrt() + 1e-6)
    full = box_filter(valid.float()[:, None], k)[:, 0] > 0.999
    return torch.where(full, ncc.clamp(-1.0, 1.0), torch.full_like(ncc, float("nan")))


def aggregate_sources(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Mean of the best ``top_k`` valid scores over sources.

    Args:
        scores: [S, P, H, W] NCC per source (NaN = invalid).
    Returns:
        [P, H, W]; -1 where no source is valid. With fewer than ``top_k`` valid sources
        the mean is over those there are.
    """
    filled = torch.nan_to_num(scores, nan=-2.0)
    k = min(top_k, scores.shape[0])
    best = filled.topk(k, dim=0).values  # [k, P, H, W]
    ok = best > -1.5
    n = ok.sum(0)
    total = torch.where(ok, best, torch.zeros_like(best)).sum(0)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, -1.0))


def refine_subplane(
    cost: torch.Tensor, inv_planes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winner-take-all plus a parabola through the winner and its two neighbours.

    The planes are uniform in inverse depth, so the parabola's vertex offset (in plane
    steps, within +-0.5) is applied in inverse depth.

    Args:
        cost: [D, H, W] aggregated NCC (higher is better).
        inv_planes: [D] inverse depths of the planes (uniform spacing).
    Returns:
        depth [H, W], best NCC [H, W], index [H, W] of the winning plane.
    """
    D = cost.shape[0]
    best, idx = cost.max(0)
    lo, hi = (idx - 1).clamp_min(0), (idx + 1).clamp_max(D - 1)
    c_lo, c_hi = cost.gather(0, lo[None])[0], cost.gather(0, hi[None])[0]
    denom = c_lo - 2.0 * best + c_hi
    offset = torch.where(
        (denom < -1e-9) & (idx > 0) & (idx < D - 1),
        0.5 * (c_lo - c_hi) / denom.clamp_max(-1e-9),
        torch.zeros_like(best),
    ).clamp(-0.5, 0.5)
    step = inv_planes[1] - inv_planes[0] if D > 1 else inv_planes.new_tensor(0.0)
    inv = inv_planes[idx] + offset * step
    return 1.0 / inv.clamp_min(1e-12), best, idx


# --------------------------------------------------------------------------- main entry
@dataclass
class SweepResult:
    """Depth and confidence of one reference view.

    Attributes:
        depth: [H, W] float32 camera z (0 = no depth).
        confidence: [H, W] best aggregated NCC (-1 where nothing was valid).
        valid_fraction: {source name: fraction of (pixel, plane) warps inside that source}.
    """

    depth: torch.Tensor
    confidence: torch.Tensor
    valid_fraction: dict[str, float]


def plane_sweep_depth(
    ref: StereoView,
    sources: list[StereoView],
    near: float,
    far: float,
    settings: SweepSettings | None = None,
    progress: Callable[[int], None] | None = None,
    min_overlap: float = 0.01,
) -> SweepResult:
    """Depth map of ``ref`` from ``sources`` by plane sweep (see the module docstring).

    Args:
        ref, sources: views on one device (the computation runs there).
        near, far: depth bounds of the sweep for ``ref``.
        settings: ``SweepSettings`` (defaults when None).
        progress: called with the number of planes done after each chunk (a tqdm update).
        min_overlap: a source whose warps land inside it for less than this fraction of
            (pixel, plane) pairs triggers an ``MVSWarning`` naming the pair.
    """
    s = settings or SweepSettings()
    if s.window % 2 != 1:
        raise ValueError(f"the NCC window must be odd, got {s.window}")
    if not sources:
        raise ValueError(f"{ref.name}: plane sweep needs at least one source view")
    device = ref.image.device
    h, w = ref.hw
    depths = inverse_depth_planes(near, far, s.num_planes).to(device)
    inv_planes = 1.0 / depths
    pix = pixel_grid(h, w, device)
    stats = RefStats(ref.image, s.window)
    cost = torch.empty(s.num_planes, h, w, device=device)
    n_valid = torch.zeros(len(sources), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, s.num_planes, s.plane_chunk):
            d = depths[start : start + s.plane_chunk]
            scores = []
            for j, src in enumerate(sources):
                uv, z = warp_coords(ref, src, d, pix)
                warped, valid = sample_source(src.image, uv, z, (h, w))
                n_valid[j] += float(valid.sum())
                scores.append(ncc_volume(stats, warped, valid))
            cost[start : start + len(d)] = aggregate_sources(torch.stack(scores), s.top_k)
            if progress is not None:
                progress(len(d))
        depth, conf, _ = refine_subplane(cost, inv_planes)
    good = (conf >= s.min_ncc) & (stats.std >= s.min_std)
    depth = torch.where(good, depth, torch.zeros_like(depth))
    fractions = {
        src.name: float(n_valid[j]) / (s.num_planes * h * w) for j, src in enumerate(sources)
    }
    for name, frac in fractions.items():
        if frac < min_overlap:
            warnings.warn(
                f"views {ref.name} and {name} do not overlap: {100 * frac:.2f}% of the "
                f"reference pixels x planes land inside {name}; it adds nothing to "
                f"{ref.name}'s depth",
                MVSWarning,
                stacklevel=2,
            )
    return SweepResult(depth.float(), conf.float(), fractions)
