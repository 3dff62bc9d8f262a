"""Training speed benchmark: whole train.py wall time, loop it/s, peak memory, test PSNR.

    python bench/train_speed.py --data <folder with lego/ and fern/> [--scenes lego fern demo]
        [--variants fast stock] [--iterations_lego 7000] [--iterations_fern 10000]

Scenes (fixed settings):
  lego   NeRF-synthetic lego at 400x400, 3DGS settings: -w --eval (test = transforms_val)
  fern   LLFF fern 1/8 resolution, 3 training views (--n_views 3 --split_protocol llff);
         poses_bounds.npy only, so 100,000 random initial points
  fern_colmap  the same views from a COLMAP scene folder with colmap_match.py's train-only
         model (colmap_3views/): initial points from SfM as in 3DGS (scripts/prepare_llff.py,
         then colmap_match.py -s <folder> --n_views 3 --split_protocol llff)
  fern_priors  the same with ROI masks and depth priors in the scene folder (for variants
         that turn the prior-based losses on)
  demo   the embedded demo scene (scripts/make_demo_scene.py), 8 views, torch backend on CPU
Variants:
  fast   the default loop: fused CUDA SSIM, loss read back once per log interval
  stock  PyTorch SSIM and a host read-back every iteration, like the original 3DGS loop
  Any other variant name is taken as "name=extra train.py flags", separated by spaces or
  commas (e.g. "priors=--use_mask,--use_lpdr").

Each run is train.py, then render.py --skip_train and metrics.py, as subprocesses. The
table is printed and appended to docs/RESULTS.md with the device name and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANT_FLAGS = {"fast": [], "stock": ["--ssim_impl", "torch", "--sync_every_step"]}


def scene_args(name: str, data: str, iters: dict[str, int]) -> list[str]:
    if name == "lego":
        n = iters["lego"]
        return ["-s", os.path.join(data, "lego"), "-w", "--eval", "--iterations", str(n),
                "--test_iterations", str(n), "--save_iterations", str(n)]  # fmt: skip
    if name in ("fern", "fern_colmap", "fern_priors"):  # fern_priors: + pure_masks/, depth_pro/
        n = iters["fern"]
        return ["-s", os.path.join(data, name), "--n_views", "3", "--split_protocol", "llff",
                "--iterations", str(n), "--test_iterations", str(n), "--save_iterations",
                str(n)]  # fmt: skip
    if name == "demo":
        n = iters["demo"]
        return ["-s", os.path.join(data, "demo_scene"), "--split_protocol", "custom",
                "--backend", "torch", "--data_device", "cpu", "--iterations", str(n),
                "--test_iterations", str(n), "--save_iterations", str(n),
                "--position_lr_max_steps", str(n)]  # fmt: skip
    raise ValueError(f"unknown scene {name}")


def run(cmd: list[str], log) -> float:
    start = time.perf_counter()
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - start


def bench_one(scene: str, variant: str, args, out_root: str, log) -> dict:
    model = os.path.join(out_root, f"{scene}_{variant}")
    shutil.rmtree(model, ignore_errors=True)
    extra = VARIANT_FLAGS.get(variant)
    if extra is None:
        # "name=flags": flags separated by spaces or commas (commas survive shell splitting)
        extra = variant.split("=", 1)[1].replace(",", " ").split() if "=" in variant else []
    py = sys.executable
    train_cmd = [py, "train.py", *scene_args(scene, args.data, vars(args)["iters"]), "-m", model,
                 "--quiet", *extra, *args.train_args]  # fmt: skip
    wall = run(train_cmd, log)
    run([py, "render.py", "-m", model, "--skip_train"], log)
    run([py, "metrics.py", "-m", model], log)
    with open(os.path.join(model, "training_summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(model, "results.json")) as f:
        results = next(iter(json.load(f).values()))
    return {
        "scene": scene,
        "variant": variant.split("=", 1)[0],
        "train_wall_s": round(wall, 1),
        "loop_s": summary["loop_seconds"],
        # Before the loop inside train.py: scene and image loading, setup, CUDA extensions.
        "scene_s": round(summary.get("scene_seconds", float("nan")), 1),
        "setup_s": round(summary.get("setup_seconds", float("nan")), 1),
        "ext_s": round(summary.get("extensions_seconds", float("nan")), 1),
        # The rest of the process: interpreter start, imports, CUDA context, exit.
        "other_s": round(
            wall
            - summary["loop_seconds"]
            - sum(
                summary.get(k, 0.0)
                for k in ("scene_seconds", "setup_seconds", "extensions_seconds")
            ),
            1,
        ),
        "eval_save_s": round(summary.get("eval_save_seconds", float("nan")), 1),
        "eval_s": round(summary.get("eval_seconds", float("nan")), 1),
        "save_s": round(summary.get("save_seconds", float("nan")), 1),
        "densify_s": round(summary.get("densify_seconds", float("nan")), 1),
        "ms_per_it_by_1k": per_window_ms(summary.get("timeline", []), 1000),
        "it_per_s": summary["it_per_s"],
        "peak_mem_mib": summary["peak_mem_mib"],
        "gaussians": summary["num_gaussians"],
        "psnr": round(results["PSNR"], 2),
        "ssim": round(results["SSIM"], 4),
        "device": summary["device"],
        "iterations": summary["iterations"],
    }


def per_window_ms(timeline: list, window: int) -> str:
    """Loop milliseconds per iteration in each ``window`` of iterations, from the timeline
    of training_summary.json ([iteration, loop seconds, Gaussians]), space-separated."""
    marks = [(0, 0.0)] + [(it, sec) for it, sec, _ in timeline if it % window == 0]
    return " ".join(
        f"{(t1 - t0) * 1e3 / (i1 - i0):.2f}" for (i0, t0), (i1, t1) in zip(marks, marks[1:])
    )


def table(rows: list[dict]) -> str:
    cols = ["scene", "variant", "iterations", "train_wall_s", "other_s", "scene_s", "setup_s",
            "ext_s", "loop_s", "eval_save_s", "eval_s", "save_s", "densify_s", "it_per_s",
            "peak_mem_mib", "gaussians", "psnr", "ssim", "ms_per_it_by_1k"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="folder holding lego/, fern/ (and demo_scene/)")
    p.add_argument("--scenes", nargs="+", default=["lego", "fern"])
    p.add_argument("--variants", nargs="+", default=["fast", "stock"])
    p.add_argument("--iterations_lego", type=int, default=7000)
    p.add_argument("--iterations_fern", type=int, default=10000)
    p.add_argument("--iterations_demo", type=int, default=1000)
    p.add_argument("--out", default=os.path.join(REPO, "output", "bench_train_speed"))
    p.add_argument("--results", default=os.path.join(REPO, "docs", "RESULTS.md"))
    p.add_argument("--log", default=None, help="subprocess log file (default <out>/log.txt)")
    p.add_argument("train_args", nargs="*", help="extra train.py flags after --")
    args = p.parse_args()
    args.iters = {"lego": args.iterations_lego, "fern": args.iterations_fern,
                  "demo": args.iterations_demo}  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    if "demo" in args.scenes and not os.path.isdir(os.path.join(args.data, "demo_scene")):
        sys.path.insert(0, REPO)
        from scripts.make_demo_scene import make_demo_scene

        make_demo_scene(os.path.join(args.data, "demo_scene"), progress=False)
    rows = []
    with open(args.log or os.path.join(args.out, "log.txt"), "a") as log:
        for scene in args.scenes:
            for variant in args.variants:
                row = bench_one(scene, variant, args, args.out, log)
                print(json.dumps(row), flush=True)
                rows.append(row)
    devices = sorted({r["device"] for r in rows})
    text = (
        f"\n## Training speed ({datetime.date.today()}, {', '.join(devices)})\n\n"
        f"Command: `python bench/train_speed.py {' '.join(sys.argv[1:])}`\n\n{table(rows)}\n"
    )
    print(text)
    with open(args.results, "a") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
