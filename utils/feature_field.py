"""Hierarchical feature field (RegSegField, seeds digest 1.5) and iterative mask refinement
(digest 1.6).

Every Gaussian carries L x D group features, ``features_group`` [N, L, D] (L = 4 levels of
D = 16), a learnable key of the parameter dict: it is saved in the PLY's side file, carried
through clone, split and prune by gaussian/ops.py with its Adam moments, and read by
``segment.py --source field``. Level 0 is the coarsest grouping, higher levels are finer,
as in the descriptor network of mask_matching/.

Rendering (``FeatureField.render``). The features, L2-normalised per level, are splatted
as L*D extra channels by the k = N // 5 (``--group_topk``) Gaussians most visible in the
view, with their geometry and opacity detached, so that these losses train the features
only; the rendered map is normalised per level again ([L, D, H, W]). RegSegField ranks the
Gaussians by a per-Gaussian blending weight that its modified rasterizer writes; here the
rank is the opacity of the Gaussians whose centre projects inside the view (no extra
rasterizer output needed). This is a second rasterizer call (``render_features_only``:
the L*D channels alone), not extra channels of the RGB pass: one backward through a
shared pass would send the feature losses' gradients into the geometry too, which is what
the detach forbids; the call draws a fifth of the Gaussians and computes no geometry
gradients.

Losses (one view, F the rendered map, codes u_k of the view's pixels from mask_matching/
with pixel counts c_k at training resolution):

- ``group_distill`` (``group_from < step < group_distill_until``): sum over levels of
  mean (F - D)^2, D the view's matched descriptor map: the 3D field starts from the 2D
  matched descriptors.
- ``group_sim`` and ``group_dissim`` (from ``group_distill_until`` until ``group_until``,
  and again after ``train_rgb_until``): per-code means mu_k [L, D] and dispersions
  s_{k,l} = mean over the code's pixels of mean_D |F - mu_k|; the distance of two codes at
  level l is sum_j w_lj mean_D |mu_kj - mu_lj| / sum_j w_lj with w_lj = exp(-(j - l)^2 /
  (2 * 0.8^2)); with O_kl the number of masks two codes share, positives at level l are
  O_kl > l and negatives O_kl == l:

      sim    = sum_l [ mean over positives of d^l + 2 mean_k s_{k,l} ]
      dissim = sum_l mean over negatives of relu(1 - d^l)

  Codes without a mask (the uncovered region) and codes of fewer than 20 pixels take no
  part. Both terms have weight 1. With unit-length levels, mean_D |a - b| is at most
  2 / sqrt(D) = 0.5, so the margin of 1 is never reached and every negative pair keeps a
  constant push (as in RegSegField, whose rendered features are even halved first).

After ``train_rgb_until`` (``geometry_frozen``) the RGB losses, densification and every
parameter but the features stop; train.py then renders only the feature pass.

Refinement (``MaskRefiner``, ``--refine_masks``). While the group loss runs, the descriptor
network of mask_matching/ is trained towards the rendered field (detached): the term
``mask_encoder`` is the pixel mean of sum_l mean_D (net descriptor - F)^2 up to a constant,
computed per code as sum_k c_k |t_k - mu_k|^2 / sum c. Adam at 0.05, decaying
exponentially to 5e-5 over 30k steps. Every 500 steps every view's descriptor table is
recomputed in place, so the mask-visibility loss and the distillation read the refined
maps from then on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gaussian.model import CORE_KEYS, GaussianModel
from mask_matching.maps import DescriptorMap
from mask_matching.network import DIM, LEVELS, DescriptorNet

FIELD_KEY = "features_group"
LEVEL_SIGMA = 0.8
MIN_CODE_PIXELS = 20
DISPERSION_WEIGHT = 2.0

RenderFn = Callable[..., dict]  # (camera, model, features [n, C]) -> render dict


# ----------------------------------------------------------------------------- pure losses


def level_weights(levels: int, sigma: float = LEVEL_SIGMA, device=None) -> torch.Tensor:
    """[L, L]: row l holds w_lj = exp(-(j - l)^2 / (2 sigma^2)), normalised to sum 1."""
    j = torch.arange(levels, dtype=torch.float32, device=device)
    w = torch.exp(-((j[None, :] - j[:, None]) ** 2) / (2.0 * sigma**2))
    return w / w.sum(dim=1, keepdim=True)


def code_statistics(
    feat: torch.Tensor,  # [L, D, H, W]
    code_index: torch.Tensor,  # [H, W] int64 in [0, U)
    n_codes: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per code: mean feature [U, L, D], dispersion [U, L] (mean over its pixels of mean_D
    |F - mu|) and pixel count [U] (float). Codes without pixels get zeros.

    The per-code sums, and the per-pixel copies of the means, are products with the
    pixels' one-hot codes rather than ``index_add`` and indexing: a view has tens of codes
    for 10^5 pixels, and on CUDA the atomics of a scatter into so few rows (the forward of
    ``index_add``, the backward of ``mean[idx]``) serialise (bench/feature_field_speed.py:
    22.6 ms for the scatter version at 864x864 and 90 codes)."""
    levels, dim = feat.shape[:2]
    f = feat.reshape(levels * dim, -1)  # [C, P]
    onehot = F.one_hot(code_index.reshape(-1), n_codes).to(f.dtype)  # [P, U]
    counts = onehot.sum(dim=0)  # [U]
    inv = 1.0 / counts.clamp_min(1.0)
    mean = (f @ onehot) * inv  # [C, U]
    dev = (f - mean @ onehot.T).abs().view(levels, dim, -1).mean(dim=1)  # [L, P]
    disp = (dev @ onehot) * inv  # [L, U]
    return mean.T.reshape(n_codes, levels, dim), disp.T, counts


@dataclass(frozen=True)
class GroupPairs:
    """The fixed part of a view's group loss: which code pairs pull and push at each level,
    as weights that already hold the means (a level without a pair has all-zero weights).
    Built once per view, so that the loss needs no boolean indexing (a host sync each)."""

    pos: torch.Tensor  # [L, U, U] 1 / (positive pairs at level l) on each positive pair
    neg: torch.Tensor  # [L, U, U] the same for the negatives
    disp: torch.Tensor  # [U] 1 / (valid codes) on each valid code


def group_pairs(
    masks: torch.Tensor,  # [U, K] bool: the masks each code belongs to
    valid: torch.Tensor,  # [U] bool: codes that take part
    levels: int,
) -> GroupPairs:
    """Positives at level l: valid pairs sharing more than l masks; negatives: exactly l."""
    codes = masks.float()
    overlap = codes @ codes.T  # [U, U] masks shared
    both = valid[:, None] & valid[None, :]
    upper = torch.ones_like(both).triu(diagonal=1) & both
    lv = torch.arange(levels, device=masks.device)[:, None, None]
    pos = (upper & (overlap > lv)).float()  # [L, U, U]
    neg = (upper & (overlap == lv)).float()
    pos = pos / pos.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    neg = neg / neg.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    disp = valid.float() / valid.sum().clamp_min(1).float()
    return GroupPairs(pos, neg, disp)


def group_loss(
    mean: torch.Tensor,  # [U, L, D]
    disp: torch.Tensor,  # [U, L]
    pairs: GroupPairs,
    sigma: float = LEVEL_SIGMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RegSegField's multi-level group loss of one view: (sim, dissim), see the module
    docstring. Levels without a positive (negative) pair add nothing to sim (dissim)."""
    levels, dim = mean.shape[1:]
    per_level = mean.transpose(0, 1).contiguous()  # [L, U, D]
    dist = torch.cdist(per_level, per_level, p=1) / dim  # [L, U, U] mean_D |mu_k - mu_m|
    d = torch.einsum("lj,juv->luv", level_weights(levels, sigma, mean.device), dist)
    sim = (d * pairs.pos).sum() + DISPERSION_WEIGHT * (disp * pairs.disp[:, None]).sum()
    dissim = (torch.relu(1.0 - d) * pairs.neg).sum()
    return sim, dissim


def distill_loss(feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over levels of the mean squared difference; both [L, D, H, W]."""
    return (feat - target).square().mean(dim=(1, 2, 3)).sum()


def encoder_loss(table: torch.Tensor, mean: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Pixel mean of sum_l mean_D (table[code] - F)^2, less the constant part (the field's
    own dispersion), from per-code values: table, mean [U, L, D], counts [U]."""
    w = counts / counts.sum().clamp_min(1.0)
    return ((table - mean).square().mean(dim=-1).sum(dim=-1) * w).sum()


def valid_codes(dm: DescriptorMap, min_pixels: int = MIN_CODE_PIXELS) -> torch.Tensor:
    """[U] bool: the codes of a view that some mask covers and that hold at least
    ``min_pixels`` pixels at the map's resolution (RegSegField's rule for the group loss
    and the depth TV)."""
    if dm.codes is None:
        raise ValueError(f"the descriptor map of {dm.name} has no codes: rerun mask_matching")
    counts = torch.bincount(dm.code_index.reshape(-1), minlength=dm.codes.shape[0])
    return dm.codes[:, 1:].any(dim=1) & (counts >= min_pixels)


def normalise_levels(flat: torch.Tensor, levels: int) -> torch.Tensor:
    """[C = L*D, H, W] rendered channels -> [L, D, H, W], unit length per level."""
    c, h, w = flat.shape
    return F.normalize(flat.view(levels, c // levels, h, w), dim=1, eps=1e-6)


# ----------------------------------------------------------------------------- the field


@dataclass(frozen=True)
class FieldSettings:
    levels: int = LEVELS
    dim: int = DIM
    topk: float = 0.2  # fraction of the Gaussians that render the field
    start: int = 1000  # distillation after this step ...
    distill_until: int = 1200  # ... and before this one; then the group loss ...
    until: int = 6000  # ... until this step
    rgb_until: int | None = None  # geometry frozen after this step (None: never)
    downscale: int = 1  # the field is rendered (and its losses taken) at 1/downscale


@dataclass
class _ViewCodes:
    code_index: torch.Tensor  # [h, w] int64 at the field's resolution
    masks: torch.Tensor  # [U, K] bool
    valid: torch.Tensor  # [U] bool
    pairs: GroupPairs


def _field_view(dm: DescriptorMap, downscale: int, levels: int) -> _ViewCodes:
    """A view's codes at 1/``downscale`` of the map's resolution; the 20-pixel floor of a
    valid code stays 20 pixels at full resolution."""
    h, w = dm.size
    small = dm.resized(max(1, h // downscale), max(1, w // downscale))
    floor = max(1, round(MIN_CODE_PIXELS / downscale**2))
    masks, valid = dm.codes[:, 1:], valid_codes(small, floor)
    return _ViewCodes(small.code_index, masks, valid, group_pairs(masks, valid, levels))


def scaled_camera(camera, downscale: int):
    """A render-only copy of ``camera`` at 1/``downscale`` of its resolution (same pose and
    field of view; pixel (0, 0) still spans [0, 1) x [0, 1))."""
    from scene.cameras import Camera

    if downscale == 1:
        return camera
    return Camera(
        camera.uid, camera.image_name, camera.R, camera.T, camera.fx / downscale,
        camera.fy / downscale, camera.cx / downscale, camera.cy / downscale,
        max(1, camera.image_width // downscale), max(1, camera.image_height // downscale),
        device=camera.device, znear=camera.znear, zfar=camera.zfar,
    )  # fmt: skip


class FeatureField:
    """The field's parameter, its feature pass and its loss terms (``--feature_field``).

    Args:
        maps: training image name -> descriptor map at training resolution, with codes
            (mask_matching.maps.load_descriptor_maps); shared with the mask-visibility
            term, so that the refinement updates both.
        settings: levels, schedule, top-k fraction.
        refiner: the iterative mask refinement, or None.
    """

    def __init__(self, maps: dict[str, DescriptorMap], settings: FieldSettings,
                 refiner: MaskRefiner | None = None) -> None:  # fmt: skip
        self.maps, self.settings, self.refiner = maps, settings, refiner
        # codes[:, 0] is the uncovered region
        self.views = {
            name: _field_view(dm, settings.downscale, settings.levels) for name, dm in maps.items()
        }
        self._cameras: dict[str, object] = {}  # image name -> its camera at field resolution
        self._model: GaussianModel | None = None
        self._render: RenderFn | None = None

    def bind(self, model: GaussianModel, render_fn: RenderFn) -> None:
        """The model whose features train and ``render_fn(camera, model, features)``."""
        self._model, self._render = model, render_fn

    def add_parameter(self, model: GaussianModel) -> None:
        """``features_group`` [N, L, D], uniform in [0, 1) (RegSegField), unless present
        (a resumed checkpoint)."""
        if FIELD_KEY not in model.params:
            s = self.settings
            model.params[FIELD_KEY] = nn.Parameter(
                torch.rand(model.num_gaussians, s.levels, s.dim, device=model.device)
            )

    # ------------------------------------------------------------------ schedule

    def phase(self, step: int) -> str | None:
        """ "distill", "group" or None (the field does not train at ``step``)."""
        s = self.settings
        if self.geometry_frozen(step):  # only the field trains: the group loss goes on
            return "group"
        if s.start < step < s.distill_until:
            return "distill"
        if s.distill_until <= step < s.until:
            return "group"
        return None

    def geometry_frozen(self, step: int) -> bool:
        return self.settings.rgb_until is not None and step > self.settings.rgb_until

    # ------------------------------------------------------------------ rendering

    def render(self, model: GaussianModel, camera) -> torch.Tensor:
        """[L, D, h, w] field of ``camera`` at 1/downscale of its resolution, unit length
        per level (see the module docstring: most visible Gaussians only, geometry
        detached)."""
        assert self._render is not None, "FeatureField.bind() first"
        if camera.image_name not in self._cameras:
            self._cameras[camera.image_name] = scaled_camera(camera, self.settings.downscale)
        camera = self._cameras[camera.image_name]
        with torch.no_grad():
            opacity = model.get_opacity
            score = torch.where(camera.sees(model.get_xyz), opacity, torch.full_like(opacity, -1))
            n = model.num_gaussians
            k = max(1, min(n, math.ceil(self.settings.topk * n)))
            idx = torch.topk(score, k, sorted=False).indices
        sub = GaussianModel(model.max_sh_degree)  # SH degree 0: the colour is not used
        sub.params = {key: model.params[key].detach()[idx] for key in CORE_KEYS}
        feats = F.normalize(model.params[FIELD_KEY][idx], dim=-1)  # [k, L, D]
        pkg = self._render(camera, sub, feats.reshape(k, -1))
        return normalise_levels(pkg["features"], self.settings.levels)

    # ------------------------------------------------------------------ losses

    def terms(self, camera, step: int) -> dict[str, tuple[float, torch.Tensor]]:
        """name -> (weight, value) of the field's terms at ``step`` (empty when it rests)."""
        phase = self.phase(step)
        name = camera.image_name
        if phase is None or name not in self.views:
            return {}
        feat = self.render(self._model, camera)
        view = self.views[name]
        if phase == "distill":  # the current table: the refinement replaces it
            target = self.maps[name].table[view.code_index].permute(2, 3, 0, 1)  # [L, D, h, w]
            return {"group_distill": (1.0, distill_loss(feat, target))}
        mean, disp, counts = code_statistics(feat, view.code_index, view.masks.shape[0])
        sim, dissim = group_loss(mean, disp, view.pairs)
        out = {"group_sim": (1.0, sim), "group_dissim": (1.0, dissim)}
        if self.refiner is not None:
            out["mask_encoder"] = (1.0, self.refiner.loss(name, mean.detach(), counts))
        return out

    def loss(self, camera, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted sum of ``terms`` and the terms by name (the whole loss of a step
        after ``train_rgb_until``)."""
        terms = self.terms(camera, step)
        total = sum((w * v for w, v in terms.values()), self._model.get_xyz.new_zeros(()))
        return total, {name: v for name, (_, v) in terms.items()}

    def after_step(self, step: int) -> None:
        """The refinement's optimizer step (and, every ``every`` steps, the map refresh)."""
        if self.refiner is not None:
            self.refiner.step()


class MaskRefiner:
    """Iterative mask refinement: the descriptor network trained against the field.

    Args:
        net: the trained descriptor network (mask_matching.maps.load_descriptor_model).
        codes: image name -> (the network's view index, [U, C] float multi-hot codes).
        maps: the descriptor maps whose ``table`` the refresh replaces (shared objects).
        every: refresh period in refinement steps (RegSegField: 500).
        lr, final_lr, decay_steps: Adam's rate, decaying exponentially from ``lr`` to
            ``final_lr`` over ``decay_steps`` steps (0.05 -> 5e-5 over 30k).
    """

    def __init__(self, net: DescriptorNet, codes: dict[str, tuple[int, torch.Tensor]],
                 maps: dict[str, DescriptorMap], every: int = 500, lr: float = 0.05,
                 final_lr: float = 5e-5, decay_steps: int = 30_000) -> None:  # fmt: skip
        self.net, self.codes, self.maps, self.every = net.train(), codes, maps, every
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        gamma = (final_lr / lr) ** (1.0 / decay_steps)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma)
        self.steps = 0
        self.refreshes = 0

    def loss(self, name: str, mean: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        view, codes = self.codes[name]
        return encoder_loss(self.net(view, codes), mean, counts)

    def step(self) -> None:
        """One Adam step when a loss gave gradients; every ``every`` steps, refresh."""
        if not any(p.grad is not None for p in self.net.parameters()):
            return
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if self.steps % self.every == 0:
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute every view's descriptor table in place (the maps are shared)."""
        for name, (view, codes) in self.codes.items():
            self.maps[name].table = self.net(view, codes).detach()
        self.refreshes += 1


# ----------------------------------------------------------------------------- building


def build_feature_field(scene, mask_reg, maps: dict[str, DescriptorMap],
                        iterations: int) -> FeatureField | None:  # fmt: skip
    """The field for ``--feature_field`` (None without it), with its refiner for
    ``--refine_masks``. ``maps``: the training views' descriptor maps (with codes)."""
    if mask_reg is None or not getattr(mask_reg, "feature_field", False):
        return None
    some = next(iter(maps.values()))
    rgb_until = mask_reg.train_rgb_until
    settings = FieldSettings(
        levels=int(some.table.shape[1]),
        dim=int(some.table.shape[2]),
        topk=mask_reg.group_topk,
        start=mask_reg.group_from,
        distill_until=mask_reg.group_distill_until,
        until=mask_reg.group_until,
        rgb_until=rgb_until if 0 <= rgb_until < iterations else None,
        downscale=mask_reg.group_downscale,
    )
    refiner = None
    if mask_reg.refine_masks:
        from mask_matching.maps import load_descriptor_model

        device = some.code_index.device
        net, views = load_descriptor_model(scene.source_path, list(maps), device)
        codes = {v.name: (i, v.codes_tensor(device)) for i, v in enumerate(views)}
        refiner = MaskRefiner(net, codes, maps, every=mask_reg.refine_every)
    frozen = "" if settings.rgb_until is None else f", geometry frozen after {settings.rgb_until}"
    refined = f", masks refined every {mask_reg.refine_every} steps" if refiner else ""
    print(f"Feature field: {settings.levels}x{settings.dim} per Gaussian, distil "
          f"{settings.start}-{settings.distill_until}, group loss until {settings.until}"
          f"{frozen}, the top {settings.topk:.0%} render it"
          f"{f' at 1/{settings.downscale} resolution' if settings.downscale > 1 else ''}"
          f"{refined}")  # fmt: skip
    return FeatureField(maps, settings, refiner)
