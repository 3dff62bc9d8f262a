"""scripts/sparse_benchmark.py (run_llff.sh / run_dtu.sh) and bench/sparse_quality.py:
variant parsing, tables from hand-made model folders, scene discovery, dry runs, and the
job pool with stand-in commands (no training)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from scripts import sparse_benchmark as sb

_spec = importlib.util.spec_from_file_location(
    "sparse_quality", sb.REPO + "/bench/sparse_quality.py"
)
sq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sq)


def make_run(tmp_path, scene="fern", variant="v", seed=0, iterations=100) -> sb.Run:
    model = tmp_path / scene / variant / f"s{seed}"
    return sb.Run(str(tmp_path / "data" / scene), scene, variant, [], seed, "llff", 3,
                  iterations, str(model))  # fmt: skip


def write_model(run: sb.Run, psnr=None, ssim=0.7, lpips=None, wall=30.0, loop=20.0, n=1000):
    """A finished model folder as train.py, the runner and metrics.py leave it."""
    import os

    os.makedirs(run.model, exist_ok=True)
    vals = {"SSIM": ssim, "PSNR": psnr}
    if lpips is not None:
        vals["LPIPS"] = lpips
    with open(os.path.join(run.model, "results.json"), "w") as f:
        json.dump({"ours_7000": {"PSNR": 1.0}, f"ours_{run.iterations}": vals}, f)
    with open(os.path.join(run.model, "training_summary.json"), "w") as f:
        json.dump({"loop_seconds": loop, "num_gaussians": n, "device": "Test GPU"}, f)
    with open(os.path.join(run.model, "bench_run.json"), "w") as f:
        json.dump({"train_wall_s": wall}, f)


# ----------------------------------------------------------------------------- variants


def test_parse_variants():
    known = {"vanilla": [], "preset": ["--sparse_view"]}
    v = sb.parse_variants(
        ["vanilla", "dense_depth=--init,dense,--depth_source,mvs,--lambda_depth_l1,0.1",
         "x=--drop_rate 0.2", "plain="], known)  # fmt: skip
    assert v == {
        "vanilla": [],
        "dense_depth": ["--init", "dense", "--depth_source", "mvs", "--lambda_depth_l1", "0.1"],
        "x": ["--drop_rate", "0.2"],
        "plain": [],
    }
    # CONFIGS="vanilla preset" arrives as one item when quoted
    assert sb.parse_variants(["vanilla preset"], known) == known
    with pytest.raises(ValueError, match="unknown|name=flag"):
        sb.parse_variants(["nope"], known)
    with pytest.raises(ValueError, match="twice"):
        sb.parse_variants(["a=--x", "a=--y"], known)
    with pytest.raises(ValueError, match="name must be"):
        sb.parse_variant("a/b=--x")
    # the bench's defaults are usable by name
    assert sq.NAMED_FLAGS["dense_drop"] == [
        "--init",
        "dense",
        "--drop_rate",
        "0.2",
        "--drop_schedule",
        "linear",
    ]
    assert sq.NAMED_FLAGS["preset"] == ["--sparse_view"]
    assert sb.parse_variants(["preset"], sq.NAMED_FLAGS) == {"preset": ["--sparse_view"]}


def test_scene_protocol():
    assert sq.scene_protocol("dtu_scan24", {}) == "dtu"
    assert sq.scene_protocol("fern", {}) == "llff"
    assert sq.scene_protocol("fern", sq.parse_protocols(["fern=mip360"])) == "mip360"
    with pytest.raises(ValueError):
        sq.parse_protocols(["fern"])


# ----------------------------------------------------------------------------- tables


def test_variant_table_means_ranges_and_failures(tmp_path):
    runs = []
    for seed, psnr, lp in ((0, 20.0, 0.30), (1, 21.0, 0.20), (2, 22.5, 0.25)):
        r = make_run(tmp_path, variant="dense", seed=seed)
        write_model(r, psnr=psnr, ssim=0.6 + seed / 10, lpips=lp, wall=30 + seed, n=1000 * seed)
        runs.append(r)
    ok2 = []
    for seed in (0, 1):
        r = make_run(tmp_path, variant="drop", seed=seed)
        ok2.append(r)
    write_model(ok2[0], psnr=19.0)
    failed = make_run(tmp_path, variant="bad", seed=0)
    failed.status, failed.stage, failed.log = "failed", "train", failed.model + "/train.log"
    ok2[1].status, ok2[1].stage, ok2[1].log = "failed", "render", ok2[1].model + "/render.log"
    for r in runs + ok2[:1]:
        assert sb.collect(r)
    assert runs[0].metrics == {"PSNR": 20.0, "SSIM": 0.6, "LPIPS": 0.3}  # ours_100, not 7000
    assert runs[2].train_wall_s == 32 and runs[2].loop_s == 20.0 and runs[2].gaussians == 2000
    text = sb.variant_table(runs + ok2 + [failed], rel=str(tmp_path))
    lines = text.splitlines()
    assert "LPIPS mean" in lines[0] and "PSNR per seed" in lines[0]
    dense = next(line for line in lines if "| dense |" in line)
    assert "| 21.17 (20.00\u201322.50) |" in dense
    assert "| 0.7000 (0.6000\u20130.8000) |" in dense
    assert "| 0.2500 (0.2000\u20130.3000) |" in dense
    assert "| 31.0 (20.0) | 1000 |" in dense
    assert "s0 20.00, s1 21.00, s2 22.50" in dense
    drop = next(line for line in lines if "| drop |" in line)
    assert "| 19.00 [1/2 seeds] |" in drop and "s1 failed" in drop
    bad = next(line for line in lines if "| bad |" in line)
    assert "failed at train: see fern/bad/s0/train.log" in bad


def test_variant_table_without_lpips(tmp_path):
    r = make_run(tmp_path)
    write_model(r, psnr=18.0)
    assert sb.collect(r)
    # results of another iteration count do not make a run done
    assert sb.read_metrics(r.model, 7000) == {"PSNR": 1.0}
    assert sb.read_metrics(r.model, 30000) is None
    assert "LPIPS" not in sb.variant_table([r])


def test_dataset_table_mean_row(tmp_path):
    runs = []
    for scene, base in (("fern", 20.0), ("trex", 22.0)):
        for v in ("vanilla", "preset"):
            for seed in (0, 1):
                r = make_run(tmp_path, scene=scene, variant=v, seed=seed)
                write_model(r, psnr=base + seed + (1 if v == "preset" else 0), ssim=0.5)
                assert sb.collect(r)
                runs.append(r)
    broken = make_run(tmp_path, scene="room", variant="vanilla")
    broken.status, broken.stage, broken.log = "failed", "colmap", str(tmp_path / "room/colmap.log")
    broken2 = make_run(tmp_path, scene="room", variant="preset")
    broken2.status, broken2.stage, broken2.log = broken.status, broken.stage, broken.log
    text = sb.dataset_table(runs + [broken, broken2], rel=str(tmp_path))
    lines = text.splitlines()
    assert lines[0] == "| scene | vanilla PSNR | vanilla SSIM | preset PSNR | preset SSIM |"
    assert lines[2].startswith("| fern | 20.50 (20.00\u201321.00) | 0.5000 (0.5000\u20130.5000) |")
    assert "| room | failed at colmap: see room/colmap.log |" in text
    # mean of the scene means (fern 20.5, trex 22.5); range over seeds of the all-scene mean;
    # room has no result, so the mean says how many scenes it covers
    mean = lines[-1]
    assert mean.startswith("| **mean** | 21.50 [2/3 scenes] |")
    two = sb.dataset_table(runs)
    assert two.splitlines()[-1].startswith("| **mean** | 21.50 (21.00\u201322.00) | 0.5000 (")


# ----------------------------------------------------------------------------- dispatcher


def test_llff_discovery_skip_lines_and_dry_run(tmp_path, capsys):
    root = tmp_path / "llff"
    for name in ("fern", "trex"):
        (root / name).mkdir(parents=True)
        (root / name / "poses_bounds.npy").write_bytes(b"")
    (root / "horns").mkdir()  # no poses_bounds.npy: skipped too
    out = tmp_path / "out"
    rc = sb.main(["llff", str(root), str(out), "--dry_run", "--gpus", "0,1", "--seeds", "0",
                  "7", "--configs", "vanilla", "drop=--drop_rate,0.1"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    skips = [line for line in text.splitlines() if line.startswith("skip ")]
    assert [s.split()[1].rstrip(":") for s in skips] == [
        "flower", "fortress", "horns", "leaves", "orchids", "room"]  # fmt: skip
    assert "2 scenes (fern trex)" in text and "2 at a time on GPU 0,1" in text
    work = out / "work" / "llff" / "fern"
    assert f"scripts/prepare_llff.py --src {root / 'fern'} --out {work} --factor 8" in text
    assert f"colmap_match.py -s {work} --n_views 3 --split_protocol llff" in text
    assert f"-m mvs -s {work} --n_views 3 --split_protocol llff" in text
    model = out / "llff" / "trex" / "drop" / "s7"
    assert (f"train.py -s {out / 'work' / 'llff' / 'trex'} -m {model} --eval --n_views 3 "
            "--split_protocol llff --iterations 10000 --test_iterations 10000 "
            "--save_iterations 10000 --seed 7 --quiet --drop_rate 0.1") in text  # fmt: skip
    assert f"render.py -m {model} --skip_train" in text and f"metrics.py -m {model}" in text
    assert text.count("train.py ") == 2 * 2 * 2
    assert not out.exists()  # a dry run writes nothing


def test_dispatcher_env_defaults_and_done_stages(tmp_path, capsys, monkeypatch):
    root = tmp_path / "llff"
    (root / "fern").mkdir(parents=True)
    (root / "fern" / "poses_bounds.npy").write_bytes(b"")
    work = tmp_path / "work"
    (work / "fern" / "sparse" / "0").mkdir(parents=True)
    (work / "fern" / "colmap_2views" / "sparse" / "0").mkdir(parents=True)
    monkeypatch.setenv("N_VIEWS", "2")
    monkeypatch.setenv("ITERS", "500")
    monkeypatch.setenv("SEEDS", "3")
    monkeypatch.setenv("CONFIGS", "preset")
    monkeypatch.setenv("WORK", str(work))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sb.main(["llff", str(root), str(tmp_path / "out"), "--dry_run"]) == 0
    text = capsys.readouterr().out
    assert "# fern prepare (done, skipped)" in text and "# fern colmap (done, skipped)" in text
    assert "# fern mvs\n" in text
    assert "--iterations 500" in text and "--seed 3 --quiet --sparse_view" in text
    assert "1 at a time on the default device" in text


def test_dtu_discovery_both_layouts(tmp_path, capsys):
    root = tmp_path / "dtu"
    (root / "scan8" / "image").mkdir(parents=True)  # IDR layout
    (root / "scan8" / "cameras.npz").write_bytes(b"")
    (root / "Rectified" / "scan21_train").mkdir(parents=True)  # DTU release layout
    (root / "Calibration" / "cal18").mkdir(parents=True)
    (root / "idrmasks" / "scan21" / "mask").mkdir(parents=True)
    found, skipped = sb.discover_dtu(str(root), str(tmp_path / "w"), 3, py="py")
    assert [s.name for s in found] == ["scan8", "scan21"]
    assert len(skipped) == 13 and skipped[0].startswith("skip scan30: no ")
    assert found[0].prepare_cmd == ["py", "scripts/prepare_dtu.py", "--out",
                                    str(tmp_path / "w" / "dtu_scan8"), "--n_views", "3",
                                    "--src", str(root / "scan8"), "--factor", "1"]  # fmt: skip
    assert found[1].prepare_cmd[-6:] == ["--scan", "21", "--factor", "4", "--masks",
                                         str(root / "idrmasks" / "scan21" / "mask")]  # fmt: skip
    assert sb.main(["dtu", str(root), str(tmp_path / "o"), "--dry_run", "--seeds", "0"]) == 0
    text = capsys.readouterr().out
    assert "--split_protocol dtu" in text and "dtu_scan21" in text


def test_no_scene_is_an_error(tmp_path, capsys):
    assert sb.main(["llff", str(tmp_path), str(tmp_path / "o"), "--dry_run"]) == 1
    assert "no llff scene" in capsys.readouterr().err


def test_detect_slots(monkeypatch):
    assert sb.detect_slots("0, 2") == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert sb.detect_slots(None) == ["3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sb.detect_slots(None) == [None]


# ----------------------------------------------------------------------------- bench


def test_bench_dry_run(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "fern" / "colmap_3views").mkdir(parents=True)
    (data / "dtu_scan24" / "colmap_3views" / "dense").mkdir(parents=True)
    (data / "dtu_scan24" / "colmap_3views" / "dense" / "points3D.ply").write_bytes(b"")
    out = tmp_path / "out"
    done = sb.Run("", "", "", [], 1, "llff", 3, 200, str(out / "fern" / "preset" / "s1"))
    write_model(done, psnr=20.0)
    rc = sq.main(["--data", str(data), "--out", str(out), "--iterations", "200", "--seeds",
                  "0", "1", "--variants", "preset", "dense_depth", "--dry_run"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    assert "fern/colmap_3views/dense/points3D.ply missing" in text
    assert "dtu_scan24/colmap_3views/dense/points3D.ply missing" not in text
    assert "# fern preset s1 (llff) (results exist, skipped)" in text
    assert (f"train.py -s {data / 'dtu_scan24'} -m {out / 'dtu_scan24' / 'dense_depth' / 's0'}"
            " --eval --n_views 3 --split_protocol dtu --iterations 200 --test_iterations 200"
            " --save_iterations 200 --seed 0 --quiet --init dense --depth_source mvs"
            " --lambda_depth_l1 0.1") in text  # fmt: skip
    assert text.count("render.py -m ") == 2 * 2 * 2


_FAKE = r"""
import json, os, sys
stage, model, fail = sys.argv[1], sys.argv[2], sys.argv[3]
if fail == stage:
    print("boom"); sys.exit(3)
if stage == "train":
    json.dump({"loop_seconds": 1.5, "num_gaussians": 42, "device": "Fake GPU"},
              open(os.path.join(model, "training_summary.json"), "w"))
if stage == "metrics":
    seed = int(model.rstrip("/").rsplit("s", 1)[1])
    json.dump({"ours_50": {"PSNR": 20.0 + seed, "SSIM": 0.5, "LPIPS": 0.2}},
              open(os.path.join(model, "results.json"), "w"))
"""


def test_bench_runs_pool_failures_and_resume(tmp_path, capsys, monkeypatch):
    """The whole bench with stand-in stage commands: two at a time, a failing variant shows
    in the table, finished runs are skipped on a second call."""
    fake = tmp_path / "fake.py"
    fake.write_text(_FAKE)

    def commands(self, py=sys.executable):
        fail = "render" if self.variant == "broken" else "-"
        return [(s, [py, str(fake), s, self.model, fail]) for s in ("train", "render", "metrics")]

    monkeypatch.setattr(sb.Run, "commands", commands)
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "fern" / "colmap_3views").mkdir(parents=True)
    results = tmp_path / "RESULTS.md"
    args = ["--data", str(data), "--scenes", "fern", "--out", str(out), "--iterations", "50",
            "--seeds", "0", "1", "--variants", "ok=--x", "broken=--y", "--jobs", "2",
            "--results", str(results)]  # fmt: skip
    assert sq.main(args) == 2  # a failed run: exit 2, but the table and JSON are written
    text = capsys.readouterr().out
    assert text.count("FAILED at render") == 2
    assert "fern ok s1: PSNR 21.00" in text
    table = results.read_text()
    assert "jobs 2" in table and "not comparable" in table and "Fake GPU" in table
    assert (
        "| fern | ok | 20.50 (20.00\u201321.00) | 0.5000 (0.5000\u20130.5000) | 0.2000 (" in table
    )
    assert "failed at render: see fern/broken/s0/render.log (+1 more)" in table
    assert (out / "fern" / "broken" / "s0" / "render.log").read_text().count("boom") == 1
    raw = json.loads((out / "sparse_quality.json").read_text())
    assert raw["meta"]["jobs"] == 2 and len(raw["runs"]) == 4
    assert {r["status"] for r in raw["runs"]} == {"ok", "failed"}
    # Second call: the finished runs are read back, not run again; the failed ones rerun.
    assert sq.main(args) == 2
    text = capsys.readouterr().out
    assert text.count("(existing results)") == 2 and text.count("FAILED at render") == 2


def test_regseg_configs_add_the_mask_stages(tmp_path, capsys):
    root = tmp_path / "llff"
    (root / "fern").mkdir(parents=True)
    (root / "fern" / "poses_bounds.npy").write_bytes(b"")
    out = tmp_path / "out"
    assert sb.main(["llff", str(root), str(out), "--dry_run", "--seeds", "0", "--configs",
                    "vanilla", "preset_regseg"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    work = out / "work" / "llff" / "fern"
    assert f"extract_mask.py -s {work} --mode auto" in text
    assert f"-m mask_matching -s {work} --n_views 3 --split_protocol llff --overwrite" in text
    assert "--sparse_view --lambda_mask_vis 0.05 --mask_vis_tau 2 --feature_field" in text
    assert sb.main(["llff", str(root), str(out), "--dry_run", "--configs", "vanilla"]) == 0
    assert "mask_matching" not in capsys.readouterr().out
