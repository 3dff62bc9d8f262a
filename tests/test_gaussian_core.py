"""Gaussian parameters, state-aligned edits, the 3DGS strategy schedule, PLY layout."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import step_once
from plyfile import PlyData

from gaussian import ops
from gaussian.knn import mean_sq_dist_to_neighbors
from gaussian.model import GaussianModel
from gaussian.optim import build_optimizer, expon_lr
from gaussian.ply import attribute_names, load_ply, save_ply
from gaussian.strategy.default import DefaultStrategy, reset_opacity, split

LRS = {"means": 1e-3, "scales": 1e-3, "quats": 1e-3, "opacities": 1e-2, "sh0": 1e-3, "shN": 1e-4}


def make_model(n=50, seed=0, sh_degree=3):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g)
    model = GaussianModel.from_points(pts, torch.rand(n, 3, generator=g), sh_degree)
    with torch.no_grad():
        for p in model.params.values():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return model


def test_knn_matches_brute_force():
    pts = torch.randn(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = torch.cdist(pts, pts)
    d.fill_diagonal_(float("inf"))
    ref = d.topk(3, largest=False).values.pow(2).mean(1)
    assert torch.allclose(mean_sq_dist_to_neighbors(pts, 3).double(), ref, rtol=1e-5)


def test_keep_keeps_rows_and_adam_moments_aligned():
    model = make_model()
    model.extras["ids"] = torch.arange(50)
    opt = build_optimizer(model, LRS)
    step_once(model, opt)
    before = {k: opt.state[p]["exp_avg"].clone() for k, p in model.params.items()}
    state = {"grad2d": torch.arange(50.0), "step": torch.tensor(3.0)}
    mask = torch.arange(50) % 3 != 0
    ops.keep(model, opt, mask, state)
    model.check()
    assert model.num_gaussians == int(mask.sum())
    assert torch.equal(model.extras["ids"], torch.arange(50)[mask])
    assert torch.equal(state["grad2d"], torch.arange(50.0)[mask])
    assert state["step"].item() == 3.0  # non per-Gaussian state untouched
    for k, p in model.params.items():
        assert opt.param_groups[[g["name"] for g in opt.param_groups].index(k)]["params"][0] is p
        assert torch.equal(opt.state[p]["exp_avg"], before[k][mask])
    step_once(model, opt)  # the optimizer still works on the edited tensors


def test_append_zero_moments_and_duplicate():
    model = make_model(10)
    opt = build_optimizer(model, LRS)
    step_once(model, opt)
    ops.duplicate(model, opt, torch.tensor([True] + [False] * 9))
    assert model.num_gaussians == 11
    for p in model.params.values():
        assert torch.equal(p[10], p[0])
        assert torch.count_nonzero(opt.state[p]["exp_avg"][10]) == 0
        assert torch.count_nonzero(opt.state[p]["exp_avg_sq"][10]) == 0
    with pytest.raises(KeyError):
        ops.append(model, opt, {"means": torch.zeros(1, 3)})


def test_split_children_follow_parent():
    torch.manual_seed(0)
    model = make_model(5)
    opt = build_optimizer(model, LRS)
    parent_scale = model.get_scaling[2].clone()
    parent_mean = model.get_xyz[2].clone()
    mask = torch.zeros(5, dtype=torch.bool)
    mask[2] = True
    split(model, opt, mask, None, n_children=2)
    assert model.num_gaussians == 6
    children = model.get_scaling[-2:]
    assert torch.allclose(children, parent_scale.expand(2, 3) / 1.6, rtol=1e-5)
    # Samples lie within a few sigma of the parent.
    assert ((model.get_xyz[-2:] - parent_mean).norm(dim=1) < 6 * parent_scale.max()).all()


def test_reset_opacity_caps_and_zeroes_moments():
    model = make_model(20)
    opt = build_optimizer(model, LRS)
    step_once(model, opt)
    reset_opacity(model, opt, 0.01)
    assert model.get_opacity.max() <= 0.01 + 1e-6
    assert torch.count_nonzero(opt.state[model.params["opacities"]]["exp_avg"]) == 0


def test_default_strategy_schedule():
    """Densification and resets fire exactly at the 3DGS steps (a gsplat 1.5.3 bug class)."""
    s = DefaultStrategy(densify_from_iter=500, densify_until_iter=15_000,
                        densification_interval=100, opacity_reset_interval=3000,
                        reset_at_densify_start=True)  # fmt: skip
    fired_densify = [t for t in range(1, 30_001) if s.should_densify(t)]
    fired_reset = [t for t in range(1, 30_001) if s.should_reset_opacity(t)]
    assert fired_densify[0] == 600 and fired_densify[-1] == 14_900
    assert fired_reset == [500, 3000, 6000, 9000, 12000]


def test_default_strategy_densifies_high_gradient_gaussians():
    model = make_model(30)
    opt = build_optimizer(model, LRS)
    s = DefaultStrategy(cameras_extent=1.0, densify_from_iter=0, densification_interval=1)
    state = s.initialize_state(model)
    means2d = torch.zeros(30, 2, requires_grad=True)
    (means2d * torch.linspace(0, 1, 30)[:, None]).sum().backward()
    pkg = {"viewspace_points": means2d, "visibility_filter": torch.ones(30, dtype=torch.bool),
           "radii": torch.full((30,), 3), "width": 100, "height": 80}  # fmt: skip
    # NDC grad norm of row i is t_i * |(50, 40)|: rows with t_i >= 2e-4 / 64 are "high".
    counts = s.step_post_backward(model, opt, state, 1, pkg)
    assert counts["clone"] + counts["split"] == 29  # all but the zero-gradient row
    model.check()
    assert all(v.shape[0] == model.num_gaussians for v in state.values())


def test_expon_lr_endpoints():
    f = expon_lr(1e-2, 1e-4, max_steps=100)
    assert f(0) == pytest.approx(1e-2) and f(100) == pytest.approx(1e-4)
    assert f(50) == pytest.approx(1e-3)


def test_ply_round_trip_and_inria_layout(tmp_path):
    model = make_model(17)
    model.active_sh_degree = 3
    path = str(tmp_path / "point_cloud.ply")
    save_ply(model, path)
    ply = PlyData.read(path)
    names = [p.name for p in ply["vertex"].properties]
    assert names == attribute_names(15)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert all(p.val_dtype in ("f4", "float32", "float") for p in ply["vertex"].properties)
    assert not (tmp_path / "point_cloud_extras.npz").exists()
    # f_rest is channel-major: f_rest_0..14 are the red coefficients of bands 1-3.
    red = np.stack([ply["vertex"][f"f_rest_{i}"] for i in range(15)], 1)
    assert np.allclose(red, model.params["shN"][:, :, 0].detach().numpy())
    loaded = load_ply(path)
    for k, v in model.params.items():
        assert torch.allclose(loaded.params[k], v.detach()), k


def test_ply_side_file_for_extra_tensors(tmp_path):
    model = make_model(8, sh_degree=1)
    model.params["features_group"] = torch.nn.Parameter(torch.randn(8, 4, 16))
    model.extras["ids"] = torch.arange(8)
    path = str(tmp_path / "pc.ply")
    save_ply(model, path)
    assert [p.name for p in PlyData.read(path)["vertex"].properties] == attribute_names(3)
    loaded = load_ply(path)
    assert torch.equal(loaded.params["features_group"], model.params["features_group"].detach())
    assert torch.equal(loaded.extras["ids"], model.extras["ids"])


def test_flat_adam_matches_torch_adam_through_densification():
    from gaussian.optim import FlatAdam

    torch.manual_seed(0)
    models = [make_model(40, seed=1), make_model(40, seed=1)]
    opts = [
        FlatAdam([{"params": [p], "lr": LRS[k], "name": k} for k, p in models[0].params.items()],
                 lr=0.0, eps=1e-15),
        torch.optim.Adam([{"params": [p], "lr": LRS[k], "name": k}
                          for k, p in models[1].params.items()], lr=0.0, eps=1e-15),
    ]  # fmt: skip

    def train(model, opt, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            w = {k: torch.randn(p.shape, generator=g) for k, p in model.params.items()}
            loss = sum(((p - w[k]) ** 2).sum() for k, p in model.params.items() if k != "shN")
            loss.backward()  # shN gets no gradient: skipped like torch does
            opt.step()
            opt.zero_grad(set_to_none=True)

    for model, opt in zip(models, opts):
        train(model, opt, 5, seed=3)
        ops.keep(model, opt, torch.arange(model.num_gaussians) % 4 != 1)
        ops.duplicate(model, opt, torch.arange(model.num_gaussians) % 5 == 0)
        reset_opacity(model, opt, 0.01)
        train(model, opt, 7, seed=4)
    for k in models[0].params:
        torch.testing.assert_close(models[0].params[k], models[1].params[k], rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
        st0, st1 = opts[0].state[models[0].params[k]], opts[1].state[models[1].params[k]]
        if k != "shN":
            torch.testing.assert_close(st0["exp_avg_sq"], st1["exp_avg_sq"])


def test_flat_adam_selective_step_leaves_hidden_gaussians_alone():
    from gaussian.optim import FlatAdam

    model = make_model(12)
    opt = FlatAdam([{"params": [p], "lr": LRS[k], "name": k} for k, p in model.params.items()],
                   lr=0.0, eps=1e-15)  # fmt: skip
    step_once(model, opt)
    visible = torch.arange(12) % 3 == 0
    before = {k: p.detach().clone() for k, p in model.params.items()}
    moments = {k: opt.state[p]["exp_avg"].clone() for k, p in model.params.items()}
    loss = sum((p**2).sum() for p in model.params.values())
    loss.backward()
    opt.step(visible=visible)
    for k, p in model.params.items():
        assert torch.equal(p[~visible], before[k][~visible]), k
        assert torch.equal(opt.state[p]["exp_avg"][~visible], moments[k][~visible]), k
        assert not torch.equal(p[visible], before[k][visible]), k


def test_flat_adam_state_dict_round_trips_through_torch_adam():
    """FlatAdam's state_dict has torch's format: it loads into torch.optim.Adam and back,
    and training continues identically."""
    from gaussian.optim import FlatAdam

    def groups(model):
        return [{"params": [p], "lr": LRS[k], "name": k} for k, p in model.params.items()]

    a, b = make_model(30, seed=2), make_model(30, seed=2)
    flat = FlatAdam(groups(a), lr=0.0, eps=1e-15)
    for _ in range(3):
        step_once(a, flat)
    with torch.no_grad():
        for k, p in b.params.items():
            p.copy_(a.params[k])
    adam = torch.optim.Adam(groups(b), lr=0.0, eps=1e-15)
    adam.load_state_dict(copy.deepcopy(flat.state_dict()))  # as through torch.save/load
    step_once(a, flat)
    step_once(b, adam)
    for k in a.params:
        torch.testing.assert_close(a.params[k], b.params[k])
    back = FlatAdam(groups(a), lr=0.0, eps=1e-15)
    back.load_state_dict(copy.deepcopy(adam.state_dict()))
    assert [g["name"] for g in back.param_groups] == list(a.params)
    for k, p in a.params.items():
        torch.testing.assert_close(back.state[p]["exp_avg_sq"],
                                   adam.state[b.params[k]]["exp_avg_sq"])  # fmt: skip
