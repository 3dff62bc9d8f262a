"""Photometric losses. Images are [C, H, W] or [B, C, H, W] floats in [0, 1]."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def l1_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return (pred - gt).abs().mean()


def l2_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return ((pred - gt) ** 2).mean()


@functools.lru_cache(maxsize=8)
def _gaussian_window_1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype):
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def ssim_map(
    img1: torch.Tensor,  # [B, C, H, W] or [C, H, W]
    img2: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    C1: float = 0.01**2,
    C2: float = 0.03**2,
    padding: str = "same",
) -> torch.Tensor:
    """Per-pixel SSIM with a separable Gaussian window, zero-padded like 3DGS's SSIM.

    ``padding="same"`` keeps the image size (the 3DGS convention, zero padding);
    ``"valid"`` drops the border. This is the PyTorch twin of the fused CUDA SSIM.
    """
    squeeze = img1.dim() == 3
    if squeeze:
        img1, img2 = img1[None], img2[None]
    C = img1.shape[1]
    g = _gaussian_window_1d(window_size, sigma, img1.device, img1.dtype)
    wx = g.view(1, 1, 1, -1).expand(C, 1, 1, window_size)
    wy = g.view(1, 1, -1, 1).expand(C, 1, window_size, 1)
    pad = window_size // 2 if padding == "same" else 0

    def blur(x):
        x = F.conv2d(x, wx, padding=(0, pad), groups=C)
        return F.conv2d(x, wy, padding=(pad, 0), groups=C)

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = blur(img1 * img1) - mu1_sq
    s2 = blur(img2 * img2) - mu2_sq
    s12 = blur(img1 * img2) - mu12
    out = ((2 * mu12 + C1) * (2 * s12 + C2)) / ((mu1_sq + mu2_sq + C1) * (s1 + s2 + C2))
    return out[0] if squeeze else out


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM (3DGS convention: 11x11 Gaussian window, sigma 1.5, zero padding)."""
    return ssim_map(img1, img2, window_size).mean()


def fast_ssim(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """Mean SSIM for training: the fastest available implementation.

    Same values as ``ssim``; this is the one place that chooses the implementation.
    """
    return ssim(img1, img2)
