"""Image metrics of rendered views: PSNR, SSIM, LPIPS (3DGS's metrics.py contract).

    python metrics.py -m output/fern [output/flower ...] [--lpips_net vgg|alex]
                      [--lpips_weights DIR] [--split test|train]
                      [--test_pose_opt STEPS [--test_pose_schedule spars3r|fast]]

For every model folder and every method folder under ``<model>/test/`` (``ours_<N>``, as
written by render.py) it compares ``renders/<name>.png`` with ``gt/<name>.png`` and writes

    <model>/results.json   {"ours_30000": {"SSIM": .., "PSNR": .., "LPIPS": ..}}
    <model>/per_view.json  {"ours_30000": {"SSIM": {"00000.png": ..}, "PSNR": {..}, ..}}

exactly as 3DGS does (``--split train`` scores ``train/`` into ``results_train.json`` and
``per_view_train.json`` instead). When a method folder also holds ``masks/<name>.png``
(255 = object), the DTU protocol adds ``PSNR_masked`` (squared error over mask pixels
only), ``SSIM_masked`` and ``LPIPS_masked`` (both images composited onto white,
``x*m + (1-m)``).

Test-time pose optimisation (SPARS3R): ``--test_pose_opt STEPS`` first runs render.py's
test pass with the same flag on every model (Gaussians frozen, a per-view SO(3)xR3 camera
correction fitted to the test image; see gaussian_renderer/pose_opt.py), which writes
``test/ours_<N>_pose_opt/`` beside ``test/ours_<N>``. Both are then scored like any method
folder, so results.json holds the unchanged ``ours_<N>`` entry (metrics at the given
poses) and ``ours_<N>_pose_opt`` (after pose optimisation) side by side, and the table
prints them on adjacent rows. A folder already rendered with the same steps and schedule
(its ``poses.json`` says so) is not optimised again.

LPIPS needs ImageNet and LPIPS weights (see ``utils/lpips/weights.py``); without them one
line says which files are missing and where to put them, and the LPIPS keys are left out.
Missing files are downloaded only when their host answers within 2 s, so on a machine
without network ``--lpips_no_download`` is automatic and costs at most those 2 s. LPIPS is
never computed from random weights. By default images in [0, 1] are mapped to [-1, 1]
(standard LPIPS); ``--lpips_3dgs_inputs`` feeds [0, 1] as the original 3DGS script did.
"""

from __future__ import annotations

import json
import os
import sys
from argparse import ArgumentParser
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from arguments import MetricsParams
from arguments.pose import PoseOptParams
from utils.general_utils import pick_device
from utils.image_utils import composite_on_white, masked_psnr, psnr
from utils.loss_utils import ssim
from utils.lpips import LPIPS, LPIPSWeightsError, LPIPSWeightsMissing, load_lpips

METRIC_KEYS = ("SSIM", "PSNR", "LPIPS")
MASKED_KEYS = ("PSNR_masked", "SSIM_masked", "LPIPS_masked")


class MetricsError(ValueError):
    """Bad input for metrics.py; the message names the file and the fix."""


def read_image(path: Path) -> torch.Tensor:  # -> [3, H, W] float in [0, 1]
    """An 8-bit image file as RGB floats; an alpha channel is dropped (as in 3DGS)."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith(("I", "F")):
                raise MetricsError(f"{path}: {im.mode} images are not supported; save 8-bit PNG")
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise MetricsError(f"cannot read image {path} ({e}); render it again") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def read_mask(path: Path) -> torch.Tensor:  # -> [1, H, W] float in {0, 1}
    """An object mask (255 = object); grey values are thresholded at the midpoint."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as e:
        raise MetricsError(f"cannot read mask {path} ({e}); render it again") from e
    return torch.from_numpy(arr > 127)[None].float()


def list_views(method_dir: Path) -> tuple[list[str], bool]:
    """Sorted view names of ``renders/`` and whether a ``masks/`` folder exists.

    Every render needs a ground truth of the same name.
    """
    renders, gt = method_dir / "renders", method_dir / "gt"
    for d in (renders, gt):
        if not d.is_dir():
            raise MetricsError(f"{d} not found; run render.py on this model first")
    names = sorted(p.name for p in renders.iterdir() if p.is_file() and not p.name.startswith("."))
    if not names:
        raise MetricsError(f"{renders} holds no images; run render.py on this model first")
    lacking = [n for n in names if not (gt / n).is_file()]
    if lacking:
        raise MetricsError(f"{gt / lacking[0]} not found ({len(lacking)} ground truths missing)")
    return names, (method_dir / "masks").is_dir()


@contextmanager
def ieee_fp32_convolutions() -> Iterator[None]:
    """Full-precision cuDNN convolutions inside the block (PyTorch lets them use TF32,
    whose 10-bit mantissa shifts SSIM and LPIPS in the 3rd-4th digit); restored after."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):  # torch >= 2.9 API
        old = cudnn.conv.fp32_precision
        cudnn.conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            cudnn.conv.fp32_precision = old
    else:
        old = cudnn.allow_tf32
        cudnn.allow_tf32 = False
        try:
            yield
        finally:
            cudnn.allow_tf32 = old


@torch.no_grad()
def evaluate_method(
    method_dir: Path,
    device: torch.device,
    lpips_model: LPIPS | None = None,
    lpips_normalize: bool = True,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-view metrics of one ``<model>/<split>/<method>`` folder.

    Returns ``({"SSIM": .., "PSNR": .., ...}, {"SSIM": {name: ..}, ...})``; LPIPS keys only
    with ``lpips_model``, masked keys only for views that have a mask with object pixels.
    """
    names, has_masks = list_views(method_dir)
    per_view: dict[str, dict[str, float]] = {}

    def put(key: str, name: str, value: torch.Tensor) -> None:
        per_view.setdefault(key, {})[name] = float(value)

    no_mask, empty_mask = 0, 0
    for name in tqdm(names, desc="Metric evaluation progress"):
        render = read_image(method_dir / "renders" / name).to(device)[None]  # [1, 3, H, W]
        gt = read_image(method_dir / "gt" / name).to(device)[None]
        if render.shape != gt.shape:
            raise MetricsError(
                f"{method_dir / 'renders' / name} is {tuple(render.shape[2:])} but its ground "
                f"truth is {tuple(gt.shape[2:])}; render at the evaluation resolution"
            )
        put("SSIM", name, ssim(render, gt))
        put("PSNR", name, psnr(render, gt)[0])
        if lpips_model is not None:
            put("LPIPS", name, lpips_model(render, gt, normalize=lpips_normalize)[0])

        if not has_masks:
            continue
        mask_path = method_dir / "masks" / name
        if not mask_path.is_file():
            no_mask += 1
            continue
        mask = read_mask(mask_path).to(device)
        if mask.shape[1:] != render.shape[2:]:
            raise MetricsError(
                f"{mask_path} is {tuple(mask.shape[1:])} but the render is "
                f"{tuple(render.shape[2:])}; write masks at the render resolution"
            )
        if mask.sum() == 0:
            empty_mask += 1  # masked PSNR is undefined without object pixels
            continue
        render_w, gt_w = composite_on_white(render, mask), composite_on_white(gt, mask)
        put("PSNR_masked", name, masked_psnr(render, gt, mask)[0])
        put("SSIM_masked", name, ssim(render_w, gt_w))
        if lpips_model is not None:
            put("LPIPS_masked", name, lpips_model(render_w, gt_w, normalize=lpips_normalize)[0])

    if no_mask or empty_mask:
        print(
            f"[metrics] {method_dir}: masked metrics skip {no_mask} views without a mask and "
            f"{empty_mask} with an empty mask"
        )
    order = [k for k in METRIC_KEYS + MASKED_KEYS if k in per_view]
    per_view = {k: per_view[k] for k in order}
    means = {
        k: torch.tensor(list(v.values()), dtype=torch.float64).mean().item()
        for k, v in per_view.items()
    }
    return means, per_view


def write_json_atomic(path: Path, obj: dict) -> None:
    """``json.dump`` as 3DGS (``indent=True``) into a temporary file, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def evaluate_model(
    model_path: str,
    split: str,
    device: torch.device,
    lpips_model: LPIPS | None = None,
    lpips_normalize: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]]:
    """Score every method folder of ``<model_path>/<split>`` and write the two JSON files.

    Returns the contents of results.json and per_view.json.
    """
    split_dir = Path(model_path) / split
    if not split_dir.is_dir():
        raise MetricsError(f"{split_dir} not found; run render.py -m {model_path} first")
    methods = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not methods:
        raise MetricsError(f"{split_dir} holds no method folders (ours_<N>); run render.py")
    full: dict[str, dict[str, float]] = {}
    per_view: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        print("Method:", method)
        with ieee_fp32_convolutions():
            full[method], per_view[method] = evaluate_method(
                split_dir / method, device, lpips_model, lpips_normalize
            )
        for key, value in full[method].items():
            # The 3DGS lines ("  SSIM : ...") exactly; masked ones in the same style.
            print(
                f"  {key:<5}: {value:>12.7f}" if key in METRIC_KEYS else f"  {key}: {value:>12.7f}"
            )
        print("")
    suffix = "" if split == "test" else f"_{split}"
    write_json_atomic(Path(model_path) / f"results{suffix}.json", full)
    write_json_atomic(Path(model_path) / f"per_view{suffix}.json", per_view)
    return full, per_view


def format_table(
    results: dict[str, dict[str, dict[str, float]]],  # model -> method -> metric -> mean
    counts: dict[tuple[str, str], int],  # (model, method) -> number of views
) -> str:
    """One row per model and method; a column per metric present anywhere, '-' if absent."""
    keys = [
        k
        for k in ("PSNR", "SSIM", "LPIPS") + MASKED_KEYS
        if any(k in m for r in results.values() for m in r.values())
    ]
    header = ["model", "method", "views"] + [k.replace("_masked", "_m") for k in keys]
    rows = [header]
    for model, methods in results.items():
        for method, vals in methods.items():
            cells = [model, method, str(counts[(model, method)])]
            cells += [f"{vals[k]:.4f}" if k in vals else "-" for k in keys]
            rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def build_parser() -> tuple[ArgumentParser, MetricsParams]:
    parser = ArgumentParser(description="PSNR, SSIM and LPIPS of rendered views")
    parser.add_argument(
        "--model_paths", "-m", required=True, nargs="+", type=str, help="model folders"
    )
    mp = MetricsParams(parser)
    PoseOptParams(parser)
    return parser, mp


def pose_opt_is_current(model_path: str, steps: int, schedule: str) -> bool:
    """Whether every ``test/ours_<N>`` of the model has an ``ours_<N>_pose_opt`` folder
    whose poses.json records ``steps`` and ``schedule``."""
    test = Path(model_path) / "test"
    if not test.is_dir():
        return False
    plain = [p for p in test.iterdir() if p.is_dir() and not p.name.endswith("_pose_opt")]
    if not plain:
        return False
    for method in plain:
        poses = test / f"{method.name}_pose_opt" / "poses.json"
        try:
            meta = json.loads(poses.read_text())
        except (OSError, ValueError):
            return False
        if meta.get("steps") != steps or meta.get("schedule") != schedule:
            return False
    return True


def run_test_pose_opt(model_path: str, steps: int, schedule: str) -> None:
    """Render ``<model>/test`` with and without test-time pose optimisation (render.py
    ``--skip_train --test_pose_opt STEPS``), unless already done with these settings."""
    if pose_opt_is_current(model_path, steps, schedule):
        print(f"[metrics] {model_path}: pose-optimised renders ({steps} steps) already present")
        return
    import render as render_script  # the model, scene and renderer: only when asked for

    argv = ["-m", model_path, "--skip_train", "--test_pose_opt", str(steps),
            "--test_pose_schedule", schedule]  # fmt: skip
    if render_script.main(argv) != 0:
        raise MetricsError(
            f"test-time pose optimisation of {model_path} failed (see above); run "
            f"render.py {' '.join(argv)} to retry"
        )


def main(argv: list[str] | None = None) -> int:
    parser, mp = build_parser()
    cli = parser.parse_args(argv)
    args = mp.extract(cli)
    device = pick_device(args.device)

    lpips_model = None
    try:
        lpips_model = load_lpips(
            args.lpips_net,
            args.lpips_weights or None,
            download=not args.lpips_no_download,
            device=device,
        )
        files = ", ".join(map(str, lpips_model.weight_files))
        print(f"[metrics] LPIPS ({args.lpips_net}) from {files}")
    except LPIPSWeightsMissing as e:
        print(f"[metrics] {e}")
    except LPIPSWeightsError as e:
        print(f"error: {e}")
        return 1

    results: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[tuple[str, str], int] = {}
    failed = False
    steps = int(cli.test_pose_opt or 0)
    if steps > 0 and args.split != "test":
        print("error: --test_pose_opt scores the test split; drop --split train")
        return 1
    for model_path in cli.model_paths:
        print("Scene:", model_path)
        try:
            if steps > 0:
                run_test_pose_opt(model_path, steps, cli.test_pose_schedule)
            full, per_view = evaluate_model(
                model_path, args.split, device, lpips_model, not args.lpips_3dgs_inputs
            )
        except MetricsError as e:
            print(f"error: {e}")  # the other models are still scored; the exit status says 1
            failed = True
            continue
        results[model_path] = full
        for method, views in per_view.items():
            counts[(model_path, method)] = len(views["PSNR"])
    if results:
        print(format_table(results, counts))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
