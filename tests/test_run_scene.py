"""scripts/run_scene.py: the skip-when-done rule, and whole runs on the CPU (torch backend,
tiny settings): the demo scene with every stage that needs no weights, and a folder of
photos without poses (../shared/data/hloc_sacre_coeur) through full SfM to a model."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from conftest import require_scene

from scripts import run_scene
from scripts.make_demo_scene import make_demo_scene

TINY = ["--iterations", "20", "--segment_args", "--k 3 --feature_iters 5 --skip_train_renders"]
TRAIN = ["--", "--backend", "torch", "--data_device", "cpu"]


def test_a_stage_is_done_until_an_input_or_upstream_stage_changes(tmp_path):
    model, data = tmp_path / "model", tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("x")
    out = tmp_path / "out"
    stage = run_scene.Stage("b", ["true"], [data], [out], upstream=["a"])
    assert not run_scene.is_done(stage, model)  # never ran
    out.mkdir()
    stamp = run_scene.stamp_path(model, "b")
    stamp.parent.mkdir(parents=True)
    stamp.write_text("1")
    assert run_scene.is_done(stage, model)
    future = time.time() + 5
    os.utime(data / "a.txt", (future, future))  # an input changed
    assert not run_scene.is_done(stage, model)
    os.utime(stamp, (future + 1, future + 1))
    assert run_scene.is_done(stage, model)
    upstream = run_scene.stamp_path(model, "a")
    upstream.write_text("1")
    os.utime(upstream, (future + 2, future + 2))  # the stage it reads ran again
    assert not run_scene.is_done(stage, model)
    shutil.rmtree(out)
    os.utime(upstream, (0, 0))
    assert not run_scene.is_done(stage, model)  # an output is missing


def test_demo_scene_end_to_end_then_skip_and_rerun(tmp_path, capsys):
    scene = tmp_path / "scene"
    make_demo_scene(scene, width=64, height=48, n_train=4, n_test=3, n_points=800,
                    supersample=1, progress=False)  # fmt: skip
    model = tmp_path / "model"
    args = [str(scene), "-m", str(model), "--split_protocol", "custom", *TINY]
    assert run_scene.main(args + TRAIN) == 0
    out = capsys.readouterr().out
    for stage in ("masks", "train", "render", "metrics", "features", "segment"):
        assert f"[run_scene] {stage}: done" in out, stage
    assert "off: depth: no Depth Pro weights" in out
    assert (model / "results.json").is_file() and (model / "segments" / "labels.npy").is_file()
    assert (model / "logs" / "train.log").is_file()
    # A second run finds everything up to date.
    assert run_scene.main(args + ["--dry_run"] + TRAIN) == 0
    out = capsys.readouterr().out
    assert "would run" not in out and out.count(": up to date") == 6
    # Touching one image re-runs its consumers, and only them.
    image = sorted((scene / "images").iterdir())[0]
    future = time.time() + 5
    os.utime(image, (future, future))
    assert run_scene.main(args + ["--dry_run"] + TRAIN) == 0
    out = capsys.readouterr().out
    assert "[run_scene] masks: would run" in out and "[run_scene] train: would run" in out


def test_a_failing_stage_stops_the_run_with_its_log(tmp_path, capsys):
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)  # no photos: full SfM fails
    model = tmp_path / "model"
    assert run_scene.main([str(scene), "-m", str(model), *TINY]) == 1
    err = capsys.readouterr().err
    assert "stage sfm failed" in err and str(model / "logs" / "sfm.log") in err
    assert err.count("\n") == 1


def test_photos_without_poses_to_a_trained_model(tmp_path, capsys):
    photos = require_scene("hloc_sacre_coeur")
    model = tmp_path / "model"
    args = [str(photos), "-m", str(model), "--work", str(tmp_path / "work"), *TINY, *TRAIN,
            "-r", "8"]  # fmt: skip
    assert run_scene.main(args) == 0
    out = capsys.readouterr().out
    assert "[run_scene] sfm: done" in out and "reference data: working on a copy" in out
    assert not (Path(photos) / "sparse").exists()  # the shared data stays untouched
    assert (model / "point_cloud" / "iteration_20" / "point_cloud.ply").is_file()
    assert (model / "results.json").is_file()


def test_known_poses_in_other_formats_are_converted_first(tmp_path, capsys):
    """An LLFF folder (poses_bounds.npy, images_4/) gets a convert stage into --work, and
    every COLMAP-based stage then reads the converted folder; a COLMAP folder gets none."""
    llff = tmp_path / "llff"
    (llff / "images_4").mkdir(parents=True)
    (llff / "poses_bounds.npy").write_bytes(b"")
    work = tmp_path / "work"
    args = [str(llff), "-m", str(tmp_path / "m"), "-i", "images_4", "--n_views", "12",
            "--work", str(work), "--dry_run"]  # fmt: skip
    assert run_scene.main(args) == 0
    out = capsys.readouterr().out
    converted = work / "llff_colmap"
    assert f"prepare_llff.py --factor 4 --src {llff} --out {converted} --n_views 12" in out
    lines = [line for line in out.splitlines() if "would run" in line]
    assert lines[0].startswith("[run_scene] convert:")
    for stage in ("colmap_views", "mask_matching", "mvs", "alignment", "train"):
        (line,) = [x for x in lines if x.startswith(f"[run_scene] {stage}:")]
        assert f"-s {converted} -i images" in line, line
    colmap = tmp_path / "colmap"
    (colmap / "sparse" / "0").mkdir(parents=True)
    (colmap / "images").mkdir()
    assert run_scene.main([str(colmap), "-m", str(tmp_path / "m2"), "--dry_run"]) == 0
    assert "convert" not in capsys.readouterr().out


def test_stages_done_elsewhere_are_stamped_not_run(tmp_path, capsys):
    """--done STAGE: a stage run on another machine (its outputs present) is stamped and
    skipped; missing outputs or an unknown stage are a one-line error."""
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    (scene / "sparse" / "0").mkdir(parents=True)
    model = tmp_path / "model"
    base = [str(scene), "-m", str(model), "--n_views", "3", "--dry_run"]
    assert run_scene.main(base + ["--done", "nothing"]) == 1
    assert "--done ['nothing']: not stages of this run" in capsys.readouterr().err
    args = [str(scene), "-m", str(model), "--n_views", "3", "--done", "colmap_views", "--force",
            "masks"]  # fmt: skip
    # colmap_views' output is missing: refused before anything runs
    assert run_scene.main(args) == 1
    assert "--done colmap_views: its outputs are missing" in capsys.readouterr().err
    assert not run_scene.stamp_path(model, "colmap_views").exists()
    # with its outputs present it is stamped; the next stage (no photos) then fails
    (scene / "colmap_3views").mkdir()
    assert run_scene.main(args) == 1
    out, err = capsys.readouterr()
    assert "colmap_views: done elsewhere (--done)" in out and "stage masks failed" in err
    assert run_scene.stamp_path(model, "colmap_views").read_text() == "done elsewhere\n"


def test_ready_stages_run_side_by_side_and_a_failure_starts_nothing_new(tmp_path):
    """Stage a succeeds only if b starts while a runs: so with --jobs 2 both are running at
    once, and c, which needs them, waits for both; with --jobs 1 the same plan runs one
    stage at a time (a fails). After a failure no stage starts."""

    def plan(d: Path) -> list:
        d.mkdir()
        a, b, c = d / "a", d / "b", d / "c"
        scripts = {
            "a": f"touch {a}.start; sleep 1; test -e {b}.start && touch {a}",
            "b": f"touch {b}.start; sleep 1; touch {b}",
            "c": f"test -e {a} && test -e {b} && touch {c}",
        }
        ups = {"a": [], "b": [], "c": ["a", "b"]}
        return [run_scene.Stage(n, ["sh", "-c", scripts[n]], [], [d / n], ups[n]) for n in "abc"]

    times, error = run_scene.run_stages(plan(tmp_path / "two"), tmp_path / "m2", set(), jobs=2)
    assert error is None and set(times) == {"a", "b", "c"}
    times, error = run_scene.run_stages(plan(tmp_path / "one"), tmp_path / "m1", set(), jobs=1)
    assert error.startswith("stage a failed") and "logs/a.log" in error
    # b does not need a, but nothing starts after the failure; c never runs.
    assert times == {} and not (tmp_path / "one" / "b.start").exists()


def test_training_waits_only_for_the_stages_it_reads(tmp_path):
    """The sparse-view training reads the stereo, not the mask matching or the alignment
    (unless its flags ask), so it starts beside them and goes before the alignment."""
    from argparse import Namespace

    scene = tmp_path / "scene"
    (scene / "sparse" / "0").mkdir(parents=True)
    args = Namespace(images="images", n_views=3, split_protocol="llff", no_sam2=True,
                     depth_model="", mvs_args="", iterations=0, segment_args="")  # fmt: skip

    def train_stage(extra: list[str]) -> tuple[list[str], list[str]]:
        stages, _ = run_scene.plan(args, scene, tmp_path / "model", extra)
        names = [st.name for st in stages]
        return names, next(st for st in stages if st.name == "train").upstream

    names, upstream = train_stage([])
    assert upstream == ["colmap_views", "masks", "mvs"]
    assert names.index("train") < names.index("alignment")
    names, upstream = train_stage(["--init", "aligned", "--lambda_mask_vis", "0.05"])
    assert upstream == ["colmap_views", "masks", "mask_matching", "mvs", "alignment"]
    assert names.index("alignment") < names.index("train")
