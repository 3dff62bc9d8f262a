"""Nothing lost when training stops early (utils/training_guard.py, train.py): Ctrl-C and
SIGTERM save the Gaussians and a checkpoint that --start_checkpoint resumes; a NaN loss
stops the run with the last good state saved; render.py on a folder that is not a model
says so in one line. Tiny demo scene, torch backend, CPU."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import render as render_script
import train as train_script
from gaussian.ply import load_ply
from scripts.make_demo_scene import make_demo_scene
from utils.training_guard import LastGoodState, param_norms, resume_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    scene = str(tmp_path_factory.mktemp("safety") / "scene")
    make_demo_scene(scene, width=32, height=24, n_train=3, n_test=1, n_points=300,
                    supersample=1, progress=False)  # fmt: skip
    return scene


def common(scene, model, iters=10):
    """A short run, densifying every 3 iterations, checked every 3, never evaluated."""
    return ["-s", scene, "-m", model, "--split_protocol", "custom", "--backend", "torch",
            "--data_device", "cpu", "--iterations", str(iters), "--test_iterations", "0",
            "--save_iterations", str(iters), "--densify_from_iter", "2",
            "--densification_interval", "3", "--log_interval", "3"]  # fmt: skip


def resume_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if "--start_checkpoint" in ln]
    assert len(lines) == 1, err
    return lines[0]


def test_sigint_saves_gaussians_and_a_checkpoint_that_resumes(tiny_scene, tmp_path, capsys,
                                                              monkeypatch):  # fmt: skip
    """Ctrl-C during iteration 4: the loop ends after it, point_cloud/iteration_4/ and
    chkpnt4.pth are written, one line gives the resume command, the status is 130."""
    step = train_script.optimizer_step

    def step_then_ctrl_c(optimizer, visible=None, iteration=0, schedule=None):
        step(optimizer, visible, iteration, schedule)
        if iteration == 4:
            os.kill(os.getpid(), signal.SIGINT)  # handled at once, in this (the main) thread

    monkeypatch.setattr(train_script, "optimizer_step", step_then_ctrl_c)
    model = str(tmp_path / "model")
    args = common(tiny_scene, model)
    # Whatever handler the test process has (SIG_IGN when a shell starts it in the
    # background, as `nohup ... &` does): the run must put it back.
    before = signal.getsignal(signal.SIGINT)
    assert train_script.main(args) == 130
    line = resume_line(capsys.readouterr().err)
    ply = os.path.join(model, "point_cloud", "iteration_4", "point_cloud.ply")
    ckpt = os.path.join(model, "chkpnt4.pth")
    assert "SIGINT after iteration 4" in line and ply in line
    assert line.endswith("python train.py " + " ".join(args) + f" --start_checkpoint {ckpt}")
    saved, iteration = torch.load(ckpt, weights_only=False)
    assert iteration == 4
    assert load_ply(ply).num_gaussians == saved["model"]["params"]["means"].shape[0]
    assert not os.path.exists(os.path.join(model, "point_cloud", "iteration_10"))
    # The handlers are the previous ones again.
    assert signal.getsignal(signal.SIGINT) is before

    monkeypatch.setattr(train_script, "optimizer_step", step)
    assert train_script.main(args + ["--start_checkpoint", ckpt]) == 0
    assert os.path.isfile(os.path.join(model, "point_cloud", "iteration_10", "point_cloud.ply"))


def test_nan_loss_stops_with_the_last_good_state(tiny_scene, tmp_path, capsys, monkeypatch):
    """SSIM made NaN from iteration 7: the check at iteration 9 stops the run and saves
    the state that the check at iteration 6 passed (after iteration 5), finite; its
    checkpoint resumes."""
    losses = train_script.compute_losses

    def nan_from_7(render_pkg, camera, opt, ssim_fn, extra, iteration, fused):
        total, terms = losses(render_pkg, camera, opt, ssim_fn, extra, iteration, fused)
        if iteration >= 7:
            terms["ssim_loss"] = terms["ssim_loss"] * float("nan")
            total = total + terms["ssim_loss"]
        return total, terms

    monkeypatch.setattr(train_script, "compute_losses", nan_from_7)
    model = str(tmp_path / "model")
    assert train_script.main(common(tiny_scene, model)) == 1
    line = resume_line(capsys.readouterr().err)
    assert line.startswith("loss term ssim_loss is NaN at iteration 9; saved the state of "
                           "iteration 5 to ")  # fmt: skip
    ply = os.path.join(model, "point_cloud", "iteration_5", "point_cloud.ply")
    ckpt = os.path.join(model, "chkpnt5.pth")
    assert ply in line and line.endswith(f"--start_checkpoint {ckpt}")
    good = load_ply(ply)
    assert all(torch.isfinite(p).all() for p in good.params.values())
    monkeypatch.setattr(train_script, "compute_losses", losses)
    resumed = str(tmp_path / "resumed")
    assert train_script.main(common(tiny_scene, resumed) + ["--start_checkpoint", ckpt]) == 0


def test_sigterm_in_a_real_process(tiny_scene, tmp_path):
    """python train.py killed with SIGTERM: status 143, no traceback, Gaussians saved."""
    model = str(tmp_path / "model")
    cmd = [sys.executable, "-u", "train.py", *common(tiny_scene, model, 100_000),
           "--save_iterations", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        for line in proc.stdout:  # "[ITER 2] Saving Gaussians": the loop is running
            if "Saving Gaussians" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    done = int(re.search(r"SIGTERM after iteration (\d+)", resume_line(err)).group(1))
    assert done >= 2
    assert load_ply(os.path.join(model, "point_cloud", f"iteration_{done}", "point_cloud.ply"))
    assert os.path.isfile(os.path.join(model, f"chkpnt{done}.pth"))


def test_render_on_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    for folder in (tmp_path / "photos", tmp_path / "missing"):
        assert render_script.main(["-m", str(folder)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and str(folder) in err
    # cfg_args but no Gaussians (a run stopped before its first save).
    (tmp_path / "photos" / "cfg_args").write_text(f"Namespace(source_path={str(tmp_path)!r})")
    assert render_script.main(["-m", str(tmp_path / "photos")]) == 1
    err = capsys.readouterr().err
    assert "point_cloud not found" in err and err.count("\n") == 1


def test_guard_pieces():
    """Norms flag NaN and inf per tensor (empty ones are finite); the snapshot keeps its
    buffers while the shapes stay; the resume command drops an earlier checkpoint."""
    t = {"a": torch.tensor([3.0, -4.0]), "b": torch.tensor([1.0, float("nan")]),
         "c": torch.tensor([float("-inf"), 0.0]), "e": torch.zeros(4, 0, 3)}  # fmt: skip
    norms = {k: float(v) for k, v in param_norms(t).items()}
    assert list(norms) == ["a", "b", "c", "e"] and norms["a"] == 5.0 and norms["e"] == 0.0
    assert norms["b"] != norms["b"] and norms["c"] == float("inf")

    from gaussian.model import GaussianModel

    model = GaussianModel.from_points(torch.rand(5, 3), torch.rand(5, 3), 1)
    model.extras["ids"] = torch.arange(5)
    snap = LastGoodState()
    snap.take(model, 3, 0)
    buffer = snap.params["means"]
    with torch.no_grad():
        model.params["means"].add_(1.0)
    snap.take(model, 4, 1)
    assert snap.params["means"] is buffer and torch.equal(buffer, model.params["means"])
    state = snap.capture()
    assert state["active_sh_degree"] == 1 and snap.iteration == 4
    assert torch.equal(GaussianModel.restore(state).extras["ids"], torch.arange(5))
    model.params = {k: torch.nn.Parameter(v[:3].detach()) for k, v in model.params.items()}
    model.extras["ids"] = torch.arange(3)
    snap.take(model, 5, 1)  # pruned: new buffers
    assert snap.params["means"] is not buffer and snap.params["means"].shape[0] == 3

    cmd = resume_command(["-s", "a b", "--start_checkpoint", "old.pth"], "m/chkpnt4.pth", "m")
    assert cmd == "python train.py -s 'a b' -m m --start_checkpoint m/chkpnt4.pth"
