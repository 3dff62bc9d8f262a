"""ISRF-style region growing over the Gaussians, and the Gaussian under a 2D click.

ISRF grows a 3D selection over a voxel grid: a voxel c next to the selection takes the value

    m_c = sum_n m_n w_cn / sum_n w_cn
    w_cn = exp(-|f_n - f_c|^2 / sigma_f) * exp(-|x_n - x_c|_1 / sigma_d)

over its 3x3x3 neighbourhood (c itself included, with m_c = 0), and joins the selection when
m_c > 0.1. Gaussians have no grid, so the neighbourhood here is the k nearest Gaussian
centres (a kNN graph; the node itself counts once in the denominator, as the centre voxel
does). Positions are measured in units of the median nearest-neighbour spacing, so
``sigma_d = 1`` means "about one neighbour away" whatever the scene's units; features are
normalised to a mean squared norm of 1 (``cluster.normalise_features``).

The walk is a breadth-first search with a vectorised frontier: each round evaluates, at
once, every unselected Gaussian that has a newly selected Gaussian among its neighbours
(found through the reverse adjacency in CSR form), and stops when a round adds nothing. The
work is O(N k) in total. Everything is torch on the model's device, so on a GPU the whole
walk stays there; the kNN is scipy's cKDTree on the CPU and a chunked ``torch.cdist`` +
``topk`` on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from segmentation.errors import SegmentationError

# Above this many points the GPU's exact brute force (O(N^2)) loses to the k-d tree: at
# 1,000,000 Gaussians it took 19.3 s on an H100 (bench/segmentation_speed.py).
BRUTE_FORCE_MAX = 100_000


def knn_graph(
    xyz: torch.Tensor, k: int = 16, chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of every point, itself excluded: (idx [N, k] long, dist [N, k])
    on the device of ``xyz``.

    ``scipy.spatial.cKDTree`` on every CPU core (O(N log N)), except for CUDA tensors of at
    most ``BRUTE_FORCE_MAX`` points: exact brute force by chunks of ``chunk`` query rows
    (``torch.cdist`` then ``topk``), with no host round trip.
    """
    n = xyz.shape[0]
    k = min(k, n - 1)
    if k < 1:
        raise SegmentationError(f"region growing needs at least 2 Gaussians (the model has {n})")
    if xyz.device.type == "cuda" and n <= BRUTE_FORCE_MAX:
        idx = torch.empty(n, k, dtype=torch.long, device=xyz.device)
        dist = torch.empty(n, k, dtype=xyz.dtype, device=xyz.device)
        pts = xyz.float()
        for s in range(0, n, chunk):
            d = torch.cdist(pts[s : s + chunk], pts)  # [chunk, N]
            d[
                torch.arange(d.shape[0], device=d.device),
                torch.arange(s, s + d.shape[0], device=d.device),
            ] = float("inf")
            vals, ids = torch.topk(d, k, dim=1, largest=False)
            idx[s : s + chunk], dist[s : s + chunk] = ids, vals
        return idx, dist
    from scipy.spatial import cKDTree

    pts = xyz.detach().cpu().double().numpy()
    # Sliding-midpoint splits (balanced_tree=False): the build, which runs on one core,
    # takes half the time of median splits and the parallel query is no slower
    # (1M clustered points, 2 cores: 0.29 + 4.6 s against 0.57 + 7.8 s).
    tree = cKDTree(pts, balanced_tree=False)
    dist_np, idx_np = tree.query(pts, k=k + 1, workers=-1)
    # Drop the first hit (the point itself; duplicates may swap order, so drop by identity).
    self_hit = idx_np == np.arange(n)[:, None]
    keep = ~self_hit
    keep[keep.sum(1) > k, -1] = False  # no self hit among the k+1: drop the farthest
    idx_np = idx_np[keep].reshape(n, k)
    dist_np = dist_np[keep].reshape(n, k)
    return torch.from_numpy(idx_np).to(xyz.device), torch.from_numpy(dist_np).to(xyz)


def bilateral_weights(
    xyz: torch.Tensor,  # [N, 3]
    feats: torch.Tensor,  # [N, C] (normalised)
    idx: torch.Tensor,  # [N, k]
    sigma_f: float,
    sigma_d: float,
    spacing: float | None = None,
    chunk: int = 65536,
) -> torch.Tensor:  # [N, k]
    """w_cn = exp(-|f_n - f_c|^2 / sigma_f) * exp(-|x_n - x_c|_1 / (sigma_d * spacing)).

    ``spacing`` (default: the median distance to the nearest neighbour) is the unit of
    distance, see the module docstring.
    """
    if spacing is None:
        spacing = float((xyz[idx[:, 0]] - xyz).norm(dim=-1).median().clamp_min(1e-12))
    out = torch.empty(idx.shape, dtype=xyz.dtype, device=xyz.device)
    for s in range(0, len(idx), chunk):  # chunks: [chunk, k, C] gathers, not [N, k, C]
        nb = idx[s : s + chunk]
        dx = (xyz[nb] - xyz[s : s + chunk, None, :]).abs().sum(-1)  # [chunk, k] L1
        df = ((feats[nb] - feats[s : s + chunk, None, :]) ** 2).sum(-1)  # [chunk, k]
        out[s : s + chunk] = torch.exp(-df / sigma_f - dx / (sigma_d * spacing))
    return out


def _reverse_csr(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse adjacency of a kNN graph: for node j, the nodes c with j in idx[c].

    Returns (ptr [N + 1], src [N k]) with src[ptr[j]:ptr[j + 1]] the nodes pointing at j.
    """
    n, k = idx.shape
    dst = idx.reshape(-1)
    src = torch.arange(n, device=idx.device).repeat_interleave(k)
    order = torch.argsort(dst, stable=True)
    counts = torch.bincount(dst, minlength=n)
    ptr = torch.zeros(n + 1, dtype=torch.long, device=idx.device)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr, src[order]


def _gather_ranges(ptr: torch.Tensor, values: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """values[ptr[j]:ptr[j + 1]] for every j in ``nodes``, concatenated (no Python loop)."""
    starts, ends = ptr[nodes], ptr[nodes + 1]
    counts = ends - starts
    total = int(counts.sum())
    if total == 0:
        return values.new_empty(0)
    offsets = torch.cumsum(counts, 0) - counts  # where each range starts in the output
    pos = torch.arange(total, device=ptr.device) - offsets.repeat_interleave(counts)
    return values[starts.repeat_interleave(counts) + pos]


def grow_region(
    seeds: torch.Tensor,  # [S] long Gaussian ids, or [N] bool
    idx: torch.Tensor,  # [N, k] kNN graph
    weights: torch.Tensor,  # [N, k] bilateral weights
    threshold: float = 0.1,
    allowed: torch.Tensor | None = None,  # [N] bool: Gaussians that may join (opacity gate)
    max_rounds: int = 100_000,
    progress: bool = False,
    expand_seeds: float | None = 0.5,
) -> torch.Tensor:  # [N] bool selection
    """Grow the selection from ``seeds`` until no Gaussian passes ``threshold`` (docstring).

    Each round: candidates = unselected, allowed Gaussians pointing at a Gaussian selected in
    the previous round; m_c = sum_n m_n w_cn / (1 + sum_n w_cn); those with m_c > threshold
    join. Returns the final selection.

    ``expand_seeds``: the seeds' neighbours whose bilateral weight exceeds this value join the
    seeds first (None: off). A single seed Gaussian is like one voxel in ISRF, whose strokes
    cover many: with k neighbours one selected neighbour gives m_c < 1 / (k + 1), below the
    threshold for k >= 10, so a click is widened into a small stroke of similar neighbours.
    """
    n = idx.shape[0]
    device = idx.device
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    if seeds.dtype == torch.bool:
        mask |= seeds.to(device)
    else:
        mask[seeds.to(device)] = True
    if not mask.any():
        raise SegmentationError("region growing got no seed Gaussian")
    if expand_seeds is not None:
        s_ids = torch.nonzero(mask).squeeze(1)
        near = idx[s_ids][weights[s_ids] > expand_seeds]
        mask[near[allowed[near]] if allowed is not None else near] = True
    ptr, src = _reverse_csr(idx)
    wsum = weights.sum(1) + 1.0  # the node itself, with m_c = 0, as ISRF's centre voxel
    new = torch.nonzero(mask).squeeze(1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="region growing", unit=" rounds", leave=False)
    for _ in range(max_rounds):
        cand = _gather_ranges(ptr, src, new)
        if cand.numel() == 0:
            break
        cand = torch.unique(cand)
        cand = cand[~mask[cand]]
        if allowed is not None:
            cand = cand[allowed[cand]]
        if cand.numel() == 0:
            break
        m = (mask[idx[cand]].to(weights.dtype) * weights[cand]).sum(1) / wsum[cand]
        new = cand[m > threshold]
        if new.numel() == 0:
            break
        mask[new] = True
        if bar is not None:
            bar.update(1)
            bar.set_postfix(selected=int(mask.sum()))
    if bar is not None:
        bar.close()
    return mask


def pick_gaussian(camera, model, pipe, bg: torch.Tensor, x: float, y: float, backend: str = "auto",
                  min_alpha: float = 0.5) -> int:  # fmt: skip
    """Id of the Gaussian with the largest blending weight at pixel (x, y) of ``camera``.

    A rendered feature channel of ones is ``sum_g w_g`` at each pixel, with w_g = alpha_g T_g
    the blending weight of Gaussian g, so the gradient of that pixel's value with respect to
    the per-Gaussian ones IS the vector of blending weights at the pixel: one render and one
    backward pass, on either backend, without an index buffer. Raises ``SegmentationError``
    for a pixel outside the image or one where the accumulated opacity is below ``min_alpha``
    (a click on empty space).
    """
    from gaussian_renderer import render

    w, h = camera.image_width, camera.image_height
    if not (0 <= x < w and 0 <= y < h):
        raise SegmentationError(
            f"--click {camera.image_name} {x:g} {y:g} is outside the {w}x{h} image "
            "(x in [0, width), y in [0, height), pixels at training resolution)"
        )
    ones = torch.ones(model.num_gaussians, 1, device=model.device, requires_grad=True)
    with torch.enable_grad():
        out = render(camera, model, pipe, bg, features=ones, backend=backend, depth=False)
        px = out["features"][0, int(y), int(x)]
        (grad,) = torch.autograd.grad(px, ones)
    alpha = float(out["alpha"].detach()[0, int(y), int(x)])
    if alpha < min_alpha:
        raise SegmentationError(
            f"--click {camera.image_name} {x:g} {y:g} hits empty space (accumulated opacity "
            f"{alpha:.2f} < {min_alpha}); click on an object"
        )
    return int(grad[:, 0].argmax())
