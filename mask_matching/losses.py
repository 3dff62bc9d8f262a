"""Losses of the descriptor network and the per-level distance that everything shares.

Distance. Two descriptors f, g of shape [L, D] (unit length per level) differ at level l by
``mean_D (f_l - g_l)^2`` (``level_distance``); they *agree* at level l when that is below a
tolerance, 0.02 in RegSegField (``level_agreement``). The training side counts a target
view as confirming a Gaussian when the descriptors agree at the best level
(``views_agree``, minimum over levels; seeds digest 1.4). With unit vectors,
``mean_D (f - g)^2 = |f - g|^2 / D``, so 0.02 with D = 16 is a Euclidean distance of 0.57.

Inter-view match loss. For every training pair with COLMAP inlier matches, the descriptors
of the two matched pixels should be equal: the mean over matches of
``sum_l mean_D (f_l - g_l)^2``, averaged over the pairs that have matches.

Intra-view hierarchical pull/push loss. Within one view take the distinct membership codes
u_k (multi-hot over the view's channels) with pixel counts c_k. The overlap
``O_kl = u_k . u_l`` counts the masks two codes share. At level l (0 = coarsest), with d
the Euclidean distance of the level-l descriptors:

- pull (O_kl > l): ``d``, so pixels sharing more than l masks group at level l;
- push (O_kl <= l): ``relu(1 - d) * (l + 1) / L`` (margin 1), so they separate there.

Each pair is weighted by ``c_k c_l`` (upper triangle, k < l), i.e. by how many pixel pairs
it stands for, and the terms enter as ``0.5 pull + 0.1 push``. Normalisation: RegSegField
divides the sum over views by ``(sum c)^2`` of whichever view came last in its loop. Here
each view is divided by its own ``(sum_k c_k)^2`` = (its pixel count)^2, so every view's
term is the pixel-pair average of that view whatever its size; the views are then summed as
in the original (identical to it when all views have one size).
"""

from __future__ import annotations

import torch

AGREE_TOL = 0.02
PULL_WEIGHT = 0.5
PUSH_WEIGHT = 0.1
MARGIN = 1.0


def level_distance(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """[..., L, D] x [..., L, D] -> [..., L]: mean over D of the squared difference."""
    return (f - g).square().mean(dim=-1)


def level_agreement(f: torch.Tensor, g: torch.Tensor, tol: float = AGREE_TOL) -> torch.Tensor:
    """[..., L] bool: the descriptors agree at each level (distance below ``tol``)."""
    return level_distance(f, g) < tol


def views_agree(
    f: torch.Tensor, g: torch.Tensor, tol: float = AGREE_TOL, reduce: str = "min"
) -> torch.Tensor:
    """[...] bool: agreement at the best level (``reduce="min"``) or at every level ("max")."""
    d = level_distance(f, g)  # [..., L]
    d = d.amin(dim=-1) if reduce == "min" else d.amax(dim=-1)
    return d < tol


def match_loss(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Mean over matches of the level-summed distance; f, g [M, L, D] -> scalar."""
    if f.shape[0] == 0:
        return f.sum() * 0.0
    return level_distance(f, g).sum(dim=-1).mean()


def _safe_cdist(x: torch.Tensor) -> torch.Tensor:
    """[L, U, D] -> [L, U, U] Euclidean distances with a finite gradient everywhere.

    Computed as ``|x|^2 + |y|^2 - 2 x.y`` (memory [L, U, U], not [L, U, U, D]); squared
    distances below ``1e-6`` (rounding noise of equal rows in float32) count as 0.
    """
    sq_norm = x.square().sum(dim=-1)  # [L, U]
    sq = sq_norm[:, :, None] + sq_norm[:, None, :] - 2.0 * (x @ x.transpose(1, 2))  # [L, U, U]
    pos = sq > 1e-6
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def hierarchy_terms(
    feats: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull and push terms of one view, each normalised by (pixel count)^2.

    Args:
        feats: [U, L, D] descriptors of the view's distinct codes.
        codes: [U, C] multi-hot membership (float or bool).
        counts: [U] pixels per code.

    Returns:
        (pull, push): scalars, before the 0.5 / 0.1 weights.
    """
    u, levels, _ = feats.shape
    codes = codes.to(feats.dtype)
    c = counts.to(feats.dtype)
    overlap = codes @ codes.T  # [U, U] masks shared
    upper = torch.triu(torch.ones(u, u, dtype=torch.bool, device=feats.device), diagonal=1)
    w = (c[:, None] * c[None, :]) * upper  # [U, U] pixel-pair weights, k < l only
    d = _safe_cdist(feats.transpose(0, 1))  # [L, U, U]
    lv = torch.arange(levels, device=feats.device, dtype=feats.dtype)[:, None, None]  # [L, 1, 1]
    pull_mask = overlap[None] > lv  # [L, U, U]
    pull = (d * w * pull_mask).sum()
    push = (torch.relu(MARGIN - d) * w * (~pull_mask) * (lv + 1) / levels).sum()
    norm = c.sum().square().clamp_min(1.0)
    return pull / norm, push / norm


def hierarchy_loss(
    feats: torch.Tensor,
    codes: torch.Tensor,
    counts: torch.Tensor,
    pull_weight: float = PULL_WEIGHT,
    push_weight: float = PUSH_WEIGHT,
) -> torch.Tensor:
    """``pull_weight * pull + push_weight * push`` of one view (see ``hierarchy_terms``)."""
    pull, push = hierarchy_terms(feats, codes, counts)
    return pull_weight * pull + push_weight * push
