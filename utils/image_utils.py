"""Image helpers: PSNR, saving, depth colourisation."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image


def psnr(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """PSNR per image (3DGS convention): images [..., C, H, W] in [0, 1] -> [...]."""
    mse = ((img1 - img2) ** 2).flatten(-3).mean(-1)
    return 20 * torch.log10(1.0 / torch.sqrt(mse))


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
