"""Sparse-view training switches on the CPU: DropGaussian, --seed, --init, the relative L1
depth loss on depth_mvs/, and the --sparse_view preset (tiny demo scene, torch backend)."""

from __future__ import annotations

import json
import os
from argparse import Namespace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from plyfile import PlyData

import train as train_script
from arguments import SPARSE_VIEW_PRESET, apply_sparse_view_preset
from gaussian.dropout import DropGaussian, build_drop, drop_gain
from gaussian_renderer import render
from scene.points import store_ply
from scene.priors import check_mvs_depth_split
from scripts.make_demo_scene import make_demo_scene
from utils.depth_losses import relative_l1_depth_loss


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    scene = str(tmp_path_factory.mktemp("tiny_sparse") / "scene")
    make_demo_scene(scene, width=48, height=36, n_train=3, n_test=2, n_points=600,
                    supersample=1, progress=False)  # fmt: skip
    return scene


def common(scene, model, iters=16):
    return ["-s", scene, "-m", model, "--split_protocol", "custom", "--backend", "torch",
            "--data_device", "cpu", "--iterations", str(iters), "--test_iterations", str(iters),
            "--save_iterations", str(iters), "--densify_from_iter", "5",
            "--densification_interval", "5", "--log_interval", "5", "--quiet"]  # fmt: skip


def final_ply(model: str, iters=16) -> np.ndarray:
    v = PlyData.read(os.path.join(model, f"point_cloud/iteration_{iters}/point_cloud.ply"))
    return np.stack([v["vertex"][k] for k in ("x", "y", "z", "opacity", "f_dc_0")], axis=1)


# ----------------------------------------------------------------------------- DropGaussian


def test_drop_gain_keeps_the_expected_opacity():
    g = torch.Generator().manual_seed(0)
    opacity = torch.rand(1000, generator=g)
    rate = torch.tensor(0.3)
    draws = torch.stack([opacity * drop_gain(1000, rate, g) for _ in range(2000)])
    dropped = (draws == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.005
    # E[opacity * m / (1 - p)] = opacity, per Gaussian (2000 draws: about 1% noise).
    assert torch.allclose(draws.mean(0), opacity, rtol=0.08, atol=0.005)
    assert abs(draws.mean().item() - opacity.mean().item()) < 0.003


def test_drop_schedule_and_bad_rates():
    drop = DropGaussian(0.2, "cpu", "linear", iterations=100)
    drop.set_iteration(50)
    assert drop.current.item() == pytest.approx(0.1)
    assert DropGaussian(0.2, "cpu").rate_at(7) == 0.2
    assert build_drop(0.0, "constant", 10, "cpu") is None
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="--drop_rate"):
            build_drop(bad, "constant", 10, "cpu")


def test_drop_rate_outside_range_is_a_clear_error(tiny_scene, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_script.main(common(tiny_scene, str(tmp_path / "m")) + ["--drop_rate", "1"])
    assert "--drop_rate 1.0: must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_render_with_opacity_gain_on_the_torch_backend():
    from conftest import random_gaussians

    from scene.cameras import Camera

    model = random_gaussians(300, torch.Generator().manual_seed(0), device="cpu")
    cam = Camera(0, "v.png", np.eye(3), np.array([0.0, 0.0, 3.0]), 40.0, 40.0, 20.0, 15.0, 40,
                 30, image=torch.zeros(3, 30, 40), device="cpu")  # fmt: skip
    bg = torch.tensor([0.2, 0.4, 0.6])
    pipe = SimpleNamespace()
    plain = render(cam, model, pipe, bg, backend="torch")["render"]
    ones = render(cam, model, pipe, bg, backend="torch",
                  opacity_gain=torch.ones(300))["render"]  # fmt: skip
    assert torch.equal(plain, ones)
    empty = render(cam, model, pipe, bg, backend="torch", opacity_gain=torch.zeros(300))
    assert torch.allclose(empty["render"], bg[:, None, None].expand_as(plain))


def test_drop_rate_zero_is_bit_identical_and_drop_changes_training(tiny_scene, tmp_path):
    runs = {}
    for name, extra in {"plain": [], "zero": ["--drop_rate", "0"],
                        "drop": ["--drop_rate", "0.3"]}.items():  # fmt: skip
        model = str(tmp_path / name)
        assert train_script.main(common(tiny_scene, model) + extra) == 0
        runs[name] = final_ply(model)
    assert np.array_equal(runs["plain"], runs["zero"])
    assert runs["drop"].shape != runs["plain"].shape or not np.allclose(runs["drop"], runs["plain"])


# ----------------------------------------------------------------------------- seed and init


def test_seed_reproduces_and_changes_a_run(tiny_scene, tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    for model, seed in ((a, 3), (b, 3), (c, 4)):
        args = common(tiny_scene, model) + ["--seed", str(seed), "--init", "random",
                                            "--random_init", "300"]  # fmt: skip
        assert train_script.main(args) == 0
    assert np.array_equal(final_ply(a), final_ply(b))
    assert not np.array_equal(final_ply(a)[:50], final_ply(c)[:50])


def test_init_dense_reads_the_stereo_cloud_or_names_the_command(tiny_scene, tmp_path, capsys):
    dense = os.path.join(tiny_scene, "colmap_3views", "dense")
    model = str(tmp_path / "dense")
    assert train_script.main(common(tiny_scene, model) + ["--init", "dense"]) == 1
    err = capsys.readouterr().err
    assert "python -m mvs -s" in err and err.count("\n") == 1
    assert not os.path.exists(model)
    os.makedirs(dense)
    try:
        pts = np.random.default_rng(0).uniform(-0.5, 0.5, (432, 3))
        store_ply(os.path.join(dense, "points3D.ply"), pts, np.full((432, 3), 0.5))
        assert train_script.main(common(tiny_scene, model) + ["--init", "dense"]) == 0
        out = capsys.readouterr().out
        assert "(multi-view stereo of the training views) (432 points)" in out
        assert len(PlyData.read(os.path.join(model, "input.ply"))["vertex"]) == 432
    finally:
        import shutil

        shutil.rmtree(os.path.join(tiny_scene, "colmap_3views"))


# ----------------------------------------------------------------------------- depth_mvs


def test_relative_l1_depth_loss_ignores_pixels_without_stereo():
    prior = torch.tensor([[[2.0, 0.0], [4.0, 1.0]]])
    rendered = torch.tensor([[[2.0, 9.0], [5.0, 1.0]]], requires_grad=True)
    loss = relative_l1_depth_loss(rendered, prior)
    assert loss.item() == pytest.approx((0 + 0.25 + 0) / 3)
    loss.backward()
    assert rendered.grad[0, 0, 1] == 0  # no prior there
    assert relative_l1_depth_loss(rendered, torch.zeros_like(prior)).item() == 0


def test_mvs_depth_from_another_split_is_refused(tmp_path):
    folder = tmp_path / "depth_mvs"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"n_views": 2, "train": ["a.png", "b.png"]}))
    check_mvs_depth_split(str(tmp_path), ["b.png", "a.png"])
    with pytest.raises(ValueError, match="not this run's 3 training views"):
        check_mvs_depth_split(str(tmp_path), ["a.png", "b.png", "c.png"])


def test_depth_l1_on_mvs_depth_trains(tiny_scene, tmp_path):
    """A short run with --depth_source mvs reads depth_mvs/ and logs the depth_l1 term."""
    from scene import Scene

    ns = Namespace(source_path=tiny_scene, images="images", resolution=-1,
                   white_background=False, data_device="cpu", eval=True)  # fmt: skip
    sparse = SimpleNamespace(n_views=0, split_protocol="custom", train_views=[], random_init=0)
    scene = Scene(ns, sparse, device="cpu", load_images=False)
    folder = os.path.join(tiny_scene, "depth_mvs")
    os.makedirs(folder)
    try:
        names = [c.image_name for c in scene.getTrainCameras()]
        for cam in scene.getTrainCameras():
            depth = np.full((cam.image_height, cam.image_width), 3.0, np.float32)
            depth[:, : cam.image_width // 2] = 0.0  # half the view without stereo depth
            np.save(os.path.join(folder, cam.image_name + ".npy"), depth)
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump({"n_views": len(names), "train": names}, f)
        model = str(tmp_path / "depth")
        args = ["--depth_source", "mvs", "--lambda_depth_l1", "0.1"]
        assert train_script.main(common(tiny_scene, model) + args) == 0
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(model, size_guidance={"images": 0})
        events.Reload()
        assert "train_loss_patches/depth_l1" in events.Tags()["scalars"]
        # The depth prior of each logged training view is pictured next to its render.
        assert any(t.endswith("/prior_depth") for t in events.Tags()["images"])
    finally:
        import shutil

        shutil.rmtree(folder)


# ----------------------------------------------------------------------------- preset


def test_sparse_view_preset_fills_only_unset_flags(monkeypatch):
    import arguments

    args = Namespace(sparse_view=True, init="auto", iterations=1234, densify_until_iter=15000,
                     lambda_binocular=0.0, binocular_every=1)  # fmt: skip
    assert apply_sparse_view_preset(args, ["--sparse_view"]) == [
        "--init dense",
        "--densify_until_iter 5000",
        "--opacity_reset_interval 100000",
        "--opacity_decay 0.995",
        "--lambda_binocular 0.5",
        "--binocular_every 2",
        "--binocular_shift 0.4",
        "--binocular_axes xy",
    ]
    assert args.init == SPARSE_VIEW_PRESET["init"] == "dense"
    assert args.densify_until_iter == 5000 and args.opacity_reset_interval == 100_000
    given = Namespace(sparse_view=True, init="sfm", iterations=1234, densify_until_iter=15000,
                      lambda_binocular=0.0, binocular_every=1)  # fmt: skip
    argv = ["--sparse_view", "--init=sfm", "--densify_until_iter", "15000",
            "--opacity_reset_interval", "3000", "--opacity_decay", "1",
            "--lambda_binocular", "0", "--binocular_every=1",
            "--binocular_shift", "0.05", "--binocular_axes", "x"]  # fmt: skip
    assert apply_sparse_view_preset(given, argv) == []
    assert given.init == "sfm" and given.densify_until_iter == 15000  # the command line wins
    # Values may be functions of the parsed arguments (e.g. a schedule over --iterations).
    monkeypatch.setitem(arguments.SPARSE_VIEW_PRESET, "position_lr_max_steps",
                        lambda a: a.iterations)  # fmt: skip
    args = Namespace(sparse_view=True, init="auto", iterations=1234)
    apply_sparse_view_preset(args, [])
    assert args.position_lr_max_steps == 1234
    off = Namespace(sparse_view=False, init="auto")
    assert apply_sparse_view_preset(off, []) == [] and off.init == "auto"


def test_densify_until_0_keeps_the_initial_set_and_equals_1(tiny_scene, tmp_path):
    """--densify_until_iter 0 (the preset of sessions 7 to 16): no clone, split, prune or
    opacity reset (the set keeps its initial size), the same run as the measured 1."""
    runs = {}
    for until in ("0", "1"):
        model = str(tmp_path / until)
        args = common(tiny_scene, model) + ["--init", "random", "--random_init", "300",
                                            "--densify_until_iter", until]  # fmt: skip
        assert train_script.main(args) == 0
        runs[until] = final_ply(model)
    assert runs["0"].shape[0] == 300
    assert np.array_equal(runs["0"], runs["1"])


def test_init_aligned_names_the_alignment_command(tiny_scene, tmp_path, capsys):
    model = str(tmp_path / "aligned")
    assert train_script.main(common(tiny_scene, model) + ["--init", "aligned"]) == 1
    err = capsys.readouterr().err
    assert "python -m alignment -s" in err and err.count("\n") == 1
    assert not os.path.exists(model)
