"""Improved-GS densification (budgeted long-axis splits with edge-aware importance), as
roigs runs it, as a strategy.

At every ``densification_interval`` step between ``densify_from_iter`` and
``densify_until_iter``:

1. **Importance.** ``EdgeImportance`` renders ``cams`` training views (every view when
   step % ``edge_all_views_every`` == ``edge_all_views_offset`` and step <
   ``edge_all_views_until``) and, per Gaussian, sums edge(p)·α·T over the pixels p, with
   edge = the min-max normalised 3x3 edge filter of the view's greyscale image. Each view's
   sums are divided by the mean of their positive entries, then averaged over the views.
   The sums come from the renderer itself (DESIGN.md, rendering contract): a zero
   per-Gaussian channel s is splatted and the gradient of sum_p edge(p)·F_s(p) w.r.t. s is
   exactly sum_p edge(p)·α·T, one forward and backward pass per view, no custom kernel.
   After ``score_gradient_after`` the score is the view-space gradient instead, and while
   under budget the gradient threshold is divided by 1.5.
2. **Candidates.** Mean view-space gradient >= ``densify_grad_threshold``, and, with an
   ``ROIGate``, the gate for the current camera. If none qualifies: the (gated) Gaussians
   with a positive score.
3. **Budget.** budget(step) = ``budget`` · sqrt((step - densify_from) / (budget_ramp_until -
   densify_from)), ``budget`` after that. New Gaussians per step: min(budget(step) - N,
   cap), cap = clamp(0.02 N, 2048, 32768) ("ultra"), clamp(0.04 N, 4096, 65536)
   ("ultra+") or ``max_new_points_per_iter``; and never more than there are candidates.
4. **Long-axis split** (``long_axis_split``): that many parents are drawn without
   replacement with probability proportional to their score; each is replaced by two
   children at ±``split_distance``·3σ_max along its longest axis, with the longest scale
   x(1 - split_distance) (0.55) and the two others x sqrt(1 - split_distance²) (0.893):
   each child's 3σ ellipsoid then ends where the parent's did along the long axis, and
   matches the parent's cross-section at the child's centre across it. Opacity
   x``opacity_reduction`` (0.6); everything else is copied.
5. **Pruning.** As 3DGS (opacity < 0.005; after the first reset, larger than 0.1 x the
   scene extent), plus the ROI gate's pruning and edge damping when it acts. (roigs prunes
   nothing at all without a mask; here a view without an ROI keeps 3DGS pruning.)

Opacities are reset to at most ``opacity_reset_value`` (0.05) every
``opacity_reset_interval`` steps. The separate SH-rest optimizer and the multi-step updates
of Improved-GS live in ``gaussian/optim.py`` (``build_optimizer_set``, ``StepSchedule``).

Deviation from roigs, on purpose: its fallback (step 2) ignores the ROI gate, so an empty
gated set makes it densify outside the ROI; here the fallback stays inside the gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gaussian import ops
from gaussian.model import GaussianModel
from gaussian.optim import AnyOptimizer
from gaussian.strategy.default import DefaultStrategy
from utils.general_utils import inverse_sigmoid
from utils.graphics_utils import quat_to_rotmat

CAP_PROFILES = {"ultra": (0.02, 2048, 32768), "ultra+": (0.04, 4096, 65536)}

# render_fn(camera, model, features [N, C]) -> render() dict with "features" [C, H, W]
RenderFn = Callable[[object, GaussianModel, torch.Tensor], dict]


# ----------------------------------------------------------------------------- importance


def edge_map(image: torch.Tensor) -> torch.Tensor:  # [3, H, W] in [0, 1] -> [H, W] in [0, 1]
    """PIL's FIND_EDGES on the greyscale image (8-neighbour Laplacian, clipped at 0 and 1,
    replicate border), min-max normalised."""
    r, g, b = image[:3].float()
    grey = (0.299 * r + 0.587 * g + 0.114 * b)[None, None]
    k = -torch.ones(1, 1, 3, 3, dtype=grey.dtype, device=grey.device)
    k[0, 0, 1, 1] = 8.0
    e = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), k)[0, 0].clamp(0.0, 1.0)
    lo, hi = e.min(), e.max()
    return (e - lo) / (hi - lo).clamp_min(1e-12)


def blending_weight_sums(
    render_fn: RenderFn,
    camera,
    model: GaussianModel,
    pixel_weights: torch.Tensor,  # [H, W]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per Gaussian sum_p w(p)·α·T(p) in one view ([N]), and its visibility filter ([N]).

    Splats a zero channel s (so the image is unchanged) and differentiates
    sum_p w(p)·F_s(p) with respect to s: d F_s(p) / d s_g = α_g T_g(p).
    """
    with torch.enable_grad():
        s = torch.zeros(model.num_gaussians, 1, device=model.device, requires_grad=True)
        pkg = render_fn(camera, model, s)
        target = (pkg["features"][0] * pixel_weights.to(pkg["features"].dtype)).sum()
        (grad,) = torch.autograd.grad(target, s)
    return grad[:, 0].detach(), pkg["visibility_filter"].detach()


def normalise_positive(values: torch.Tensor) -> torch.Tensor:  # [N] -> [N]
    """Positive entries divided by their mean; the others 0."""
    values = torch.nan_to_num(values, nan=0.0)
    pos = values > 0
    mean = (values * pos).sum() / pos.sum().clamp_min(1)
    return torch.where(pos, values / mean.clamp_min(1e-30), torch.zeros_like(values))


class EdgeImportance:
    """Edge-aware importance of every Gaussian over a few training views (module docstring).

    Views are taken in turn from a shuffled cycle over ``cameras``; edge maps are computed
    once per view and kept in ``camera.priors["edges"]``.
    """

    def __init__(
        self,
        cameras: list,
        render_fn: RenderFn,
        cams: int = 10,
        all_views_every: int = 3000,
        all_views_offset: int = 400,
        all_views_until: int = 9000,
        seed: int = 0,
    ):
        if not cameras:
            raise ValueError("edge-aware importance needs at least one training camera")
        self.cameras = list(cameras)
        self.render_fn = render_fn
        self.cams = cams
        self.all_views_every = all_views_every
        self.all_views_offset = all_views_offset
        self.all_views_until = all_views_until
        self._order = torch.Generator().manual_seed(seed)
        self._stack: list[int] = []

    def n_views(self, step: int) -> int:
        every_view = (
            self.cams <= 0
            or self.cams >= len(self.cameras)
            or (
                self.all_views_every > 0
                and step % self.all_views_every == self.all_views_offset
                and step < self.all_views_until
            )
        )
        return len(self.cameras) if every_view else self.cams

    def views(self, step: int) -> list:
        out = []
        for _ in range(self.n_views(step)):
            if not self._stack:
                self._stack = torch.randperm(len(self.cameras), generator=self._order).tolist()
            out.append(self.cameras[self._stack.pop()])
        return out

    def edges(self, camera) -> torch.Tensor:  # [H, W]
        e = camera.priors.get("edges")
        if e is None:
            e = edge_map(camera.original_image)
            camera.priors["edges"] = e
        return e

    def __call__(self, model: GaussianModel, step: int) -> torch.Tensor:  # [N]
        views = self.views(step)
        score = torch.zeros(model.num_gaussians, device=model.device)
        for cam in views:
            sums, visible = blending_weight_sums(self.render_fn, cam, model, self.edges(cam))
            score += torch.where(visible, normalise_positive(sums), torch.zeros_like(sums))
        return score / len(views)


# ----------------------------------------------------------------------------- split


def long_axis_split(
    model: GaussianModel,
    optimizer: AnyOptimizer | None,
    mask: torch.Tensor,  # [N] bool, the parents
    state: dict | None = None,
    split_distance: float = 0.45,
    opacity_reduction: float = 0.6,
) -> None:
    """Replace each selected Gaussian by two children along its longest axis (module
    docstring, step 4). Children get zero Adam moments; every other row keeps its own."""
    idx = torch.nonzero(mask, as_tuple=False).squeeze(-1)
    if idx.numel() == 0:
        return
    p = {k: v.detach()[idx] for k, v in model.params.items()}
    scales = torch.exp(p["scales"])  # [M, 3]
    smax, axis = scales.max(dim=1)
    longest = F.one_hot(axis, 3).to(torch.bool)
    local = torch.where(longest, (3.0 * split_distance * smax)[:, None], torch.zeros_like(scales))
    offset = (quat_to_rotmat(p["quats"]) @ local[..., None]).squeeze(-1)  # [M, 3] world
    across = math.sqrt(1.0 - split_distance**2)
    child_scales = torch.where(longest, scales * (1.0 - split_distance), scales * across)
    opacity = torch.sigmoid(p["opacities"]) * opacity_reduction

    new = {k: torch.cat([v, v], dim=0) for k, v in p.items()}
    new["means"] = torch.cat([p["means"] + offset, p["means"] - offset], dim=0)
    new["scales"] = torch.log(child_scales).repeat(2, 1)
    new["opacities"] = inverse_sigmoid(opacity).repeat(2)
    for k, v in model.extras.items():
        new[k] = torch.cat([v[idx], v[idx]], dim=0)
    n_before = model.num_gaussians
    ops.append(model, optimizer, new, state)
    parents = torch.zeros(model.num_gaussians, dtype=torch.bool, device=mask.device)
    parents[:n_before] = mask
    ops.remove(model, optimizer, parents, state)


# ----------------------------------------------------------------------------- strategy


@dataclass
class ImprovedStrategy(DefaultStrategy):
    budget: int = 3_000_000
    budget_ramp_until: int = 14_500
    split_distance: float = 0.45
    opacity_reduction: float = 0.6
    score_gradient_after: int = 14_500
    cap_profile: str = "ultra"
    max_new_points_per_iter: int = 0  # 0: the profile's cap
    opacity_reset_value: float = 0.05
    importance: EdgeImportance | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.cap_profile not in CAP_PROFILES:
            raise ValueError(f"unknown densify cap profile {self.cap_profile!r}")

    @classmethod
    def from_args(
        cls,
        opt,
        densify,
        cameras_extent: float,
        importance: EdgeImportance | None,
        roi=None,
    ) -> ImprovedStrategy:
        """From the OptimizationParams and DensifyParams group values."""
        return cls(
            **cls.opt_fields(opt, cameras_extent),
            budget=densify.budget,
            budget_ramp_until=densify.budget_ramp_until,
            split_distance=densify.split_distance,
            opacity_reduction=densify.opacity_reduction,
            score_gradient_after=densify.score_gradient_after,
            cap_profile=densify.densify_cap_profile,
            max_new_points_per_iter=densify.max_new_points_per_iter,
            opacity_reset_value=densify.improved_opacity_reset,
            importance=importance,
            roi=roi,
        )

    def budget_at(self, step: int) -> int:
        span = max(self.budget_ramp_until - self.densify_from_iter, 1)
        rate = (step - self.densify_from_iter) / span
        if rate >= 1.0:
            return int(self.budget)
        return int(math.sqrt(max(rate, 0.0)) * self.budget)

    def step_cap(self, n: int) -> int:
        if self.max_new_points_per_iter > 0:
            return int(self.max_new_points_per_iter)
        ratio, lo, hi = CAP_PROFILES[self.cap_profile]
        return int(max(lo, min(hi, ratio * n)))

    def densify_and_prune(
        self,
        model: GaussianModel,
        optimizer: AnyOptimizer,
        state: dict,
        step: int,
        camera=None,
    ) -> dict[str, int]:
        n = model.num_gaussians
        grads = torch.nan_to_num(state["grad2d"] / state["count"], nan=0.0)
        threshold = self.densify_grad_threshold
        if self.importance is None or step > self.score_gradient_after:
            scores = grads
            if step > self.score_gradient_after and n < self.budget:
                threshold = threshold / 1.5
        else:
            scores = self.importance(model, step)
        candidates = grads >= threshold
        allowed = None if self.roi is None else self.roi.densify_allowed(model, camera, step)
        if allowed is not None:
            candidates = candidates & allowed
        if not bool(candidates.any()):
            candidates = scores > 0
            if allowed is not None:
                candidates = candidates & allowed
        weights = torch.where(candidates, scores.clamp_min(0.0), torch.zeros_like(scores))
        n_positive = int((weights > 0).sum())
        n_new = min(self.budget_at(step) - n, self.step_cap(n), n_positive)
        if n_new > 0:
            picked = torch.multinomial(weights, n_new, replacement=False)
            parents = torch.zeros(n, dtype=torch.bool, device=model.device)
            parents[picked] = True
            long_axis_split(
                model, optimizer, parents, state, self.split_distance, self.opacity_reduction
            )
        n_prune = self.prune(model, optimizer, state, step, camera)
        for key in ("grad2d", "count", "max_radii"):
            state[key] = torch.zeros(model.num_gaussians, device=model.device)
        return {"split": max(n_new, 0), "prune": n_prune}
