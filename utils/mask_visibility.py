"""Mask-visibility loss (RegSegField, seeds digest 1.4): Gaussians that a training view sees
inside a segment must find the same segment where they project in the other views.

For the current training view s and each Gaussian g whose centre projects inside it:

    desc_s  = D_s(x_s(g))                       (mask_matching descriptor, [L, D])
    count_g = #{t in targets(s) : x_t(g) inside view t, in front of it, and
                                  min over levels mean_D (D_t(x_t(g)) - desc_s)^2 < tol}
    p_g     = max(0, tau - count_g)              (0 for a Gaussian s does not see)

``targets(s)`` are up to 6 other training views with the most COLMAP matches with s
(mask_matching.target_views: the digest's defect fixed, the source never among them).
p_g is constant within a step (no gradient through the count); it reaches the Gaussians
through their blending weights: p is rendered as one extra channel of the training
render (the same rasterizer pass as RGB), so the term

    L_vis = mean over pixels of sum_g p_g alpha_g T_g

pushes down the opacity, or moves out of the way, every Gaussian that is visible in s but
not confirmed by tau other views. RegSegField takes a mean over Gaussians of p_g times
the Gaussian's blending weight at its last pixel (an artefact of its modified
rasterizer); the per-pixel mean here weighs each Gaussian by its whole footprint instead.

Weight: ``lambda_mask_vis`` x interp(step, [0, 1000, 2000, 8000], [2, 0, 2, 0.1]), active for
``mask_vis_from < step < mask_vis_until`` (RegSegField: reg_from 800, reg_steps 8000;
reg_weight 0.05 and tau 2 on DTU, 0.01 and 1 on mip-NeRF 360).
"""

from __future__ import annotations

import numpy as np
import torch

from mask_matching.losses import AGREE_TOL, views_agree
from mask_matching.maps import DescriptorMap

RAMP_STEPS = (0.0, 1000.0, 2000.0, 8000.0)
RAMP_VALUES = (2.0, 0.0, 2.0, 0.1)


def ramp(step: int) -> float:
    """RegSegField's weight schedule: 2 -> 0 -> 2 -> 0.1 at steps 0, 1000, 2000, 8000."""
    return float(np.interp(step, RAMP_STEPS, RAMP_VALUES))


@torch.no_grad()
def visibility_counts(
    means: torch.Tensor,  # [N, 3] world
    source,  # Camera
    source_map: DescriptorMap,
    targets: list[tuple[object, DescriptorMap]],  # (Camera, its map)
    tol: float = AGREE_TOL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` [N] int (target views that agree with the source descriptor) and ``seen``
    [N] bool (the centre projects inside the source view, in front of it).

    The reference, one view at a time; training uses its batched twin ``SourceViews``."""
    uv, z = source.project(means)
    desc, inside = source_map.sample(uv)
    seen = inside & (z > source.znear)
    count = torch.zeros(means.shape[0], dtype=torch.int32, device=means.device)
    for cam, dm in targets:
        uv_t, z_t = cam.project(means)
        desc_t, inside_t = dm.sample(uv_t)
        count += (views_agree(desc, desc_t, tol) & inside_t & (z_t > cam.znear)).int()
    return count, seen


class CodeAtlas:
    """Every training view's code index in one flat int32 tensor, so that one gather reads
    the codes of a source view and all its targets (built once: the refinement changes
    the descriptor tables, never the codes)."""

    def __init__(self, maps: dict[str, DescriptorMap]) -> None:
        names = list(maps)
        flat = [maps[n].code_index.reshape(-1).to(torch.int32) for n in names]
        self.index = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.int32)  # [sum HW]
        sizes = [f.numel() for f in flat]
        self.start = dict(zip(names, np.cumsum([0, *sizes[:-1]]).tolist()))


class SourceViews:
    """``visibility_counts`` of one source view, batched over its targets (what training
    calls every step).

    Two things make it cheaper than the reference loop while giving the same counts:
    the centres are projected into the source and every target in one batched product
    and read the code of their pixel from the atlas in one gather; and two descriptors
    agree exactly when the codes they are read from agree, so agreement is a table lookup
    ``agree[t, code in s, code in t]`` (an int per Gaussian instead of L x D floats). The
    tables are rebuilt when a map's ``table`` is replaced (the mask refinement's refresh).
    """

    def __init__(
        self,
        source,  # Camera
        targets: list,  # Cameras
        maps: dict[str, DescriptorMap],  # image name -> map, every view above
        atlas: CodeAtlas,  # of ``maps``
        tol: float = AGREE_TOL,
    ) -> None:
        cams = [source, *targets]
        self.maps = [maps[c.image_name] for c in cams]
        device = self.maps[0].code_index.device
        self.rot = torch.stack([c.viewmat[:3, :3] for c in cams]).to(device)  # [V, 3, 3]
        self.trans = torch.stack([c.viewmat[:3, 3] for c in cams]).to(device)[:, None]  # [V, 1, 3]

        def as_column(values: list) -> torch.Tensor:  # [V, 1]: one value per view
            return torch.tensor(values, device=device)[:, None]

        self.fx, self.fy = as_column([c.fx for c in cams]), as_column([c.fy for c in cams])
        self.cx, self.cy = as_column([c.cx for c in cams]), as_column([c.cy for c in cams])
        self.znear = as_column([c.znear for c in cams])
        self.height = as_column([dm.size[0] for dm in self.maps])
        self.width = as_column([dm.size[1] for dm in self.maps])
        self.offset = as_column([atlas.start[c.image_name] for c in cams])
        self.index = atlas.index.to(device)  # no copy when it is there already
        self.tol = tol
        self._tables: tuple[torch.Tensor, ...] = ()
        self._agree = torch.zeros(0, dtype=torch.bool, device=device)

    def agreement(self) -> torch.Tensor:
        """[T, U_source, max U_target] bool: code pairs whose descriptors agree."""
        tables = tuple(dm.table for dm in self.maps)
        if any(a is not b for a, b in zip(tables, self._tables)) or not self._tables:
            source, rest = tables[0], tables[1:]
            width = max((t.shape[0] for t in rest), default=0)
            agree = torch.zeros(len(rest), source.shape[0], width, dtype=torch.bool,
                                device=source.device)  # fmt: skip
            for i, t in enumerate(rest):
                agree[i, :, : t.shape[0]] = views_agree(source[:, None], t[None], self.tol)
            self._tables, self._agree = tables, agree
        return self._agree

    @torch.no_grad()
    def counts(self, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``visibility_counts`` of the source and its targets ([N] int32 count, [N] bool
        seen) for world ``means`` [N, 3]."""
        p = torch.matmul(means[None], self.rot.transpose(1, 2)) + self.trans  # [V, N, 3]
        z = p[..., 2]
        zs = z.clamp_min(1e-8)
        col = torch.floor(self.fx * p[..., 0] / zs + self.cx)
        row = torch.floor(self.fy * p[..., 1] / zs + self.cy)
        ok = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height) & (z > self.znear)
        col = torch.minimum(col.clamp_min(0), self.width - 1).long()
        row = torch.minimum(row.clamp_min(0), self.height - 1).long()
        code = self.index[self.offset + row * self.width + col].long()  # [V, N]
        agree = self.agreement()
        if agree.shape[0] == 0:
            return torch.zeros_like(code[0], dtype=torch.int32), ok[0]
        t = torch.arange(agree.shape[0], device=code.device)[:, None]
        hits = agree[t, code[:1], code[1:]] & ok[1:]  # [T, N]
        return hits.sum(dim=0, dtype=torch.int32), ok[0]


def visibility_penalty(count: torch.Tensor, seen: torch.Tensor, tau: int) -> torch.Tensor:
    """p_g = max(0, tau - count_g) where the source sees g, else 0 ([N] float)."""
    return (tau - count).clamp_min(0).float() * seen


class MaskVisibility:
    """The ``mask_vis`` term of training (utils/extra_losses.py).

    Args:
        maps: training image name -> its descriptor map at training resolution.
        targets: training image name -> the target cameras (up to 6, by match count).
        weight: ``lambda_mask_vis`` (the ramp multiplies it).
        tau: views that must agree (RegSegField: 2 on DTU, 1 on mip-NeRF 360).
        start, until: the term is active for start < step < until.
        tol: agreement tolerance of the descriptors (0.02).
    """

    def __init__(self, maps: dict[str, DescriptorMap], targets: dict[str, list], weight: float,
                 tau: int = 1, start: int = 800, until: int = 8000,
                 tol: float = AGREE_TOL) -> None:  # fmt: skip
        self.maps, self.targets = maps, targets
        self.weight, self.tau, self.start, self.until, self.tol = weight, tau, start, until, tol
        self._atlas = CodeAtlas(maps)
        self._sources: dict[str, SourceViews] = {}  # built on a view's first step

    def weight_at(self, step: int) -> float:
        if not (self.start < step < self.until):
            return 0.0
        return self.weight * ramp(step)

    def render_features(self, model, camera, step: int) -> torch.Tensor | None:
        """[N, 1] per-Gaussian penalty to render as an extra channel, or None when the term
        is off at ``step`` or the view has no descriptor map."""
        if self.weight_at(step) <= 0 or camera.image_name not in self.maps:
            return None
        views = self._sources.get(camera.image_name)
        if views is None:
            targets = self.targets[camera.image_name]
            views = SourceViews(camera, targets, self.maps, self._atlas, self.tol)
            self._sources[camera.image_name] = views
        count, seen = views.counts(model.get_xyz.detach())
        return visibility_penalty(count, seen, self.tau)[:, None]

    @staticmethod
    def term(render_pkg: dict) -> torch.Tensor:
        """L_vis: the mean over pixels of the rendered penalty channel."""
        return render_pkg["features"][0].mean()


def uses_maps(mask_reg) -> bool:
    """Whether the MaskRegParams values ask for the descriptor maps of mask_matching/."""
    if mask_reg is None:
        return False
    return (
        mask_reg.lambda_mask_vis > 0
        or getattr(mask_reg, "feature_field", False)
        or getattr(mask_reg, "lambda_segment_tv", 0.0) > 0
    )


def load_training_maps(scene, mask_reg, device: torch.device | str) -> dict[str, DescriptorMap]:
    """The training views' descriptor maps at training resolution, loaded once for every
    term that reads them (empty when none does)."""
    from mask_matching.maps import load_descriptor_maps

    if not uses_maps(mask_reg):
        return {}
    cams = scene.getTrainCameras()
    sizes = {c.image_name: (c.image_height, c.image_width) for c in cams}
    return load_descriptor_maps(scene.source_path, [c.image_name for c in cams], sizes, device)


def build_mask_visibility(
    scene, mask_reg, device: torch.device | str, maps: dict[str, DescriptorMap] | None = None
) -> MaskVisibility | None:
    """The term for ``--lambda_mask_vis`` > 0 (``mask_reg``: the MaskRegParams values), None
    otherwise: the descriptor maps (``maps``, or loaded here) and each view's target views
    by match count."""
    from mask_matching.maps import target_views

    if mask_reg is None or mask_reg.lambda_mask_vis <= 0:
        return None
    cams = scene.getTrainCameras()
    names = [c.image_name for c in cams]
    maps = maps or load_training_maps(scene, mask_reg, device)
    by_name = {c.image_name: c for c in cams}  # train.py's Scene holds them on ``device``
    k = mask_reg.mask_vis_targets
    targets = {n: [by_name[t] for t in target_views(scene.source_path, names, n, k)]
               for n in names}  # fmt: skip
    print(f"Mask visibility: weight {mask_reg.lambda_mask_vis}, tau {mask_reg.mask_vis_tau}, "
          f"steps {mask_reg.mask_vis_from}-{mask_reg.mask_vis_until}, "
          f"{max(len(t) for t in targets.values())} target views per view")  # fmt: skip
    return MaskVisibility(maps, targets, mask_reg.lambda_mask_vis, mask_reg.mask_vis_tau,
                          mask_reg.mask_vis_from, mask_reg.mask_vis_until)  # fmt: skip
