"""Sparse-view quality ablation: init, DropGaussian, MVS depth and the preset over seeds.

    python bench/sparse_quality.py --data data_local [--scenes fern dtu_scan24] [--n_views 3]
        [--iterations 10000] [--seeds 0 1 2] [--variants name=flag,flag ...] [--jobs 4]
        [--out output/sparse_quality] [--results docs/RESULTS.md] [--dry_run] [--overwrite]

Scenes are prepared folders under --data (scripts/prepare_*.py, then colmap_match.py with
--n_views N; the dense variants need the MVS stage too: python -m mvs -s <scene> --n_views N
--split_protocol P). A name containing 'dtu' uses the DTU protocol, any other LLFF
(--protocol name=proto overrides). Default variants:
  vanilla_sfm     --init sfm                      train-only COLMAP points
  vanilla_random  --init random
  dense           --init dense                    colmap_<N>views/dense/points3D.ply
  dense_depth     --init dense --depth_source mvs --lambda_depth_l1 0.1
  dense_drop      --init dense --drop_rate 0.2 --drop_schedule linear   DropGaussian as released
  dense_sched     --init dense + FSGS/DropGaussian's optimisation settings (lr decay over 10k,
                  densification to 10k at grad 0.0005, opacity lr 0.05)
  dense_nodensify --init dense --densify_until_iter 0     the preset of sessions 7 to 13
  preset          --sparse_view                   arguments.SPARSE_VIEW_PRESET
Named, not run by default (they need <scene>/mask_matching/: extract_mask.py, then python -m
mask_matching): regseg, regseg_random, preset_regseg: RegSegField's regularisation
(scripts/sparse_benchmark.py REGSEG_FLAGS) on the SfM points, random points, the preset;
preset_regseg_half: the last with the feature field at half resolution.
Each (scene, variant, seed) is train.py -s <scene> -m <out>/<scene>/<variant>/s<seed> --eval
--n_views N --split_protocol P --iterations I --test_iterations I --save_iterations I
--seed S --quiet <flags>, then render.py --skip_train and metrics.py; each stage logs to
<stage>.log in the model folder. A run whose results.json exists is not run again
(--overwrite: it is), so a run cut short can go on. --jobs K trains K processes at once on
the one GPU: less device time, but the timings are then not those of a run alone (the
table header says so). Processes take turns on the GPU, so the gain is modest (H100,
session 13: scan24's preset, 16 s alone, took 87-101 s each with 9 at a time, 1.45x the
throughput; the preset with RegSegField's terms, 106 s alone, 158 s each with 2 at a
time, 1.34x): size a call by the runs' times alone.

Prints one line per finished run and a markdown table (rows scene x variant: PSNR, SSIM,
LPIPS when metrics.py had its weights, mean (min-max) over seeds; train.py wall time and
loop time; Gaussians; PSNR per seed; a failed run names its stage and log), appends it to
--results under a heading with the date, commit, GPU and command, and writes every number
to <out>/sparse_quality.json (--json).
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from dataclasses import asdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scripts.sparse_benchmark import (  # noqa: E402
    DASH,
    MASK_VIS_FLAGS,
    REGSEG_FLAGS,
    Run,
    execute,
    git_commit,
    gpu_names,
    parse_variant,
    parse_variants,
    progress_line,
    read_metrics,
    variant_table,
)

DEFAULT_VARIANTS = [
    "vanilla_sfm=--init,sfm",
    "vanilla_random=--init,random",
    "dense=--init,dense",
    "dense_depth=--init,dense,--depth_source,mvs,--lambda_depth_l1,0.1",
    "dense_drop=--init,dense,--drop_rate,0.2,--drop_schedule,linear",
    # the sparse-view optimisation settings of FSGS / DropGaussian's release
    "dense_sched=--init,dense,--position_lr_max_steps,10000,--densify_until_iter,10000,"
    "--densify_grad_threshold,0.0005,--opacity_lr,0.05",
    # the preset without its binocular term: what that term buys
    "dense_nodensify=--init,dense,--densify_until_iter,0",
    "preset=--sparse_view",  # arguments.SPARSE_VIEW_PRESET
]
# name -> flags; also RegSegField's regularisation on the SfM points, on random points and
# on the preset (it needs <scene>/mask_matching/ from python -m mask_matching).
NAMED_FLAGS = {
    **dict(parse_variant(v) for v in DEFAULT_VARIANTS),
    "maskvis": ["--init", "sfm", *MASK_VIS_FLAGS],  # the mask-visibility loss alone
    "maskvis_random": ["--init", "random", *MASK_VIS_FLAGS],
    "preset_maskvis": ["--sparse_view", *MASK_VIS_FLAGS],
    "regseg": ["--init", "sfm", *REGSEG_FLAGS],
    "regseg_random": ["--init", "random", *REGSEG_FLAGS],
    "preset_regseg": ["--sparse_view", *REGSEG_FLAGS],
    "preset_regseg_half": ["--sparse_view", *REGSEG_FLAGS, "--group_downscale", "2"],
}


def scene_protocol(name: str, overrides: dict[str, str]) -> str:
    return overrides.get(name, "dtu" if "dtu" in name.lower() else "llff")


def parse_protocols(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, proto = item.partition("=")
        if not sep or proto not in ("llff", "dtu", "mip360", "custom"):
            raise ValueError(f"--protocol {item!r}: give name=llff|dtu|mip360|custom")
        out[name] = proto
    return out


def build_runs(args, variants: dict[str, list[str]], protocols: dict[str, str]) -> list[Run]:
    return [
        Run(
            os.path.join(args.data, scene), scene, name, flags, seed,
            scene_protocol(scene, protocols), args.n_views, args.iterations,
            os.path.join(args.out, scene, name, f"s{seed}"),
        )
        for scene in args.scenes for name, flags in variants.items() for seed in args.seeds
    ]  # fmt: skip


def missing_inputs(runs: list[Run]) -> list[str]:
    """One line per scene folder or MVS output that a run will need and that is missing."""
    lines = []
    for scene in dict.fromkeys(r.scene for r in runs):
        rs = [r for r in runs if r.scene == scene]
        r0 = rs[0]
        if not os.path.isdir(scene):
            lines.append(f"warning: {scene} missing (prepare it with scripts/prepare_*.py)")
            continue
        views = os.path.join(scene, f"colmap_{r0.n_views}views")
        if not os.path.isdir(views):
            lines.append(f"warning: {views} missing: python colmap_match.py -s {scene} "
                         f"--n_views {r0.n_views} --split_protocol {r0.protocol}")  # fmt: skip
        needs_mvs = any(
            ("dense" in r.flags and "--init" in r.flags) or "mvs" in r.flags for r in rs
        )
        if needs_mvs and not os.path.isfile(os.path.join(views, "dense", "points3D.ply")):
            lines.append(f"warning: {views}/dense/points3D.ply missing (dense variants will "
                         f"fail): python -m mvs -s {scene} --n_views {r0.n_views} "
                         f"--split_protocol {r0.protocol}")  # fmt: skip
    return lines


def report(runs: list[Run], args, variants: dict[str, list[str]], argv: list[str]) -> str:
    timing = (
        "train s: whole train.py process (loop s in brackets), one run at a time"
        if args.jobs == 1
        else f"train s: whole train.py process (loop s in brackets) with {args.jobs} runs "
        "sharing the GPU, so not comparable with single-run timings"
    )
    flags = "; ".join(f"{v} = `{' '.join(f) or 'train.py defaults'}`" for v, f in variants.items())
    return (
        f"\n## Sparse-view quality ablation ({datetime.date.today()}, {gpu_names(runs)})\n\n"
        f"Commit {git_commit()}; {args.n_views} views, {args.iterations} iterations, seeds "
        f"{' '.join(map(str, args.seeds))}, jobs {args.jobs}. Cells: mean over seeds "
        f"(min{DASH}max); {timing}. Variants: {flags}.\n"
        f"Command: `python bench/sparse_quality.py {shlex.join(argv)}`\n\n"
        f"{variant_table(runs, args.out)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder holding the prepared scene folders")
    p.add_argument("--scenes", nargs="+", default=["fern", "dtu_scan24"])
    p.add_argument("--protocol", nargs="+", default=[], help="name=llff|dtu|mip360|custom")
    p.add_argument("--n_views", type=int, default=3)
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                   help="name=flag,flag,... or a default variant's name")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="training processes at once (one GPU)")
    p.add_argument("--out", default=os.path.join(REPO, "output", "sparse_quality"))
    p.add_argument("--results", default=os.path.join(REPO, "docs", "RESULTS.md"))
    p.add_argument("--json", default=None, help="default <out>/sparse_quality.json")
    p.add_argument("--log", default=None, help="progress log (default <out>/log.txt)")
    p.add_argument("--overwrite", action="store_true", help="run again runs with results")
    p.add_argument("--dry_run", action="store_true", help="print the command lines only")
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error("--jobs must be at least 1")
    try:
        variants = parse_variants(a.variants, NAMED_FLAGS)
        protocols = parse_protocols(a.protocol)
    except ValueError as e:
        p.error(str(e))
    a.data, a.out = os.path.abspath(a.data), os.path.abspath(a.out)
    runs = build_runs(a, variants, protocols)
    for line in missing_inputs(runs):
        print(line, flush=True)
    if a.dry_run:
        print(f"cd {shlex.quote(REPO)}")
        for r in runs:
            done = not a.overwrite and read_metrics(r.model, r.iterations) is not None
            print(f"# {r.name} {r.variant} s{r.seed} ({r.protocol})"
                  + (" (results exist, skipped)" if done else ""))  # fmt: skip
            for _, cmd in r.commands():
                print(shlex.join(cmd))
        return 0
    os.makedirs(a.out, exist_ok=True)
    log_path = a.log or os.path.join(a.out, "log.txt")
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"# {datetime.datetime.now():%Y-%m-%d %H:%M:%S} "
                  f"bench/sparse_quality.py {shlex.join(argv)}\n")  # fmt: skip

        def progress(run: Run, k: int, n: int) -> None:
            progress_line(run, k, n)
            log.write(json.dumps(asdict(run)) + "\n")
            log.flush()

        print(f"{len(runs)} runs, {a.jobs} at a time", flush=True)
        execute(runs, [None] * a.jobs, a.overwrite, progress=progress)
    text = report(runs, a, variants, argv)
    print(text, flush=True)
    if a.results:
        with open(a.results, "a") as f:
            f.write(text)
    meta = {
        "date": str(datetime.date.today()),
        "commit": git_commit(),
        "gpu": gpu_names(runs),
        "command": "python bench/sparse_quality.py " + shlex.join(argv),
        "jobs": a.jobs,
        "n_views": a.n_views,
        "iterations": a.iterations,
        "seeds": a.seeds,
        "variants": variants,
    }
    json_path = a.json or os.path.join(a.out, "sparse_quality.json")
    with open(json_path, "w") as f:
        json.dump({"meta": meta, "runs": [asdict(r) for r in runs]}, f, indent=1)
    return 0 if all(r.status == "ok" for r in runs) else 2


if __name__ == "__main__":
    sys.exit(main())
