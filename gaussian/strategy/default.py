"""The densification of the original 3DGS paper, as a strategy.

Every ``densification_interval`` steps between ``densify_from_iter`` and
``densify_until_iter``, Gaussians whose view-space mean gradient (averaged over the views
that saw them, in NDC units) reaches ``densify_grad_threshold`` are

- cloned when small (largest scale <= ``percent_dense`` x scene extent), or
- split into two samples drawn from the Gaussian, scales divided by 1.6, when large;

then Gaussians with opacity below ``min_opacity`` are pruned, and after the first opacity
reset also those larger than 0.1 x scene extent in world space. Opacities are reset to at
most 0.01 every ``opacity_reset_interval`` steps (and once at ``densify_from_iter`` with a
white background).

With an ``ROIGate`` (``--use_mask``, roigs) the clone/split candidates must also pass the
gate for the current camera, and its ROI pruning and edge damping join the pruning step;
without one (the default) nothing changes.

Upstream quirk, kept on purpose: 3DGS zeroes its screen-size statistic (``max_radii2D``)
while cloning/splitting, *before* testing it, so its screen-space pruning (radius > 20 px)
never fires. ``prune_by_screen_size=True`` turns that rule on for real.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian import ops
from gaussian.model import GaussianModel
from gaussian.optim import AnyOptimizer
from gaussian.strategy.base import Strategy
from gaussian.strategy.roi import ROIGate
from utils.general_utils import inverse_sigmoid
from utils.graphics_utils import quat_to_rotmat


@dataclass
class DefaultStrategy(Strategy):
    cameras_extent: float = 1.0
    densify_grad_threshold: float = 0.0002
    percent_dense: float = 0.01
    densification_interval: int = 100
    opacity_reset_interval: int = 3000
    densify_from_iter: int = 500
    densify_until_iter: int = 15_000
    min_opacity: float = 0.005
    max_screen_size: float = 20.0
    prune_by_screen_size: bool = False
    reset_at_densify_start: bool = False  # 3DGS does this with a white background
    absgrad: bool = False
    opacity_reset_value: float = 0.01
    roi: ROIGate | None = None  # roigs: gate candidates and prune by the current camera's ROI

    @staticmethod
    def opt_fields(opt, cameras_extent: float) -> dict:
        """The 3DGS densification settings of an OptimizationParams group, as fields."""
        return {
            "cameras_extent": cameras_extent,
            "densify_grad_threshold": opt.densify_grad_threshold,
            "percent_dense": opt.percent_dense,
            "densification_interval": opt.densification_interval,
            "opacity_reset_interval": opt.opacity_reset_interval,
            "densify_from_iter": opt.densify_from_iter,
            "densify_until_iter": opt.densify_until_iter,
        }

    @classmethod
    def from_opt(cls, opt, cameras_extent: float, white_background: bool) -> DefaultStrategy:
        return cls(**cls.opt_fields(opt, cameras_extent), reset_at_densify_start=white_background)

    # ------------------------------------------------------------------ state

    def initialize_state(self, model: GaussianModel) -> dict:
        n, dev = model.num_gaussians, model.device
        return {
            "grad2d": torch.zeros(n, device=dev),  # sum of NDC-gradient norms
            "count": torch.zeros(n, device=dev),  # views that saw each Gaussian
            "max_radii": torch.zeros(n, device=dev),  # largest screen radius (px)
        }

    def step_pre_backward(self, render_pkg: dict, state: dict, step: int) -> None:
        if step < self.densify_until_iter:
            render_pkg["viewspace_points"].retain_grad()

    def update_state(self, state: dict, render_pkg: dict) -> None:
        """Accumulate gradient statistics without host synchronisation."""
        means2d = render_pkg["viewspace_points"]
        grad = means2d.absgrad if self.absgrad else means2d.grad
        if grad is None:
            return
        grad = grad.reshape(-1, 2)
        # Pixel-space gradients to the NDC units 3DGS thresholds are expressed in.
        norm = torch.hypot(grad[:, 0] * (0.5 * render_pkg["width"]),
                           grad[:, 1] * (0.5 * render_pkg["height"]))  # fmt: skip
        vis = render_pkg["visibility_filter"]
        state["grad2d"].add_(norm * vis)
        state["count"].add_(vis)
        # Radii are 0 outside the view, so the running maximum needs no mask.
        torch.maximum(state["max_radii"], render_pkg["radii"], out=state["max_radii"])

    # ------------------------------------------------------------------ step

    def step_post_backward(
        self,
        model: GaussianModel,
        optimizer: torch.optim.Optimizer,
        state: dict,
        step: int,
        render_pkg: dict,
        camera=None,
    ) -> dict[str, int]:
        if step >= self.densify_until_iter:
            return {}
        self.update_state(state, render_pkg)
        counts: dict[str, int] = {}
        if self.should_densify(step):
            counts = self.densify_and_prune(model, optimizer, state, step, camera)
        if self.should_reset_opacity(step):
            reset_opacity(model, optimizer, self.opacity_reset_value)
        return counts

    def should_densify(self, step: int) -> bool:
        return (
            self.densify_from_iter < step < self.densify_until_iter
            and step % self.densification_interval == 0
        )

    def should_reset_opacity(self, step: int) -> bool:
        if step >= self.densify_until_iter:
            return False
        return step % self.opacity_reset_interval == 0 or (
            self.reset_at_densify_start and step == self.densify_from_iter
        )

    def densify_and_prune(
        self,
        model: GaussianModel,
        optimizer: torch.optim.Optimizer,
        state: dict,
        step: int,
        camera=None,
    ) -> dict[str, int]:
        grads = state["grad2d"] / state["count"]
        grads = torch.nan_to_num(grads, nan=0.0)
        high = grads >= self.densify_grad_threshold
        if (
            self.roi is not None
            and (allowed := self.roi.densify_allowed(model, camera, step)) is not None
        ):
            high = high & allowed
        big = model.get_scaling.max(dim=1).values > self.percent_dense * self.cameras_extent
        clone_mask, split_mask = high & ~big, high & big
        n_clone, n_split = int(clone_mask.sum()), int(split_mask.sum())

        ops.duplicate(model, optimizer, clone_mask, state)
        split_mask = torch.cat([split_mask, split_mask.new_zeros(n_clone)])
        split(model, optimizer, split_mask, state, n_children=2)

        n_prune = self.prune(model, optimizer, state, step, camera)
        for key in ("grad2d", "count", "max_radii"):
            state[key] = torch.zeros(model.num_gaussians, device=model.device)
        return {"clone": n_clone, "split": n_split, "prune": n_prune}

    def prune(
        self, model: GaussianModel, optimizer: AnyOptimizer, state: dict, step: int, camera=None
    ) -> int:
        """3DGS pruning (low opacity; after the first reset, large in world space), plus the
        ROI gate's pruning when it acts. Returns how many Gaussians went."""
        roi_prune = None
        if self.roi is not None:  # damps the edge band first, so the opacity test sees it
            roi_prune = self.roi.prune_and_damp(model, optimizer, camera, step)
        prune = model.get_opacity < self.min_opacity
        if step > self.opacity_reset_interval:
            prune |= model.get_scaling.max(dim=1).values > 0.1 * self.cameras_extent
            if self.prune_by_screen_size:
                # ops kept state["max_radii"] aligned: new Gaussians have 0.
                prune |= state["max_radii"] > self.max_screen_size
        if roi_prune is not None:
            prune |= roi_prune
        n_prune = int(prune.sum())
        ops.remove(model, optimizer, prune, state)
        return n_prune


def split(
    model: GaussianModel,
    optimizer: torch.optim.Optimizer | None,
    mask: torch.Tensor,  # [N] bool
    state: dict | None = None,
    n_children: int = 2,
) -> None:
    """3DGS split: replace each selected Gaussian by ``n_children`` samples drawn from it.

    Children sit at positions sampled from the parent's Gaussian, with scales divided by
    0.8 * n_children (1.6 for two) and every other attribute copied.
    """
    idx = torch.nonzero(mask, as_tuple=False).squeeze(-1)
    if idx.numel() == 0:
        return
    p = {k: v.detach()[idx] for k, v in model.params.items()}
    scales = torch.exp(p["scales"]).repeat(n_children, 1)
    samples = torch.normal(mean=torch.zeros_like(scales), std=scales)
    rots = quat_to_rotmat(p["quats"]).repeat(n_children, 1, 1)
    new = {k: v.repeat(n_children, *([1] * (v.dim() - 1))) for k, v in p.items()}
    new["means"] = (rots @ samples[..., None]).squeeze(-1) + p["means"].repeat(n_children, 1)
    new["scales"] = torch.log(scales / (0.8 * n_children))
    for k, v in model.extras.items():
        new[k] = v[idx].repeat(n_children, *([1] * (v.dim() - 1)))
    n_before = model.num_gaussians
    ops.append(model, optimizer, new, state)
    parents = torch.zeros(model.num_gaussians, dtype=torch.bool, device=mask.device)
    parents[:n_before] = mask
    ops.remove(model, optimizer, parents, state)


def reset_opacity(
    model: GaussianModel, optimizer: torch.optim.Optimizer | None, value: float = 0.01
) -> None:
    """Clamp every opacity to at most ``value`` and restart its Adam moments."""
    capped = torch.minimum(model.get_opacity, torch.full_like(model.get_opacity, value))
    ops.replace(model, optimizer, "opacities", inverse_sigmoid(capped))
