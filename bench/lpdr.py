"""LPDR loss cost per training iteration: forward + backward at a training image size.

    python bench/lpdr.py [--size 864 864] [--steps 200]

Prints the time per call (CUDA when available, else CPU) next to the plain L1 + fused SSIM
loss of 3DGS for scale, and the operators that dominate LPDR's GPU time.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.loss_utils import fast_ssim, l1_loss, load_fused_ssim  # noqa: E402
from utils.lpdr import lpdr_coefficients, lpdr_loss  # noqa: E402


def time_loss(fn, pred, gt, steps: int) -> float:
    def once():
        pred.grad = None
        fn(pred, gt).backward()

    for _ in range(10):
        once()
    if pred.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        once()
    if pred.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, nargs=2, default=[864, 864], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        load_fused_ssim(device)
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, *args.size, generator=g).to(device).requires_grad_()
    gt = torch.rand(3, *args.size, generator=g).to(device)
    rows = {
        "L1 + SSIM (3DGS)": lambda a, b: 0.8 * l1_loss(a, b) + 0.2 * (1 - fast_ssim(a, b)),
        "LPDR (band weights from the ground truth each call)": lpdr_loss,
        "LPDR (per-view coefficients cached, as train.py)": functools.partial(
            lpdr_loss, coefficients=lpdr_coefficients(gt)
        ),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"| loss, fwd+bwd, {args.size[0]}x{args.size[1]}, {name} | ms per call |\n|---|---|")
    for label, fn in rows.items():
        print(f"| {label} | {time_loss(fn, pred, gt, args.steps):.3f} |")
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            time_loss(rows["LPDR (per-view coefficients cached, as train.py)"], pred, gt, 20)
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
