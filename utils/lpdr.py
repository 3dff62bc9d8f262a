"""The dynamic Laplacian pyramid loss (LPDR) of roigs.

A Laplacian pyramid splits an image into band-pass layers and a low-pass residual. At each
level: blur with a Gaussian (``kernel_size``², ``sigma``), average-pool 2x2, upsample the
pooled image back bilinearly, and keep ``band = current - upsampled``; the pooled image is
the next level's input, and what is left after the last level is the low-pass residual
(``dc``).

LPDR compares the prediction's and the ground truth's bands with L1, weighting each band by
how much energy the *ground truth* has there (so the loss follows the image's content:
textured images stress fine bands, smooth ones coarse bands):

    e_l = mean |band_l(gt)| + 1e-8,   w_l = e_l^gamma / sum_k e_k^gamma
    LPDR = sum_l w_l · L1(band_l(pred), band_l(gt)) + dc_weight · L1(dc(pred), dc(gt))

The band weights are computed without gradient (they come from the ground truth only).
Since the pyramid is linear, the band differences are the bands of the difference image
``pred - gt``: ``lpdr_loss`` builds that one pyramid (see its docstring).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=8)
def _gaussian_kernel_1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype):
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def gaussian_blur(
    img: torch.Tensor,  # [B, C, H, W]
    kernel_size: int = 5,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (same size out)."""
    C = img.shape[1]
    g = _gaussian_kernel_1d(kernel_size, float(sigma), img.device, img.dtype)
    pad = kernel_size // 2
    mode = "reflect" if min(img.shape[-2:]) > pad else "replicate"
    x = F.pad(img, (pad, pad, 0, 0), mode=mode)
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(C, 1, 1, kernel_size), groups=C)
    x = F.pad(x, (0, 0, pad, pad), mode=mode)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(C, 1, kernel_size, 1), groups=C)


@functools.lru_cache(maxsize=8)
def _blur_pool_kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype):
    """[1, 1, size + 1, size + 1]: the Gaussian blur and the 2x2 average pool in one
    kernel (the full convolution of the Gaussian taps with [0.5, 0.5], in both axes)."""
    g = _gaussian_kernel_1d(size, sigma, device, dtype)
    h = 0.5 * (F.pad(g, (0, 1)) + F.pad(g, (1, 0)))
    return torch.outer(h, h)[None, None]


def blur_pool(
    img: torch.Tensor,  # [B, C, H, W]
    kernel_size: int = 5,
    sigma: float = 1.0,
) -> torch.Tensor:  # [B, C, H // 2, W // 2]
    """``avg_pool2d(gaussian_blur(img), 2)`` as one strided convolution (same values:
    both are linear, and the pooled blur reads a (size + 1)² window at stride 2)."""
    B, C, H, W = img.shape
    pad = kernel_size // 2
    mode = "reflect" if min(H, W) > pad else "replicate"
    x = F.pad(img.reshape(B * C, 1, H, W), (pad, pad, pad, pad), mode=mode)
    k = _blur_pool_kernel(kernel_size, float(sigma), img.device, img.dtype)
    return F.conv2d(x, k, stride=2).reshape(B, C, H // 2, W // 2)


def laplacian_pyramid(
    img: torch.Tensor,  # [C, H, W] or [B, C, H, W]
    levels: int = 3,
    kernel_size: int = 5,
    sigma: float = 1.0,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Band-pass layers (finest first, each at its level's size) and the low-pass residual.

    A level stops the pyramid early when the image is too small to pool (side < 2).
    """
    x = img[None] if img.dim() == 3 else img
    bands: list[torch.Tensor] = []
    for _ in range(levels):
        if min(x.shape[-2:]) < 2:
            break
        down = blur_pool(x, kernel_size, sigma)
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(x - up)
        x = down
    return bands, x


def band_weights(
    gt_bands: list[torch.Tensor],
    gamma: float = 1.2,
) -> torch.Tensor:  # [L], sums to 1
    """w_l = e_l^gamma / sum e^gamma with e_l = mean |band_l| + 1e-8 (no gradient)."""
    with torch.no_grad():
        e = torch.stack([b.abs().mean() for b in gt_bands]) + 1e-8
        p = e.pow(gamma)
        return p / p.sum()


def lpdr_coefficients(
    gt: torch.Tensor,  # [C, H, W] or [B, C, H, W]
    levels: int = 3,
    kernel_size: int = 5,
    sigma: float = 1.0,
    gamma: float = 1.2,
    dc_weight: float = 0.3,
) -> torch.Tensor:  # [levels + 1]
    """The factors c with LPDR = sum_l c_l ||band_l(pred - gt)||_1 + c_dc ||dc(pred - gt)||_1:
    c_l = w_l / numel(band_l), c_dc = dc_weight / numel(dc). They depend on the ground
    truth only, so training computes them once per view. Empty when the image is too
    small for one level."""
    with torch.no_grad():
        bands, dc = laplacian_pyramid(gt, levels, kernel_size, sigma)
        if not bands:
            return gt.new_zeros(0)
        numel = torch.tensor([b.numel() for b in bands] + [dc.numel()], dtype=gt.dtype)
        factors = torch.cat([band_weights(bands, gamma), gt.new_full((1,), dc_weight)])
        return factors / numel.to(gt.device)


def lpdr_loss(
    pred: torch.Tensor,  # [C, H, W] or [B, C, H, W]
    gt: torch.Tensor,  # same shape
    levels: int = 3,
    kernel_size: int = 5,
    sigma: float = 1.0,
    gamma: float = 1.2,
    dc_weight: float = 0.3,
    coefficients: torch.Tensor | None = None,  # [levels + 1] from lpdr_coefficients(gt)
) -> torch.Tensor:
    """The LPDR loss (module docstring); 0 for identical images.

    The pyramid is linear (padding, convolution and bilinear upsampling all are), so
    band_l(pred) - band_l(gt) = band_l(pred - gt): one pyramid of the difference gives
    every term, and one multi-tensor L1 norm reduces them all. Pass ``coefficients``
    (``lpdr_coefficients(gt, ...)``, which hold the band weights) to reuse them across
    iterations of the same view.
    """
    bands, dc = laplacian_pyramid(pred - gt.detach(), levels, kernel_size, sigma)
    if not bands:
        return (pred - gt).abs().mean()
    if coefficients is None:
        coefficients = lpdr_coefficients(gt, levels, kernel_size, sigma, gamma, dc_weight)
    norms = torch._foreach_norm([*bands, dc], 1)  # one fused launch on CUDA
    return torch.dot(torch.stack(norms), coefficients)
