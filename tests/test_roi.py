"""ROI-guided training (roigs): ROI construction, the gate, ROI pruning, the ROI-weighted L1,
and that every default flag builds the plain 3DGS method."""

from __future__ import annotations

from argparse import ArgumentParser
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from arguments import (
    DensifyParams,
    DepthLossParams,
    ModelParams,
    OptimizationParams,
    ROIParams,
)
from gaussian.model import GaussianModel
from gaussian.optim import build_optimizer, build_step_schedule, build_training_optimizer
from gaussian.strategy.default import DefaultStrategy
from gaussian.strategy.factory import build_strategy
from gaussian.strategy.roi import ROIGate, far_scene_depths
from scene.cameras import Camera
from utils.extra_losses import build_extra_losses
from utils.roi import (
    attach_roi,
    attach_training_priors,
    build_roi,
    depth_radius,
    roi_edge_band,
    roi_loss_weight,
    weighted_l1,
)

# ----------------------------------------------------------------------------- helpers


def camera(width=40, height=30, f=30.0, name="v.png") -> Camera:
    """A pinhole at the origin looking down +z (identity pose)."""
    return Camera(0, name, np.eye(3), np.zeros(3), f, f, width / 2, height / 2, width, height)


def model_at(points: torch.Tensor, opacity: float = 0.5) -> GaussianModel:
    n = points.shape[0]
    colors, scales = torch.full((n, 3), 0.5), torch.full((n, 3), 0.01)
    return GaussianModel.from_points(points, colors, 0, init_opacity=opacity, scales=scales)


def points_at_pixels(cam: Camera, cols, rows, z) -> torch.Tensor:
    """World points whose centres project to the centres of pixels (col, row) at depth z."""
    cols, rows, z = (torch.as_tensor(v, dtype=torch.float32) for v in (cols, rows, z))
    x = (cols + 0.5 - cam.cx) / cam.fx * z
    y = (rows + 0.5 - cam.cy) / cam.fy * z
    return torch.stack([x, y, z], dim=-1)


# ----------------------------------------------------------------------------- ROI build


def test_depth_radius_is_max_of_masked_medians():
    d1 = torch.full((1, 8, 8), 100.0)  # outside the mask: ignored
    d1[0, :4, :4] = torch.arange(16.0).reshape(4, 4) + 1  # 1..16 -> lower median 8
    m1 = torch.zeros(1, 8, 8)
    m1[0, :4, :4] = 1
    d2 = torch.full((1, 8, 8), 3.0)
    d2[0, 0, :3] = float("nan")  # invalid pixels do not count
    m2 = torch.ones(1, 8, 8)
    d3 = torch.full((1, 8, 8), 50.0)  # only 9 valid masked pixels: skipped
    m3 = torch.zeros(1, 8, 8)
    m3[0, :3, :3] = 1
    assert depth_radius([d1, d2, d3, None], [m1, m2, m3, m1]) == 8.0
    assert depth_radius([d3], [m3]) is None
    assert depth_radius([None], [m1]) is None


def test_build_roi_margin_validity_and_mask():
    depth = torch.tensor([[[1.0, 5.4, 5.6, float("inf")], [0.0, -1.0, 2.0, 2.0]]])
    mask = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]])
    roi = build_roi(mask, depth, radius=5.0, size=(2, 4), depth_margin_ratio=0.1)  # d <= 5.5
    assert roi.shape == (1, 2, 4) and roi.dtype == torch.float32
    assert roi[0].tolist() == [[1, 1, 0, 0], [0, 0, 1, 0]]
    # Without depth (or without a radius) the ROI is the mask.
    assert torch.equal(build_roi(mask, None, None, (2, 4)), mask)


def test_build_roi_resizes_nearest_to_training_resolution():
    mask = torch.zeros(1, 8, 12)  # 2x the training size, left half on
    mask[..., :6] = 1
    depth = torch.ones(1, 2, 3)  # half the training size, right column far
    depth[..., 2] = 9.0
    roi = build_roi(mask, depth, radius=2.0, size=(4, 6))
    expected = torch.zeros(4, 6)
    expected[:, :3] = 1  # mask left half; depth kills columns 4-5 (right third), not 0-2
    assert torch.equal(roi[0], expected)
    assert set(roi.unique().tolist()) <= {0.0, 1.0}


def fake_cam(name, h=6, w=8, mask=None, depth=None):
    priors = {}
    if mask is not None:
        priors["roi_mask"] = mask
    if depth is not None:
        priors["depth"] = depth
    return SimpleNamespace(image_name=name, image_height=h, image_width=w, priors=priors)


def test_attach_roi_fixes_the_upstream_traps(capsys):
    mask = torch.zeros(1, 6, 8)
    mask[:, 1:5, 2:6] = 1
    depth = torch.full((1, 6, 8), 2.0)
    depth[:, 1:3, 2:6] = 1.0  # median inside the mask: 1.0 (lower median of eight 1s, 2s)
    with_depth = fake_cam("a.png", mask=mask, depth=depth)
    mask_only = fake_cam("b.png", mask=mask)
    no_mask = fake_cam("c.png", depth=depth)
    report = attach_roi([with_depth, mask_only, no_mask])
    out = capsys.readouterr().out
    assert report.radius == 1.0
    assert report.with_depth == ["a.png"] and report.mask_only == ["b.png"]
    assert report.without == ["c.png"]
    assert "mask but no usable depth" in out and "no mask" in out
    assert torch.equal(with_depth.priors["roi"], mask * (depth <= 1.0))
    assert torch.equal(mask_only.priors["roi"], mask)  # upstream: no ROI at all
    assert "roi" not in no_mask.priors and "roi_weight" not in no_mask.priors
    assert with_depth.priors["roi_edge"].shape == (6, 8)


def test_roi_loss_weight_and_weighted_l1():
    roi = torch.zeros(1, 20, 20)
    roi[:, 8:12, 8:12] = 1
    w = roi_loss_weight(roi, outside_weight=0.05, dilate=2, soft_edges=True, blur_kernel=5)
    assert w.shape == roi.shape
    assert w[0, 10, 10] == pytest.approx(1.0)  # deep inside the dilated ROI
    assert w[0, 0, 0] == pytest.approx(0.05) and w[0, 19, 10] == pytest.approx(0.05)
    assert 0.05 < w[0, 10, 5] < 1.0  # soft edge beyond the 2 px dilation
    hard = roi_loss_weight(roi, 0.05, dilate=0, soft_edges=False)
    assert torch.equal(hard, 0.05 + 0.95 * roi)
    pred, gt = torch.zeros(3, 20, 20), torch.zeros(3, 20, 20)
    pred[:, 0, 0] = 1.0  # error only outside the ROI
    expected = (3 * 0.05) / (3 * w.sum())
    assert weighted_l1(pred, gt, w) == pytest.approx(float(expected), rel=1e-5)


def test_edge_band_is_one_pixel_ring():
    roi = torch.zeros(1, 9, 9)
    roi[:, 3:6, 3:6] = 1
    band = roi_edge_band(roi)
    assert band[4, 4] == 0 and band[3, 3] == 1 and band[2, 2] == 1 and band[1, 1] == 0
    assert int(band.sum()) == 5 * 5 - 1  # the 5x5 dilation minus the 1 px erosion


# ----------------------------------------------------------------------------- gate


def gate_camera(**kw) -> Camera:
    cam = camera(**kw)
    roi = torch.zeros(1, cam.image_height, cam.image_width)
    roi[:, 10:20, 5:25] = 1
    cam.priors["roi"] = roi
    return cam


def test_gate_admits_exactly_the_gaussians_projecting_into_the_roi():
    cam = gate_camera()
    g = torch.Generator().manual_seed(0)
    n = 2000
    uv = torch.rand(n, 2, generator=g) * torch.tensor([60.0, 50.0]) - torch.tensor([10.0, 10.0])
    z = torch.rand(n, generator=g) * 6.0 - 1.0  # some behind the camera, some far
    pts = torch.stack([(uv[:, 0] - cam.cx) / cam.fx * z, (uv[:, 1] - cam.cy) / cam.fy * z, z], 1)
    gate = ROIGate(far_depths={cam.image_name: 2.0})  # normalised depth = z / 4
    allowed = gate.densify_allowed(model_at(pts), cam, step=1)

    # Independent reference: pixel (floor v, floor u) of the ROI, in front, z / 4 <= 0.9.
    roi = cam.priors["roi"][0].bool()
    expected = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        u, v, zi = float(uv[i, 0]), float(uv[i, 1]), float(z[i])
        if zi > cam.znear and 0 <= u < 40 and 0 <= v < 30 and zi / 4.0 <= 0.9:
            expected[i] = bool(roi[int(np.floor(v)), int(np.floor(u))])
    assert allowed is not None and torch.equal(allowed, expected)
    assert 50 < int(expected.sum()) < n // 2  # the test exercises both outcomes


def test_gate_depth_threshold_modes_and_cameras_without_roi():
    cam = gate_camera()
    cols, rows = [10, 10, 10], [15, 15, 15]
    pts = points_at_pixels(cam, cols, rows, [1.0, 3.5, 3.7])  # ref 2 -> 0.25, 0.875, 0.925
    model = model_at(pts)
    gate = ROIGate(far_depths={cam.image_name: 2.0})
    assert gate.densify_allowed(model, cam, 1).tolist() == [True, True, False]
    late = ROIGate(gate_mode="late", grow_from_iter=100, far_depths={cam.image_name: 2.0})
    assert late.densify_allowed(model, cam, 99) is None
    assert late.densify_allowed(model, cam, 100).tolist() == [True, True, False]
    assert gate.densify_allowed(model, camera(), 1) is None  # no ROI: no gate
    # The upstream NDC test (znear 0.01, zfar 100) rejects everything beyond z = 0.1.
    ndc = ROIGate(depth_space="ndc")
    assert ndc.densify_allowed(model, cam, 1).tolist() == [False, False, False]
    near = model_at(points_at_pixels(cam, [10], [15], [0.05]))
    assert ndc.densify_allowed(near, cam, 1).tolist() == [True]


def test_far_scene_depths_quantile_of_points_in_view():
    cam = camera()
    pts = points_at_pixels(cam, [5] * 101, [5] * 101, torch.linspace(1.0, 2.0, 101))
    behind = torch.tensor([[0.0, 0.0, -5.0]])
    refs = far_scene_depths(torch.cat([pts, behind]), [cam], quantile=0.5)
    assert refs[cam.image_name] == pytest.approx(1.5, abs=1e-4)


def test_roi_prune_and_edge_damping():
    cam = gate_camera()
    cam.priors["roi_edge"] = roi_edge_band(cam.priors["roi"])
    # 0: inside, faint -> kept; 1: outside, faint -> pruned; 2: outside, opaque -> kept;
    # 3: far inside, faint -> pruned; 4: on the edge band, opaque -> damped and capped;
    # 5: not visible (behind), faint -> kept.
    pts = torch.cat([
        points_at_pixels(cam, [12, 2, 2, 12, 5], [15, 15, 15, 15, 10], [1.0, 1.0, 1.0, 3.9, 1.0]),
        torch.tensor([[0.0, 0.0, -1.0]]),
    ])  # fmt: skip
    model = model_at(pts)
    with torch.no_grad():
        op = torch.tensor([0.01, 0.01, 0.5, 0.01, 0.9, 0.01])
        model.params["opacities"].copy_(torch.log(op / (1 - op)))
    opt = build_optimizer(model, {k: 1e-3 for k in model.params})
    (model.params["opacities"] ** 2).sum().backward()
    opt.step()
    before = opt.state[model.params["opacities"]]["exp_avg"].clone()
    op_before = model.get_opacity.detach().clone()
    gate = ROIGate(far_depths={cam.image_name: 2.0})
    prune = gate.prune_and_damp(model, opt, cam, step=1)
    assert prune.tolist() == [False, True, False, True, False, False]
    assert model.get_opacity[4].item() == pytest.approx(0.75, abs=1e-5)  # 0.9*0.97 capped
    assert torch.equal(model.get_opacity[:4].detach(), op_before[:4])  # not on the band
    after = opt.state[model.params["opacities"]]["exp_avg"]
    assert after[4] == 0 and torch.equal(after[:4], before[:4])  # only the damped row resets
    assert gate.prune_and_damp(model, opt, cam, step=15_000) is None  # strict window over


def test_default_strategy_with_gate_only_densifies_inside_roi():
    cam = gate_camera()
    pts = points_at_pixels(cam, [12, 2], [15, 15], [1.0, 1.0])
    model = model_at(pts)
    opt = build_optimizer(model, {k: 1e-3 for k in model.params})
    gate = ROIGate(far_depths={cam.image_name: 2.0})
    s = DefaultStrategy(cameras_extent=1.0, densify_from_iter=0, densification_interval=1, roi=gate)
    state = s.initialize_state(model)
    state["grad2d"] += 1.0
    state["count"] += 1.0
    counts = s.densify_and_prune(model, opt, state, 1, cam)
    assert counts["clone"] + counts["split"] == 1
    assert model.num_gaussians == 3 and torch.allclose(model.get_xyz[2], pts[0])


# ----------------------------------------------------------------------------- defaults


def parse_all(argv):
    parser = ArgumentParser()
    groups = [
        ModelParams(parser), OptimizationParams(parser), ROIParams(parser),
        DensifyParams(parser), DepthLossParams(parser),
    ]  # fmt: skip
    args = parser.parse_args(argv)
    return [g.extract(args) for g in groups]


def test_default_flags_build_exactly_3dgs():
    _, opt, roi, densify, depth = parse_all([])
    strategy = build_strategy(opt, 2.0, False, densify, None)
    assert type(strategy) is DefaultStrategy
    assert strategy == DefaultStrategy.from_opt(opt, 2.0, False)
    assert strategy.roi is None and strategy.opacity_reset_value == 0.01
    assert build_extra_losses(roi, depth) is None
    assert build_step_schedule(densify) is None
    model = model_at(torch.randn(5, 3))
    assert type(build_training_optimizer(model, opt, 1.0, densify)) is torch.optim.Adam
    cams = [fake_cam("a.png")]
    assert attach_training_priors(cams, "/nonexistent", roi, depth) is None
    assert cams[0].priors == {}
    # The roigs defaults of the new groups (seeds digest 3.5).
    assert (roi.roi_loss_focus_after, roi.roi_loss_outside_weight, roi.roi_mask_dilate) == (
        20_000, 0.05, 2)  # fmt: skip
    assert (roi.roi_prune_strict_until, roi.lambda_lpdr, roi.lpdr_gamma) == (15_000, 0.2, 1.2)
    assert (densify.budget, densify.split_distance, densify.opacity_reduction, densify.cams) == (
        3_000_000, 0.45, 0.6, 10)  # fmt: skip


def test_flags_build_the_roigs_pieces():
    _, opt, roi, densify, depth = parse_all(
        ["--use_mask", "--use_lpdr", "--densify_strategy", "improved",
         "--lambda_depth_pearson", "0.05", "--roi_loss_focus_after", "70"]
    )  # fmt: skip
    extra = build_extra_losses(roi, depth)
    assert extra.roi_focus_after == 70 and extra.lambda_lpdr == 0.2
    assert extra.lambda_depth_pearson == 0.05 and extra.depth_pearson_window == (1000, 6500)
    schedule = build_step_schedule(densify)
    assert schedule.phases == ((0, 1), (15_000, 5), (22_500, 20))
