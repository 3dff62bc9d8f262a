"""Depth supervision from a depth prior: monocular (``depth_pro/``) or multi-view stereo
(``depth_mvs/``).

Monocular depth is right up to an unknown scale and shift relative to the scene's units
(Depth Pro is metric, the scene's SfM frame is not), so both losses ignore them:

- ``ssi_depth_loss`` (scale-and-shift-invariant, MiDaS-style): fit s, t by least squares
  so that s·rendered + t matches the prior over the valid pixels (closed form, gradients
  flow through s and t), then take the mean absolute residual, divided by the prior's
  mean so that the loss does not depend on the prior's units.
- ``pearson_patch_loss`` (as RegSegField's depth term): split both maps into
  ``patch``×``patch`` tiles and take 1 - mean Pearson correlation over the tiles, which
  only asks for the local shape to agree (correlation is invariant to a per-tile scale and
  shift).

A prior already in the scene's units (the stereo depth of ``python -m mvs``, computed with
the training cameras) needs no such freedom:

- ``relative_l1_depth_loss``: mean |rendered - prior| / prior, the error relative to the
  prior's depth, so that near and far pixels weigh alike and the loss has no units.

Valid pixels: the prior is finite and > 0 (and inside ``mask`` when given).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _valid(prior: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    v = torch.isfinite(prior) & (prior > 0)
    if mask is not None:
        v = v & (mask > 0.5)
    return v


def ssi_depth_loss(
    rendered: torch.Tensor,  # [1, H, W] rendered depth
    prior: torch.Tensor,  # [1, H, W] prior depth
    mask: torch.Tensor | None = None,  # [1, H, W], optional restriction
    min_pixels: int = 16,
) -> torch.Tensor:
    """Mean |s·rendered + t - prior| / mean(prior) with the least-squares (s, t).

    Written with masked sums rather than boolean indexing, so it never waits for the
    device; 0 (with a zero gradient) when fewer than ``min_pixels`` pixels are valid.
    """
    w = _valid(prior, mask).to(rendered.dtype)
    p = torch.where(w > 0, prior, torch.zeros_like(prior))
    n = w.sum()
    n_safe = n.clamp_min(1.0)
    r_mean = (rendered * w).sum() / n_safe
    p_mean = (p * w).sum() / n_safe
    rc, pc = (rendered - r_mean) * w, (p - p_mean) * w
    s = (rc * pc).sum() / (rc.pow(2).sum() + 1e-12)
    t = p_mean - s * r_mean
    residual = ((s * rendered + t - p).abs() * w).sum() / n_safe
    enough = (n >= min_pixels).to(rendered.dtype)
    return enough * residual / p_mean.clamp_min(1e-8)


def relative_l1_depth_loss(
    rendered: torch.Tensor,  # [1, H, W] rendered depth
    prior: torch.Tensor,  # [1, H, W] prior depth in the scene's units (0: none)
    mask: torch.Tensor | None = None,  # [1, H, W], optional restriction
) -> torch.Tensor:
    """Mean |rendered - prior| / prior over the valid pixels (0 when there are none), with
    masked sums: no wait for the device."""
    w = _valid(prior, mask).to(rendered.dtype)
    safe = torch.where(w > 0, prior, torch.ones_like(prior))
    return ((rendered - safe).abs() / safe * w).sum() / w.sum().clamp_min(1.0)


def pearson_patch_loss(
    rendered: torch.Tensor,  # [1, H, W]
    prior: torch.Tensor,  # [1, H, W]
    patch: int = 16,
    mask: torch.Tensor | None = None,  # [1, H, W]
    min_fraction: float = 0.5,
) -> torch.Tensor:
    """1 - mean Pearson correlation over ``patch``² tiles (the image is cropped to whole
    tiles; tiles with under ``min_fraction`` valid pixels or no variance are left out)."""
    H, W = rendered.shape[-2:]
    ph, pw = H // patch, W // patch
    if ph == 0 or pw == 0:
        return rendered.sum() * 0.0
    valid = _valid(prior, mask)[..., : ph * patch, : pw * patch].float()
    r = rendered[..., : ph * patch, : pw * patch]
    p = torch.where(valid > 0, prior[..., : ph * patch, : pw * patch], torch.zeros_like(r))

    def tiles(x: torch.Tensor) -> torch.Tensor:  # [1, H, W] -> [T, patch*patch]
        return F.unfold(x[None], kernel_size=patch, stride=patch)[0].T

    r, p, v = tiles(r), tiles(p.detach()), tiles(valid)
    n = v.sum(-1)
    keep = n >= min_fraction * patch * patch
    n = n.clamp_min(1.0)
    rm = (r * v).sum(-1, keepdim=True) / n[:, None]
    pm = (p * v).sum(-1, keepdim=True) / n[:, None]
    rc, pc = (r - rm) * v, (p - pm) * v
    cov = (rc * pc).sum(-1)
    std = torch.sqrt(rc.pow(2).sum(-1) * pc.pow(2).sum(-1) + 1e-12)
    keep = (keep & (pc.pow(2).sum(-1) > 1e-12) & (rc.detach().pow(2).sum(-1) > 1e-12)).float()
    # Mean of (1 - correlation) over the kept tiles, 0 when none is kept (no device sync).
    return ((1.0 - cov / std) * keep).sum() / keep.sum().clamp_min(1.0)


def segment_tv_pixels(
    code_index: torch.Tensor,  # [H, W] int64 segment code of each pixel
    valid_codes: torch.Tensor,  # [U] bool: codes inside some mask, large enough
    erode: int = 5,
) -> torch.Tensor:
    """[H, W] bool: pixels of valid codes, the set eroded by an ``erode`` x ``erode``
    minimum (RegSegField: background and codes under 20 pixels out, 5x5 erosion)."""
    allowed = valid_codes[code_index].float()[None, None]
    eroded = -F.max_pool2d(-allowed, erode, stride=1, padding=erode // 2)
    return eroded[0, 0] > 0.5


def segment_tv_loss(
    depth: torch.Tensor,  # [1, H, W] rendered depth
    code_index: torch.Tensor,  # [H, W] int64
    allowed: torch.Tensor,  # [H, W] bool (segment_tv_pixels)
) -> torch.Tensor:
    """Segment-aware total variation (RegSegField): the mean |depth difference| over the
    horizontally and vertically neighbouring pixel pairs that are both allowed and share
    a segment code; depth may jump across segment borders, not within a segment."""
    d = depth[0]
    pairs_x = allowed[:, 1:] & allowed[:, :-1] & (code_index[:, 1:] == code_index[:, :-1])
    pairs_y = allowed[1:] & allowed[:-1] & (code_index[1:] == code_index[:-1])
    diffs = torch.cat([(d[:, 1:] - d[:, :-1]).abs()[pairs_x], (d[1:] - d[:-1]).abs()[pairs_y]])
    if diffs.numel() == 0:
        return depth.sum() * 0.0
    return diffs.mean()
