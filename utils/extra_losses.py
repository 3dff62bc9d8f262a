"""The loss terms that the ROI, LPDR and depth-prior flags add to 3DGS's L1 + D-SSIM.

``build_extra_losses`` returns None when every such flag is off, and train.py's
``compute_losses`` then runs exactly the 3DGS loss. Otherwise ``ExtraLosses`` supplies

- ``l1_weight``: None (plain L1), or from ``roi_loss_focus_after`` on the view's
  ``priors["roi_weight"]`` for views that have an ROI: L1 then becomes the ROI-weighted
  sum w|pred - gt| / sum w (utils/roi.py ``weighted_l1``); SSIM stays unweighted, as in
  roigs;
- ``terms``: extra named terms with their weights: ``lpdr`` (utils/lpdr.py), ``depth_ssi``
  ``depth_pearson`` and ``depth_l1`` (utils/depth_losses.py, each inside its iteration
  window, only for views with a depth prior, over the pixels whose rendered alpha exceeds
  0.5 and whose prior is positive); ``binocular`` (utils/binocular.py: the render
  warped from a sideways-shifted camera against the training image, from its start
  iteration); ``mask_vis`` (utils/mask_visibility.py: the per-Gaussian penalty rendered as
  the extra channel that ``render_features`` hands to the training render);
  ``segment_tv`` (utils/depth_losses.py: depth total variation inside each segment);
  the feature field's ``group_distill``, ``group_sim``, ``group_dissim`` and
  ``mask_encoder`` (utils/feature_field.py, its own render of the field);
- ``after_step``: the mask refinement's optimizer step, after the Gaussians' one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from utils.binocular import BinocularConsistency
from utils.depth_losses import (
    pearson_patch_loss,
    relative_l1_depth_loss,
    segment_tv_loss,
    segment_tv_pixels,
    ssi_depth_loss,
)
from utils.feature_field import FeatureField, valid_codes
from utils.lpdr import lpdr_coefficients, lpdr_loss
from utils.mask_visibility import MaskVisibility


@dataclass(frozen=True)
class ExtraLosses:
    roi_focus_after: int | None = None  # None: L1 is never ROI-weighted
    lambda_lpdr: float = 0.0
    lpdr_levels: int = 3
    lpdr_kernel_size: int = 5
    lpdr_sigma: float = 1.0
    lpdr_gamma: float = 1.2
    lpdr_dc_weight: float = 0.3
    lambda_depth_ssi: float = 0.0
    depth_ssi_window: tuple[int, int] = (0, 0)  # [from, until)
    lambda_depth_pearson: float = 0.0
    depth_pearson_window: tuple[int, int] = (0, 0)
    depth_patch_size: int = 16
    lambda_depth_l1: float = 0.0
    depth_l1_window: tuple[int, int] = (0, 0)
    lambda_binocular: float = 0.0
    binocular: BinocularConsistency | None = None
    mask_vis: MaskVisibility | None = None
    feature_field: FeatureField | None = None
    lambda_segment_tv: float = 0.0
    segment_tv_window: tuple[int, int] = (0, 0)
    # image name -> (code index [H, W], allowed pixels [H, W]) of the segment-aware depth TV
    segment_tv_pixels: dict = field(default_factory=dict, compare=False, repr=False)

    # LPDR coefficients (band weights) of each view's ground truth, which never changes:
    # image name -> [levels + 1].
    _lpdr_cache: dict = field(default_factory=dict, compare=False, repr=False)

    def _lpdr_coefficients(self, camera) -> torch.Tensor:
        coefficients = self._lpdr_cache.get(camera.image_name)
        if coefficients is None:
            coefficients = lpdr_coefficients(
                camera.original_image, self.lpdr_levels, self.lpdr_kernel_size,
                self.lpdr_sigma, self.lpdr_gamma, self.lpdr_dc_weight,
            )  # fmt: skip
            self._lpdr_cache[camera.image_name] = coefficients
        return coefficients

    def reads_rendered_depth(self, iteration: int | None = None) -> bool:
        """Whether some term needs the rendered depth (``render(..., depth=True)``) at
        ``iteration`` (None: at any iteration); outside their windows the depth channel is
        not rendered."""

        def within(window: tuple[int, int]) -> bool:
            return iteration is None or window[0] <= iteration < window[1]

        return (
            (self.lambda_depth_ssi > 0 and within(self.depth_ssi_window))
            or (self.lambda_depth_pearson > 0 and within(self.depth_pearson_window))
            or (self.lambda_depth_l1 > 0 and within(self.depth_l1_window))
            or (self.binocular is not None and (iteration is None or self.binocular.due(iteration)))
            or (self.lambda_segment_tv > 0 and within(self.segment_tv_window))
        )

    @property
    def graphable(self) -> bool:
        """Whether the binocular term is the only term: then the iterations where it does
        not act (``plain_step``) are plain 3DGS steps, which CUDA graphs can replay. Every
        other weighted term (a ``lambda_*`` field) counts, so a term added later cannot be
        skipped by the graphs unnoticed."""
        weighted = any(
            getattr(self, f.name) > 0
            for f in fields(self)
            if f.name.startswith("lambda_") and f.name != "lambda_binocular"
        )
        others = (self.roi_focus_after, self.mask_vis, self.feature_field)
        return self.binocular is not None and not weighted and all(o is None for o in others)

    def plain_step(self, iteration: int) -> bool:
        """Whether no term acts at ``iteration`` (only when ``graphable``)."""
        return self.graphable and not self.binocular.due(iteration)

    def after_step(self, iteration: int) -> None:
        """Work after the optimizer step: the feature field's mask refinement."""
        if self.feature_field is not None:
            self.feature_field.after_step(iteration)

    def render_features(self, model, camera, iteration: int) -> torch.Tensor | None:
        """[N, C] per-Gaussian channels the training render must carry for the terms at
        ``iteration`` (the mask-visibility penalty), or None."""
        if self.mask_vis is None:
            return None
        return self.mask_vis.render_features(model, camera, iteration)

    def l1_weight(self, camera, iteration: int) -> torch.Tensor | None:
        """The ROI weight map of L1 at ``iteration`` ([1 or 3, H, W]), None for plain L1."""
        weight = camera.priors.get("roi_weight")
        if self.roi_focus_after is None or iteration < self.roi_focus_after:
            return None
        return weight

    def terms(
        self, render_pkg: dict, camera, iteration: int
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """name -> (weight, value) of the extra terms active at ``iteration``."""
        out: dict[str, tuple[float, torch.Tensor]] = {}
        image, gt = render_pkg["render"], camera.original_image
        if self.lambda_lpdr > 0:
            value = lpdr_loss(
                image, gt, self.lpdr_levels, self.lpdr_kernel_size, self.lpdr_sigma,
                self.lpdr_gamma, self.lpdr_dc_weight, self._lpdr_coefficients(camera),
            )  # fmt: skip
            out["lpdr"] = (self.lambda_lpdr, value)
        prior = camera.priors.get("depth")
        if prior is not None:
            depth = render_pkg["depth"]
            # Expected depth means nothing where almost nothing is rendered.
            covered = render_pkg["alpha"].detach() > 0.5
            lo, hi = self.depth_ssi_window
            if self.lambda_depth_ssi > 0 and lo <= iteration < hi:
                value = ssi_depth_loss(depth, prior, covered)
                out["depth_ssi"] = (self.lambda_depth_ssi, value)
            lo, hi = self.depth_pearson_window
            if self.lambda_depth_pearson > 0 and lo <= iteration < hi:
                value = pearson_patch_loss(depth, prior, self.depth_patch_size, covered)
                out["depth_pearson"] = (self.lambda_depth_pearson, value)
            lo, hi = self.depth_l1_window
            if self.lambda_depth_l1 > 0 and lo <= iteration < hi:
                out["depth_l1"] = (
                    self.lambda_depth_l1,
                    relative_l1_depth_loss(depth, prior, covered),
                )
        lo, hi = self.segment_tv_window
        if self.lambda_segment_tv > 0 and lo <= iteration < hi:
            pixels = self.segment_tv_pixels.get(camera.image_name)
            if pixels is not None:
                value = segment_tv_loss(render_pkg["depth"], *pixels)
                out["segment_tv"] = (self.lambda_segment_tv, value)
        if self.feature_field is not None:
            out.update(self.feature_field.terms(camera, iteration))
        if self.mask_vis is not None and "features" in render_pkg:
            out["mask_vis"] = (self.mask_vis.weight_at(iteration), self.mask_vis.term(render_pkg))
        if self.binocular is not None and self.binocular.active(iteration):
            out["binocular"] = (self.lambda_binocular, self.binocular.term(render_pkg, camera))
        return out


def segment_tv_inputs(mask_reg, maps: dict) -> tuple[float, tuple[int, int], dict] | None:
    """The segment-aware depth TV's (weight, (from, until), name -> (code index, allowed
    pixels)) for ``--lambda_segment_tv`` > 0, from the descriptor maps; None otherwise."""
    if not maps or getattr(mask_reg, "lambda_segment_tv", 0.0) <= 0:
        return None
    pixels = {n: (dm.code_index, segment_tv_pixels(dm.code_index, valid_codes(dm)))
              for n, dm in maps.items()}  # fmt: skip
    window = (mask_reg.segment_tv_from, mask_reg.segment_tv_until)
    return mask_reg.lambda_segment_tv, window, pixels


def build_extra_losses(
    roi=None,
    depth=None,
    lambda_binocular: float = 0.0,
    binocular: BinocularConsistency | None = None,
    mask_vis: MaskVisibility | None = None,
    feature_field: FeatureField | None = None,
    segment_tv: tuple[float, tuple[int, int], dict] | None = None,
) -> ExtraLosses | None:
    """From the ROIParams and DepthLossParams values, the binocular term (its weight and
    its ``BinocularConsistency``), the mask-visibility term, the feature field and the
    segment-aware depth TV (weight, (from, until), name -> (code index, allowed pixels));
    None when they add nothing."""
    use_mask = bool(roi is not None and roi.use_mask)
    lambda_lpdr = roi.lambda_lpdr if roi is not None and roi.use_lpdr else 0.0
    ssi = depth.lambda_depth_ssi if depth is not None else 0.0
    pearson = depth.lambda_depth_pearson if depth is not None else 0.0
    depth_l1 = getattr(depth, "lambda_depth_l1", 0.0) if depth is not None else 0.0
    if binocular is None or lambda_binocular <= 0:
        binocular, lambda_binocular = None, 0.0
    if segment_tv is not None and segment_tv[0] <= 0:
        segment_tv = None
    others = any(t is not None for t in (binocular, mask_vis, feature_field, segment_tv))
    if not use_mask and lambda_lpdr <= 0 and max(ssi, pearson, depth_l1) <= 0 and not others:
        return None
    kw = {}
    if roi is not None:
        kw.update(
            lpdr_levels=roi.lpdr_levels,
            lpdr_kernel_size=roi.lpdr_kernel_size,
            lpdr_sigma=roi.lpdr_sigma,
            lpdr_gamma=roi.lpdr_gamma,
            lpdr_dc_weight=roi.lpdr_dc_weight,
        )
    if depth is not None:
        kw.update(
            depth_ssi_window=(depth.depth_ssi_from, depth.depth_ssi_until),
            depth_pearson_window=(depth.depth_pearson_from, depth.depth_pearson_until),
            depth_patch_size=depth.depth_patch_size,
            depth_l1_window=(
                getattr(depth, "depth_l1_from", 0),
                getattr(depth, "depth_l1_until", 0),
            ),
        )
    if segment_tv is not None:
        kw.update(
            lambda_segment_tv=segment_tv[0],
            segment_tv_window=segment_tv[1],
            segment_tv_pixels=segment_tv[2],
        )
    return ExtraLosses(
        roi_focus_after=roi.roi_loss_focus_after if use_mask else None,
        lambda_lpdr=max(lambda_lpdr, 0.0),
        lambda_depth_ssi=max(ssi, 0.0),
        lambda_depth_pearson=max(pearson, 0.0),
        lambda_depth_l1=max(depth_l1, 0.0),
        lambda_binocular=lambda_binocular,
        binocular=binocular,
        mask_vis=mask_vis,
        feature_field=feature_field,
        **kw,
    )
