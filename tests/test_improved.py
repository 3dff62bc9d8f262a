"""Improved-GS densification: long-axis split, budget and cap, edge-aware importance from
the renderer, the separate SH-rest optimizer and the multi-step schedule."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import requires_cuda, step_once

from gaussian import ops
from gaussian.model import GaussianModel
from gaussian.optim import OptimizerSet, StepSchedule, build_optimizer, build_optimizer_set
from gaussian.strategy.improved import (
    EdgeImportance,
    ImprovedStrategy,
    blending_weight_sums,
    edge_map,
    long_axis_split,
    normalise_positive,
)
from gaussian_renderer import render
from scene.cameras import Camera
from utils.graphics_utils import quat_to_rotmat

LRS = {"means": 1e-3, "scales": 1e-3, "quats": 1e-3, "opacities": 1e-2, "sh0": 1e-3, "shN": 1e-4}


def make_model(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = GaussianModel.from_points(torch.randn(n, 3, generator=g), torch.rand(n, 3, generator=g))
    with torch.no_grad():
        model.params["scales"].copy_(torch.log(torch.rand(n, 3, generator=g) * 0.3 + 0.02))
        model.params["quats"].copy_(torch.randn(n, 4, generator=g))
        model.params["opacities"].copy_(torch.randn(n, generator=g))
        model.params["shN"].copy_(torch.randn(model.params["shN"].shape, generator=g))
    return model


# ----------------------------------------------------------------------------- split


@pytest.mark.parametrize("separate_sh", [False, True])
def test_long_axis_split_geometry_and_optimizer_alignment(separate_sh):
    model = make_model()
    model.extras["ids"] = torch.arange(12)
    opt = (
        build_optimizer_set(model, LRS, {"sh": ["shN"]})
        if separate_sh
        else build_optimizer(model, LRS)
    )
    step_once(model, opt)
    parents = torch.zeros(12, dtype=torch.bool)
    parents[[2, 7]] = True
    old = {k: v.detach().clone() for k, v in model.params.items()}
    members = opt.members.values() if separate_sh else [opt]
    moments = {
        g["name"]: o.state[g["params"][0]]["exp_avg"].clone()
        for o in members
        for g in o.param_groups
    }
    long_axis_split(model, opt, parents, None, split_distance=0.45, opacity_reduction=0.6)

    assert model.num_gaussians == 12 - 2 + 4
    model.check()
    kept = ~parents
    assert torch.equal(model.extras["ids"][:10], torch.arange(12)[kept])
    assert model.extras["ids"][10:].tolist() == [2, 7, 2, 7]  # children: +offset, -offset
    # Every surviving row keeps its Adam moments; children start from zero.
    groups = ops._groups(opt)
    for name, param in model.params.items():
        owner, group = groups[name]
        assert group["params"][0] is param
        m = owner.state[param]["exp_avg"]
        assert torch.equal(m[:10], moments[name][kept])
        assert torch.count_nonzero(m[10:]) == 0

    for j, parent in enumerate([2, 7]):
        s = torch.exp(old["scales"][parent])
        smax, axis = s.max(0)
        R = quat_to_rotmat(old["quats"][parent])
        direction = R[:, axis]
        for child, sign in ((10 + j, 1.0), (12 + j, -1.0)):
            offset = model.get_xyz[child].detach() - old["means"][parent]
            assert torch.allclose(offset, sign * 0.45 * 3 * smax * direction, atol=1e-6)
            cs = model.get_scaling[child].detach()
            # Long axis: the child's 3 sigma end meets the parent's (1.35 + 3 * 0.55 = 3).
            assert cs[axis] == pytest.approx(0.55 * float(smax), rel=1e-5)
            assert float(offset.norm() + 3 * cs[axis]) == pytest.approx(3 * float(smax), rel=1e-5)
            # Across: the parent's 3 sigma cross-section at the child's centre.
            others = [k for k in range(3) if k != int(axis)]
            assert torch.allclose(cs[others], s[others] * math.sqrt(1 - 0.45**2), rtol=1e-5)
            op = torch.sigmoid(old["opacities"][parent]) * 0.6
            assert model.get_opacity[child].item() == pytest.approx(op.item(), rel=1e-5)
            assert torch.equal(model.params["shN"][child], old["shN"][parent])
            assert torch.equal(model.params["quats"][child], old["quats"][parent])
    step_once(model, opt)  # the optimizer still works on the edited tensors


def test_budget_ramp_and_step_cap():
    s = ImprovedStrategy(densify_from_iter=500, budget_ramp_until=14_500, budget=1_000_000)
    assert s.budget_at(500) == 0
    assert s.budget_at(500 + 14_000 // 4) == 500_000  # sqrt(1/4)
    assert s.budget_at(14_500) == 1_000_000 and s.budget_at(20_000) == 1_000_000
    assert s.step_cap(10_000) == 2048 and s.step_cap(1_000_000) == 20_000
    assert s.step_cap(10_000_000) == 32_768
    s2 = ImprovedStrategy(cap_profile="ultra+")
    assert s2.step_cap(10_000) == 4096 and s2.step_cap(10_000_000) == 65_536
    assert ImprovedStrategy(max_new_points_per_iter=77).step_cap(10**6) == 77
    with pytest.raises(ValueError):
        ImprovedStrategy(cap_profile="huge")


def test_improved_densify_respects_budget_cap_and_candidates():
    torch.manual_seed(0)
    model = make_model(40)
    opt = build_optimizer(model, LRS)
    s = ImprovedStrategy(densify_from_iter=0, budget_ramp_until=1, budget=45,
                         max_new_points_per_iter=100, score_gradient_after=0)  # fmt: skip
    state = s.initialize_state(model)
    state["count"] += 1.0
    state["grad2d"][:10] = 1.0  # ten candidates (gradient score after score_gradient_after)
    counts = s.densify_and_prune(model, opt, state, step=5)
    assert counts["split"] == 5  # budget 45 - 40 Gaussians
    assert model.num_gaussians == 45 - counts["prune"]
    # Under budget, only candidates split: at most 10 however large the budget.
    model2 = make_model(40)
    s2 = ImprovedStrategy(densify_from_iter=0, budget_ramp_until=1, budget=10_000,
                          max_new_points_per_iter=100, score_gradient_after=0)  # fmt: skip
    state2 = s2.initialize_state(model2)
    state2["count"] += 1.0
    state2["grad2d"][:10] = 1.0
    assert s2.densify_and_prune(model2, build_optimizer(model2, LRS), state2, 5)["split"] == 10


# ----------------------------------------------------------------------------- importance


def small_view(model_device="cpu", name="v.png", seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, 24, 32, generator=g)
    return Camera(0, name, np.eye(3), np.array([0.0, 0.0, 4.0]), 30.0, 30.0, 16.0, 12.0, 32, 24,
                  image=img)  # fmt: skip


def scene_model(n=60, seed=1):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.8, 0.5])
    colors, scales = torch.rand(n, 3, generator=g), torch.full((n, 3), 0.25)
    return GaussianModel.from_points(pts, colors, 0, init_opacity=0.6, scales=scales)


class Pipe:
    debug = False
    antialiasing = False
    convert_SHs_python = False
    compute_cov3D_python = False


def torch_render_fn(camera, model, features):
    return render(camera, model, Pipe(), torch.zeros(3), features=features, backend="torch")


def test_blending_weight_sums_match_the_rendered_alpha():
    """sum_g sum_p w(p) alpha_g T_g(p) = sum_p w(p) alpha(p): the renderer's own weights."""
    cam, model = small_view(), scene_model()
    w = torch.rand(24, 32, generator=torch.Generator().manual_seed(3))
    sums, visible = blending_weight_sums(torch_render_fn, cam, model, w)
    alpha = torch_render_fn(cam, model, None)["alpha"][0].detach()
    assert sums.shape == (60,) and (sums >= 0).all()
    assert float(sums.sum()) == pytest.approx(float((w * alpha).sum()), rel=1e-4)
    assert (sums[~visible] == 0).all() and (sums[visible] > 0).any()
    assert all(p.grad is None for p in model.params.values())  # model gradients untouched


def test_edge_map_and_importance():
    img = torch.zeros(3, 10, 10)
    img[:, :, 5:] = 1.0
    e = edge_map(img)
    assert e.min() == 0 and e.max() == 1
    assert e[:, 5].min() == 1 and e[:, :4].max() == 0 and e[:, 7:].max() == 0
    v = normalise_positive(torch.tensor([0.0, 1.0, 3.0, -1.0]))
    assert v.tolist() == [0.0, 0.5, 1.5, 0.0]

    cams = [small_view(name=f"v{i}.png", seed=i) for i in range(3)]
    imp = EdgeImportance(cams, torch_render_fn, cams=2, all_views_every=10, all_views_offset=4)
    assert imp.n_views(3) == 2 and imp.n_views(14) == 3 and imp.n_views(10_004) == 2
    assert len({c.image_name for c in imp.views(3) + imp.views(3)[:1]}) == 3  # cycles
    score = imp(scene_model(), step=3)
    assert score.shape == (60,) and (score >= 0).all() and score.sum() > 0
    assert "edges" in cams[0].priors or "edges" in cams[1].priors


# ----------------------------------------------------------------------------- optimizer


def test_optimizer_set_matches_single_adam_and_reports_state():
    m1 = make_model()
    m2 = copy.deepcopy(m1)
    single = build_optimizer(m1, LRS)
    split = build_optimizer_set(m2, LRS, {"sh": ["shN"]})
    assert isinstance(split, OptimizerSet) and [g["name"] for g in split.param_groups] == [
        "means", "scales", "quats", "opacities", "sh0", "shN"]  # fmt: skip
    for _ in range(3):
        step_once(m1, single)
        step_once(m2, split)
    for k in m1.params:
        assert torch.allclose(m1.params[k], m2.params[k]), k
    state = split.state_dict()
    assert set(state) == {"main", "sh"}
    split.load_state_dict(state)
    with pytest.raises(ValueError):
        build_optimizer_set(m2, LRS, {"a": ["shN"], "b": ["shN"]})


def test_step_schedule_improved_gs_phases():
    s = StepSchedule(((0, 1), (15_000, 5), (22_500, 20)))
    steps = [t for t in range(14_990, 22_561) if s.should_step(t)]
    assert steps[:11] == list(range(14_990, 15_001))
    assert steps[11:14] == [15_005, 15_010, 15_015]
    assert 22_500 in steps and 22_505 not in steps and 22_520 in steps and 22_540 in steps
    assert all(StepSchedule().should_step(t) for t in range(1, 100))
    with pytest.raises(ValueError):
        StepSchedule(((0, 0),))


def test_multistep_accumulates_gradients_between_steps():
    """train.optimizer_step leaves gradients in place until the schedule steps."""
    from train import optimizer_step

    model = make_model(4)
    opt = build_optimizer(model, LRS)
    schedule = StepSchedule(((0, 3),))
    before = model.params["means"].detach().clone()
    for it in (1, 2):
        (model.params["means"].sum()).backward()
        optimizer_step(opt, iteration=it, schedule=schedule)
    assert torch.equal(model.params["means"], before)
    assert torch.allclose(model.params["means"].grad, torch.full_like(before, 2.0))
    (model.params["means"].sum()).backward()
    optimizer_step(opt, iteration=3, schedule=schedule)
    assert model.params["means"].grad is None and not torch.equal(model.params["means"], before)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@requires_cuda
def test_blending_weight_sums_gsplat_matches_torch():
    """The edge-aware importance from gsplat equals the torch oracle's (GPU machine)."""
    pytest.importorskip("gsplat")
    cam = small_view().to("cuda")
    model = scene_model(n=400)
    model.params = {k: torch.nn.Parameter(v.detach().cuda()) for k, v in model.params.items()}
    w = torch.rand(24, 32, generator=torch.Generator().manual_seed(3)).cuda()

    def fn(backend):
        def render_fn(camera, m, features):
            bg = torch.zeros(3, device="cuda")
            return render(camera, m, Pipe(), bg, features=features, backend=backend)

        return render_fn

    sums_g, vis_g = blending_weight_sums(fn("gsplat"), cam, model, w)
    sums_t, vis_t = blending_weight_sums(fn("torch"), cam, model, w)
    assert torch.equal(vis_g, vis_t)
    assert float((sums_g - sums_t).norm() / sums_t.norm()) < 2e-3
