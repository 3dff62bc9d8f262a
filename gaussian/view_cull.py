"""Visibility culling during warm-up (RegSegField, seeds digest 1.7): a Gaussian whose
centre lies inside fewer than ``min_views`` training views is constrained by at most one
image, so at 3 views it is free to float; RegSegField removes those once, at the end of
its 500-step warm-up (``--cull_min_views 2 --cull_views_at 500``).

RegSegField counts how often each centre lands inside the view of the step, over the
first two passes through the views; counting each training camera once, as here, is the
same number halved, without depending on the order of the views.
"""

from __future__ import annotations

import torch

from gaussian import ops
from gaussian.model import GaussianModel


@torch.no_grad()
def count_views(means: torch.Tensor, cameras: list) -> torch.Tensor:
    """[N] int32: the cameras whose image holds each centre ``means`` [N, 3], in front."""
    count = torch.zeros(means.shape[0], dtype=torch.int32, device=means.device)
    for cam in cameras:
        count += cam.sees(means).int()
    return count


def cull_unseen(model: GaussianModel, optimizer, state: dict | None, cameras: list,
                min_views: int) -> int:  # fmt: skip
    """Remove the Gaussians inside fewer than ``min_views`` of ``cameras`` (keeping at
    least one Gaussian); returns how many went."""
    drop = count_views(model.get_xyz, cameras) < min_views
    if bool(drop.all()):
        drop[0] = False
    n = int(drop.sum())
    if n:
        ops.remove(model, optimizer, drop, state)
    return n
