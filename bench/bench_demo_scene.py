"""Time the demo scene: its generator (scripts/make_demo_scene.py) at a few sizes, or one
training step on it with the pure-PyTorch rasterizer.

    python bench/bench_demo_scene.py [--repeats 3]
    python bench/bench_demo_scene.py --train_step [--ply point_cloud.ply] [--steps 16]
        [--threads N] [--profile]

The first form prints one row per size: views, SfM points kept, and the best wall time of
``repeats`` runs of the whole generation (ray casting, point sampling, writing the folder).

``--train_step`` makes the demo's scene (160x120, 8 training views) and times what one
training iteration of ``scripts/demo.py`` costs on the torch backend: render (projection,
SH colours, tiling, compositing), the L1 + D-SSIM loss and the backward pass, as the median
of ``--steps`` steps over the training views (milliseconds, wall and process CPU time).
The Gaussians are the scene's initial points, or a trained model's PLY (``--ply``, e.g.
``output/demo/model/point_cloud/iteration_1500/point_cloud.ply``: the demo's late, larger
state, SH degree 1). ``--profile`` adds the top operators of torch.profiler.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.make_demo_scene import make_demo_scene  # noqa: E402

SIZES = [
    # (width, height, n_train, n_test)
    (64, 48, 4, 3),  # the tests' and demo --fast size
    (160, 120, 8, 8),  # the demo's default
    (200, 150, 8, 8),
    (320, 240, 8, 8),
]


def bench_generator(repeats: int) -> None:
    print(f"{'size':>9} | {'views':>5} | {'points3D':>8} | {'best s':>6}")
    print("-" * 9 + "-|-" + "-" * 5 + "-|-" + "-" * 8 + "-|-" + "-" * 6)
    for w, h, n_train, n_test in SIZES:
        best, n_pts = float("inf"), 0
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                info = make_demo_scene(
                    Path(tmp) / "scene",
                    width=w,
                    height=h,
                    n_train=n_train,
                    n_test=n_test,
                    progress=False,
                )
                best = min(best, time.perf_counter() - t)
                n_pts = info["n_points3D"]
        print(f"{w:>4}x{h:<4} | {n_train + n_test:>5} | {n_pts:>8} | {best:>6.2f}")


def bench_train_step(args: argparse.Namespace) -> None:
    import torch

    import train
    from gaussian.ply import load_ply
    from gaussian_renderer import render
    from scene import Scene
    from utils.loss_utils import l1_dssim_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "scene"
        make_demo_scene(scene_dir, width=160, height=120, n_train=8, n_test=8, progress=False)
        parser, groups = train.build_parser()
        targs = parser.parse_args(["-s", str(scene_dir), "-m", str(Path(tmp) / "model"),
                                   "--eval", "--split_protocol", "custom", "--backend", "torch",
                                   "--data_device", "cpu"])  # fmt: skip
        dataset, opt, pipe = (groups[k].extract(targs) for k in ("model", "opt", "pipe"))
        scene = Scene(dataset, groups["sparse"].extract(targs), device=cpu)
        cams = scene.getTrainCameras()
        if args.ply:
            gaussians = load_ply(args.ply, cpu)
            gaussians.active_sh_degree = min(1, gaussians.max_sh_degree)  # as at iteration 1500
        else:
            gaussians = train.initial_gaussians(scene, dataset.sh_degree, cpu)
    for p in gaussians.params.values():
        p.requires_grad_(True)
    bg = torch.zeros(3)

    def step(i: int) -> tuple[float, float, float]:
        cam = cams[i % len(cams)]
        t0 = time.perf_counter()
        pkg = render(cam, gaussians, pipe, bg, backend="torch", depth=False)
        t1 = time.perf_counter()
        loss, _, _ = l1_dssim_loss(pkg["render"], cam.original_image, opt.lambda_dssim)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        for p in gaussians.params.values():
            p.grad = None
        return t1 - t0, t2 - t1, t3 - t2

    for i in range(2):  # warm-up
        step(i)
    times, cpu_times = [], []
    for i in range(args.steps):
        c0 = time.process_time()
        times.append(step(i))
        cpu_times.append(time.process_time() - c0)
    print(f"{gaussians.num_gaussians} Gaussians, SH degree {gaussians.active_sh_degree}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps (ms):")  # fmt: skip
    for k, name in enumerate(("render", "loss", "backward")):
        print(f"  {name:<9} {1e3 * statistics.median(t[k] for t in times):8.1f}")
    print(f"  {'step':<9} {1e3 * statistics.median(sum(t) for t in times):8.1f} wall, "
          f"{1e3 * statistics.median(cpu_times):.1f} process CPU")  # fmt: skip
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(args.steps):
                step(i)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--train_step", action="store_true", help="time a torch-backend training step instead"
    )
    parser.add_argument("--ply", default="", help="Gaussians to start from (--train_step)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler table")
    args = parser.parse_args()
    if args.train_step:
        bench_train_step(args)
    else:
        bench_generator(args.repeats)


if __name__ == "__main__":
    main()
