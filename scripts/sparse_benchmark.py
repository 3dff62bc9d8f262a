"""Sparse-view benchmark dispatcher: LLFF or DTU, every scene under a root, several configs
and seeds, one process per GPU; also the shared run/table code of bench/sparse_quality.py.

    python scripts/sparse_benchmark.py llff DATA_ROOT [OUT_ROOT] [--gpus 0,1] [--dry_run]
    python scripts/sparse_benchmark.py dtu DATA_ROOT [OUT_ROOT] [--masks IDRMASKS]
    (scripts/run_llff.sh and scripts/run_dtu.sh call this with the dataset name)

Per scene (skipped with one line when missing under DATA_ROOT):
  prepare   scripts/prepare_llff.py / prepare_dtu.py into WORK/<scene> (skipped when done)
  colmap    colmap_match.py --n_views N --split_protocol llff|dtu (skipped when done)
  mvs       python -m mvs (colmap_<N>views/dense/, depth_mvs/; skipped when done)
  masks, mask_matching   extract_mask.py --mode auto, python -m mask_matching (only when a
            config trains with the masks: regseg, preset_regseg; skipped when done)
then per config and seed, in OUT_ROOT/<dataset>/<scene>/<config>/s<seed>/:
  train     train.py --eval --n_views N --split_protocol P --iterations I --seed S <flags>
  render    render.py --skip_train
  metrics   metrics.py
Each stage logs to <stage>.log in the model folder (the scene stages: in
OUT_ROOT/<dataset>/<scene>/); a failure prints the stage and the log and the next scene goes
on. A run whose results.json exists is skipped (--overwrite runs it again). The table (per
scene and mean; mean over seeds with the min-max range) goes to OUT_ROOT/<dataset>_results.md
(raw numbers: <dataset>_results.json) and is printed.

Environment (flags override): N_VIEWS (3), ITERS (10000), SEEDS ("0 1 2"), CONFIGS
("vanilla preset"; also known: regseg, preset_regseg, RegSegField's mask regularisation
alone and on the preset, which add the masks and mask_matching scene stages; an item may be
name=flag,flag,...: e.g. "drop=--drop_rate,0.1"), WORK
(prepared scenes, default OUT_ROOT/work/<dataset>), DTU_MASKS (IDR mask root for the DTU
release layout), CUDA_VISIBLE_DEVICES (GPUs when --gpus is not given; else every GPU
nvidia-smi lists; without one, one CPU job at a time).
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
from argparse import ArgumentParser
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLFF_SCENES = ["fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex"]
DTU_SCANS = [8, 21, 30, 31, 34, 38, 40, 41, 45, 55, 63, 82, 103, 110, 114]
DEFAULT_CONFIGS = {"vanilla": [], "preset": ["--sparse_view"]}
# RegSegField's regularisation with its DTU 3-view settings (seeds digest 1.8): the mask-
# visibility loss (weight 0.05, tau 2), the feature field with the mask refinement, the
# segment-aware depth TV (0.05) and the warm-up cull (2 views). Off by default: on the
# preset it gained nothing beyond the seeds' spread (docs/RESULTS.md, session 13).
MASK_VIS_FLAGS = ["--lambda_mask_vis", "0.05", "--mask_vis_tau", "2"]
REGSEG_FLAGS = [*MASK_VIS_FLAGS, "--feature_field", "--refine_masks", "--lambda_segment_tv",
                "0.05", "--cull_min_views", "2"]  # fmt: skip
KNOWN_CONFIGS = {
    **DEFAULT_CONFIGS,
    "regseg": REGSEG_FLAGS,
    "preset_regseg": ["--sparse_view", *REGSEG_FLAGS],
}
MASK_FLAGS = ("--lambda_mask_vis", "--feature_field", "--lambda_segment_tv")  # need masks
METRICS = ("PSNR", "SSIM", "LPIPS", "PSNR_masked")
DASH = "\u2013"  # en dash of the "mean (min-max)" cells

# ----------------------------------------------------------------------------- variants


def parse_variant(item: str, known: dict[str, list[str]] | None = None) -> tuple[str, list[str]]:
    """``name=flag,flag,...`` (commas or spaces) -> (name, flags); a bare ``name`` must be in
    ``known``; ``name=`` is a run with no extra flags."""
    if "=" in item:
        name, flags = item.split("=", 1)
        name = name.strip()
        flag_list = flags.replace(",", " ").split()
    else:
        name = item.strip()
        if known is None or name not in known:
            names = ", ".join(sorted(known or {})) or "none"
            raise ValueError(f"variant {name!r}: give it as name=flag,flag,... (known: {names})")
        flag_list = list(known[name])
    if not name or not all(c.isalnum() or c in "._-" for c in name):
        raise ValueError(f"variant {item!r}: the name must be letters, digits, '.', '_', '-'")
    return name, flag_list


def parse_variants(items: Iterable[str], known: dict[str, list[str]] | None = None) -> dict:
    out: dict[str, list[str]] = {}
    for item in items:
        for part in item.split() if "=" not in item else [item]:
            name, flags = parse_variant(part, known)
            if name in out:
                raise ValueError(f"variant {name!r} given twice")
            out[name] = flags
    return out


# ----------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One (scene, variant, seed) training run and, once done, its numbers."""

    scene: str  # scene folder (prepared)
    name: str  # scene name in the table
    variant: str
    flags: list[str]
    seed: int
    protocol: str
    n_views: int
    iterations: int
    model: str
    status: str = "pending"  # ok | failed | pending
    stage: str | None = None  # the stage that failed
    log: str | None = None  # its log
    existing: bool = False  # results were already there (not run again)
    metrics: dict = field(default_factory=dict)
    train_wall_s: float | None = None
    loop_s: float | None = None
    gaussians: int | None = None
    device: str | None = None

    def train_cmd(self, py: str = sys.executable) -> list[str]:
        n = str(self.iterations)
        return [py, "train.py", "-s", self.scene, "-m", self.model, "--eval",
                "--n_views", str(self.n_views), "--split_protocol", self.protocol,
                "--iterations", n, "--test_iterations", n, "--save_iterations", n,
                "--seed", str(self.seed), "--quiet", *self.flags]  # fmt: skip

    def commands(self, py: str = sys.executable) -> list[tuple[str, list[str]]]:
        return [
            ("train", self.train_cmd(py)),
            ("render", [py, "render.py", "-m", self.model, "--skip_train"]),
            # Never wait on a download inside a benchmark: LPIPS is scored when its weights
            # are already in place (README, "Model weights"), else left out.
            ("metrics", [py, "metrics.py", "-m", self.model, "--lpips_no_download"]),
        ]


def read_metrics(model: str, iterations: int) -> dict | None:
    """The means of ``<model>/results.json`` for ``ours_<iterations>``; None without them
    (results of another iteration count do not make a run done)."""
    try:
        with open(os.path.join(model, "results.json")) as f:
            res = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    vals = res.get(f"ours_{iterations}") if isinstance(res, dict) else None
    if not isinstance(vals, dict):
        return None
    return {k: float(vals[k]) for k in METRICS if k in vals}


def collect(run: Run) -> bool:
    """Fill ``run`` from its model folder; True when results.json is there."""
    m = read_metrics(run.model, run.iterations)
    if m is None or "PSNR" not in m:
        return False
    run.metrics, run.status = m, "ok"
    try:
        with open(os.path.join(run.model, "training_summary.json")) as f:
            s = json.load(f)
        run.loop_s, run.gaussians, run.device = (
            s.get("loop_seconds"),
            s.get("num_gaussians"),
            s.get("device"),
        )
    except (OSError, json.JSONDecodeError):
        pass
    try:
        with open(os.path.join(run.model, "bench_run.json")) as f:
            run.train_wall_s = json.load(f).get("train_wall_s")
    except (OSError, json.JSONDecodeError):
        pass
    return True


def run_stage(cmd: list[str], log_path: str, env: dict | None = None) -> tuple[int, float]:
    """Run ``cmd`` in the repository with its output in ``log_path``: (exit code, seconds)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        start = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
            code = rc.returncode
        except OSError as e:
            log.write(f"cannot start: {e}\n")
            code = 127
        seconds = time.perf_counter() - start
        log.write(f"\n[exit {code} after {seconds:.1f} s]\n")
    return code, seconds


def slot_env(slot: str | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    return env


def execute_run(run: Run, overwrite: bool = False, slot: str | None = None) -> Run:
    """train, render, metrics of one run (skipped when its results exist, unless
    ``overwrite``); each stage logs to ``<model>/<stage>.log``. Never raises for a failed
    stage: the run comes back with status 'failed', the stage and its log."""
    if not overwrite and collect(run):
        run.existing = True
        return run
    # A run without results starts over: no stale checkpoint or render is reused.
    shutil.rmtree(run.model, ignore_errors=True)
    os.makedirs(run.model)  # made here, so train.py keeps it (and the logs) on failure
    env = slot_env(slot)
    for stage, cmd in run.commands():
        log = os.path.join(run.model, f"{stage}.log")
        code, seconds = run_stage(cmd, log, env)
        if stage == "train":
            run.train_wall_s = round(seconds, 1)
            with open(os.path.join(run.model, "bench_run.json"), "w") as f:
                json.dump({"train_wall_s": run.train_wall_s, "gpu_slot": slot,
                           "command": shlex.join(cmd)}, f, indent=1)  # fmt: skip
        if code != 0:
            run.status, run.stage, run.log = "failed", stage, log
            return run
    if not collect(run):
        run.status, run.stage = "failed", "metrics"
        run.log = os.path.join(run.model, "metrics.log")
    return run


# ----------------------------------------------------------------------------- scheduling


def execute(
    runs: list[Run],
    slots: list[str | None],
    overwrite: bool = False,
    prepare: Callable[[str, str | None], tuple[str, str] | None] | None = None,
    progress: Callable[[Run, int, int], None] | None = None,
) -> list[Run]:
    """Run everything with one process per slot (a GPU id, or None: inherit the device).

    ``prepare(scene, slot)``, when given, runs once per scene before its runs and returns
    None or (failed stage, log); the scene's runs are then marked failed without running.
    """
    free: queue.Queue = queue.Queue()
    for s in slots:
        free.put(s)
    lock = threading.Lock()

    def with_slot(fn, *args):
        slot = free.get()
        try:
            return fn(*args, slot=slot)
        finally:
            free.put(slot)

    by_scene: dict[str, list[Run]] = {}
    for r in runs:
        by_scene.setdefault(r.scene, []).append(r)
    done_count = [0]

    def finished(run: Run) -> None:
        with lock:
            done_count[0] += 1
            if progress:
                progress(run, done_count[0], len(runs))

    with ThreadPoolExecutor(max_workers=max(1, len(slots))) as pool:
        pending = {}
        for scene, scene_runs in by_scene.items():
            if prepare is None:
                for r in scene_runs:
                    pending[pool.submit(with_slot, execute_run, r, overwrite)] = ("run", r)
            else:
                pending[pool.submit(with_slot, prepare, scene)] = ("prep", scene)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                kind, obj = pending.pop(fut)
                err = fut.exception()
                if kind == "run":
                    if err is not None:  # a bug or a full disk: the run fails, not the bench
                        obj.status, obj.stage, obj.log = "failed", f"runner ({err!r})", None
                    finished(obj)
                    continue
                failure = ("prepare", f"runner error {err!r}") if err else fut.result()
                for r in by_scene[obj]:
                    if failure is None:
                        pending[pool.submit(with_slot, execute_run, r, overwrite)] = ("run", r)
                    else:
                        r.status, (r.stage, r.log) = "failed", failure
                        finished(r)
    return runs


def progress_line(run: Run, k: int, n: int) -> None:
    head = f"[{k}/{n}] {run.name} {run.variant} s{run.seed}:"
    if run.status == "ok":
        t = f", train {run.train_wall_s:.1f} s" if run.train_wall_s is not None else ""
        note = " (existing results)" if run.existing else ""
        print(f"{head} PSNR {run.metrics['PSNR']:.2f} SSIM {run.metrics.get('SSIM', 0):.4f}"
              f"{t}{note}", flush=True)  # fmt: skip
    else:
        print(f"{head} FAILED at {run.stage}: see {run.log}", flush=True)


# ----------------------------------------------------------------------------- tables


def mean_range(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(values):.{digits}f}{DASH}{max(values):.{digits}f})"


def _failed_note(runs: list[Run], rel: str | None) -> str:
    bad = [r for r in runs if r.status == "failed"]
    if not bad:
        return ""
    r = bad[0]
    log = os.path.relpath(r.log, rel) if (rel and r.log) else r.log
    others = len({x.log for x in bad}) - 1  # a failed scene stage is one log for all its runs
    more = f" (+{others} more)" if others else ""
    return f"failed at {r.stage}: see {log}{more}"


DIGITS = {"PSNR": 2, "SSIM": 4, "LPIPS": 4, "PSNR_masked": 2}


def present_metrics(runs: list[Run]) -> list[str]:
    """PSNR, SSIM, then LPIPS / masked PSNR when any finished run has them."""
    return [k for k in METRICS if k in ("PSNR", "SSIM") or any(k in r.metrics for r in runs)]


def metric_cell(runs: list[Run], key: str, rel: str | None = None) -> str:
    ok = [r for r in runs if r.status == "ok" and key in r.metrics]
    if not ok:
        return _failed_note(runs, rel) or "–"
    cell = mean_range([r.metrics[key] for r in ok], DIGITS[key])
    n_ok = sum(r.status == "ok" for r in runs)
    if n_ok < len(runs):
        cell += f" [{n_ok}/{len(runs)} seeds]"
    return cell


def variant_table(runs: list[Run], rel: str | None = None) -> str:
    """bench/sparse_quality.py: one row per scene x variant."""
    keys = present_metrics(runs)
    head = ["scene", "variant"] + [f"{k.replace('_masked', ' masked')} mean (min{DASH}max)"
                                   for k in keys]  # fmt: skip
    head += ["train s mean (loop s)", "#Gaussians", "PSNR per seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.name, r.variant), []).append(r)
    for (scene, variant), rs in groups.items():
        ok = [r for r in rs if r.status == "ok"]
        cells = [scene, variant] + [metric_cell(rs, k, rel) for k in keys]
        wall = [r.train_wall_s for r in ok if r.train_wall_s is not None]
        loop = [r.loop_s for r in ok if r.loop_s is not None]
        t = f"{sum(wall) / len(wall):.1f}" if wall else "–"
        if loop:
            t += f" ({sum(loop) / len(loop):.1f})"
        gs = [r.gaussians for r in ok if r.gaussians is not None]
        cells += [t, f"{round(sum(gs) / len(gs))}" if gs else "–"]
        per_seed = []
        for r in sorted(rs, key=lambda r: r.seed):
            if r.status == "ok":
                per_seed.append(f"s{r.seed} {r.metrics['PSNR']:.2f}")
            else:
                per_seed.append(f"s{r.seed} {r.status}")
        cells.append(", ".join(per_seed))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dataset_table(runs: list[Run], rel: str | None = None) -> str:
    """scripts/run_{llff,dtu}.sh: one row per scene and a mean row, columns per config and
    metric; each cell is the mean over seeds with the min-max range."""
    keys = present_metrics(runs)
    scenes = list(dict.fromkeys(r.name for r in runs))
    variants = list(dict.fromkeys(r.variant for r in runs))
    head = ["scene"] + [f"{v} {k.replace('_masked', ' masked')}" for v in variants for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cell_runs = {(s, v): [r for r in runs if r.name == s and r.variant == v]
                 for s in scenes for v in variants}  # fmt: skip
    for s in scenes:
        cells = [s] + [metric_cell(cell_runs[(s, v)], k, rel) for v in variants for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    if len(scenes) > 1:
        lines.append("| **mean** | " + " | ".join(
            mean_over_scenes([cell_runs[(s, v)] for s in scenes], k)
            for v in variants for k in keys) + " |")  # fmt: skip
    return "\n".join(lines)


def mean_over_scenes(per_scene: list[list[Run]], key: str) -> str:
    """Mean of the scene means; the range is over seeds of the all-scene mean of each seed
    (seeds finished in every scene). Marked with [k/n scenes] when some scene has none."""
    means, by_seed = [], []
    seeds = set.intersection(*(set(r.seed for r in rs) for rs in per_scene)) if per_scene else set()
    for rs in per_scene:
        v = [r.metrics[key] for r in rs if r.status == "ok" and key in r.metrics]
        if v:
            means.append(sum(v) / len(v))
    if not means:
        return "–"
    for seed in sorted(seeds):
        vals = [r.metrics[key] for rs in per_scene for r in rs
                if r.seed == seed and r.status == "ok" and key in r.metrics]  # fmt: skip
        if len(vals) == len(per_scene):
            by_seed.append(sum(vals) / len(vals))
    d = DIGITS[key]
    cell = f"{sum(means) / len(means):.{d}f}"
    if len(by_seed) > 1:
        cell += f" ({min(by_seed):.{d}f}{DASH}{max(by_seed):.{d}f})"
    if len(means) < len(per_scene):
        cell += f" [{len(means)}/{len(per_scene)} scenes]"
    return cell


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True).stdout.strip()  # fmt: skip
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gpu_names(runs: list[Run] | None = None) -> str:
    names = sorted({r.device for r in runs or [] if r.device})
    if names:
        return ", ".join(names)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             text=True, capture_output=True, check=True).stdout  # fmt: skip
        names = sorted({n.strip() for n in out.splitlines() if n.strip()})
        return ", ".join(names) or "cpu"
    except (OSError, subprocess.CalledProcessError):
        return "cpu"


# ----------------------------------------------------------------------------- datasets


@dataclass
class SceneSource:
    name: str  # table name: fern, scan8
    work: str  # prepared scene folder
    prepare_cmd: list[str]


def _first_image_width(folder: str) -> int | None:
    try:
        files = sorted(f for f in os.listdir(folder)
                       if f.lower().endswith((".png", ".jpg", ".jpeg")))  # fmt: skip
        if not files:
            return None
        from PIL import Image

        with Image.open(os.path.join(folder, files[0])) as im:
            return im.size[0]
    except (OSError, ImportError):
        return None


def discover_llff(root: str, work: str, n_views: int, py: str = sys.executable):
    """(scenes found, one skip line per missing scene). Looks in ROOT and ROOT/nerf_llff_data."""
    found, skipped = [], []
    bases = [root, os.path.join(root, "nerf_llff_data")]  # the latter: the LLFF download
    for name in LLFF_SCENES:
        hits = [os.path.join(b, name) for b in bases]
        src = next((h for h in hits if os.path.isfile(os.path.join(h, "poses_bounds.npy"))), None)
        if src is None:
            skipped.append(f"skip {name}: no {os.path.join(root, name, 'poses_bounds.npy')}")
            continue
        out = os.path.join(work, name)
        cmd = [py, "scripts/prepare_llff.py", "--src", src, "--out", out, "--factor", "8",
               "--n_views", str(n_views)]  # fmt: skip
        found.append(SceneSource(name, out, cmd))
    return found, skipped


def _dtu_masks(roots: list[str], scan: int) -> str | None:
    for m in roots:
        for sub in (os.path.join(m, f"scan{scan}", "mask"), os.path.join(m, f"scan{scan}")):
            if os.path.isdir(sub):
                return sub
    return None


def discover_dtu(root: str, work: str, n_views: int, masks: str | None = None,
                 py: str = sys.executable):  # fmt: skip
    """The pixelNeRF test scans under ROOT: scan<ID>/ in the IDR/MonoSDF layout
    (cameras.npz + image/ or rgb/), or the DTU release (Rectified/scan<ID>[_train]/ and
    Calibration/cal18/) with object masks from --masks / DTU_MASKS, ROOT/idrmasks or
    ROOT/submission_data/idrmasks (scan<ID>/[mask/]) when there."""
    found, skipped = [], []
    mask_roots = [m for m in (masks, os.path.join(root, "idrmasks"),
                              os.path.join(root, "submission_data", "idrmasks")) if m]  # fmt: skip
    release = os.path.isdir(os.path.join(root, "Calibration", "cal18"))
    for scan in DTU_SCANS:
        name, out = f"scan{scan}", os.path.join(work, f"dtu_scan{scan}")
        idr = os.path.join(root, name)
        base = [py, "scripts/prepare_dtu.py", "--out", out, "--n_views", str(n_views)]
        m = _dtu_masks(mask_roots, scan)
        if os.path.isfile(os.path.join(idr, "cameras.npz")):
            img = next((os.path.join(idr, s) for s in ("image", "images", "rgb")
                        if os.path.isdir(os.path.join(idr, s))), None)  # fmt: skip
            width = _first_image_width(img) if img else None
            # IDR keeps the 1600x1200 images: the protocol's 400x300 is a factor of 4;
            # MonoSDF's 384x384 crops are used as they are.
            factor = 4 if (width or 0) >= 1200 else 1
            cmd = base + ["--src", idr, "--factor", str(factor)]
            if m and not os.path.isdir(os.path.join(idr, "mask")):
                cmd += ["--masks", m]
        elif release and any(
            os.path.isdir(os.path.join(root, "Rectified", s)) for s in (f"{name}_train", name)
        ):
            cmd = base + ["--src", root, "--scan", str(scan), "--factor", "4"]
            if m:
                cmd += ["--masks", m]
        else:
            skipped.append(f"skip {name}: no {os.path.join(idr, 'cameras.npz')} "
                           f"nor {os.path.join(root, 'Rectified', name)}[_train]")  # fmt: skip
            continue
        found.append(SceneSource(name, out, cmd))
    return found, skipped


def detect_slots(gpus: str | None) -> list[str | None]:
    """--gpus 0,1 > CUDA_VISIBLE_DEVICES > nvidia-smi's GPUs > one CPU job ([None])."""
    spec = gpus if gpus is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        ids = [g.strip() for g in spec.split(",") if g.strip() and g.strip() != "-1"]
        return ids or [None]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             text=True, capture_output=True, check=True).stdout  # fmt: skip
        ids = [line.strip() for line in out.splitlines() if line.strip()]
        return ids or [None]
    except (OSError, subprocess.CalledProcessError):
        return [None]


def uses_masks(configs: dict[str, list[str]]) -> bool:
    """Whether some config trains with the segment masks (the masks and mask_matching
    scene stages then run)."""
    return any(f.split("=")[0] in MASK_FLAGS for flags in configs.values() for f in flags)


def _mask_matching_done(work: str, n_views: int) -> bool:
    try:
        with open(os.path.join(work, "mask_matching", "meta.json")) as f:
            return json.load(f).get("n_views") == n_views
    except (OSError, ValueError):
        return False


def scene_stages(src: SceneSource, n_views: int, protocol: str, py: str = sys.executable,
                 masks: bool = False):  # fmt: skip
    """(stage, command, done) of the scene stages; done = its output is already there.
    ``masks``: also the classical masks (SAM 2 where its weights are cached) and the mask
    matching of the training views."""
    views = os.path.join(src.work, f"colmap_{n_views}views")
    common = ["-s", src.work, "--n_views", str(n_views), "--split_protocol", protocol]
    mask_stages = [
        ("masks", [py, "extract_mask.py", "-s", src.work, "--mode", "auto"],
         os.path.isdir(os.path.join(src.work, "masks"))
         and bool(os.listdir(os.path.join(src.work, "masks")))),
        ("mask_matching", [py, "-m", "mask_matching", *common, "--overwrite"],
         _mask_matching_done(src.work, n_views)),
    ]  # fmt: skip
    return [
        ("prepare", src.prepare_cmd, os.path.isdir(os.path.join(src.work, "sparse", "0"))),
        ("colmap", [py, "colmap_match.py", *common],
         os.path.isdir(os.path.join(views, "sparse", "0"))),
        ("mvs", [py, "-m", "mvs", *common],
         os.path.isfile(os.path.join(views, "dense", "points3D.ply"))
         and os.path.isfile(os.path.join(views, "dense", "report.json"))),
    ] + (mask_stages if masks else [])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=["llff", "dtu"])
    p.add_argument("data_root")
    p.add_argument("out_root", nargs="?", default=None,
                   help="default: output/sparse_benchmark")  # fmt: skip
    p.add_argument("--n_views", type=int, default=int(env.get("N_VIEWS", 3)))
    p.add_argument("--iterations", type=int, default=int(env.get("ITERS", 10000)))
    p.add_argument("--seeds", type=int, nargs="+",
                   default=[int(s) for s in env.get("SEEDS", "0 1 2").split()])  # fmt: skip
    p.add_argument("--configs", nargs="+", default=env.get("CONFIGS", "vanilla preset").split(),
                   help="names (vanilla, preset, regseg, preset_regseg) or "
                   "name=flag,flag,...")  # fmt: skip
    p.add_argument("--gpus", default=None, help="e.g. 0,1 (default: CUDA_VISIBLE_DEVICES, "
                   "else every GPU nvidia-smi lists, else one CPU job)")  # fmt: skip
    p.add_argument("--work", default=env.get("WORK"), help="prepared scenes folder")
    p.add_argument("--masks", default=env.get("DTU_MASKS"), help="DTU: IDR mask root")
    p.add_argument("--scenes", nargs="+", default=None, help="only these scene names")
    p.add_argument("--overwrite", action="store_true", help="run again runs with results")
    p.add_argument("--dry_run", action="store_true", help="print the command lines only")
    a = p.parse_args(argv)
    try:
        configs = parse_variants(a.configs, KNOWN_CONFIGS)
    except ValueError as e:
        p.error(str(e))
    root = os.path.abspath(a.data_root)
    out_root = os.path.abspath(a.out_root or os.path.join(REPO, "output", "sparse_benchmark"))
    work = os.path.abspath(a.work or os.path.join(out_root, "work", a.dataset))
    py = sys.executable
    if a.dataset == "llff":
        found, skipped = discover_llff(root, work, a.n_views, py)
    else:
        found, skipped = discover_dtu(root, work, a.n_views, a.masks, py)
    if a.scenes:
        found = [s for s in found if s.name in a.scenes]
    for line in skipped:
        print(line, flush=True)
    if not found:
        print(f"error: no {a.dataset} scene under {root}", file=sys.stderr)
        return 1
    protocol = a.dataset
    slots = detect_slots(a.gpus)
    runs = [
        Run(src.work, src.name, v, flags, seed, protocol, a.n_views, a.iterations,
            os.path.join(out_root, a.dataset, src.name, v, f"s{seed}"))
        for src in found for v, flags in configs.items() for seed in a.seeds
    ]  # fmt: skip
    by_work = {s.work: s for s in found}
    print(f"{a.dataset}: {len(found)} scenes ({' '.join(s.name for s in found)}), configs "
          f"{' '.join(configs)}, seeds {' '.join(map(str, a.seeds))}, {a.n_views} views, "
          f"{a.iterations} iterations; {len(slots)} at a time on "
          f"{'GPU ' + ','.join(slots) if slots[0] is not None else 'the default device'}",
          flush=True)  # fmt: skip
    if a.dry_run:
        print(f"cd {shlex.quote(REPO)}")
        for src in found:
            for stage, cmd, done in scene_stages(src, a.n_views, protocol, py, uses_masks(configs)):
                print(f"# {src.name} {stage}" + (" (done, skipped)" if done else ""))
                print(shlex.join(cmd))
        for r in runs:
            done = not a.overwrite and read_metrics(r.model, r.iterations) is not None
            print(f"# {r.name} {r.variant} s{r.seed}" + (" (results exist, skipped)" if done
                                                          else ""))  # fmt: skip
            for _, cmd in r.commands(py):
                print(shlex.join(cmd))
        return 0

    def prepare(work_dir: str, slot: str | None):
        src = by_work[work_dir]
        for stage, cmd, done in scene_stages(src, a.n_views, protocol, py, uses_masks(configs)):
            if done:
                continue
            log = os.path.join(out_root, a.dataset, src.name, f"{stage}.log")
            code, sec = run_stage(cmd, log, slot_env(slot))
            if code != 0:
                print(f"FAILED {src.name} at {stage} (exit {code}): see {log}; next scene",
                      flush=True)  # fmt: skip
                return stage, log
            print(f"{src.name}: {stage} done in {sec:.0f} s", flush=True)
        return None

    execute(runs, slots, a.overwrite, prepare, progress_line)
    text = (
        f"## Sparse-view benchmark: {a.dataset.upper()}, {a.n_views} views "
        f"({datetime.date.today()})\n\n"
        f"Commit {git_commit()}, {gpu_names(runs)}; {a.iterations} iterations, seeds "
        f"{' '.join(map(str, a.seeds))} (cells: mean over seeds (min{DASH}max)); configs: "
        + "; ".join(f"{v} = `{' '.join(f) or 'train.py defaults'}`" for v, f in configs.items())
        + f".\nCommand: `python scripts/sparse_benchmark.py {shlex.join(sys.argv[1:])}`\n\n"
        f"{dataset_table(runs, out_root)}\n"
    )
    print("\n" + text, flush=True)
    os.makedirs(out_root, exist_ok=True)
    with open(os.path.join(out_root, f"{a.dataset}_results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_root, f"{a.dataset}_results.json"), "w") as f:
        json.dump([asdict(r) for r in runs], f, indent=1)
    return 0 if all(r.status == "ok" for r in runs) else 2


if __name__ == "__main__":
    sys.exit(main())
