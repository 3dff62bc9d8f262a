"""Binocular stereo consistency (utils/binocular.py) and opacity decay
(gaussian/opacity_decay.py) on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import train as train_script
from gaussian.model import GaussianModel
from gaussian.opacity_decay import decay_opacity_
from gaussian_renderer import render
from scene.cameras import Camera
from tests.test_sparse_view import common, final_ply, tiny_scene  # noqa: F401 (fixture)
from utils.binocular import (
    BinocularConsistency,
    binocular_loss,
    median_view_depth,
    shifted_camera,
    warp_from_shifted,
)


def _camera(width=40, height=30, f=30.0):
    return Camera(0, "a.png", np.eye(3), np.zeros(3), f, f, width / 2, height / 2, width,
                  height)  # fmt: skip


def test_shifted_camera_moves_along_its_own_x_axis():
    R = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.1], [0.3, 0, -0.2], [-0.1, 0.2, 0]]))
    cam = Camera(0, "a.png", R.double().numpy(), np.array([0.5, -1.0, 2.0]), 30, 30, 20, 15,
                 40, 30)  # fmt: skip
    moved = shifted_camera(cam, 0.25)
    step = moved.camera_center - cam.camera_center
    x_axis = torch.as_tensor(cam.R[:, 0], dtype=torch.float32)  # camera x in world
    assert torch.allclose(step, 0.25 * x_axis, atol=1e-6)
    # A world point keeps its depth and moves by fx * b / z pixels to the left.
    point = cam.camera_center + 3.0 * torch.as_tensor(cam.R[:, 2], dtype=torch.float32)
    uv, z = cam.project(point[None])
    uv2, z2 = moved.project(point[None])
    assert torch.allclose(z, z2, atol=1e-5)
    assert math.isclose(float(uv[0, 0] - uv2[0, 0]), 30 * 0.25 / 3.0, rel_tol=1e-4)
    # Along its y axis the same way: the point moves up by fy * b / z pixels.
    up = shifted_camera(cam, 0.0, 0.25)
    y_axis = torch.as_tensor(cam.R[:, 1], dtype=torch.float32)
    assert torch.allclose(up.camera_center - cam.camera_center, 0.25 * y_axis, atol=1e-6)
    uv3, _ = up.project(point[None])
    assert math.isclose(float(uv[0, 1] - uv3[0, 1]), 30 * 0.25 / 3.0, rel_tol=1e-4)
    assert math.isclose(float(uv[0, 0]), float(uv3[0, 0]), abs_tol=1e-4)


def test_warp_recovers_a_fronto_parallel_textured_plane():
    """A plane at depth z seen by the camera shifted by b is the source image moved by
    fx b / z pixels; warping it back with the true depth gives the source image."""
    H, W, f, z, b = 30, 40, 30.0, 3.0, 0.3  # disparity 3 px
    u = torch.arange(W, dtype=torch.float32)
    source = torch.stack([torch.sin(u / 3.0), torch.cos(u / 5.0), u / W]).unsqueeze(1)
    source = source.expand(3, H, W).contiguous()
    disparity = f * b / z
    virtual = torch.stack([torch.sin((u + disparity) / 3.0), torch.cos((u + disparity) / 5.0),
                           (u + disparity) / W]).unsqueeze(1).expand(3, H, W)  # fmt: skip
    depth = torch.full((1, H, W), z)
    warped, valid = warp_from_shifted(virtual, depth, f, b)
    # Valid where u - 3 stays inside the virtual image: every column but the first three.
    assert valid[0, :, 4:].all() and not valid[0, :, :2].any()
    inside = valid.expand_as(warped)
    assert torch.allclose(warped[inside], source[inside], atol=1e-5)
    assert float(binocular_loss(warped, valid, source, 0.0)) < 1e-5
    # A wrong depth costs loss, and its gradient points towards the right depth.
    wrong = torch.full((1, H, W), 2.5, requires_grad=True)
    warped, valid = warp_from_shifted(virtual, wrong, f, b)
    loss = binocular_loss(warped, valid, source, 0.0)
    loss.backward()
    assert float(loss.detach()) > 1e-2 and float(wrong.grad.sum()) < 0  # raise the depth


def test_warp_with_a_vertical_shift_recovers_a_textured_plane():
    """--binocular_axes xy: a shift (b_x, b_y) moves the plane's image by (fx b_x / z,
    fy b_y / z); the warp with the true depth gives the source back."""
    H, W, fx, fy, z, bx, by = 30, 40, 30.0, 24.0, 3.0, 0.2, 0.5  # disparities 2 and 4 px

    def pattern(du, dv):
        u = torch.arange(W, dtype=torch.float32).view(1, W) + du
        v = torch.arange(H, dtype=torch.float32).view(H, 1) + dv
        u, v = torch.broadcast_tensors(u, v)
        return torch.stack([torch.sin(u / 3.0) * torch.cos(v / 4.0), v / H, u / W])

    source = pattern(0.0, 0.0)
    virtual = pattern(fx * bx / z, fy * by / z)
    depth = torch.full((1, H, W), z)
    warped, valid = warp_from_shifted(virtual, depth, fx, bx, fy, by)
    # Rows whose sample v - 4 leaves the image are not valid, nor columns with u - 2 < 0.
    assert not valid[0, :3].any() and valid[0, 5:, 3:].all()
    inside = valid.expand_as(warped)
    assert torch.allclose(warped[inside], source[inside], atol=1e-5)
    # shift_y = 0 is the horizontal warp, value for value.
    a, va = warp_from_shifted(virtual, depth, fx, bx)
    b, vb = warp_from_shifted(virtual, depth, fx, bx, fy, 0.0)
    assert torch.equal(a, b) and torch.equal(va, vb)


def test_shift_directions():
    """axes x: the draws of the published term; xy: random directions, same lengths."""
    x = BinocularConsistency(0.3, seed=4)
    xy = BinocularConsistency(0.3, seed=4, axes="xy")
    rng = np.random.default_rng(4)
    draws = [x.draw_shift() for _ in range(200)]
    assert draws[0] == (float(rng.uniform(-0.3, 0.3)), 0.0)
    assert all(dy == 0.0 and abs(dx) <= 0.3 for dx, dy in draws)
    pairs = np.array([xy.draw_shift() for _ in range(200)])
    lengths = np.hypot(pairs[:, 0], pairs[:, 1])
    assert lengths.max() <= 0.3 + 1e-9 and np.abs(pairs[:, 1]).max() > 0.1
    assert np.abs(pairs[:, 0]).max() > 0.1
    with pytest.raises(ValueError, match="--binocular_axes"):
        BinocularConsistency(0.3, axes="z")


def test_median_view_depth():
    cam = _camera()
    points = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 4.0], [0, 0, -3.0]])
    assert median_view_depth(points, [cam]) == 2.0


def test_opacity_decay_scales_the_activated_opacity():
    model = GaussianModel.from_points(torch.rand(50, 3), torch.rand(50, 3), 0)
    model.params["opacities"].data.uniform_(-3, 3)
    before = model.get_opacity.clone()
    decay_opacity_(model, 0.9)
    assert torch.allclose(model.get_opacity, 0.9 * before, atol=1e-5)


def test_binocular_and_decay_train_and_change_the_run(tiny_scene, tmp_path):  # noqa: F811
    plain, bino, decay = (str(tmp_path / n) for n in ("plain", "bino", "decay"))
    assert train_script.main(common(tiny_scene, plain)) == 0
    # xy here: the x axis alone runs in tests/test_mask_visibility.py's profiler smoke test.
    assert train_script.main(common(tiny_scene, bino) + ["--lambda_binocular", "1",
                             "--binocular_from", "2", "--binocular_axes", "xy"]) == 0  # fmt: skip
    assert train_script.main(common(tiny_scene, decay) + ["--opacity_decay", "0.9"]) == 0
    for other in (bino, decay):
        a, b = final_ply(plain), final_ply(other)
        assert a.shape != b.shape or not np.allclose(a, b)
    assert np.isfinite(final_ply(bino)).all()


def test_binocular_term_reaches_geometry_through_depth(tiny_scene):  # noqa: F811
    """One term on a real render: finite, and with a gradient on the means."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    model = GaussianModel.from_points(torch.randn(200, 3) * 0.3, torch.rand(200, 3), 0)
    cam = Camera(0, "a.png", np.eye(3), np.array([0.0, 0.0, 3.0]), 40, 40, 20, 15, 40, 30,
                 image=torch.rand(3, 30, 40))  # fmt: skip
    pipe = SimpleNamespace(debug=False, antialiasing=False, compute_cov3D_python=False,
                           convert_SHs_python=False)  # fmt: skip
    bg = torch.zeros(3)
    term = BinocularConsistency(0.3, start=0, seed=1)
    term.bind(lambda c: render(c, model, pipe, bg, backend="torch", depth=False))
    pkg = render(cam, model, pipe, bg, backend="torch", depth=True)
    value = term.term(pkg, cam)
    value.backward()
    assert torch.isfinite(value.detach()) and model.params["means"].grad.abs().sum() > 0


def test_binocular_every_n_iterations_and_the_plain_steps_between():
    """--binocular_every: the term acts at start, start + N, ...; the steps between are
    plain 3DGS steps (which train.py replays from CUDA graphs), unless another term acts."""
    from utils.extra_losses import ExtraLosses

    term = BinocularConsistency(0.1, start=10, every=3)
    assert [i for i in range(8, 21) if term.due(i)] == [10, 13, 16, 19]
    assert not term.active(10)  # not yet bound to a renderer
    term.bind(lambda camera: None)
    assert term.active(13) and not term.active(14)
    only = ExtraLosses(lambda_binocular=0.5, binocular=term)
    assert only.graphable
    assert [i for i in range(8, 15) if only.plain_step(i)] == [8, 9, 11, 12, 14]
    assert only.reads_rendered_depth(13) and not only.reads_rendered_depth(14)
    with_depth = ExtraLosses(lambda_binocular=0.5, binocular=term, lambda_depth_l1=0.1)
    assert not with_depth.graphable and not with_depth.plain_step(11)
    assert not ExtraLosses(lambda_lpdr=0.1).graphable
