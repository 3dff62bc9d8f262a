"""ROI-guided training on NeRD maryrose: plain 3DGS versus the roigs pieces (issue 5).

    python scripts/run_maryrose_roi.py                          # GPU, ~8 min on one H100
    python scripts/run_maryrose_roi.py --iterations 30 -r 96 --backend torch \\
        --no_results -- --random_init 3000                      # CPU smoke run

Steps:

1. A working scene folder ``<output>/scene`` from ``<data>/nerd_maryrose``: images_4/,
   masks_4/ (found automatically as the *evaluation* masks), poses_bounds.npy, and
   ``pure_masks/<stem>.png`` = masks_4 (the ROI prior of ``--use_mask``). maryrose has no
   ``depth_pro/``, so the ROI is the mask alone (the loader and ``attach_roi`` say so).
   Caveat: the ROI prior and the evaluation mask are the same hand-made masks here.
2. Every configuration trains with identical settings: 12 training views, test = every 8th
   view (``--n_views 12 --split_protocol llff``: 9 test views), the same random
   initialisation (maryrose has no points), ``--iterations`` iterations with every
   30k-step schedule constant of 3DGS and roigs scaled by iterations / 30000 (listed in
   the results section). Configurations: ``3dgs`` (no new flag), ``mask`` (--use_mask),
   ``mask_lpdr`` (--use_mask --use_lpdr), ``roigs`` (--use_mask --use_lpdr
   --densify_strategy improved: the whole roigs method on Improved-GS), and optionally
   ``improved`` (--densify_strategy improved alone).
3. ``render.py --skip_train`` and ``metrics.py --lpips_no_download`` per configuration.
4. One table (PSNR and SSIM over the whole test image and inside the ground-truth mask,
   number of Gaussians, training time) printed and appended to docs/RESULTS.md.

Training time is the training loop's time from ``<model>/training_summary.json`` (written
by train.py; the loop includes densification and, for ``roigs``, the edge-importance
renders); the table also gives the wall time of the whole train.py process (start-up,
image and prior loading included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/run_maryrose_roi.py`
    sys.path.insert(0, str(REPO_ROOT))

from utils.general_utils import claim_output_folder, split_passthrough  # noqa: E402

MARKER = ".segsplat_maryrose_roi.json"


def default_data() -> Path:
    """$SEGSPLAT_DATA, else shared/data inside the checkout or next to it."""
    if os.environ.get("SEGSPLAT_DATA"):
        return Path(os.environ["SEGSPLAT_DATA"])
    for cand in (REPO_ROOT / "shared" / "data", REPO_ROOT.parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return REPO_ROOT.parent / "shared" / "data"


DEFAULT_DATA = default_data()

CONFIGS: dict[str, list[str]] = {
    "3dgs": [],
    "mask": ["--use_mask"],
    "mask_lpdr": ["--use_mask", "--use_lpdr"],
    "roigs": ["--use_mask", "--use_lpdr", "--densify_strategy", "improved"],
    "improved": ["--densify_strategy", "improved"],
}
DEFAULT_CONFIGS = ["3dgs", "mask", "mask_lpdr", "roigs"]

# 30k-iteration schedule constants (3DGS and roigs defaults) that scale with --iterations.
SCALED_30K = {
    "--position_lr_max_steps": 30_000,
    "--densify_from_iter": 500,
    "--densify_until_iter": 15_000,
    "--opacity_reset_interval": 3000,
    "--roi_grow_from_iter": 10_000,
    "--roi_prune_strict_until": 15_000,
    "--roi_loss_focus_after": 20_000,
    "--budget_ramp_until": 14_500,
    "--score_gradient_after": 14_500,
    "--edge_all_views_every": 3000,
    "--edge_all_views_offset": 400,
    "--edge_all_views_until": 9000,
    "--multistep_from": 15_000,
    "--multistep_late_from": 22_500,
}


class RunError(ValueError):
    """A step cannot go on; the message says why and what to do."""


DENSIFICATION_INTERVAL = 100  # 3DGS's; not scaled: the gradient statistics need the views


def scaled_schedule(iterations: int) -> list[str]:
    """The schedule flags for a run of ``iterations``: each constant x iterations / 30000.

    The edge-importance "every view" steps (upstream: step % 3000 == 400) are snapped to
    multiples of the densification interval so that they still fall on densification steps.
    """
    s = iterations / 30_000
    values = {flag: max(1, round(value * s)) for flag, value in SCALED_30K.items()}
    for flag in ("--edge_all_views_every", "--edge_all_views_offset"):
        snapped = round(SCALED_30K[flag] * s / DENSIFICATION_INTERVAL) * DENSIFICATION_INTERVAL
        values[flag] = max(DENSIFICATION_INTERVAL, snapped)
    return [str(x) for flag, value in values.items() for x in (flag, value)]


def write_white_composite(image: Path, mask: Path, out: Path) -> None:
    """Write ``image`` composited onto white through ``mask`` (0/255; soft values blend)."""
    import numpy as np
    import torch
    from PIL import Image

    from utils.image_utils import composite_on_white, to_uint8

    rgb = np.asarray(Image.open(image).convert("RGB"))
    alpha = np.asarray(Image.open(mask).convert("L"))
    if alpha.shape != rgb.shape[:2]:
        raise RunError(f"{mask}: {alpha.shape[1]}x{alpha.shape[0]} mask for a "
                       f"{rgb.shape[1]}x{rgb.shape[0]} image {image}")  # fmt: skip
    img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
    white = composite_on_white(img, torch.from_numpy(alpha.copy()).float() / 255.0)
    Image.fromarray(to_uint8(white)).save(out, quality=92)


def prepare_scene(data: Path, root: Path, white: bool = False) -> Path:
    """Create ``root/scene`` (once; reused when complete) from the maryrose folder; with
    ``white``, ``root/scene_white``, whose images are composited onto white through their
    masks (the background, which is not consistent across views, removed)."""
    src = data / "nerd_maryrose"
    needed = [src / "images_4", src / "masks_4", src / "poses_bounds.npy"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise RunError(
            f"{missing[0]} not found; point --data (or SEGSPLAT_DATA) at the shared data folder"
        )
    claim_output_folder(root, MARKER, "this script (scripts/run_maryrose_roi.py)", RunError)
    scene = root / ("scene_white" if white else "scene")
    if (scene / "poses_bounds.npy").is_file():
        return scene
    tmp = Path(tempfile.mkdtemp(prefix=".scene_", dir=root))
    try:
        if white:
            (tmp / "images_4").mkdir()
            for image in sorted((src / "images_4").iterdir()):
                mask = src / "masks_4" / (image.stem + ".png")
                if not mask.is_file():
                    raise RunError(f"{mask} not found: --white_composite needs every mask")
                write_white_composite(image, mask, tmp / "images_4" / image.name)
        else:
            shutil.copytree(src / "images_4", tmp / "images_4")
        shutil.copytree(src / "masks_4", tmp / "masks_4")
        shutil.copy2(src / "poses_bounds.npy", tmp / "poses_bounds.npy")
        if (src / "LICENSE.md").is_file():
            shutil.copy2(src / "LICENSE.md", tmp / "LICENSE.md")
        (tmp / "pure_masks").mkdir()
        for mask in sorted((src / "masks_4").iterdir()):
            shutil.copy2(mask, tmp / "pure_masks" / (mask.stem + ".png"))
        os.replace(tmp, scene)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return scene


def gaussian_count(ply: Path) -> int:
    """Vertex count from a PLY header."""
    with open(ply, "rb") as f:
        for raw in f:
            line = raw.decode("ascii", errors="replace").strip()
            if line.startswith("element vertex"):
                return int(line.split()[-1])
            if line == "end_header":
                break
    raise RunError(f"{ply}: no vertex element in the header; retrain")


def run(cmd: list[str], what: str) -> float:
    print(f"[maryrose] {what}: {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO_ROOT).returncode
    if rc != 0:
        raise RunError(f"{what} failed (exit {rc}); its output is above")
    return time.perf_counter() - t


def run_config(
    name: str, scene: Path, model: Path, args: argparse.Namespace, extra: list[str]
) -> dict:
    py = sys.executable
    it = str(args.iterations)
    shutil.rmtree(model, ignore_errors=True)
    train = [
        py, str(REPO_ROOT / "train.py"), "-s", str(scene), "-m", str(model),
        "--n_views", "12", "--split_protocol", "llff", "-r", str(args.resolution),
        "--iterations", it, "--save_iterations", it, "--test_iterations", "-1",
        "--backend", args.backend, "--quiet", *(["-w"] if args.white_composite else []),
        *scaled_schedule(args.iterations), *CONFIGS[name], *extra,
    ]  # fmt: skip
    if args.data_device:
        train += ["--data_device", args.data_device]
    train_s = run(train, f"{name} train")
    run([py, str(REPO_ROOT / "render.py"), "-m", str(model), "--skip_train"], f"{name} render")
    run([py, str(REPO_ROOT / "metrics.py"), "-m", str(model), "--lpips_no_download"],
        f"{name} metrics")  # fmt: skip
    results = json.loads((model / "results.json").read_text())
    key = f"ours_{args.iterations}"
    if key not in results:
        raise RunError(f"{model / 'results.json'} has no {key}; rerun metrics.py -m {model}")
    ply = model / "point_cloud" / f"iteration_{args.iterations}" / "point_cloud.ply"
    row = {k: results[key].get(k) for k in ("PSNR", "SSIM", "PSNR_masked", "SSIM_masked")}
    summary = model / "training_summary.json"
    loop_s = json.loads(summary.read_text())["loop_seconds"] if summary.is_file() else train_s
    row.update(gaussians=gaussian_count(ply), train_s=float(loop_s), wall_s=train_s)
    return row


def device_name(backend: str) -> str:
    try:
        import torch

        if backend != "torch" and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def format_table(rows: dict[str, dict]) -> str:
    def f(x, nd):
        return "-" if x is None else f"{x:.{nd}f}"

    base = rows.get("3dgs")
    lines = [
        "| config | flags | PSNR | SSIM | PSNR in mask | SSIM in mask | Gaussians | vs 3DGS "
        "| train loop (s) | train.py wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        rel = "-"
        if base and name != "3dgs":
            rel = f"{100.0 * (r['gaussians'] / base['gaussians'] - 1.0):+.1f}%"
        flags = " ".join(CONFIGS[name]) or "(none)"
        lines.append(
            f"| {name} | `{flags}` | {f(r['PSNR'], 2)} | {f(r['SSIM'], 4)} | "
            f"{f(r['PSNR_masked'], 2)} | {f(r['SSIM_masked'], 4)} | {r['gaussians']} | {rel} | "
            f"{r['train_s']:.1f} | {r.get('wall_s', r['train_s']):.1f} |"
        )
    return "\n".join(lines)


def target_lines(rows: dict[str, dict]) -> list[str]:
    """The issue's targets for every ROI configuration against plain 3DGS."""
    base = rows.get("3dgs")
    if base is None:
        return []
    out = []
    for name, r in rows.items():
        if "--use_mask" not in CONFIGS[name]:
            continue
        psnr_ok = None
        if r["PSNR_masked"] is not None and base["PSNR_masked"] is not None:
            psnr_ok = r["PSNR_masked"] >= base["PSNR_masked"]
        change = r["gaussians"] / base["gaussians"] - 1.0
        out.append(
            f"- {name}: PSNR in mask >= 3DGS: {'yes' if psnr_ok else 'no'}; "
            f"Gaussians {100 * change:+.1f}% vs 3DGS (target <= -30%): "
            f"{'yes' if change <= -0.3 else 'no'}; training loop not slower: "
            f"{'yes' if r['train_s'] <= base['train_s'] else 'no'}"
        )
    return out


def append_results(path: Path, text: str) -> None:
    """Append a section to docs/RESULTS.md through a temporary file."""
    old = path.read_text() if path.is_file() else "# Results\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train plain 3DGS and the roigs configurations on NeRD maryrose (12 "
        "views), score the test views, append a table to docs/RESULTS.md. Arguments after "
        "-- go to every train.py run."
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("-o", "--output", default="output/maryrose_roi")
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("-r", "--resolution", type=int, default=4,
                        help="train.py -r: 4 = images_4 as stored (864x864)")  # fmt: skip
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument("--backend", default="auto", choices=["auto", "gsplat", "torch"])
    parser.add_argument("--data_device", default="", help="train.py --data_device (default: its)")
    parser.add_argument("--results", default=str(REPO_ROOT / "docs" / "RESULTS.md"))
    parser.add_argument("--no_results", action="store_true", help="print only, append nothing")
    parser.add_argument("--white_composite", action="store_true",
                        help="train and score on images composited onto white through their "
                        "masks (-w): the turntable background, which moves between "
                        "sub-captures, taken out")  # fmt: skip
    given = list(sys.argv[1:] if argv is None else argv)
    argv, extra = split_passthrough(given)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be positive")
    try:
        root = Path(args.output).resolve()
        scene = prepare_scene(Path(args.data), root, args.white_composite)
        t0 = time.perf_counter()
        rows = {c: run_config(c, scene, root / c, args, extra) for c in args.configs}
        total = time.perf_counter() - t0
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = format_table(rows)
    targets = target_lines(rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["python scripts/run_maryrose_roi.py", *given])
    section = "\n".join(
        [
            "## ROI-guided training (roigs) on NeRD maryrose, 12 views",
            "",
            f"- device: {device_name(args.backend)}; date: {stamp}",
            f"- command: `{cmd.strip()}`",
            f"- {args.iterations} iterations, train.py -r {args.resolution}, "
            "--n_views 12 --split_protocol llff (9 test views: every 8th), random init; "
            "schedule scaled by iterations/30000: " + " ".join(scaled_schedule(args.iterations)),
            *(
                ["- images composited onto white through masks_4, trained with -w"]
                if args.white_composite
                else []
            ),
            "- ROI prior = maryrose masks_4 (no depth_pro: ROI = mask); masked metrics use "
            "the same masks (PSNR over mask pixels, SSIM on white-composited images); "
            "LPIPS not computed (--lpips_no_download)",
            "- train loop = training_summary.json loop_seconds (densification and importance "
            f"renders included); whole script {total:.0f} s",
            "",
            table,
            "",
            *targets,
        ]
    )
    print()
    print(section)
    if not args.no_results:
        append_results(Path(args.results), section)
        print(f"\n[maryrose] appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
