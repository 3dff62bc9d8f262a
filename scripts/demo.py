"""End-to-end demo: make the synthetic scene, train, render the test views, score them.

    python scripts/demo.py                 # ~minutes on a 2-core CPU, well under one on a GPU
    python scripts/demo.py --fast          # tiny smoke run (CI)
    python scripts/demo.py -- --lambda_dssim 0.3   # anything after -- goes to train.py

Steps (each a subprocess of this repository's own scripts, so the demo exercises exactly
the commands a user runs):

1. ``scripts/make_demo_scene.py``: a ray-cast scene with ground-truth depth and masks,
   sparse training views and held-out test views between them (``<output>/scene``);
2. ``train.py -s <scene> -m <model> --eval --split_protocol custom``: trains on the
   training views of ``split.json``, starting from the scene's SfM-like points;
3. ``render.py -m <model> --skip_train``: renders the test views;
4. ``metrics.py -m <model>``: PSNR/SSIM/LPIPS (and the masked scores, from
   ``masks_object/``), written to ``<model>/results.json`` and printed here as a table.

The output folder (default ``output/demo``) is owned by the demo: it carries a marker
file, and a rerun replaces the scene and model inside it. A folder without the marker is
never touched.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/demo.py`
    sys.path.insert(0, str(REPO_ROOT))

from scripts.make_demo_scene import make_demo_scene  # noqa: E402
from utils.general_utils import claim_output_folder, split_passthrough  # noqa: E402

MARKER = ".segsplat_demo.json"

# Scene size and schedule. The full run fits a 2-core CPU in well under 10 minutes with the
# torch backend; --fast is a smoke test of the wiring only (its scores mean nothing).
FULL = {"width": 160, "height": 120, "n_train": 8, "n_test": 8, "iterations": 1500}
FAST = {"width": 64, "height": 48, "n_train": 4, "n_test": 3, "iterations": 30}


class DemoError(ValueError):
    """A demo step cannot go on; the message says why and what to do."""


def prepare_output(root: Path) -> None:
    """Create the demo folder, or clear the previous demo run inside it.

    Refuses a non-empty folder that this script did not create (no marker file), so a
    mistyped ``--output`` cannot delete anyone's data.
    """
    claim_output_folder(root, MARKER, "scripts/demo.py", DemoError)
    shutil.rmtree(root / "model", ignore_errors=True)


def stage_commands(
    scene: Path,
    model: Path,
    iterations: int,
    backend: str,
    data_device: str,
    train_extra: list[str],
    python: str = sys.executable,
) -> list[tuple[str, list[str]]]:
    """(stage name, argv) of the train, render and metrics subprocesses."""
    it = str(iterations)
    train = [
        python,
        str(REPO_ROOT / "train.py"),
        "-s",
        str(scene),
        "-m",
        str(model),
        "--eval",
        "--split_protocol",
        "custom",
        "--backend",
        backend,
        "--data_device",
        data_device,
        "--iterations",
        it,
        "--test_iterations",
        it,
        "--save_iterations",
        it,
        # Upstream decays the position learning rate over 30k steps; fit it to this run.
        "--position_lr_max_steps",
        it,
        *train_extra,
    ]
    render = [python, str(REPO_ROOT / "render.py"), "-m", str(model), "--skip_train"]
    metrics = [python, str(REPO_ROOT / "metrics.py"), "-m", str(model)]
    return [("train", train), ("render", render), ("metrics", metrics)]


def format_results(results: dict) -> str:
    """results.json ({method: {metric: value}}) as an aligned text table."""
    rows = {m: v for m, v in results.items() if isinstance(v, dict)}
    cols: list[str] = []
    for v in rows.values():
        cols += [k for k, x in v.items() if isinstance(x, (int, float)) and k not in cols]
    if not rows or not cols:
        raise DemoError("results.json holds no metric values; rerun metrics.py -m <model>")

    def fmt(x) -> str:
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            return "-"
        return f"{x:.2f}" if abs(x) >= 2 or math.isinf(x) else f"{x:.4f}"

    header = ["method", *cols]
    body = [[m, *(fmt(v.get(c)) for c in cols)] for m, v in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def _default_data_device(backend: str) -> str:
    if backend == "torch":
        return "cpu"
    import torch  # lazily: only to see whether a GPU is there

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_demo(args: argparse.Namespace, train_extra: list[str]) -> dict:
    """Run every stage; returns the parsed results.json."""
    preset = FAST if args.fast else FULL
    iterations = args.iterations or preset["iterations"]
    root = Path(args.output).resolve()
    scene, model = root / "scene", root / "model"
    for script in ("train.py", "render.py", "metrics.py"):
        if not (REPO_ROOT / script).is_file():
            raise DemoError(f"{REPO_ROOT / script} is missing; the demo runs this repo's scripts")
    prepare_output(root)

    timings: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    info = make_demo_scene(
        scene,
        width=preset["width"],
        height=preset["height"],
        n_train=preset["n_train"],
        n_test=preset["n_test"],
        seed=args.seed,
        overwrite=True,
    )
    timings.append(("make scene", time.perf_counter() - t0))
    print(
        f"[demo] scene: {scene} ({info['n_train']} train + {info['n_test']} test views, "
        f"{info['width']}x{info['height']}, {info['n_points3D']} SfM points)",
        flush=True,
    )

    data_device = _default_data_device(args.backend)
    for name, argv in stage_commands(
        scene, model, iterations, args.backend, data_device, train_extra
    ):
        print(f"[demo] {name}: {' '.join(argv)}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(argv, cwd=REPO_ROOT).returncode
        timings.append((name, time.perf_counter() - t))
        if rc != 0:
            raise DemoError(f"{name} failed (exit {rc}); its output is above")

    results_path = model / "results.json"
    if not results_path.is_file():
        raise DemoError(f"{results_path} was not written; rerun metrics.py -m {model}")
    results = json.loads(results_path.read_text())
    print()
    print(f"Test views of the demo scene ({info['n_test']} held out), {iterations} iterations:")
    print(format_results(results))
    print()
    total = sum(s for _, s in timings)
    print("  ".join(f"{n} {s:.1f}s" for n, s in timings) + f"  | total {total:.1f}s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Make the synthetic demo scene, train on its sparse views, render and "
        "score the held-out views. Arguments after -- go to train.py."
    )
    parser.add_argument(
        "-o", "--output", default="output/demo", help="demo folder (holds scene/ and model/)"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=0,
        help=f"training iterations (default {FULL['iterations']}, --fast {FAST['iterations']})",
    )
    parser.add_argument("--fast", action="store_true", help="tiny scene and run: a smoke test")
    parser.add_argument("--backend", default="auto", choices=["auto", "gsplat", "torch"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo scene")
    argv, train_extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.iterations < 0:
        parser.error("--iterations must be positive")
    try:
        run_demo(args, train_extra)
    except (DemoError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
