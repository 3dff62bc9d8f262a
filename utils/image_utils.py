"""Image helpers: PSNR (plain and masked), compositing for masked metrics, saving, colour maps.

Images are floats in [0, 1], ``[C, H, W]`` for one image or ``[B, C, H, W]`` for a batch.
Masks are ``[1, H, W]`` / ``[B, 1, H, W]`` (or without the channel axis) with 1 = object.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x`` as ``[B, ...]`` plus whether it was a single ``[C, H, W]`` image."""
    if x.dim() == 3:
        return x[None], True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"expected an image [C,H,W] or a batch [B,C,H,W], got shape {tuple(x.shape)}")


def _batched_mask(mask: torch.Tensor) -> torch.Tensor:
    """A mask as ``[B, 1, H, W]`` floats."""
    m = mask.float()
    if m.dim() == 2:  # [H, W]
        m = m[None, None]
    elif m.dim() == 3:  # [1, H, W] for one image, or [B, H, W]
        m = m[:, None]
    if m.dim() != 4 or m.shape[1] != 1:
        raise ValueError(f"expected a mask [H,W], [1,H,W] or [B,1,H,W], got {tuple(mask.shape)}")
    return m


def psnr(
    img1: torch.Tensor,  # [B, C, H, W] or [C, H, W], values in [0, 1]
    img2: torch.Tensor,  # same shape
) -> torch.Tensor:  # [B], or [] for a single image
    """Peak signal-to-noise ratio per image: ``20 log10(1 / sqrt(MSE))``.

    The MSE runs over every channel and pixel of an image, as in 3DGS's metrics.py (which
    feeds ``[1, 3, H, W]`` tensors). Identical images give ``inf``, as upstream.
    Note: 3DGS's training report calls its psnr on ``[3, H, W]`` and so averages three
    per-channel PSNRs; here a ``[C, H, W]`` tensor is always one image.
    """
    a, single = _batched(img1)
    b, _ = _batched(img2)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    out = 20 * torch.log10(1.0 / torch.sqrt(mse))
    return out[0] if single else out


def masked_psnr(
    img1: torch.Tensor,  # [B, C, H, W] or [C, H, W]
    img2: torch.Tensor,  # same shape
    mask: torch.Tensor,  # [B, 1, H, W], [1, H, W] or [H, W]; 1 = pixel counts
) -> torch.Tensor:  # [B], or [] for a single image
    """PSNR over the mask's pixels only (DTU protocol of RegNeRF/FreeNeRF/DNGaussian).

    MSE = sum over masked pixels and all channels of the squared error, divided by
    (number of masked pixels x channels). An empty mask gives NaN: the caller decides what
    to do with a view that has no object pixels.
    """
    a, single = _batched(img1)
    b, _ = _batched(img2)
    m = _batched_mask(mask).to(a.dtype)
    sq = ((a - b) ** 2 * m).flatten(1).sum(1)
    count = m.flatten(1).sum(1) * a.shape[1]
    mse = sq / count  # 0/0 -> NaN for an empty mask
    out = 20 * torch.log10(1.0 / torch.sqrt(mse))
    return out[0] if single else out


def composite_on_white(
    img: torch.Tensor,  # [B, C, H, W] or [C, H, W]
    mask: torch.Tensor,  # [B, 1, H, W], [1, H, W] or [H, W]; 1 = object
) -> torch.Tensor:  # same shape as img
    """``img * m + (1 - m)``: keeps the object and paints the background white.

    DTU masked SSIM and LPIPS are computed on such composites of both render and ground
    truth, so that background pixels contribute no error.
    """
    a, single = _batched(img)
    m = _batched_mask(mask).to(a.dtype)
    out = a * m + (1 - m)
    return out[0] if single else out


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[C, H, W] float in [0, 1] -> [H, W, C] uint8 (C = 1 is squeezed)."""
    arr = (img.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def save_image(img: torch.Tensor, path: str) -> None:
    """Save a [C, H, W] float image in [0, 1] as PNG (temporary name, then rename)."""
    tmp = path + ".tmp.png"
    Image.fromarray(to_uint8(img)).save(tmp)
    os.replace(tmp, path)


# Turbo colour map as 8 anchor colours, linearly interpolated (close enough for previews).
_TURBO = np.array(
    [
        [0.190, 0.072, 0.232],
        [0.271, 0.431, 0.927],
        [0.129, 0.749, 0.890],
        [0.275, 0.975, 0.502],
        [0.750, 0.965, 0.220],
        [0.988, 0.698, 0.204],
        [0.894, 0.286, 0.058],
        [0.480, 0.016, 0.011],
    ]
)


def colorize(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Map [H, W] values to uint8 RGB with a turbo-like ramp (2nd-98th percentile range).

    Invalid pixels (non-finite or outside ``valid``) are black.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values) if valid is None else (valid & np.isfinite(values))
    out = np.zeros((*values.shape, 3), dtype=np.uint8)
    if not ok.any():
        return out
    lo, hi = np.percentile(values[ok], [2, 98])
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1) * (len(_TURBO) - 1)
    i0 = np.clip(np.floor(t).astype(int), 0, len(_TURBO) - 2)
    frac = (t - i0)[..., None]
    rgb = _TURBO[i0] * (1 - frac) + _TURBO[i0 + 1] * frac
    out[ok] = (rgb[ok] * 255 + 0.5).astype(np.uint8)
    return out
