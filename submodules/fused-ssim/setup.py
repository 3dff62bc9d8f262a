"""Ahead-of-time build: ``pip install --no-build-isolation ./submodules/fused-ssim``.

Builds ``fused_ssim._C`` for the GPUs visible at build time (or ``TORCH_CUDA_ARCH_LIST``).
Without this step the package compiles the same sources on first use (see fused_ssim/_build.py).
"""

import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))

setup(
    name="fused_ssim",
    version="0.1.0",
    description="Fused SSIM forward/backward CUDA kernels (segsplat)",
    packages=["fused_ssim"],
    package_data={"fused_ssim": ["csrc/*.cu", "csrc/*.cpp", "csrc/*.h"]},
    ext_modules=[
        CUDAExtension(
            name="fused_ssim._C",
            sources=["fused_ssim/csrc/ext.cpp", "fused_ssim/csrc/ssim_kernels.cu"],
            include_dirs=[os.path.join(HERE, "fused_ssim", "csrc")],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
