"""scripts/demo.py: folder safety, the stage command lines, the results table, and the
whole orchestration (against stand-in stage scripts, and against the real ones once the
repository has them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from scripts import demo

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_prepare_output_refuses_foreign_folder(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(demo.DemoError, match="not made by scripts/demo.py"):
        demo.prepare_output(tmp_path)
    assert (tmp_path / "notes.txt").exists()


def test_prepare_output_clears_previous_demo_model(tmp_path: Path):
    root = tmp_path / "demo"
    demo.prepare_output(root)
    (root / "model").mkdir()
    (root / "model" / "old.txt").write_text("stale")
    demo.prepare_output(root)
    assert not (root / "model").exists() and (root / demo.MARKER).is_file()


def test_stage_commands_are_argument_lists():
    stages = demo.stage_commands(
        Path("/s"), Path("/m"), 700, "torch", "cpu", ["--lambda_dssim", "0.3"], python="py"
    )
    assert [n for n, _ in stages] == ["train", "render", "metrics"]
    train = stages[0][1]
    assert train[:2] == ["py", str(demo.REPO_ROOT / "train.py")]
    flags = dict(zip(train[2::1], train[3::1]))
    assert flags["-s"] == "/s" and flags["-m"] == "/m" and flags["--iterations"] == "700"
    assert flags["--split_protocol"] == "custom" and flags["--backend"] == "torch"
    assert "--eval" in train and train[-2:] == ["--lambda_dssim", "0.3"]
    assert stages[1][1][-3:] == ["-m", "/m", "--skip_train"]
    assert all(isinstance(a, str) for _, argv in stages for a in argv)


def test_format_results_table():
    table = demo.format_results(
        {"ours_700": {"PSNR": 24.5123, "SSIM": 0.81234, "LPIPS": 0.1234, "PSNR_masked": 22.1}}
    )
    lines = table.splitlines()
    assert lines[0].split(" | ")[0].strip() == "method"
    assert "24.51" in lines[2] and "0.8123" in lines[2] and "22.10" in lines[2]
    with pytest.raises(demo.DemoError):
        demo.format_results({})


STAND_IN = {
    # Stand-ins for the stage scripts: they check what the demo hands them and write the
    # files the real scripts write, so the orchestration is tested on its own.
    "train.py": """
import json, os, sys
a = sys.argv[1:]
s, m = a[a.index("-s") + 1], a[a.index("-m") + 1]
split = json.load(open(os.path.join(s, "split.json")))
assert split["protocol"] == "custom" and os.path.isdir(os.path.join(s, "sparse", "0"))
os.makedirs(m, exist_ok=True)
open(os.path.join(m, "cfg_args"), "w").write("Namespace()")
""",
    "render.py": """
import os, sys
m = sys.argv[sys.argv.index("-m") + 1]
assert os.path.isfile(os.path.join(m, "cfg_args"))
""",
    "metrics.py": """
import json, os, sys
m = sys.argv[sys.argv.index("-m") + 1]
json.dump({"ours_30": {"PSNR": 20.0, "SSIM": 0.5}}, open(os.path.join(m, "results.json"), "w"))
""",
}


def test_orchestration_with_stand_in_stages(tmp_path: Path, monkeypatch, capsys):
    fake_repo = tmp_path / "repo"
    fake_repo.mkdir()
    for name, code in STAND_IN.items():
        (fake_repo / name).write_text(code)
    monkeypatch.setattr(demo, "REPO_ROOT", fake_repo)
    out = tmp_path / "demo"
    assert demo.main(["--fast", "--backend", "torch", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ours_30" in printed and "20.00" in printed and "total" in printed
    assert json.loads((out / "scene" / "split.json").read_text())["n_views"] == 4
    # A failing stage stops the demo with one error line.
    (fake_repo / "render.py").write_text("import sys; sys.exit(3)")
    assert demo.main(["--fast", "--backend", "torch", "-o", str(out)]) == 1
    assert "error: render failed (exit 3)" in capsys.readouterr().err


def test_missing_stage_script_is_one_clear_error(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "REPO_ROOT", tmp_path)
    assert demo.main(["--fast", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.py is missing" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not all((REPO_ROOT / s).is_file() for s in ("train.py", "render.py", "metrics.py")),
    reason="train.py, render.py and metrics.py are not in this checkout yet",
)
def test_demo_fast_end_to_end(tmp_path: Path):
    import subprocess

    out = tmp_path / "demo"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--fast", "-o", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "model" / "results.json").read_text())
    assert results and "PSNR" in next(iter(results.values()))


def test_split_passthrough_cuts_at_the_first_double_dash():
    from utils.general_utils import split_passthrough

    assert split_passthrough(["--fast", "--", "--seed", "1", "--", "x"]) == (
        ["--fast"],
        ["--seed", "1", "--", "x"],
    )
    assert split_passthrough(["--fast"]) == (["--fast"], [])
