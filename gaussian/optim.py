"""Optimizer and learning-rate schedules for the Gaussian parameters.

One optimizer with one named parameter group per key of ``GaussianModel.params`` (the 3DGS
layout): each key has its own learning rate and its own Adam state (``exp_avg``,
``exp_avg_sq``, ``step`` in ``optimizer.state[param]``, as torch.optim.Adam keeps them), so
``gaussian/ops.py`` can edit the state of any key.

``FlatAdam`` is Adam with exactly torch's update rule, laid out for speed: the moments of
all keys live in two flat buffers (the per-parameter state tensors are views into them), so
one step is a handful of full-width elementwise kernels over every Gaussian attribute at
once. torch's fused and foreach Adam launch one multi-tensor kernel per group whose block
count follows the tensor size; with six groups of very different sizes (45 SH values per
Gaussian next to 1 opacity) that leaves most of a large GPU idle.
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


class FlatAdam(torch.optim.Optimizer):
    """Adam (torch's update rule, no weight decay) over flat moment buffers.

    Each step concatenates the gradients of all parameters that have one, updates the flat
    first and second moments, and applies ``lr_k * m_hat / (sqrt(v_hat) + eps)`` per
    parameter. The per-parameter ``exp_avg``/``exp_avg_sq`` state tensors are views into the
    flat buffers; when something replaces them (densification, ``load_state_dict``) the
    buffers are rebuilt from them on the next step.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self._flat: tuple | None = None  # (param ids, m, v)

    def _flat_buffers(self, params: list[torch.Tensor]):
        ids = tuple(id(p) for p in params)
        if self._flat is not None and self._flat[0] == ids:
            _, m, v = self._flat
            start = 0
            aligned = True
            for p in params:
                st = self.state[p]
                n = p.numel()
                for key, buf in (("exp_avg", m), ("exp_avg_sq", v)):
                    t = st.get(key)
                    if t is None or t.data_ptr() != buf[start:].data_ptr() or t.numel() != n:
                        aligned = False
                start += n
            if aligned:
                return m, v
        m_parts, v_parts = [], []
        for p in params:
            st = self.state[p]
            if "exp_avg" not in st:
                st["step"] = torch.tensor(0.0)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            m_parts.append(st["exp_avg"].reshape(-1))
            v_parts.append(st["exp_avg_sq"].reshape(-1))
        m, v = torch.cat(m_parts), torch.cat(v_parts)
        start = 0
        for p in params:
            n = p.numel()
            self.state[p]["exp_avg"] = m[start : start + n].view_as(p)
            self.state[p]["exp_avg_sq"] = v[start : start + n].view_as(p)
            start += n
        self._flat = (ids, m, v)
        return m, v

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = [g for g in self.param_groups if any(p.grad is not None for p in g["params"])]
        if not groups:
            return loss
        # All groups share betas and eps in this codebase; check instead of assuming.
        beta1, beta2 = groups[0]["betas"]
        eps = groups[0]["eps"]
        if any(g["betas"] != (beta1, beta2) or g["eps"] != eps for g in groups):
            raise ValueError("FlatAdam needs the same betas and eps in every group")
        params = [p for g in groups for p in g["params"] if p.grad is not None]
        m, v = self._flat_buffers(params)
        grad = torch.cat([p.grad.reshape(-1) for p in params])
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        step = float(self.state[params[0]]["step"]) + 1.0
        bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
        update = (v / bc2).sqrt_().add_(eps)
        torch.div(m, update, out=update)
        start = 0
        for group in groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                n = p.numel()
                p.add_(update[start : start + n].view_as(p), alpha=-group["lr"] / bc1)
                self.state[p]["step"].fill_(step)
                start += n
        return loss


def build_optimizer(
    model: GaussianModel,
    lrs: dict[str, float],
    flat: bool | None = None,
) -> torch.optim.Optimizer:
    """Adam over every key of ``model.params`` (eps 1e-15 as 3DGS).

    ``FlatAdam`` on CUDA (same update, far fewer idle SMs), torch's foreach Adam elsewhere.
    Keys without an entry in ``lrs`` are an error: a new learnable per-Gaussian tensor must
    say how fast it learns.
    """
    missing = set(model.params) - set(lrs)
    if missing:
        raise KeyError(f"no learning rate for parameter(s) {sorted(missing)}")
    groups = [{"params": [p], "lr": lrs[name], "name": name} for name, p in model.params.items()]
    if flat is None:
        flat = model.device.type == "cuda"
    if flat:
        return FlatAdam(groups, lr=0.0, eps=1e-15)
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15, foreach=True)


def set_lr(optimizer: torch.optim.Optimizer, name: str, lr: float) -> None:
    for group in optimizer.param_groups:
        if group["name"] == name:
            group["lr"] = lr
            return
    raise KeyError(name)
