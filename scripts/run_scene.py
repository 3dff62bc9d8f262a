"""Every stage of the pipeline on one scene folder, in order, each skipped when its outputs
are newer than its inputs (scripts/run_scene.sh is the shell entry point).

    python scripts/run_scene.py <scene> [-m MODEL] [--n_views N --split_protocol P]
        [--iterations I] [--no_sam2] [--depth_model DIR] [--force STAGE ...]
        [--done STAGE ...] [--dry_run]
        [-- <more train.py flags>]

Stages (each the project's own command line; the ones a scene cannot run are left out
with one line saying why):

====================  =====================================================  ===========
stage                 command                                                when
====================  =====================================================  ===========
convert               scripts/prepare_{llff,dtu,blender}.py --src S --out    LLFF, DTU or
                      <work>/<scene>_colmap (known poses -> COLMAP folder;   NeRF poses
                      every later stage reads that folder)
sfm                   colmap_match.py -s S (full SfM)                         no poses
colmap_views          colmap_match.py -s S --n_views N --split_protocol P     --n_views
masks                 extract_mask.py -s S --mode auto (SAM 2 with weights,   always
                      else the classical backend; --no_sam2: classical;
                      with --n_views, the training views only)
depth                 predepth.py -s S --depth_model DIR (Depth Pro)          --depth_model
mask_matching         python -m mask_matching -s S --n_views N                --n_views
mvs                   python -m mvs -s S --n_views N                          --n_views
alignment             python -m alignment -s S --n_views N --prior mvs|depth  --n_views
train                 train.py -s S -m M --eval [--n_views N --sparse_view]   always
render                render.py -m M --skip_train                             always
metrics               metrics.py -m M                                         always
features              python -m segmentation.features -s S (from masks/; the  always
                      training views only with --n_views)
segment               segment.py -m M                                         always
====================  =====================================================  ===========

A stage is done when ``<model>/stages/<stage>.done`` exists and is newer than every file
of its inputs (the images, and the outputs of the stages it reads); touching an input (or
re-running an upstream stage) re-runs what depends on it. Each stage logs to
``<model>/logs/<stage>.log``; the first failure stops the run with the stage's name and
its log. With ``--jobs K`` (default 3 where an NVIDIA GPU is, else 1) up to K stages whose
inputs are ready run at once: masks beside the stereo, mask matching beside the 2D features
and the training (which reads neither it nor the alignment unless its flags ask),
segmentation beside rendering. A scene folder that cannot be written (e.g. a read-only
data set) is copied to ``--work`` first.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from utils.general_utils import split_passthrough  # noqa: E402

POSE_FILES = ("poses_bounds.npy", "transforms.json", "transforms_train.json", "cameras.npz")


@dataclass
class Stage:
    name: str
    cmd: list[str]
    inputs: list[Path]  # files or folders whose files, when newer, make the stage re-run
    outputs: list[Path]  # must exist for the stage to count as done
    upstream: list[str] = field(default_factory=list)  # stages whose stamps are inputs too


class RunError(RuntimeError):
    """A one-line failure of the run (printed as ``error: ...``)."""


def newest_mtime(paths: list[Path]) -> float:
    """Latest modification time of the given files and of every file below the folders."""
    newest = 0.0
    for path in paths:
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for root, _, files in os.walk(path):
                for name in files:
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest


def stamp_path(model: Path, stage: str) -> Path:
    return model / "stages" / f"{stage}.done"


def is_done(stage: Stage, model: Path) -> bool:
    """Outputs present and the stamp newer than every input (upstream stamps included)."""
    stamp = stamp_path(model, stage.name)
    if not stamp.is_file() or not all(p.exists() for p in stage.outputs):
        return False
    inputs = stage.inputs + [stamp_path(model, u) for u in stage.upstream]
    return stamp.stat().st_mtime >= newest_mtime(inputs)


def convert_stage(args: argparse.Namespace, src: Path, work: Path) -> Stage | None:
    """The stage that turns a scene whose known poses are not a COLMAP model (LLFF
    poses_bounds.npy, DTU cameras.npz, NeRF/instant-ngp transforms) into a COLMAP scene
    folder under ``work`` (scripts/prepare_*.py), so that every COLMAP-based stage runs on
    it; None for a COLMAP scene or a folder of photos (full SfM)."""
    if (src / "sparse" / "0").is_dir():
        return None
    py, out = sys.executable, work / f"{src.name}_colmap"
    views = ["--n_views", str(args.n_views)] if args.n_views else []
    if (src / "poses_bounds.npy").exists():
        # LLFF's images_<k> folders are its downscaled copies: -i images_4 means factor 4.
        factor = re.fullmatch(r"images_(\d+)", args.images)
        cmd = [py, "scripts/prepare_llff.py", "--factor", factor[1] if factor else "1"]
    elif (src / "cameras.npz").exists():
        cmd = [py, "scripts/prepare_dtu.py"]
    elif (src / "transforms_train.json").exists():
        cmd = [py, "scripts/prepare_blender.py"]
    elif (src / "transforms.json").exists():
        cmd = [py, "scripts/prepare_blender.py", "--transforms", "transforms.json"]
    else:
        return None
    cmd += ["--src", str(src), "--out", str(out), *views, "--overwrite"]
    return Stage("convert", cmd, [src / args.images], [out / "sparse" / "0"])


def plan(args: argparse.Namespace, scene: Path, model: Path, train_extra: list[str],
         convert: Stage | None = None):  # fmt: skip
    """The stages to run, in order, and one line for each stage left out. With
    ``convert``, that stage comes first and every other stage reads the folder it writes."""
    py = sys.executable
    stages: list[Stage] = []
    skipped: list[str] = []
    images_dir = args.images
    if convert is not None:
        stages.append(convert)
        scene, images_dir = convert.outputs[0].parents[1], "images"
    s = ["-s", str(scene), "-i", images_dir]
    images = scene / images_dir
    n, proto = args.n_views, args.split_protocol
    views = ["--n_views", str(n), "--split_protocol", proto] if n else []
    # Without --n_views, the custom protocol still picks the views (the scene's split.json).
    train_views = views or (["--split_protocol", "custom"] if proto == "custom" else [])
    colmap_model = (scene / "sparse" / "0").is_dir() or convert is not None
    has_poses = colmap_model or any((scene / f).exists() for f in POSE_FILES)
    if not has_poses:
        stages.append(Stage("sfm", [py, "colmap_match.py", *s], [images], [scene / "sparse/0"]))
    colmap_views = scene / f"colmap_{n}views"
    sfm_up = ["convert"] if convert is not None else ["sfm"] if not has_poses else []
    colmap_ok = n and (colmap_model or not has_poses)
    if colmap_ok:
        stages.append(Stage("colmap_views", [py, "colmap_match.py", *s, *views, "--overwrite"],
                            [images], [colmap_views], sfm_up))  # fmt: skip
    elif n:
        skipped.append("colmap_views: the scene's poses are not a COLMAP model (sparse/0)")
    # A sparse-view run reads the masks and 2D features of its training views only.
    split = colmap_views / "split.json"
    only_train = ["--train_views_of", str(split)] if colmap_ok else []
    split_in = [split] if colmap_ok else []
    mask_cmd = [py, "extract_mask.py", *s, "--mode", "auto", *only_train]
    if args.no_sam2:
        mask_cmd += ["--backend", "classical"]
        print("[run_scene] masks: classical backend (--no_sam2)")
    stages.append(Stage("masks", mask_cmd, [images, *split_in], [scene / "masks"], sfm_up))
    if args.depth_model:
        stages.append(Stage("depth", [py, "predepth.py", *s, "--depth_model", args.depth_model],
                            [images], [scene / "depth_pro"]))  # fmt: skip
    else:
        skipped.append("depth: no Depth Pro weights given (--depth_model DIR): no depth prior")
    if colmap_ok:
        stages.append(Stage("mask_matching", [py, "-m", "mask_matching", *s, *views,
                                              "--overwrite"],
                            [], [scene / "mask_matching"], ["masks", "colmap_views"]))  # fmt: skip
        mvs_flags = shlex.split(args.mvs_args)
        mvs_cmd = [py, "-m", "mvs", *s, *views, "--overwrite", *mvs_flags]
        mvs_reads = ["colmap_views"] + (["masks"] if "--fill_segments" in mvs_flags else [])
        stages.append(Stage("mvs", mvs_cmd, [],
                            [colmap_views / "dense" / "points3D.ply", scene / "depth_mvs"],
                            mvs_reads))  # fmt: skip
        prior = "depth_pro" if args.depth_model else "mvs"
        aligned = [scene / "alignment" / "points3D.ply"]
        reads = ["masks", "mvs"] + (["depth"] if args.depth_model else [])
        alignment = Stage("alignment", [py, "-m", "alignment", *s, *views, "--prior", prior],
                          [], aligned, reads)  # fmt: skip
    train_cmd = [py, "train.py", *s, "-m", str(model), "--eval", *train_views]
    if args.iterations:
        it = str(args.iterations)
        train_cmd += ["--iterations", it, "--test_iterations", it, "--save_iterations", it]
    if n and colmap_ok:
        train_cmd.append("--sparse_view")
    train_cmd += train_extra
    # The alignment goes after the training in plan order (which is the order ready stages
    # start in) unless the training reads it: the training is on the critical path.
    aligned_first = colmap_ok and reads_for_training("alignment", train_extra)
    if aligned_first:
        stages.append(alignment)
    upstream = [st.name for st in stages if reads_for_training(st.name, train_extra)]
    stages.append(Stage("train", train_cmd, [images], [model / "point_cloud"], upstream))
    if colmap_ok and not aligned_first:
        stages.append(alignment)
    stages.append(Stage("render", [py, "render.py", "-m", str(model), "--skip_train"], [],
                        [model / "test"], ["train"]))  # fmt: skip
    stages.append(Stage("metrics", [py, "metrics.py", "-m", str(model)], [],
                        [model / "results.json"], ["render"]))  # fmt: skip
    if (REPO / "segment.py").is_file():
        stages.append(Stage("features", [py, "-m", "segmentation.features", *s, *only_train],
                            split_in, [scene / "features"], ["masks"]))  # fmt: skip
        seg = [py, "segment.py", "-m", str(model), *shlex.split(args.segment_args)]
        stages.append(Stage("segment", seg, [],
                            [model / "segments"], ["train", "features"]))  # fmt: skip
    else:
        skipped.append("segment: segment.py is not in this checkout yet")
    return stages, skipped


# train.py flags that read a stage's output which the default training does not read (the
# mask matching's: those of utils/mask_visibility.uses_maps, which needs torch to import).
TRAIN_READS_IF = {
    "alignment": ("--init aligned", "--init=aligned"),
    "mask_matching": ("--lambda_mask_vis", "--feature_field", "--lambda_segment_tv"),
}


def reads_for_training(stage: str, train_extra: list[str]) -> bool:
    """Whether train.py, with the flags ``train_extra``, reads the output of ``stage``:
    every stage before it but the alignment and the mask matching, which only ``--init
    aligned`` and the mask regularisation's flags read. So the training starts once the
    stereo is done, beside the slow mask matching, and a new mask matching does not make
    the model stale."""
    flags = TRAIN_READS_IF.get(stage)
    return flags is None or any(f in " ".join(train_extra) for f in flags)


def shared_data_roots() -> list[Path]:
    """Folders of reference data that stages must never write into (the tests' scenes)."""
    roots = [REPO.parent / "shared" / "data"]
    if os.environ.get("SEGSPLAT_DATA"):
        roots.append(Path(os.environ["SEGSPLAT_DATA"]))
    return [r.resolve() for r in roots]


def writable_scene(scene: Path, work: Path) -> Path:
    """``scene`` itself when it can be written and is not reference data, else a copy under
    ``work`` (made once)."""
    shared = any(scene.is_relative_to(root) for root in shared_data_roots())
    if os.access(scene, os.W_OK) and not shared:
        return scene
    copy = work / scene.name
    if not copy.is_dir():
        tmp = work / f".{scene.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(scene, tmp)
        os.replace(tmp, copy)
        print(f"[run_scene] {scene} is read-only or reference data: working on a copy in {copy}")
    return copy


def run_stage(stage: Stage, model: Path) -> float:
    """Run one stage, logging to <model>/logs/<stage>.log; returns its seconds."""
    log = model / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + " ".join(stage.cmd) + "\n")
        f.flush()
        code = subprocess.call(stage.cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RunError(f"stage {stage.name} failed (exit {code}) after {seconds:.1f} s: see {log}")
    stamp = stamp_path(model, stage.name)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{seconds:.2f}\n")
    return seconds


def stage_needs(stage: Stage, names: set[str]) -> set[str]:
    """The stages of this run that must finish before ``stage`` starts: its upstream, and
    the stage that makes the scene folder (convert or sfm) for every other stage."""
    makers = {"convert", "sfm"} & names
    return (set(stage.upstream) & names) | (set() if stage.name in makers else makers)


def run_stages(
    stages: list[Stage], model: Path, force: set[str], jobs: int = 1
) -> tuple[dict[str, float], str | None]:
    """Run ``stages`` (in plan order), up to ``jobs`` at once: a stage starts when the
    stages it needs have finished, and is skipped when it is then up to date. After a
    failure no stage starts; those running finish (nothing is left half-written). Returns
    the seconds of each stage run and the first failure's message (None when all ran)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    names = {st.name for st in stages}
    pending = list(stages)
    finished: set[str] = set()
    times: dict[str, float] = {}
    error: str | None = None
    running: dict = {}  # future -> stage
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            for stage in list(pending):
                if error or len(running) >= max(1, jobs):
                    break
                if stage_needs(stage, names) - finished:
                    continue
                pending.remove(stage)
                if stage.name not in force and is_done(stage, model):
                    print(f"[run_scene] {stage.name}: up to date", flush=True)
                    finished.add(stage.name)
                    continue
                print(f"[run_scene] {stage.name}: running (log: "
                      f"{model / 'logs' / stage.name}.log)", flush=True)  # fmt: skip
                running[pool.submit(run_stage, stage, model)] = stage
            if error and not running:
                break
            if not running:
                continue  # stages became up to date: look for ready ones again
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                stage = running.pop(fut)
                try:
                    times[stage.name] = fut.result()
                except RunError as exc:
                    error = error or str(exc)
                    continue
                finished.add(stage.name)
                print(f"[run_scene] {stage.name}: done in {times[stage.name]:.1f} s", flush=True)
    return times, error


def main(argv: list[str] | None = None) -> int:
    own, train_extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scene", help="scene folder (images/, or a COLMAP / LLFF / DTU scene)")
    p.add_argument("-m", "--model", default="", help="model folder (default output/<scene>)")
    p.add_argument("-i", "--images", default="images", help="image subfolder")
    p.add_argument("--n_views", type=int, default=0, help="training views (0: 3DGS --eval)")
    p.add_argument("--split_protocol", default="llff",
                   choices=["llff", "dtu", "mip360", "custom"])  # fmt: skip
    p.add_argument("--iterations", type=int, default=0, help="training iterations (0: 30k)")
    p.add_argument("--no_sam2", action="store_true", help="classical masks even with weights")
    p.add_argument("--depth_model", default="", help="Depth Pro weights folder (predepth.py)")
    p.add_argument("--segment_args", default="", help="more segment.py flags, one string")
    p.add_argument("--mvs_args", default="",
                   help="more python -m mvs flags, one string ('--max_planes 96')")  # fmt: skip
    p.add_argument("--work", default=str(REPO / "output" / "scenes"),
                   help="where a read-only scene is copied")  # fmt: skip
    p.add_argument("--force", nargs="*", default=[], help="stages to run even when done")
    p.add_argument("--done", nargs="*", default=[],
                   help="stages already run elsewhere (e.g. colmap_views where pycolmap is): "
                   "their outputs must be present; they are stamped, not run")  # fmt: skip
    p.add_argument("--jobs", type=int, default=0,
                   help="stages run at once when their inputs are ready (0: 3 with an NVIDIA "
                   "GPU, else 1)")  # fmt: skip
    p.add_argument("--dry_run", action="store_true", help="print the plan only")
    args = p.parse_args(own)
    src = Path(args.scene).resolve()
    if not (src / args.images).is_dir():
        print(f"error: {src / args.images}: no image folder; put the photos there or pass -i",
              file=sys.stderr)  # fmt: skip
        return 1
    convert = convert_stage(args, src, Path(args.work).resolve())
    # A converted scene is written under --work: the source itself is only read.
    scene = src if args.dry_run or convert else writable_scene(src, Path(args.work))
    model = Path(args.model or REPO / "output" / src.name).resolve()
    stages, skipped = plan(args, scene, model, train_extra, convert)
    names = {st.name for st in stages}
    for flag, given in (("--force", args.force), ("--done", args.done)):
        if set(given) - names:
            print(f"error: {flag} {sorted(set(given) - names)}: not stages of this run",
                  file=sys.stderr)  # fmt: skip
            return 1
    for line in skipped:
        print(f"[run_scene] off: {line}")
    todo = []
    for stage in stages:
        if stage.name in args.done:
            missing = [str(p) for p in stage.outputs if not p.exists()]
            if missing:
                print(f"error: --done {stage.name}: its outputs are missing: "
                      f"{', '.join(missing)}", file=sys.stderr)  # fmt: skip
                return 1
            if not args.dry_run:
                stamp = stamp_path(model, stage.name)
                stamp.parent.mkdir(parents=True, exist_ok=True)
                stamp.write_text("done elsewhere\n")
            print(f"[run_scene] {stage.name}: done elsewhere (--done)")
        elif args.dry_run:
            if stage.name not in args.force and is_done(stage, model):
                print(f"[run_scene] {stage.name}: up to date")
            else:
                print(f"[run_scene] {stage.name}: would run {' '.join(stage.cmd)}")
        else:
            todo.append(stage)
    jobs = args.jobs or (3 if shutil.which("nvidia-smi") else 1)
    times, error = run_stages(todo, model, set(args.force), jobs)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if times:
        print("[run_scene] seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    print(f"[run_scene] model: {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
