"""Test-time pose optimisation (gaussian_renderer/pose_opt.py) on a scene rendered on the CPU.

Random Gaussians are rendered from a known camera; that render is the "test image" of a
camera whose pose is perturbed by 2 degrees and 2 % of the scene scale, and the
optimisation must bring it back (below 0.2 degree and 0.2 %).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gaussian.model import GaussianModel
from gaussian_renderer import render
from gaussian_renderer.pose_opt import (
    SCHEDULES,
    CorrectedCamera,
    optimize_camera_pose,
    rotation_angle_deg,
    so3_exp,
)
from scene.cameras import Camera

PIPE = SimpleNamespace(debug=False, antialiasing=False)
BG = torch.zeros(3)


def textured_gaussians(n: int = 300, seed: int = 0) -> GaussianModel:
    """``n`` small coloured Gaussians filling a box of half-size 1 around the origin."""
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([1.0, 1.0, 0.8])
    colors = torch.rand(n, 3, generator=g)
    scales = torch.full((n, 3), 0.09) * torch.exp(0.3 * torch.randn(n, 3, generator=g))
    return GaussianModel.from_points(pts, colors, sh_degree=0, init_opacity=0.8, scales=scales)


def camera_at(R_c2w: np.ndarray, centre: np.ndarray, image=None) -> Camera:
    w, h = 64, 48
    return Camera(0, "view.png", R_c2w, -R_c2w.T @ centre, 60.0, 60.0, w / 2, h / 2, w, h,
                  image=image)  # fmt: skip


def axis_angle(axis, deg: float) -> np.ndarray:
    return so3_exp(torch.tensor(axis, dtype=torch.float64) / np.linalg.norm(axis)
                   * math.radians(deg)).numpy()  # fmt: skip


def test_so3_exp_matches_rodrigues_and_is_finite_at_zero():
    w = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    R = so3_exp(w).numpy()
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert rotation_angle_deg(R) == pytest.approx(math.degrees(float(w.norm())), abs=1e-9)
    z = torch.zeros(3, requires_grad=True)
    so3_exp(z)[0, 1].backward()
    assert torch.isfinite(z.grad).all() and z.grad[2] == pytest.approx(-1.0)


def test_schedules():
    sp = SCHEDULES["spars3r"]
    assert sp.factor(0, 500) == 0.0 and sp.factor(499, 500) < 1.0  # the warm-up never ends
    fast = SCHEDULES["fast"]
    assert fast.factor(0, 300) == pytest.approx(1.0)
    assert fast.factor(300, 300) * fast.lr_rot == pytest.approx(fast.lr_final)


def test_corrected_camera_matches_identity_at_start():
    cam = camera_at(np.eye(3), np.array([0.0, 0.0, -3.0]))
    corr = CorrectedCamera(cam, scale=3.0)
    assert torch.allclose(corr.viewmat, cam.viewmat)
    assert torch.allclose(corr.camera_center, cam.camera_center, atol=1e-6)


def test_recovers_perturbed_camera():
    torch.manual_seed(0)
    gaussians = textured_gaussians()
    scale = 3.0  # camera distance to the scene centre
    R_true, c_true = np.eye(3), np.array([0.0, 0.0, -scale])
    with torch.no_grad():
        target = render(camera_at(R_true, c_true), gaussians, PIPE, BG, backend="torch")["render"]
    # perturb: 2 degrees about a skew axis, 2 % of the scene scale along a skew direction
    R_pert = axis_angle([0.3, 1.0, 0.2], 2.0) @ R_true
    d = np.array([1.0, -0.5, 0.4])
    c_pert = c_true + 0.02 * scale * d / np.linalg.norm(d)
    cam = camera_at(R_pert, c_pert, image=target)

    corrected, result = optimize_camera_pose(cam, gaussians, PIPE, BG, steps=300, scale=scale,
                                             schedule="fast", backend="torch")  # fmt: skip
    vm = corrected.viewmat.detach().double().numpy()
    R_est, c_est = vm[:3, :3].T, -vm[:3, :3].T @ vm[:3, 3]
    rot_err = rotation_angle_deg(R_est.T @ R_true)
    trans_err = np.linalg.norm(c_est - c_true) / scale
    print(
        f"rotation error 2.000 -> {rot_err:.4f} deg, translation 2.000 % -> "
        f"{100 * trans_err:.4f} %, loss {result.loss_before:.4f} -> {result.loss_after:.5f}"
    )
    assert rot_err < 0.2
    assert trans_err < 0.002
    assert result.loss_after < 0.2 * result.loss_before
    assert result.rotation_change_deg == pytest.approx(2.0, abs=0.3)
    assert all(p.requires_grad for p in gaussians.params.values())  # flags restored


def test_render_and_metrics_cli(tmp_path, monkeypatch, capsys):
    """train.py (20 steps) -> metrics.py --test_pose_opt: both method folders scored side by
    side in results.json (the plain key unchanged), poses.json written, and a second call
    with the same settings reuses the pose-optimised renders."""
    import json

    from lpips_testing import closed_port_url, isolate_weight_caches, redirect_weight_urls

    import metrics as metrics_script
    import train as train_script
    from scripts.make_demo_scene import make_demo_scene

    scene, model = str(tmp_path / "scene"), str(tmp_path / "model")
    make_demo_scene(scene, width=48, height=36, n_train=3, n_test=2, n_points=600,
                    supersample=1, progress=False)  # fmt: skip
    train_argv = ["-s", scene, "-m", model, "--split_protocol", "custom", "--backend", "torch",
                  "--data_device", "cpu", "--iterations", "20", "--test_iterations", "20",
                  "--save_iterations", "20"]  # fmt: skip
    assert train_script.main(train_argv) == 0
    isolate_weight_caches(monkeypatch, tmp_path)  # LPIPS left out: no weights, no network
    redirect_weight_urls(monkeypatch, closed_port_url())
    argv = ["-m", model, "--device", "cpu", "--test_pose_opt", "5", "--test_pose_schedule", "fast"]
    assert metrics_script.main(argv) == 0
    results = json.load(open(tmp_path / "model" / "results.json"))
    assert set(results) == {"ours_20", "ours_20_pose_opt"}
    assert set(results["ours_20"]) == set(results["ours_20_pose_opt"]) >= {"SSIM", "PSNR"}
    poses = json.load(open(tmp_path / "model" / "test" / "ours_20_pose_opt" / "poses.json"))
    assert poses["steps"] == 5 and poses["schedule"] == "fast" and len(poses["views"]) == 2
    view = poses["views"][0]
    assert len(view["R"]) == 3 and len(view["T"]) == 3 and view["rotation_change_deg"] > 0
    assert metrics_script.pose_opt_is_current(model, 5, "fast")
    assert not metrics_script.pose_opt_is_current(model, 6, "fast")
    capsys.readouterr()
    assert metrics_script.main(argv) == 0
    assert "pose-optimised renders (5 steps) already present" in capsys.readouterr().out


def test_views_optimised_together_move_as_they_would_alone():
    """Two views perturbed differently, optimised in one batch, end where each ends when
    optimised alone (Adam is per element and scale-blind: the batch mean changes nothing)."""
    from gaussian_renderer.pose_opt import optimize_camera_poses

    torch.manual_seed(0)
    gaussians = textured_gaussians()
    scale = 3.0
    cams = []
    for axis, deg, d in (
        ([0.3, 1.0, 0.2], 2.0, [1.0, -0.5, 0.4]),
        ([1.0, 0.1, -0.3], 1.0, [0, 1, 0]),
    ):
        R_true, c_true = np.eye(3), np.array([0.0, 0.0, -scale])
        with torch.no_grad():
            target = render(camera_at(R_true, c_true), gaussians, PIPE, BG, backend="torch")
        c_pert = c_true + 0.01 * scale * np.asarray(d) / np.linalg.norm(d)
        cams.append(camera_at(axis_angle(axis, deg) @ R_true, c_pert, image=target["render"]))
    together = optimize_camera_poses(cams, gaussians, PIPE, BG, 60, scale, "fast", "torch")
    for cam, (corr, res) in zip(cams, together):
        alone, res_alone = optimize_camera_pose(cam, gaussians, PIPE, BG, 60, scale, "fast",
                                                "torch")  # fmt: skip
        assert torch.allclose(corr.viewmat, alone.viewmat, atol=1e-5)
        assert res.loss_after == pytest.approx(res_alone.loss_after, rel=1e-3)
        assert res.loss_after < res.loss_before
