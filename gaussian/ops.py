"""Edits of the set of Gaussians that keep optimizer state and side data aligned.

Every change of N goes through ``_edit``: it rewrites each parameter, its Adam moments
(``exp_avg``, ``exp_avg_sq``), the model's ``extras`` and any per-Gaussian tensors of a
strategy's running ``state`` dict in one pass, so nothing can fall out of step. Densification
strategies only decide *which* Gaussians to keep, add or reset; the mechanics live here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gaussian.model import GaussianModel

Tensor = torch.Tensor


def _groups(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {g["name"]: g for g in optimizer.param_groups}


def _edit(
    model: GaussianModel,
    optimizer: torch.optim.Optimizer | None,
    state: dict | None,
    fn: Callable[[str, Tensor, bool], Tensor],
) -> None:
    """Apply ``fn(name, tensor, is_moment)`` to every per-Gaussian tensor.

    ``fn`` receives parameters (``is_moment=False``) and Adam moments (``is_moment=True``,
    so it can zero-fill new rows) and returns the new tensor with the new first dimension.
    """
    n_old = model.num_gaussians
    groups = _groups(optimizer) if optimizer is not None else {}
    for name, param in list(model.params.items()):
        new_param = nn.Parameter(fn(name, param.detach(), False).contiguous())
        group = groups.get(name)
        if group is not None:
            old = group["params"][0]
            opt_state = optimizer.state.pop(old, None)
            if opt_state is not None:
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in opt_state:
                        opt_state[key] = fn(name, opt_state[key], True).contiguous()
                optimizer.state[new_param] = opt_state
            group["params"][0] = new_param
        model.params[name] = new_param
    for name, value in list(model.extras.items()):
        model.extras[name] = fn(name, value, False)
    if state is not None:
        for name, value in list(state.items()):
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n_old:
                state[name] = fn(name, value, True)


def keep(
    model: GaussianModel,
    optimizer: torch.optim.Optimizer | None,
    mask: Tensor,  # [N] bool, True = keep
    state: dict | None = None,
) -> None:
    """Prune: keep only the rows where ``mask`` is True."""
    idx = torch.nonzero(mask, as_tuple=False).squeeze(-1)
    _edit(model, optimizer, state, lambda _n, t, _m: t.index_select(0, idx))


def remove(
    model: GaussianModel,
    optimizer: torch.optim.Optimizer | None,
    mask: Tensor,  # [N] bool, True = remove
    state: dict | None = None,
) -> None:
    keep(model, optimizer, ~mask, state)


def append(
    model: GaussianModel,
    optimizer: torch.optim.Optimizer | None,
    new: dict[str, Tensor],  # key -> [M, ...] rows to add (raw, pre-activation values)
    state: dict | None = None,
) -> None:
    """Add M Gaussians. Their Adam moments and state entries start at zero.

    ``new`` must hold every key of ``model.params``; ``extras`` without an entry get zeros.
    """
    missing = set(model.params) - set(new)
    if missing:
        raise KeyError(f"append() needs values for {sorted(missing)}")
    m = next(iter(new.values())).shape[0]

    def fn(name: str, t: Tensor, is_moment: bool) -> Tensor:
        if not is_moment and name in new:
            rows = new[name].to(dtype=t.dtype, device=t.device)
        else:
            rows = torch.zeros((m, *t.shape[1:]), dtype=t.dtype, device=t.device)
        return torch.cat([t, rows], dim=0)

    _edit(model, optimizer, state, fn)


def duplicate(
    model: GaussianModel,
    optimizer: torch.optim.Optimizer | None,
    mask: Tensor,  # [N] bool
    state: dict | None = None,
) -> None:
    """Append exact copies of the selected Gaussians (3DGS clone)."""
    idx = torch.nonzero(mask, as_tuple=False).squeeze(-1)
    new = {k: v.detach()[idx] for k, v in model.params.items()}
    new.update({k: v[idx] for k, v in model.extras.items()})
    append(model, optimizer, new, state)


def replace(
    model: GaussianModel,
    optimizer: torch.optim.Optimizer | None,
    name: str,
    value: Tensor,  # same shape as model.params[name]
    reset_moments: bool = True,
) -> None:
    """Overwrite one parameter in place of its values (e.g. an opacity reset).

    With ``reset_moments`` the Adam moments of that key restart from zero, as 3DGS does.
    """
    param = model.params[name]
    if value.shape != param.shape:
        raise ValueError(f"replace({name}): shape {tuple(value.shape)} != {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(value)
    if reset_moments and optimizer is not None:
        opt_state = optimizer.state.get(param)
        if opt_state:
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in opt_state:
                    opt_state[key].zero_()
