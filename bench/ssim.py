"""Fused CUDA SSIM versus the PyTorch twin: speed, peak memory and agreement.

    python bench/ssim.py                      # 1920x1080, B=1, C=3; appends to docs/RESULTS.md
    python bench/ssim.py --no-append --iters 20

Times (CUDA events, after warm-up, median of --iters runs):
  forward           mean SSIM without a graph (evaluation);
  forward+backward  mean SSIM and its gradient w.r.t. the render (the training step);
and the peak extra GPU memory of one forward+backward. Agreement: largest absolute difference
of the SSIM maps and of the gradients, fused versus twin (both float32, the twin with PyTorch's
default cuDNN settings). The twin runs exactly as training would run it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from utils.loss_utils import load_fused_ssim, ssim_map  # noqa: E402

RESULTS_HEADER = (
    "# Results\n\n"
    "Measured numbers appended by the scripts in bench/ (each section names its command,\n"
    "date and machine). Never edited by hand.\n"
)


def median_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` on the GPU in milliseconds (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_extra_mib(fn: Callable[[], object]) -> float:
    """Peak GPU memory allocated by one call of ``fn`` beyond what was allocated before."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run(args: argparse.Namespace) -> str:
    device = torch.device("cuda", torch.cuda.current_device())
    t0 = time.perf_counter()
    fused = load_fused_ssim(device)
    load_s = time.perf_counter() - t0
    if fused is None:
        raise SystemExit("error: the fused SSIM extension did not build (see the warning above)")

    shape = (args.batch, args.channels, args.height, args.width)
    gen = torch.Generator(device=device).manual_seed(0)
    gt = torch.rand(shape, generator=gen, device=device)
    render = (0.8 * gt + 0.2 * torch.rand(shape, generator=gen, device=device)).clamp(0, 1)

    def twin_forward():
        with torch.no_grad():
            return ssim_map(render, gt).mean()

    def fused_forward():
        return fused.fused_ssim(render, gt, train=False)

    def step(loss_fn):
        def go():
            x = render.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(x, gt), x)
            return grad

        return go

    twin_step = step(lambda x, y: ssim_map(x, y).mean())
    fused_step = step(lambda x, y: fused.fused_ssim(x, y))

    rows = []
    for name, twin_fn, fused_fn in (
        ("forward", twin_forward, fused_forward),
        ("forward+backward", twin_step, fused_step),
    ):
        t_twin = median_ms(twin_fn, args.warmup, args.iters)
        t_fused = median_ms(fused_fn, args.warmup, args.iters)
        rows.append(f"| {name} (ms) | {t_twin:.3f} | {t_fused:.3f} | {t_twin / t_fused:.1f}x |")
    m_twin, m_fused = peak_extra_mib(twin_step), peak_extra_mib(fused_step)
    rows.append(
        f"| peak extra memory, forward+backward (MiB) | {m_twin:.1f} | {m_fused:.1f} "
        f"| {m_twin / m_fused:.1f}x less |"
    )

    with torch.no_grad():
        map_diff = (fused.fused_ssim_map(render, gt) - ssim_map(render, gt)).abs().max().item()
        mean_twin = ssim_map(render, gt).mean().item()
        mean_fused = fused.fused_ssim(render, gt).item()
    g_twin, g_fused = twin_step(), fused_step()
    grad_rel = ((g_fused - g_twin).abs().max() / g_twin.abs().max()).item()

    gpu = torch.cuda.get_device_name(device)
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        f"## SSIM: fused CUDA kernel vs PyTorch twin, {args.width}x{args.height}, "
        f"B={args.batch}, C={args.channels}",
        "",
        f"- GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'} (default)",
        f"- date: {date}; command: `{cmd}`",
        f"- median of {args.iters} runs after {args.warmup} warm-up runs (CUDA events)",
        f"- extension load on first use: {load_s:.1f} s (includes a JIT build when not cached)",
        "",
        "| | PyTorch twin | fused | fused gain |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Agreement: max |SSIM map difference| {map_diff:.2e}; mean SSIM {mean_twin:.7f} (twin) "
        f"vs {mean_fused:.7f} (fused); gradient max difference / max |gradient| {grad_rel:.2e}.",
        "",
    ]
    return "\n".join(lines)


def append_results(path: Path, section: str) -> None:
    """Append ``section`` to the results file, creating it with a header (atomic rename)."""
    old = path.read_text() if path.exists() else RESULTS_HEADER
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(old.rstrip("\n") + "\n\n" + section)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--iters", type=int, default=100, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "RESULTS.md")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: bench/ssim.py needs a CUDA device", file=sys.stderr)
        return 1
    section = run(args)
    print(section)
    if not args.no_append:
        append_results(args.results, section)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
