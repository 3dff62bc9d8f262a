"""Speed of the 3D segmentation stage: KMeans, region growing, one-pass distillation.

    python bench/segmentation_speed.py                       # defaults of the issue
    python bench/segmentation_speed.py --n 200000 --skip_distill

Prints one markdown table. Rows:

- KMeans on ``--n`` Gaussians (synthetic blobs) with ``--channels`` feature channels + xyz,
  MiniBatchKMeans (the path segment.py takes above ``--minibatch_above``), k = ``--k``;
  the target of issue 16 is < 30 s on the 2-core CPU machine.
- Region growing on ``--n`` Gaussians: kNN graph (cKDTree on CPU, torch on CUDA), bilateral
  weights, and the BFS walk from one seed, timed separately (GPU target: < 2 s for the walk).
- Distillation: forward + backward of ``--distill_channels`` feature channels over a random
  model of ``--distill_n`` Gaussians at ``--width`` x ``--height``, in one pass against
  passes of 3 channels; time per step and peak memory (CUDA: max allocated; CPU: the
  process's peak RSS growth, a coarse number).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from segmentation.cluster import joint_embedding, kmeans_labels  # noqa: E402
from segmentation.region_grow import (  # noqa: E402
    BRUTE_FORCE_MAX,
    bilateral_weights,
    grow_region,
    knn_graph,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def blobs(
    n: int, channels: int, n_blobs: int, seed: int = 0, noise: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic Gaussians: ``n_blobs`` spatial blobs, each with its own feature mean."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, n_blobs, n)
    centres = rng.uniform(-3, 3, (n_blobs, 3))
    fmeans = rng.normal(0, 1, (n_blobs, channels))
    xyz = (centres[which] + rng.normal(0, 0.3, (n, 3))).astype(np.float32)
    f = (fmeans[which] + rng.normal(0, noise, (n, channels))).astype(np.float32)
    return xyz, f


def bench_kmeans(args) -> list[tuple[str, str]]:
    xyz, f = blobs(args.n, args.channels, args.k)
    t = time.perf_counter()
    emb = joint_embedding(xyz, f, 1.0, 1.0)
    lab, _ = kmeans_labels(emb, args.k, np.ones(args.n, np.float32),
                           minibatch_above=args.minibatch_above)  # fmt: skip
    dt = time.perf_counter() - t
    kind = "MiniBatchKMeans" if args.n > args.minibatch_above else "KMeans"
    return [(f"{kind} k={args.k}, {args.n:,} Gaussians x ({args.channels} + 3) dims, CPU",
             f"{dt:.1f} s")]  # fmt: skip


def bench_grow(args, device: torch.device) -> list[tuple[str, str]]:
    # Nearly constant features per blob: the walk floods one blob and stops at its edges.
    xyz, f = blobs(args.n, args.channels, args.k, seed=1, noise=0.01)
    xyz_t, f_t = torch.from_numpy(xyz).to(device), torch.from_numpy(f).to(device)
    f_t = f_t / f_t.pow(2).sum(1).mean().sqrt()
    sync(device)
    t = time.perf_counter()
    idx, _ = knn_graph(xyz_t, args.knn)
    sync(device)
    t_knn = time.perf_counter() - t
    t = time.perf_counter()
    w = bilateral_weights(xyz_t, f_t, idx, sigma_f=0.5, sigma_d=2.0)
    sync(device)
    t_w = time.perf_counter() - t
    # Seed inside a blob (the Gaussian most tied to its neighbours): a seed on a blob's rim
    # has no neighbour above grow_region's seed expansion and stops at once.
    seed = w.sum(1).argmax().reshape(1)
    t = time.perf_counter()
    sel = grow_region(seed, idx, w, 0.1)
    sync(device)
    t_walk = time.perf_counter() - t
    where = f"{device.type.upper()}"
    brute = device.type == "cuda" and args.n <= BRUTE_FORCE_MAX
    how = "CUDA brute force" if brute else f"cKDTree on {os.cpu_count()} CPU threads"
    return [
        (f"kNN graph k={args.knn}, {args.n:,} Gaussians, {how}", f"{t_knn:.2f} s"),
        (f"bilateral weights, {where}", f"{t_w:.2f} s"),
        (f"region growing walk ({int(sel.sum()):,} selected), {where}", f"{t_walk:.2f} s"),
    ]


def bench_distill(args, device: torch.device) -> list[tuple[str, str]]:
    from gaussian.model import GaussianModel
    from scene.cameras import Camera
    from segmentation.distill import render_features

    g = torch.Generator().manual_seed(0)
    pts = (torch.randn(args.distill_n, 3, generator=g) * 0.6).to(device)
    model = GaussianModel.from_points(pts, torch.rand(args.distill_n, 3, generator=g).to(device), 0)
    w, h = args.width, args.height
    cam = Camera(0, "b.png", np.eye(3), np.array([0.0, 0.0, 3.0]), 0.9 * w, 0.9 * w, w / 2, h / 2,
                 w, h, device=device)  # fmt: skip
    c = args.distill_channels
    feats = torch.randn(args.distill_n, c, generator=g).to(device).requires_grad_(True)
    target = torch.randn(c, h, w, generator=g).to(device)
    rows = []
    for per_pass in (None, 3):
        label = (
            f"{c} channels in one pass" if per_pass is None else f"{c} channels in 3-channel passes"
        )

        def step(per_pass: int | None = per_pass) -> None:
            out = render_features(cam, model, feats, channels_per_pass=per_pass)
            (out["features"] - target).abs().mean().backward()
            feats.grad = None

        step()  # warm-up
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for _ in range(args.distill_steps):
            step()
        sync(device)
        dt = (time.perf_counter() - t) / args.distill_steps
        mem = "peak memory n/a on CPU"
        if device.type == "cuda":
            mem = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB peak"
        rows.append((f"{label}, {args.distill_n:,} Gaussians, {w}x{h}, {device.type.upper()}",
                     f"{1000 * dt:.0f} ms/step, {mem}"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Speed of KMeans, region growing, distillation")
    p.add_argument("--n", type=int, default=1_000_000, help="Gaussians for KMeans / growing")
    p.add_argument("--channels", type=int, default=32, help="feature channels")
    p.add_argument("--k", type=int, default=20, help="clusters (and synthetic blobs)")
    p.add_argument("--minibatch_above", type=int, default=200_000)
    p.add_argument("--knn", type=int, default=16)
    p.add_argument("--distill_n", type=int, default=20_000)
    p.add_argument("--distill_channels", type=int, default=32)
    p.add_argument("--distill_steps", type=int, default=3)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--device", default="cuda", help="cuda (falls back to cpu) or cpu")
    p.add_argument("--skip_kmeans", action="store_true")
    p.add_argument("--skip_grow", action="store_true")
    p.add_argument("--skip_distill", action="store_true")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu")
    rows: list[tuple[str, str]] = []
    if not args.skip_kmeans:
        rows += bench_kmeans(args)
        print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
    if not args.skip_grow:
        rows += bench_grow(args, device)
        print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
    if not args.skip_distill:
        rows += bench_distill(args, device)
    threads = torch.get_num_threads()
    print(f"\n| step | time ({os.cpu_count()} CPUs, torch threads {threads}) |\n|---|---|")
    for name, val in rows:
        print(f"| {name} | {val} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
