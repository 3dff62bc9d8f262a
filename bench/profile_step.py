"""Where does a training iteration spend its time? CPU (Python + launches) versus GPU.

    python bench/profile_step.py -s <scene> [train.py flags] [--warmup 300] [--steps 50]

Takes every train.py flag (ROI, densification and depth-loss flags included) and builds
the scene, priors, Gaussians, strategy, losses and optimizer as train.py does, runs
``--warmup`` training iterations (densification included), then profiles ``--steps``
iterations with torch.profiler and prints: wall time per iteration, GPU busy time per
iteration, and the top operators by CPU and by GPU time. If CPU time per iteration exceeds
GPU time, the loop is launch-bound and only less Python/fewer launches make it faster.
``--phases`` adds the time of each phase of a step (features: the per-Gaussian channels of
the mask-visibility term; render; loss, the feature field's pass and terms included;
backward; strategy; optimizer; after_step: the mask refinement; with CUDA graphs, render,
loss and backward are one phase, "render"): the host's time to issue it, and its time
with a synchronisation after each phase. RegSegField's terms (``--lambda_mask_vis``,
``--feature_field``, ``--refine_masks``) run as in train.py: give a ``--warmup`` past
their start (the field's group loss: 1200 to 6000 by default).
Plain 3DGS runs replay their step from CUDA graphs as train.py does (``--cuda_graphs off``
for the eager step; ``--compare_graphs`` times both in alternating windows).
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402
from arguments import apply_sparse_view_preset  # noqa: E402
from gaussian.optim import build_training_optimizer, means_lr_schedule, set_lr  # noqa: E402
from gaussian_renderer import gsplat_backend, resolve_backend  # noqa: E402
from scene import Scene  # noqa: E402
from utils.general_utils import pick_device  # noqa: E402
from utils.loss_utils import fast_ssim, load_fused_ssim  # noqa: E402
from utils.roi import attach_training_priors  # noqa: E402

PHASES = ("features", "render", "loss", "backward", "strategy", "optimizer", "after_step")


def main() -> int:
    parser, groups = train.build_parser()  # every train.py flag, the method flags included
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--compare_api", action="store_true",
                        help="also time the staged loop through gsplat.rasterization")  # fmt: skip
    parser.add_argument("--compare_autograd", action="store_true",
                        help="also time the loop with --autograd_nodes stages and fused in "
                        "alternating windows")  # fmt: skip
    parser.add_argument("--compare_graphs", action="store_true",
                        help="also time the loop with --cuda_graphs off and auto in alternating "
                        "windows")  # fmt: skip
    parser.add_argument("--phases", action="store_true",
                        help="also time each phase of a step: host issue time, and with a "
                        "synchronisation after each phase")  # fmt: skip
    args = parser.parse_args()
    preset = apply_sparse_view_preset(args, sys.argv[1:])  # as train.py
    if preset:
        print(f"--sparse_view: {' '.join(preset)}")
    dataset, opt, pipe = (groups[k].extract(args) for k in ("model", "opt", "pipe"))
    method = train.method_args(groups, args)
    speed = groups["speed"].extract(args)
    fused = speed.autograd_nodes == "fused"
    device = pick_device("cuda")  # CPU (torch backend) only for a smoke run

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    backend = resolve_backend(groups["backend"].extract(args).backend, device)
    scene = Scene(dataset, groups["sparse"].extract(args), device=device)
    cams = scene.getTrainCameras()
    attach_training_priors(cams, scene.source_path, method.roi, method.depth)
    gaussians = train.initial_gaussians(scene, dataset.sh_degree, device)
    bg = torch.tensor([1.0] * 3 if dataset.white_background else [0.0] * 3, device=device)
    strategy, extra, schedule = train.build_method(scene, opt, dataset, pipe, bg, backend, method)
    field = None if extra is None else extra.feature_field
    if field is not None:  # as train.py: the field's parameter, then the optimizer
        field.add_parameter(gaussians)
    train.bind_term_renders(extra, gaussians, pipe, bg, backend)
    optimizer = build_training_optimizer(gaussians, opt, scene.cameras_extent, method.densify)
    means_lr = means_lr_schedule(opt, scene.cameras_extent)
    state = strategy.initialize_state(gaussians)
    sparse_adam = opt.optimizer_type == "sparse_adam"
    load_fused_ssim(device)
    phase_s = dict.fromkeys(PHASES, 0.0)
    graphed = train.build_graphed_step(speed, backend, pipe, opt, extra, fast_ssim, optimizer,
                                       strategy, schedule, gaussians, bg)  # fmt: skip
    use_graphs = graphed is not None

    def mark(name: str, t0: float, phase_timing: str | None) -> float:
        """Add the time since ``t0`` to phase ``name`` ("host": as issued, "sync": after
        a synchronisation; None: no timing) and return the new start."""
        if phase_timing is None:
            return t0
        if phase_timing == "sync":
            synchronize()
        t = time.perf_counter()
        phase_s[name] += t - t0
        return t

    def iteration(it: int, phase_timing: str | None = None) -> None:
        t = time.perf_counter()
        set_lr(optimizer, "means", means_lr(it))
        if it % 1000 == 0:
            gaussians.oneupSHdegree()
        cam = cams[it % len(cams)]
        plain = extra is None or extra.plain_step(it)  # as train.py
        if use_graphs and it > 1 and plain:  # render, loss and backward: one phase ("render")
            pkg, _, _ = graphed.step(cam)
            t = mark("render", t, phase_timing)
        else:
            # the per-Gaussian channels of the terms (mask visibility) and the depth channel
            # inside the windows of the terms that read it, as train.py
            features = None if extra is None else extra.render_features(gaussians, cam, it)
            t = mark("features", t, phase_timing)
            depth = extra is not None and extra.reads_rendered_depth(it)
            pkg = train.render_step(cam, gaussians, pipe, bg, backend, depth, fused,
                                    features=features)  # fmt: skip
            t = mark("render", t, phase_timing)
            strategy.step_pre_backward(pkg, state, it)
            loss, _ = train.compute_losses(pkg, cam, opt, fast_ssim, extra, it, fused)
            t = mark("loss", t, phase_timing)
            loss.backward()
            t = mark("backward", t, phase_timing)
        with torch.no_grad():
            strategy.step_post_backward(gaussians, optimizer, state, it, pkg, cam)
            t = mark("strategy", t, phase_timing)
            visible = pkg["visibility_filter"] if sparse_adam else None
            train.optimizer_step(optimizer, visible, it, schedule)
            t = mark("optimizer", t, phase_timing)
            if extra is not None:  # the mask refinement's step
                extra.after_step(it)
            mark("after_step", t, phase_timing)

    for it in range(1, args.warmup + 1):
        iteration(it)
    next_it = args.warmup + 1

    def timed() -> float:
        nonlocal next_it
        synchronize()
        start = time.perf_counter()
        for it in range(next_it, next_it + args.steps):
            iteration(it)
        synchronize()
        next_it += args.steps
        return (time.perf_counter() - start) / args.steps

    wall = timed()
    if args.compare_graphs and graphed is not None:
        walls = {True: [wall], False: []}
        for _ in range(2):
            for use_graphs in (False, True):
                walls[use_graphs].append(timed())
        for key, name in ((True, "auto"), (False, "off")):
            ms = ", ".join(f"{v * 1e3:.3f}" for v in walls[key])
            print(f"wall per iteration, --cuda_graphs {name}: {ms} ms")
        print(f"graph captures so far: {graphed.captures} in {graphed.capture_seconds:.2f} s; "
              f"intersections of the last step: {graphed.n_isects}")  # fmt: skip
    if args.compare_autograd:
        # Alternating windows, so that the Gaussian count grows alike for both.
        initial = fused
        walls = {True: [], False: []}
        for _ in range(2):
            for fused in (not initial, initial):
                walls[fused].append(timed())
        walls[initial].insert(0, wall)
        for key, name in ((True, "fused"), (False, "stages")):
            ms = ", ".join(f"{v * 1e3:.3f}" for v in walls[key])
            print(f"wall per iteration, --autograd_nodes {name}: {ms} ms")
    if args.compare_api and backend == "gsplat":
        # The same iterations through gsplat.rasterization instead of the direct stages,
        # alternated so that the Gaussian count grows alike for both (staged autograd: the
        # fused node calls gsplat's kernels itself); the profile below keeps the flag's.
        fused, flag_fused = False, fused
        direct_fn = gsplat_backend.rasterize_gsplat

        def api_fn(*a, **kw):
            return gsplat_backend._rasterize_api(*a, **{"packed": False, "absgrad": False,
                                                        "antialiased": False, **kw})  # fmt: skip

        walls = {"direct": [], "gsplat.rasterization": []}
        for _ in range(2):
            walls["direct"].append(timed())
            gsplat_backend.rasterize_gsplat = api_fn
            walls["gsplat.rasterization"].append(timed())
            gsplat_backend.rasterize_gsplat = direct_fn
        for name, values in walls.items():
            ms = ", ".join(f"{v * 1e3:.3f}" for v in values)
            print(f"wall per iteration, {name}: {ms} ms")
        fused = flag_fused
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for it in range(next_it, next_it + args.steps):
            iteration(it)
        synchronize()
    next_it += args.steps
    if args.phases:
        # Host: time to issue each phase without waiting (the render waits once anyway, in
        # gsplat's tile intersection, for the previous step's queue to drain). Synchronised:
        # issue plus run time of each phase alone.
        for label, phase_timing in (("host (no sync)", "host"), ("synchronised", "sync")):
            for key in phase_s:
                phase_s[key] = 0.0
            for it in range(next_it, next_it + args.steps):
                iteration(it, phase_timing)
            synchronize()
            next_it += args.steps
            total = sum(phase_s.values())
            print(f"phase times, {label} (ms per iteration; total {total * 1e3 / args.steps:.3f}):")
            for name in PHASES:
                ms = phase_s[name] * 1e3 / args.steps
                print(f"  {name:<10} {ms:7.3f} ms  ({100 * phase_s[name] / total:4.1f}%)")
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
