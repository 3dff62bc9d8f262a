"""Where does a training iteration spend its time? CPU (Python + launches) versus GPU.

    python bench/profile_step.py -s <scene> [train.py flags] [--warmup 300] [--steps 50]

Builds the scene and Gaussians exactly as train.py does, runs ``--warmup`` plain training
iterations (densification included), then profiles ``--steps`` iterations with
torch.profiler and prints: wall time per iteration, GPU busy time per iteration, and the
top operators by CPU and by GPU time. If CPU time per iteration exceeds GPU time, the loop
is launch-bound and only less Python/fewer launches make it faster.
"""

from __future__ import annotations

import os
import sys
import time
from argparse import ArgumentParser

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402
from arguments import (  # noqa: E402
    BackendParams,
    ModelParams,
    OptimizationParams,
    PipelineParams,
    SparseViewParams,
    SpeedParams,
)
from gaussian.optim import build_optimizer, default_learning_rates, expon_lr, set_lr  # noqa: E402
from gaussian.strategy.default import DefaultStrategy  # noqa: E402
from gaussian_renderer import gsplat_backend, resolve_backend  # noqa: E402
from scene import Scene  # noqa: E402
from utils.loss_utils import fast_ssim, load_fused_ssim  # noqa: E402


def main() -> int:
    parser = ArgumentParser(description=__doc__)
    lp, op, pp = ModelParams(parser), OptimizationParams(parser), PipelineParams(parser)
    sp, bp = SparseViewParams(parser), BackendParams(parser)
    SpeedParams(parser)  # accepted for command-line compatibility with train.py
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--compare_api", action="store_true",
                        help="also time the same loop through gsplat.rasterization")  # fmt: skip
    args = parser.parse_args()
    dataset, opt, pipe = lp.extract(args), op.extract(args), pp.extract(args)
    device = torch.device("cuda")
    backend = resolve_backend(bp.extract(args).backend, device)
    scene = Scene(dataset, sp.extract(args), device=device)
    gaussians = train.initial_gaussians(scene, dataset.sh_degree, device)
    optimizer = build_optimizer(gaussians, default_learning_rates(opt, scene.cameras_extent))
    means_lr = expon_lr(opt.position_lr_init * scene.cameras_extent,
                        opt.position_lr_final * scene.cameras_extent,
                        lr_delay_mult=opt.position_lr_delay_mult,
                        max_steps=opt.position_lr_max_steps)  # fmt: skip
    strategy = DefaultStrategy.from_opt(opt, scene.cameras_extent, dataset.white_background)
    state = strategy.initialize_state(gaussians)
    bg = torch.tensor([1.0] * 3 if dataset.white_background else [0.0] * 3, device=device)
    cams = scene.getTrainCameras()
    load_fused_ssim(device)

    def iteration(it: int) -> None:
        set_lr(optimizer, "means", means_lr(it))
        cam = cams[it % len(cams)]
        pkg = train.render_step(cam, gaussians, pipe, bg, backend, depth=False)
        strategy.step_pre_backward(pkg, state, it)
        loss, _ = train.compute_losses(pkg, cam, opt, fast_ssim)
        loss.backward()
        with torch.no_grad():
            strategy.step_post_backward(gaussians, optimizer, state, it, pkg, cam)
            train.optimizer_step(optimizer)

    for it in range(1, args.warmup + 1):
        iteration(it)
    next_it = args.warmup + 1

    def timed() -> float:
        nonlocal next_it
        torch.cuda.synchronize()
        start = time.perf_counter()
        for it in range(next_it, next_it + args.steps):
            iteration(it)
        torch.cuda.synchronize()
        next_it += args.steps
        return (time.perf_counter() - start) / args.steps

    wall = timed()
    if args.compare_api and backend == "gsplat":
        # The same iterations through gsplat.rasterization instead of the direct stages,
        # alternated so that the Gaussian count grows alike for both.
        direct_fn = gsplat_backend.rasterize_gsplat

        def api_fn(*a, **kw):
            return gsplat_backend._rasterize_api(*a, **{"packed": False, "absgrad": False,
                                                        "antialiased": False, **kw})  # fmt: skip

        walls = {"direct": [wall], "gsplat.rasterization": []}
        for _ in range(2):
            gsplat_backend.rasterize_gsplat = api_fn
            walls["gsplat.rasterization"].append(timed())
            gsplat_backend.rasterize_gsplat = direct_fn
            walls["direct"].append(timed())
        for name, values in walls.items():
            ms = ", ".join(f"{v * 1e3:.3f}" for v in values)
            print(f"wall per iteration, {name}: {ms} ms")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for it in range(next_it, next_it + args.steps):
            iteration(it)
        torch.cuda.synchronize()
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events) / args.steps
    print(f"Gaussians: {gaussians.num_gaussians}, backend {backend}")
    print(f"wall per iteration (no profiler): {wall * 1e3:.3f} ms")
    print(f"GPU busy per iteration: {gpu_us / 1e3:.3f} ms")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(events.table(sort_by="self_device_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
