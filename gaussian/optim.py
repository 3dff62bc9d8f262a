"""Optimizer and learning-rate schedules for the Gaussian parameters.

One optimizer with one named parameter group per key of ``GaussianModel.params`` (the 3DGS
layout): each key has its own learning rate and its own Adam state (``exp_avg``,
``exp_avg_sq``, ``step`` in ``optimizer.state[param]``, as torch.optim.Adam keeps them), so
``gaussian/ops.py`` can edit the state of any key.

Three implementations of exactly torch's Adam update, picked by ``build_optimizer``:

- ``FusedAdam`` (CUDA with gsplat, the default there): gsplat's one-pass Adam kernel, one
  launch per key, bias correction folded into step size and epsilon.
- ``FlatAdam`` (its PyTorch twin, CUDA without gsplat, or selective steps on the CPU): the
  moments of all keys in two flat buffers, so a step is a handful of full-width
  elementwise kernels. torch's fused and foreach Adam launch one multi-tensor kernel per
  group whose block count follows the tensor size; with six groups of very different
  sizes (45 SH values per Gaussian next to 1 opacity) that leaves most of a GPU idle.
- torch's foreach Adam on the CPU.

``FusedAdam`` and ``FlatAdam`` also take selective steps (``visible``).

Two variations, used by the Improved-GS strategy and off by default:

- ``OptimizerSet``: several such optimizers over disjoint keys, used like one (Improved-GS
  keeps the higher SH bands in their own Adam, with their own learning rate);
  ``build_optimizer_set`` makes one. ``gaussian/ops.py`` keeps every member's state aligned.
- ``StepSchedule``: when the optimizer steps. 3DGS steps every iteration; Improved-GS steps
  every 5 and then every 20 iterations late in training, letting gradients accumulate in
  between (``zero_grad`` only runs after a step).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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


def means_lr_schedule(opt, spatial_lr_scale: float) -> Callable[[int], float]:
    """3DGS's position learning rate per step, from the OptimizationParams group."""
    return expon_lr(
        opt.position_lr_init * spatial_lr_scale,
        opt.position_lr_final * spatial_lr_scale,
        lr_delay_mult=opt.position_lr_delay_mult,
        max_steps=opt.position_lr_max_steps,
    )


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


@functools.cache
def _torch_adam_defaults() -> dict:
    """torch.optim.Adam's keyword defaults, read from its signature (no construction)."""
    sig = inspect.signature(torch.optim.Adam.__init__)
    return {k: v.default for k, v in sig.parameters.items() if k not in ("self", "params")}


class AdamBase:
    """What the Adam variants below share with ``torch.optim.Optimizer``: ``param_groups``
    (dicts with ``params``, ``lr``, ``betas``, ``eps`` and our ``name``), ``state``
    (parameter -> dict), ``zero_grad`` and a ``state_dict`` in torch's format (checkpoints
    load into torch's Adam and back).

    Deliberately not a ``torch.optim.Optimizer``: constructing the first one of those
    imports torch._dynamo, 2.5 to 5 s of start-up that a one-minute training run notices.
    """

    def __init__(self, params, defaults: dict):
        # torch's Adam hyperparameters too, so that torch's Adam can load our state_dict.
        self.defaults = {**_torch_adam_defaults(), **defaults}
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict] = []
        for group in groups:
            group = {**self.defaults, **group, "params": list(group["params"])}
            self.param_groups.append(group)
        self.state: dict = defaultdict(dict)

    def _init_state(self, p: torch.Tensor) -> dict:
        """``p``'s state, created (step 0, zero moments) on its first step."""
        st = self.state[p]
        if "exp_avg" not in st:
            st["step"] = torch.tensor(0.0)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict:
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        params = {id(p): p for g in self.param_groups for p in g["params"]}
        state = {index[id(p)]: dict(st) for p, st in self.state.items() if id(p) in params}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(saved, self.param_groups)
        ):
            raise ValueError("optimizer state does not match the parameter groups")
        params = [p for g in self.param_groups for p in g["params"]]
        for group, packed in zip(self.param_groups, saved):
            group.update({k: v for k, v in packed.items() if k != "params"})
        self.state = defaultdict(dict)
        for idx, st in state_dict["state"].items():
            p = params[int(idx)]
            self.state[p] = {
                k: v.to(p.device, p.dtype) if torch.is_tensor(v) and k != "step" else v
                for k, v in st.items()
            }


class FlatAdam(AdamBase):
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
            st = self._init_state(p)
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
    def step(self, closure=None, visible: torch.Tensor | None = None):
        """One Adam step. ``visible`` [N] bool makes it selective ("sparse Adam" of
        Taming-3DGS and 3DGS's ``--optimizer_type sparse_adam``): Gaussians outside the view
        keep their parameters and moments untouched this step."""
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
        mask = None
        if visible is not None:
            mask = torch.cat([visible[:, None].expand(len(p), p[0].numel()).reshape(-1)
                              for p in params])  # fmt: skip
            m_old, v_old = m.clone(), v.clone()
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if mask is not None:
            torch.where(mask, m, m_old, out=m)
            torch.where(mask, v, v_old, out=v)
        step = float(self.state[params[0]]["step"]) + 1.0
        bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
        update = (v / bc2).sqrt_().add_(eps)
        torch.div(m, update, out=update)
        if mask is not None:
            update.masked_fill_(~mask, 0.0)
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


class FusedAdam(AdamBase):
    """Adam (torch's update rule, no weight decay) through gsplat's fused CUDA kernel.

    One launch per parameter reads the parameter, its gradient and both moments once and
    writes them once (``FlatAdam``, its PyTorch twin, needs about ten passes). The kernel
    has no bias correction, so it is folded into the step size and epsilon, exactly:

        lr * (m / bc1) / (sqrt(v / bc2) + eps)
            = (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2))

    State per parameter as ``torch.optim.Adam`` keeps it (``step``, ``exp_avg``,
    ``exp_avg_sq``), so ``gaussian/ops.py`` edits it like any other Adam's. CUDA only.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None, visible: torch.Tensor | None = None):
        """One Adam step; ``visible`` [N] bool makes it selective as ``FlatAdam.step``."""
        from gsplat.cuda._wrapper import adam

        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self._init_state(p)
                step = float(st["step"]) + 1.0  # a CPU tensor: no synchronisation
                st["step"].fill_(step)
                root_bc2 = math.sqrt(1.0 - beta2**step)
                adam(p, p.grad.contiguous(), st["exp_avg"], st["exp_avg_sq"], visible,
                     group["lr"] * root_bc2 / (1.0 - beta1**step), beta1, beta2,
                     group["eps"] * root_bc2)  # fmt: skip
        return loss


def fused_adam_available(device: torch.device) -> bool:
    """gsplat's Adam kernel can run on ``device`` (CUDA, gsplat installed)."""
    if device.type != "cuda":
        return False
    from gaussian_renderer import gsplat_available

    return gsplat_available()


def build_optimizer(
    model: GaussianModel,
    lrs: dict[str, float],
    flat: bool | None = None,
    keys: Iterable[str] | None = None,
) -> torch.optim.Optimizer:
    """Adam over every key of ``model.params`` (or only ``keys``), eps 1e-15 as 3DGS.

    On CUDA: ``FusedAdam`` (gsplat's kernel) when gsplat is installed, else ``FlatAdam``.
    Elsewhere torch's foreach Adam, or ``FlatAdam`` when ``flat`` is True (selective
    updates need one of the two). Keys without an entry in ``lrs`` are an error: a new
    learnable per-Gaussian tensor must say how fast it learns.
    """
    wanted = set(model.params) if keys is None else set(keys)
    names = [k for k in model.params if k in wanted]
    missing = set(names) - set(lrs)
    if missing:
        raise KeyError(f"no learning rate for parameter(s) {sorted(missing)}")
    groups = [{"params": [model.params[n]], "lr": lrs[n], "name": n} for n in names]
    if fused_adam_available(model.device):
        return FusedAdam(groups, lr=0.0, eps=1e-15)
    if flat is None:
        flat = model.device.type == "cuda"
    if flat:
        return FlatAdam(groups, lr=0.0, eps=1e-15)
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15, foreach=True)


class OptimizerSet:
    """Several optimizers over disjoint parameter keys, used like one optimizer.

    ``param_groups`` lists every member's groups (the same dicts, so ``set_lr`` works);
    ``step``/``zero_grad`` run every member; ``state_dict`` holds one entry per member.
    ``members`` maps a member name to its ``torch.optim.Optimizer``.
    """

    def __init__(self, members: dict[str, torch.optim.Optimizer]):
        names = [g["name"] for o in members.values() for g in o.param_groups]
        if len(names) != len(set(names)):
            raise ValueError(f"parameter keys appear in two optimizers: {sorted(names)}")
        self.members = dict(members)

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.members.values() for g in o.param_groups]

    def step(self, visible: torch.Tensor | None = None) -> None:
        """Step every member (selectively, with ``visible``, as ``FlatAdam.step``)."""
        for o in self.members.values():
            if visible is None:
                o.step()
            else:
                o.step(visible=visible)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.members.values():
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {k: o.state_dict() for k, o in self.members.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.members):
            raise KeyError(f"optimizer state for {sorted(state)}, expected {sorted(self.members)}")
        for k, o in self.members.items():
            o.load_state_dict(state[k])


def build_optimizer_set(
    model: GaussianModel,
    lrs: dict[str, float],
    separate: dict[str, Iterable[str]],
    flat: bool | None = None,
) -> OptimizerSet:
    """An ``OptimizerSet``: member ``"main"`` for every key not listed in ``separate``, and
    one member per entry of ``separate`` (member name -> keys), e.g. ``{"sh": ["shN"]}``."""
    taken = {k for keys in separate.values() for k in keys}
    members = {
        "main": build_optimizer(model, lrs, flat, [k for k in model.params if k not in taken])
    }
    for name, keys in separate.items():
        members[name] = build_optimizer(model, lrs, flat, keys)
    return OptimizerSet(members)


AnyOptimizer = torch.optim.Optimizer | AdamBase | OptimizerSet


@dataclass(frozen=True)
class StepSchedule:
    """When the optimizer steps: after iteration ``after`` of a phase ``(after, every)``,
    it steps at the iterations divisible by ``every`` (the last phase that applies wins).

    The default, one phase ``(0, 1)``, steps every iteration (3DGS). Improved-GS uses
    ``((0, 1), (15000, 5), (22500, 20))``.
    """

    phases: tuple[tuple[int, int], ...] = ((0, 1),)

    def __post_init__(self) -> None:
        if any(every < 1 for _, every in self.phases):
            raise ValueError(f"step intervals must be >= 1: {self.phases}")

    def every(self, iteration: int) -> int:
        n = 1
        for after, every in sorted(self.phases):
            if iteration > after:
                n = every
        return n

    def should_step(self, iteration: int) -> bool:
        return iteration % self.every(iteration) == 0


def set_lr(optimizer: torch.optim.Optimizer, name: str, lr: float) -> None:
    for group in optimizer.param_groups:
        if group["name"] == name:
            group["lr"] = lr
            return
    raise KeyError(name)


# Learning rates of the optional per-Gaussian parameters, used when the model holds them:
# the feature field's group features (utils/feature_field.py; RegSegField's rate).
OPTIONAL_PARAM_LRS = {"features_group": 0.0025}


def build_training_optimizer(
    model: GaussianModel, opt, spatial_lr_scale: float, densify=None
) -> AnyOptimizer:
    """The optimizer train.py uses: 3DGS's single Adam, or with ``--densify_strategy
    improved`` an ``OptimizerSet`` whose member ``"sh"`` holds the higher SH bands at
    learning rate ``shfeature_lr / 20`` (Improved-GS)."""
    lrs = default_learning_rates(opt, spatial_lr_scale)
    lrs.update({k: v for k, v in OPTIONAL_PARAM_LRS.items() if k in model.params})
    # Selective (sparse Adam) steps need FusedAdam or FlatAdam; otherwise the device decides.
    flat = True if getattr(opt, "optimizer_type", "default") == "sparse_adam" else None
    if getattr(densify, "densify_strategy", "default") != "improved":
        return build_optimizer(model, lrs, flat=flat)
    lrs["shN"] = densify.shfeature_lr / 20.0
    return build_optimizer_set(model, lrs, {"sh": ["shN"]}, flat=flat)


def build_step_schedule(densify=None, optimizer_type: str = "default") -> StepSchedule | None:
    """None (step every iteration, 3DGS) or Improved-GS's multi-step schedule. Selective
    (``sparse_adam``) steps use the current view's visibility, so they always step every
    iteration, as in Improved-GS."""
    if getattr(densify, "densify_strategy", "default") != "improved":
        return None
    if optimizer_type == "sparse_adam":
        return None
    return StepSchedule(
        (
            (0, 1),
            (densify.multistep_from, densify.multistep_every),
            (densify.multistep_late_from, densify.multistep_late_every),
        )
    )
