"""Where a feature-field step's time goes (RegSegField's ``--feature_field``), part by part.

    python bench/feature_field_speed.py                       # 150k Gaussians, 864x864
    python bench/feature_field_speed.py --n 20000 --size 128  # a quick look on the CPU

Synthetic data of the size of a real scene: ``--n`` random Gaussians in front of one camera
of ``--size`` x ``--size`` pixels, and ``--codes`` segment codes in Voronoi cells (NeRD
maryrose's views have 70 to 90). Each row is forward + backward, averaged over ``--reps``
after one warm-up. Rows:

- the RGB render with geometry gradients (what every training step pays anyway);
- the field's 64 channels through ``render(features=...)`` (3 + 64 channels, which gsplat
  runs as 128) and through ``render_features_only`` (64);
- the per-code statistics and the group loss of utils/feature_field.py;
- whole ``FeatureField`` steps in the distillation and the group phase, for the default
  ``--group_topk`` 0.2 and for 1.0 (what segment.py's field source needs).

Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from gaussian.model import GaussianModel  # noqa: E402
from gaussian_renderer import render, render_features_only  # noqa: E402
from mask_matching.maps import DescriptorMap  # noqa: E402
from scene.cameras import Camera  # noqa: E402
from utils.feature_field import (  # noqa: E402
    FIELD_KEY,
    FeatureField,
    FieldSettings,
    code_statistics,
    group_loss,
    group_pairs,
)
from utils.mask_visibility import CodeAtlas, SourceViews, visibility_counts  # noqa: E402


def timed(fn, device: torch.device, reps: int) -> float:
    """Milliseconds per call of ``fn`` (one warm-up call first)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / reps


def voronoi_codes(size: int, codes: int, device: torch.device) -> torch.Tensor:
    """[size, size] int64 code of each pixel: the nearest of ``codes`` random centres."""
    g = torch.Generator().manual_seed(0)
    centres = (torch.rand(codes, 2, generator=g) * size).to(device)
    yy, xx = torch.meshgrid(torch.arange(size, device=device), torch.arange(size, device=device),
                            indexing="ij")  # fmt: skip
    d = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    return d.argmin(-1)


def scatter_statistics(feat: torch.Tensor, code_index: torch.Tensor, n_codes: int) -> tuple:
    """``code_statistics`` as it was before session 13: sums by ``index_add`` (a scatter
    whose atomics contend on CUDA when few codes share many pixels), for comparison."""
    levels, dim = feat.shape[:2]
    f = feat.reshape(levels * dim, -1).T  # [P, L*D]
    idx = code_index.reshape(-1)
    counts = torch.bincount(idx, minlength=n_codes).to(f.dtype)
    inv = 1.0 / counts.clamp_min(1.0)
    mean = f.new_zeros(n_codes, levels * dim).index_add(0, idx, f) * inv[:, None]
    dev = (f - mean[idx]).abs().view(-1, levels, dim).mean(dim=-1)
    disp = f.new_zeros(n_codes, levels).index_add(0, idx, dev) * inv[:, None]
    return mean.view(n_codes, levels, dim), disp, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=150_000, help="Gaussians")
    p.add_argument("--size", type=int, default=864, help="image width and height")
    p.add_argument("--codes", type=int, default=90, help="segment codes in the view")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    model = GaussianModel.from_points(torch.randn(a.n, 3, generator=g) * 0.4,
                                      torch.rand(a.n, 3, generator=g), 0)  # fmt: skip
    with torch.no_grad():
        model.params["opacities"].copy_(torch.linspace(-2, 3, a.n))
    model = GaussianModel.restore(model.capture(), device)
    s = a.size
    cam = Camera(0, "v.png", np.eye(3), np.array([0.0, 0.0, 3.0]), 1.2 * s, 1.2 * s, s / 2, s / 2,
                 s, s, device=device)  # fmt: skip
    pipe, bg = SimpleNamespace(), torch.zeros(3, device=device)
    dim = 64
    rows: list[tuple[str, float]] = []

    def rgb() -> None:
        render(cam, model, pipe, bg, depth=False)["render"].sum().backward()

    rows.append(("RGB render, geometry gradients", timed(rgb, device, a.reps)))
    for p_ in model.params.values():  # the field pass: gradients to the features only
        p_.requires_grad_(False)

    def field_with_rgb() -> None:
        f = torch.rand(a.n, dim, device=device, requires_grad=True)
        render(cam, model, pipe, bg, features=f, depth=False)["features"].sum().backward()

    def field_only() -> None:
        f = torch.rand(a.n, dim, device=device, requires_grad=True)
        render_features_only(cam, model, f)["features"].sum().backward()

    rows.append((f"{dim} channels through render(features=...) (3 + {dim})",
                 timed(field_with_rgb, device, a.reps)))  # fmt: skip
    rows.append((f"{dim} channels through render_features_only",
                 timed(field_only, device, a.reps)))  # fmt: skip
    for p_ in model.params.values():
        p_.requires_grad_(True)

    code_index = voronoi_codes(s, a.codes, device)
    masks = torch.rand(a.codes, 100, generator=g).to(device) < 0.05
    valid = torch.ones(a.codes, dtype=torch.bool, device=device)

    pairs = group_pairs(masks, valid, 4)

    def stats(fn=code_statistics) -> None:
        feat = torch.rand(4, 16, s, s, device=device, requires_grad=True)
        mean, disp, _ = fn(feat, code_index, a.codes)
        (mean.sum() + disp.sum()).backward()

    def group() -> None:
        mean = torch.rand(a.codes, 4, 16, device=device, requires_grad=True)
        disp = torch.rand(a.codes, 4, device=device, requires_grad=True)
        sim, dissim = group_loss(mean, disp, pairs)
        (sim + dissim).backward()

    rows.append((f"code statistics, {a.codes} codes", timed(stats, device, a.reps)))
    rows.append((f"code statistics, {a.codes} codes, by index_add (before)",
                 timed(lambda: stats(scatter_statistics), device, a.reps)))  # fmt: skip
    rows.append(("group loss", timed(group, device, a.reps)))

    means = model.get_xyz.detach()

    def mask_visibility() -> None:  # the source and 6 target views (the same camera here)
        visibility_counts(means, cam, dm, [(cam, dm)] * 6)

    table = F.normalize(torch.randn(a.codes, 4, 16, generator=g), dim=-1).to(device)
    uncovered = ~masks.any(1, keepdim=True)
    dm = DescriptorMap(cam.image_name, code_index, table, torch.cat([uncovered, masks], 1))
    rows.append(("mask-visibility counts, 1 + 6 views, one view at a time (reference)",
                 timed(mask_visibility, device, a.reps)))  # fmt: skip
    batched = SourceViews(cam, [cam] * 6, {cam.image_name: dm}, CodeAtlas({cam.image_name: dm}))
    rows.append(("mask-visibility counts, 1 + 6 views, batched (SourceViews, training's path)",
                 timed(lambda: batched.counts(means), device, a.reps)))  # fmt: skip
    for topk in (0.2, 1.0):
        settings = FieldSettings(start=0, distill_until=5, until=10, topk=topk)
        field = FeatureField({cam.image_name: dm}, settings)
        field.add_parameter(model)
        field.bind(model, lambda c, m, f: render_features_only(c, m, f))
        for step, phase in ((3, "distillation"), (7, "group loss")):

            def one(step: int = step, field: FeatureField = field) -> None:
                loss, _ = field.loss(cam, step)
                loss.backward()
                model.params[FIELD_KEY].grad = None

            rows.append((f"whole field step, {phase}, top {topk:.0%}", timed(one, device, a.reps)))
        del model.params[FIELD_KEY]

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{a.n:,} Gaussians, {s}x{s}, {where}, forward + backward, mean of {a.reps}\n")
    print("| part | ms |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
