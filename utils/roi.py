"""The region of interest (ROI) of roigs, built from a binary mask prior and a depth prior.

The ROI of a view is where the object of interest is: the mask (``pure_masks/``) cut by
depth (``depth_pro/``), so that background seen *through* the mask's coarse edges or
behind the object does not count.

1. Global depth radius (``depth_radius``): R = max over the views of the median prior depth
   inside the mask, over pixels that are finite and > 0; a view needs at least 10 such
   pixels to take part.
2. Per-view ROI (``build_roi``): finite ∧ 0 < d <= R · (1 + depth_margin_ratio) ∧ mask,
   resized to the training resolution with nearest sampling.

Two traps of the upstream code are fixed here (``attach_roi``):

- a view with a mask but without depth gets ROI = mask (upstream: no ROI at all); one
  notice line says so;
- a view without a mask gets no ROI (upstream: the same, but upstream then also stops all
  opacity pruning); the strategies leave 3DGS pruning untouched for it.

The L1 weight map and the ROI edge band are small image operations on the ROI, also here.
Everything is arrays in, arrays out; ``attach_roi`` is the only function that touches
cameras (reads ``camera.priors["roi_mask"]`` and ``["depth"]``, writes ``["roi"]`` and
``["roi_weight"]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

MIN_VALID_PIXELS = 10


def resize_nearest(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[C, h, w] -> [C, height, width], nearest sampling at pixel centres (dtype kept)."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    dtype = x.dtype
    y = x.to(torch.float32) if dtype == torch.bool else x
    y = F.interpolate(y[None], size=(height, width), mode="nearest-exact")[0]
    return y.to(dtype)


def _valid_depth(depth: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(depth) & (depth > 0)


def depth_radius(
    depths: Sequence[torch.Tensor | None],  # per view [1, H, W] or [H, W], or None
    masks: Sequence[torch.Tensor | None],  # per view, same size as its depth, or None
    min_valid: int = MIN_VALID_PIXELS,
) -> float | None:
    """R = max over views of the median depth inside the mask (finite, > 0 pixels).

    Views without depth or mask, or with fewer than ``min_valid`` valid pixels, are
    skipped; None when no view qualifies. The median is the lower median (torch).
    """
    best: float | None = None
    for depth, mask in zip(depths, masks, strict=True):
        if depth is None or mask is None:
            continue
        if mask.shape[-2:] != depth.shape[-2:]:
            mask = resize_nearest(mask.reshape(1, *mask.shape[-2:]), *depth.shape[-2:])
        valid = _valid_depth(depth) & (mask.reshape(depth.shape) > 0.5)
        if int(valid.sum()) < min_valid:
            continue
        med = float(depth[valid].median())
        best = med if best is None else max(best, med)
    return best


def build_roi(
    mask: torch.Tensor,  # [1, h, w] or [h, w], > 0.5 = foreground
    depth: torch.Tensor | None,  # [1, h', w'] or [h', w'] prior depth, or None
    radius: float | None,
    size: tuple[int, int],  # (H, W) training resolution
    depth_margin_ratio: float = 0.0,
) -> torch.Tensor:  # [1, H, W] float in {0, 1}
    """ROI = finite ∧ 0 < d <= R (1 + margin) ∧ mask, each resized (nearest) to ``size``.

    Without depth (or without a radius) the ROI is the mask.
    """
    H, W = size
    m = resize_nearest((mask.reshape(1, *mask.shape[-2:]) > 0.5).float(), H, W) > 0.5
    if depth is not None and radius is not None:
        d = resize_nearest(depth.reshape(1, *depth.shape[-2:]).float(), H, W)
        m = m & _valid_depth(d) & (d <= radius * (1.0 + depth_margin_ratio))
    return m.float()


def roi_loss_weight(
    roi: torch.Tensor,  # [1, H, W] in {0, 1}
    outside_weight: float = 0.05,
    dilate: int = 2,
    soft_edges: bool = True,
    blur_kernel: int = 5,
) -> torch.Tensor:  # [1, H, W] in [outside_weight, 1]
    """Per-pixel L1 weights w = w_out + (1 - w_out) · blur(dilate(ROI)).

    Dilation is a (2·dilate + 1)² max filter; the soft edge a blur_kernel² box filter
    (zero padded, so the map fades at the image border too); the result is clamped to
    [0, 1] before mixing.
    """
    m = roi.reshape(1, 1, *roi.shape[-2:]).float()
    if dilate > 0:
        m = F.max_pool2d(m, kernel_size=2 * dilate + 1, stride=1, padding=dilate)
    if soft_edges and blur_kernel > 1:
        if blur_kernel % 2 == 0:
            raise ValueError(f"--roi_mask_blur_kernel must be odd (got {blur_kernel})")
        m = F.avg_pool2d(m, blur_kernel, stride=1, padding=blur_kernel // 2)
    m = m.clamp(0.0, 1.0)
    return (outside_weight + (1.0 - outside_weight) * m).reshape(1, *roi.shape[-2:])


def weighted_l1(
    pred: torch.Tensor,  # [C, H, W]
    gt: torch.Tensor,  # [C, H, W]
    weight: torch.Tensor,  # [1, H, W]
) -> torch.Tensor:
    """sum w |pred - gt| / sum w over every channel (w broadcast over channels)."""
    w = weight.expand_as(pred)
    return ((pred - gt).abs() * w).sum() / (w.sum() + 1e-8)


def roi_edge_band(roi: torch.Tensor) -> torch.Tensor:  # [H, W] bool
    """The ~1 px band where a 3x3 dilation and a 3x3 erosion of the ROI disagree."""
    m = (roi.reshape(1, 1, *roi.shape[-2:]) > 0.5).float()
    dil = F.max_pool2d(m, 3, stride=1, padding=1)
    ero = 1.0 - F.max_pool2d(1.0 - m, 3, stride=1, padding=1)
    return ((dil > 0.5) & (ero < 0.5))[0, 0]


@dataclass
class ROIReport:
    """What ``attach_roi`` built, for one summary line."""

    n_views: int
    radius: float | None = None
    with_depth: list[str] = field(default_factory=list)  # ROI = mask ∧ depth
    mask_only: list[str] = field(default_factory=list)  # mask without depth: ROI = mask
    without: list[str] = field(default_factory=list)  # no mask: no ROI

    def line(self) -> str:
        r = "none" if self.radius is None else f"{self.radius:.4g}"
        return (
            f"[roi] {self.n_views} views: {len(self.with_depth)} mask+depth, "
            f"{len(self.mask_only)} mask only, {len(self.without)} without ROI; "
            f"depth radius R = {r}"
        )


def attach_roi(
    cameras: Iterable,
    depth_margin_ratio: float = 0.0,
    outside_weight: float = 0.05,
    dilate: int = 2,
    soft_edges: bool = True,
    blur_kernel: int = 5,
    verbose: bool = True,
) -> ROIReport:
    """Build every camera's ROI from its priors and store it in ``camera.priors``.

    Reads ``priors["roi_mask"]`` (float [1, H, W]) and ``priors["depth"]`` (float32
    [1, H, W]) as the prior loader (scene/priors.py) leaves them; writes ``priors["roi"]``
    ([1, H, W] float {0, 1}), ``priors["roi_edge"]`` ([H, W] bool edge band) and
    ``priors["roi_weight"]`` ([1, H, W] L1 weight map) for views that have a mask. The
    depth radius R is computed over these cameras (pass the training cameras), once.
    """
    cameras = list(cameras)
    report = ROIReport(len(cameras))
    masks = [c.priors.get("roi_mask") for c in cameras]
    depths = [c.priors.get("depth") for c in cameras]
    report.radius = depth_radius(depths, masks)
    for cam, mask, depth in zip(cameras, masks, depths, strict=True):
        if mask is None:
            for key in ("roi", "roi_edge", "roi_weight"):
                cam.priors.pop(key, None)
            report.without.append(cam.image_name)
            continue
        use_depth = depth if report.radius is not None else None
        roi = build_roi(
            mask, use_depth, report.radius, (cam.image_height, cam.image_width),
            depth_margin_ratio,
        ).to(mask.device)  # fmt: skip
        (report.with_depth if use_depth is not None else report.mask_only).append(cam.image_name)
        cam.priors["roi"] = roi
        cam.priors["roi_edge"] = roi_edge_band(roi)
        cam.priors["roi_weight"] = roi_loss_weight(
            roi, outside_weight, dilate, soft_edges, blur_kernel
        )
    if verbose:
        if report.mask_only:
            print(
                f"[roi] notice: {len(report.mask_only)} view(s) have a mask but no usable depth "
                f"(e.g. {report.mask_only[0]}): their ROI is the mask alone (make depth with "
                "predepth.py to cut it by depth)"
            )
        if report.without:
            print(
                f"[roi] notice: {len(report.without)} view(s) have no mask (e.g. "
                f"{report.without[0]}): no ROI there; densification and pruning stay 3DGS"
            )
        print(report.line())
    return report


def attach_training_priors(
    cameras: list,
    source_path: str,
    roi=None,
    depth=None,
    verbose: bool = True,
) -> ROIReport | None:
    """Load the priors the ROI / depth flags need into the (training) cameras, then build
    the ROI. Does nothing, and returns None, when no such flag is on.

    ``--use_mask`` requires ``pure_masks/`` and uses ``depth_pro/`` when present (else the
    ROI is the mask, with a notice); a depth loss requires ``depth_pro/``, or with
    ``--depth_source mvs`` ``depth_mvs/`` made from these training views. A required
    folder that is missing stops with the command that makes it (scene/priors.py).
    """
    use_mask = bool(roi is not None and roi.use_mask)
    depth_loss = bool(
        depth is not None
        and max(depth.lambda_depth_ssi, depth.lambda_depth_pearson,
                getattr(depth, "lambda_depth_l1", 0.0)) > 0
    )  # fmt: skip
    mvs = getattr(depth, "depth_source", "depth_pro") == "mvs"
    kinds, required = [], []
    if use_mask:
        kinds += ["roi", "depth"]
        required.append("roi")
    if depth_loss:
        kind = "depth_mvs" if mvs else "depth"
        if use_mask and mvs:  # the ROI's depth test and the loss would read one slot
            from scene.errors import SceneError

            raise SceneError("--use_mask reads depth_pro/: drop --depth_source mvs or --use_mask")
        kinds.append(kind)
        required.append(kind)
    if not kinds:
        return None
    from scene.priors import attach_priors, check_mvs_depth_split  # the prior loader

    if depth_loss and mvs:
        check_mvs_depth_split(source_path, [c.image_name for c in cameras])
    attach_priors(cameras, source_path, list(dict.fromkeys(kinds)), required, verbose=verbose)
    if not use_mask:
        return None
    return attach_roi(
        cameras,
        depth_margin_ratio=roi.depth_margin_ratio,
        outside_weight=roi.roi_loss_outside_weight,
        dilate=roi.roi_mask_dilate,
        soft_edges=roi.roi_mask_soft_edges == "on",
        blur_kernel=roi.roi_mask_blur_kernel,
        verbose=verbose,
    )
