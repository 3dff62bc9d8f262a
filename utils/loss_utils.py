"""Photometric losses. Images are [C, H, W] or [B, C, H, W] floats in [0, 1]."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType

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


# The project's CUDA SSIM lives in submodules/fused-ssim (a pip-installable package). It is found
# without installation by loading the package from that folder on first use: nothing is added to
# sys.path, and modules that never ask for the fused SSIM never import it.
FUSED_SSIM_DIR = Path(__file__).resolve().parents[1] / "submodules" / "fused-ssim"


def import_fused_ssim() -> ModuleType:
    """The ``fused_ssim`` package: the pip-installed one, else the copy in submodules/.

    Importing compiles nothing (the CUDA extension is built on its first CUDA call).
    """
    try:
        module = importlib.import_module("fused_ssim")
        if hasattr(module, "load_extension"):
            return module
    except ModuleNotFoundError as exc:
        if exc.name != "fused_ssim":
            raise
    # Not installed, or a foreign package of the same name: load ours under a private name.
    name = "_segsplat_fused_ssim"
    if name in sys.modules:
        return sys.modules[name]
    package_dir = FUSED_SSIM_DIR / "fused_ssim"
    spec = importlib.util.spec_from_file_location(
        name, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"fused_ssim package not found under {package_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@functools.cache
def load_fused_ssim(device: torch.device) -> ModuleType | None:
    """The fused SSIM package with its extension loaded for ``device``, or None.

    The first call may compile the extension (about a minute, then cached on disk). A failure
    (no compiler, no CUDA toolkit, ...) gives one warning per device and process, after which
    callers use the PyTorch twin.
    """
    try:
        module = import_fused_ssim()
        module.load_extension(device)
    except Exception as exc:  # any build or load failure means: fall back to the twin
        warnings.warn(
            f"fused SSIM CUDA kernel unavailable ({type(exc).__name__}: {exc}); "
            "using the PyTorch SSIM instead",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return module


def fast_ssim(
    img1: torch.Tensor,  # [B, C, H, W] or [C, H, W], the render (gets the gradient)
    img2: torch.Tensor,  # same shape, the ground truth
    padding: str = "same",
) -> torch.Tensor:  # scalar mean SSIM
    """Mean SSIM for training: the fused CUDA kernel on CUDA tensors, the PyTorch twin otherwise.

    Same values and gradients either way (float32 rounding aside). float64 inputs always take
    the twin, which computes in float64.
    """
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if img1.is_cuda and img2.is_cuda and img1.dtype != torch.float64:
        fused = load_fused_ssim(img1.device)
        if fused is not None:
            return fused.fused_ssim(img1, img2, padding=padding)
    return ssim_map(img1, img2, padding=padding).mean()


def l1_dssim_loss(
    image: torch.Tensor,  # [C, H, W] or [B, C, H, W], the render
    gt: torch.Tensor,  # same shape, the ground truth
    lambda_dssim: float,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3DGS photometric loss ``(1 - lambda) * L1 + lambda * (1 - SSIM)`` and its terms
    ``L1`` and ``1 - SSIM``.

    On CUDA (float32, ``fused``) one autograd node with the fused SSIM kernel, whose terms
    carry no gradient; otherwise the PyTorch sum of ``l1_loss`` and ``fast_ssim``.
    """
    if fused and image.is_cuda and gt.is_cuda and image.dtype == torch.float32:
        module = load_fused_ssim(image.device)
        if module is not None:
            return module.fused_l1_dssim(image, gt, lambda_dssim)
    l1 = l1_loss(image, gt)
    dssim = 1.0 - fast_ssim(image, gt)
    return torch.lerp(l1, dssim, lambda_dssim), l1, dssim
