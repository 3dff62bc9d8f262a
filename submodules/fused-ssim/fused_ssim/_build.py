"""Finding or compiling the CUDA extension.

Two ways to get the compiled module:
1. ``pip install --no-build-isolation ./submodules/fused-ssim`` builds ``fused_ssim._C`` once;
2. otherwise the first CUDA call compiles the sources in ``csrc/`` with
   ``torch.utils.cpp_extension.load`` (ninja + nvcc, about a minute) into a cache folder keyed
   by a hash of the sources, the torch/CUDA/Python versions and the GPU architecture, so later
   runs load the cached library instantly and an edit of a source rebuilds it.

Nothing here runs at import time: importing the package never needs a compiler.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("ext.cpp", "ssim_kernels.cu")
HEADERS = ("ssim_kernels.h",)


def cache_root() -> Path:
    """``$FUSED_SSIM_CACHE``, else ``$XDG_CACHE_HOME/segsplat/fused_ssim`` (~/.cache default)."""
    if os.environ.get("FUSED_SSIM_CACHE"):
        return Path(os.environ["FUSED_SSIM_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "segsplat" / "fused_ssim"


def build_key(capability: tuple[int, int] | None) -> str:
    """Hash of everything that makes a build reusable: sources, versions, GPU architecture."""
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    parts = (
        torch.__version__,
        str(torch.version.cuda),
        f"{sys.version_info.major}.{sys.version_info.minor}",
        str(capability),
        os.environ.get("TORCH_CUDA_ARCH_LIST", ""),
    )
    h.update("|".join(parts).encode())
    return h.hexdigest()[:16]


def _import_built(path: Path) -> ModuleType | None:
    """Import a library this module built before, or None if it cannot be imported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fused_ssim_cuda", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:
        return None
    return module


def jit_build(device: torch.device, verbose: bool = False) -> ModuleType:
    """Compile (or load from the cache) the extension for ``device``'s architecture."""
    from torch.utils.cpp_extension import load

    capability = torch.cuda.get_device_capability(device)
    build_dir = cache_root() / build_key(capability)
    # The folder name hashes everything the build depends on, so a library already in it
    # is current: import it directly instead of asking ninja (a second or more per run).
    built = build_dir / "fused_ssim_cuda.so"
    if built.is_file() and (module := _import_built(built)) is not None:
        return module
    build_dir.mkdir(parents=True, exist_ok=True)
    # Without TORCH_CUDA_ARCH_LIST torch compiles for the visible GPUs' architectures.
    return load(
        name="fused_ssim_cuda",
        sources=[str(CSRC / name) for name in SOURCES],
        extra_include_paths=[str(CSRC)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        build_directory=str(build_dir),
        verbose=verbose,
    )


def find_or_build(device: torch.device, verbose: bool = False) -> ModuleType:
    """The pip-built ``fused_ssim._C`` when present, else the cached JIT build."""
    try:
        from . import _C  # built by setup.py

        return _C
    except ImportError:
        return jit_build(device, verbose=verbose)
