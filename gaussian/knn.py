"""Nearest-neighbour distances for initial Gaussian scales.

A KD-tree (scipy) answers k-NN queries in O(N log N), so initialising from millions of
points never builds an N x N distance matrix.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree


def mean_sq_dist_to_neighbors(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Mean squared distance of each point to its ``k`` nearest other points.

    Args:
        points: [N, 3] positions (any device).
    Returns:
        [N] float32 on ``points.device``. With fewer than ``k + 1`` points, the available
        neighbours are used (a single point gets 1.0).
    """
    n = points.shape[0]
    if n < 2:
        return torch.ones(n, device=points.device)
    pts = points.detach().cpu().double().numpy()
    kk = min(k, n - 1)
    dist, _ = cKDTree(pts).query(pts, k=kk + 1, workers=-1)
    d2 = np.square(dist[:, 1:]).mean(axis=1)  # column 0 is the point itself
    return torch.from_numpy(d2).float().to(points.device)
