"""Fused SSIM on CUDA: forward and backward of the 3DGS SSIM in two kernels.

SSIM with an 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2 and zero padding
("same", the 3DGS convention) or a cropped "valid" map. The PyTorch twin, and the fallback on
CPU, is ``utils.loss_utils.ssim_map`` of the segsplat project; training reaches this package
through ``utils.loss_utils.fast_ssim``.

Gradients flow to both images; the derivative map that ``img2`` needs is only stored when
``img2`` requires a gradient, so the usual training call (render vs. ground truth) pays for
``img1`` alone. Computation is float32 whatever the input dtype.

The CUDA extension is compiled on the first CUDA call (or ahead of time with
``pip install --no-build-isolation ./submodules/fused-ssim``); see ``_build.py``.
"""

from __future__ import annotations

import functools
import math
import threading
from types import ModuleType

import torch

__all__ = [
    "fused_l1_dssim",
    "fused_l1_dssim_with_grad",
    "fused_ssim",
    "fused_ssim_map",
    "gaussian_taps",
    "load_extension",
]

WINDOW = 11  # the kernels are compiled for 11 taps
PADDINGS = ("same", "valid")

_lock = threading.Lock()
_extension: ModuleType | None = None


def load_extension(device: torch.device | str | None = None, verbose: bool = False) -> ModuleType:
    """The compiled extension, building it for ``device``'s GPU on first use (then cached)."""
    global _extension
    with _lock:
        if _extension is None:
            from ._build import find_or_build

            dev = torch.device("cuda") if device is None else torch.device(device)
            _extension = find_or_build(dev, verbose=verbose)
        return _extension


@functools.lru_cache(maxsize=8)
def gaussian_taps(sigma: float = 1.5, size: int = WINDOW) -> tuple[float, ...]:
    """Normalized 1D Gaussian (float64 values; the kernels round them to float32)."""
    g = [math.exp(-((k - size // 2) ** 2) / (2 * sigma**2)) for k in range(size)]
    total = math.fsum(g)
    return tuple(v / total for v in g)


def _is_broadcast_value(t: torch.Tensor) -> bool:
    """One value seen at every index (what expanding a scalar gives): the kernel reads it once."""
    return all(size == 1 or stride == 0 for size, stride in zip(t.shape, t.stride()))


class _FusedSSIM(torch.autograd.Function):
    """SSIM map (or its mean) of [B, C, H, W] float32 CUDA images, with both gradients."""

    @staticmethod
    def forward(ctx, img1, img2, taps, C1, C2, valid, mean):
        ext = load_extension(img1.device)
        grad_y = ctx.needs_input_grad[1]
        ssim, d_m1, d_e11, d_e12, d_m2 = ext.forward(img1, img2, taps, C1, C2, valid, True, grad_y)
        ctx.save_for_backward(img1, img2, d_m1, d_e11, d_e12, d_m2)
        ctx.taps, ctx.valid, ctx.mean, ctx.map_shape = taps, valid, mean, ssim.shape
        return ssim.mean() if mean else ssim

    @staticmethod
    def backward(ctx, grad_out):
        img1, img2, d_m1, d_e11, d_e12, d_m2 = ctx.saved_tensors
        if ctx.mean:
            # One value for every pixel: passed as a broadcast view, never materialized.
            n = math.prod(ctx.map_shape)
            grad_map = (grad_out.float() / n).expand(ctx.map_shape)
        else:
            grad_map = grad_out.float()
            if not _is_broadcast_value(grad_map):
                grad_map = grad_map.contiguous()
        ext = load_extension(img1.device)
        grad_x, grad_y = ext.backward(
            img1, img2, ctx.taps, ctx.valid, grad_map, d_m1, d_e11, d_e12, d_m2
        )
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            grad_y if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
            None,
        )


def _l1_dssim_forward(ext, x, y, taps, C1, C2, weight):
    """Loss, its two terms, and what the backward needs (the sign of x - y and the SSIM
    derivative maps)."""
    ssim, d_m1, d_e11, d_e12, d_m2 = ext.forward(x, y, taps, C1, C2, False, True, False)
    diff = x - y
    l1 = diff.abs().mean()
    dssim = 1.0 - ssim.mean()
    return torch.lerp(l1, dssim, weight), l1, dssim, (diff.sign_(), d_m1, d_e11, d_e12, d_m2)


def _l1_dssim_backward(ext, x, y, taps, weight, grad_out, saved):
    """d loss / d x for the loss's gradient ``grad_out`` (a scalar tensor)."""
    sign, d_m1, d_e11, d_e12, d_m2 = saved
    n = x.numel()
    # d loss / d SSIM-map: one value for every pixel, passed as a broadcast view.
    grad_map = (grad_out.float() * (-weight / n)).expand(x.shape)
    grad_x, _ = ext.backward(x, y, taps, False, grad_map, d_m1, d_e11, d_e12, d_m2)
    return grad_x.addcmul_(sign, grad_out.float() * ((1.0 - weight) / n))


class _FusedL1DSSIM(torch.autograd.Function):
    """(1 - w) * mean|x - y| + w * (1 - mean SSIM(x, y)) of [B, C, H, W] float32 CUDA
    images as one autograd node: gradient to ``x`` only (the render; ``y`` is the target)."""

    @staticmethod
    def forward(ctx, x, y, taps, C1, C2, weight):
        ext = load_extension(x.device)
        loss, l1, dssim, saved = _l1_dssim_forward(ext, x, y, taps, C1, C2, weight)
        ctx.save_for_backward(x, y, *saved)
        ctx.taps, ctx.weight = taps, weight
        ctx.mark_non_differentiable(l1, dssim)
        return loss, l1, dssim

    @staticmethod
    def backward(ctx, grad_out, _grad_l1, _grad_dssim):
        x, y, *saved = ctx.saved_tensors
        ext = load_extension(x.device)
        grad_x = _l1_dssim_backward(ext, x, y, ctx.taps, ctx.weight, grad_out, saved)
        return grad_x, None, None, None, None, None


def _check(img1: torch.Tensor, img2: torch.Tensor, padding: str) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if img1.shape != img2.shape:
        raise ValueError(f"img1 {tuple(img1.shape)} and img2 {tuple(img2.shape)} differ in shape")
    if img1.dim() not in (3, 4):
        raise ValueError(f"images must be [C, H, W] or [B, C, H, W], got {tuple(img1.shape)}")
    if not (img1.is_cuda and img2.is_cuda):
        raise ValueError(
            "fused_ssim needs CUDA tensors; on CPU use the PyTorch twin "
            "(utils.loss_utils.ssim_map, or fast_ssim which picks the right one)"
        )
    if img1.device != img2.device:
        raise ValueError(f"img1 is on {img1.device} but img2 on {img2.device}")
    if padding == "valid" and min(img1.shape[-2:]) < WINDOW:
        raise ValueError(f"valid SSIM needs images of at least {WINDOW}x{WINDOW} pixels")


def _ssim(img1, img2, padding, train, sigma, C1, C2, mean):
    _check(img1, img2, padding)
    squeeze = img1.dim() == 3
    x = (img1[None] if squeeze else img1).float().contiguous()
    y = (img2[None] if squeeze else img2).float().contiguous()
    taps = gaussian_taps(float(sigma))
    valid = padding == "valid"
    if train and torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        out = _FusedSSIM.apply(x, y, taps, float(C1), float(C2), valid, mean)
    else:
        ext = load_extension(x.device)
        out = ext.forward(x.detach(), y.detach(), taps, float(C1), float(C2), valid, False, False)
        out = out[0].mean() if mean else out[0]
    out = out.to(img1.dtype)
    return out[0] if squeeze and not mean else out


def fused_ssim_map(
    img1: torch.Tensor,  # [B, C, H, W] or [C, H, W], CUDA
    img2: torch.Tensor,  # same shape and device
    padding: str = "same",
    train: bool = True,
    sigma: float = 1.5,
    C1: float = 0.01**2,
    C2: float = 0.03**2,
) -> torch.Tensor:  # [B, C, H', W'] (or [C, H', W']): H' = H ("same") or H - 10 ("valid")
    """Per-pixel SSIM, equal to the PyTorch twin ``ssim_map`` up to float32 rounding.

    ``train=False`` skips the derivative maps and returns a tensor without a graph (evaluation).
    """
    return _ssim(img1, img2, padding, train, sigma, C1, C2, mean=False)


def fused_ssim(
    img1: torch.Tensor,  # [B, C, H, W] or [C, H, W], CUDA
    img2: torch.Tensor,
    padding: str = "same",
    train: bool = True,
    sigma: float = 1.5,
    C1: float = 0.01**2,
    C2: float = 0.03**2,
) -> torch.Tensor:  # scalar
    """Mean SSIM (3DGS convention), differentiable w.r.t. both images.

    The mean is part of the autograd node, so the backward pass sees one gradient value for
    all pixels instead of a full-size gradient map.
    """
    return _ssim(img1, img2, padding, train, sigma, C1, C2, mean=True)


def fused_l1_dssim(
    img1: torch.Tensor,  # [B, C, H, W] or [C, H, W], CUDA, the render (gets the gradient)
    img2: torch.Tensor,  # same shape and device, the target
    weight: float,  # lambda_dssim of 3DGS
    sigma: float = 1.5,
    C1: float = 0.01**2,
    C2: float = 0.03**2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3DGS photometric loss ``(1 - weight) * L1 + weight * (1 - SSIM)`` ("same"
    padding) in one autograd node, with its two terms ``L1`` and ``1 - SSIM`` (scalars
    without gradients, for logging).

    The same value and gradient as summing the terms in PyTorch, but one node and four
    kernels in the backward instead of about eight nodes: at sparse-view sizes a training
    step is bound by such host work.
    """
    _check(img1, img2, "same")
    x = (img1[None] if img1.dim() == 3 else img1).float().contiguous()
    y = (img2[None] if img2.dim() == 3 else img2).float().contiguous().detach()
    taps = gaussian_taps(float(sigma))
    return _FusedL1DSSIM.apply(x, y, taps, float(C1), float(C2), float(weight))


def fused_l1_dssim_with_grad(
    img1: torch.Tensor,  # [B, C, H, W] float32 CUDA, contiguous: the render
    img2: torch.Tensor,  # same shape, the target
    weight: float,
    sigma: float = 1.5,
    C1: float = 0.01**2,
    C2: float = 0.03**2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``fused_l1_dssim``'s loss, L1 and 1 - SSIM, and d loss / d img1 [B, C, H, W], from
    one call without autograd: for step drivers that chain backward passes by hand (the
    CUDA-graph training step). No checks and no host synchronisation."""
    ext = load_extension(img1.device)
    taps = gaussian_taps(float(sigma))
    loss, l1, dssim, saved = _l1_dssim_forward(ext, img1, img2, taps, float(C1), float(C2),
                                               float(weight))  # fmt: skip
    grad = _l1_dssim_backward(ext, img1, img2, taps, float(weight), torch.ones_like(loss), saved)
    return loss, l1, dssim, grad
