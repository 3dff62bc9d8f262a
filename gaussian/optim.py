"""Optimizer and learning-rate schedules for the Gaussian parameters.

One ``torch.optim.Adam`` with one named parameter group per key of ``GaussianModel.params``
(the 3DGS layout): each key has its own learning rate and its own Adam state, and a single
optimizer step updates every group (one fused/foreach launch on the GPU instead of one
optimizer per key).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gaussian.model import GaussianModel


def expon_lr(
    lr_init: float,
    lr_final: float,
    lr_delay_steps: int = 0,
    lr_delay_mult: float = 1.0,
    max_steps: int = 1_000_000,
) -> Callable[[int], float]:
    """3DGS's log-linear decay from ``lr_init`` to ``lr_final`` with an optional warm-up.

    With ``lr_delay_steps > 0`` the rate is scaled by a sine ramp from ``lr_delay_mult`` to 1.
    """

    def schedule(step: int) -> float:
        if step < 0 or (lr_init == 0.0 and lr_final == 0.0):
            return 0.0
        if lr_delay_steps > 0:
            delay = lr_delay_mult + (1 - lr_delay_mult) * math.sin(
                0.5 * math.pi * min(max(step / lr_delay_steps, 0.0), 1.0)
            )
        else:
            delay = 1.0
        t = min(max(step / max_steps, 0.0), 1.0)
        return delay * math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)

    return schedule


def default_learning_rates(opt, spatial_lr_scale: float) -> dict[str, float]:
    """Per-key learning rates of 3DGS from the OptimizationParams group."""
    return {
        "means": opt.position_lr_init * spatial_lr_scale,
        "scales": opt.scaling_lr,
        "quats": opt.rotation_lr,
        "opacities": opt.opacity_lr,
        "sh0": opt.feature_lr,
        "shN": opt.feature_lr / 20.0,
    }


def build_optimizer(
    model: GaussianModel,
    lrs: dict[str, float],
    fused: bool | None = None,
) -> torch.optim.Adam:
    """Adam over every key of ``model.params`` (eps 1e-15 as 3DGS).

    Keys without an entry in ``lrs`` are an error: a new learnable per-Gaussian tensor must
    say how fast it learns.
    """
    missing = set(model.params) - set(lrs)
    if missing:
        raise KeyError(f"no learning rate for parameter(s) {sorted(missing)}")
    groups = [{"params": [p], "lr": lrs[name], "name": name} for name, p in model.params.items()]
    if fused is None:
        fused = model.device.type == "cuda"
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=fused, foreach=None if fused else True)


def set_lr(optimizer: torch.optim.Optimizer, name: str, lr: float) -> None:
    for group in optimizer.param_groups:
        if group["name"] == name:
            group["lr"] = lr
            return
    raise KeyError(name)
