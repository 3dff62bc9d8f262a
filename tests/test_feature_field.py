"""RegSegField's feature field, mask refinement, segment-aware depth TV and warm-up cull
(utils/feature_field.py, utils/depth_losses.py, gaussian/view_cull.py): the losses against
direct computations, the feature key through densification, the detached feature pass,
the refresh of the shared maps, and a short CPU training run with every flag on."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train as train_script
from gaussian import ops
from gaussian.model import GaussianModel
from gaussian.optim import build_training_optimizer
from gaussian.strategy.default import split
from gaussian.view_cull import count_views, cull_unseen
from mask_matching.maps import DescriptorMap
from mask_matching.network import DescriptorNet
from scene.cameras import Camera
from tests.conftest import random_gaussians, requires_cuda
from tests.test_mask_visibility import write_mask_matching
from tests.test_sparse_view import common, tiny_scene  # noqa: F401 (fixture)
from utils.depth_losses import segment_tv_loss, segment_tv_pixels
from utils.feature_field import (
    FIELD_KEY,
    FeatureField,
    FieldSettings,
    MaskRefiner,
    code_statistics,
    distill_loss,
    encoder_loss,
    group_loss,
    group_pairs,
    level_weights,
)

# ----------------------------------------------------------------------------- losses


def test_level_weights_peak_on_their_own_level_and_sum_to_one():
    w = level_weights(4)
    assert torch.allclose(w.sum(dim=1), torch.ones(4))
    assert torch.equal(w.argmax(dim=1), torch.arange(4))
    assert torch.allclose(w, w.flip(0).flip(1))  # symmetric around the middle


def test_code_statistics_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 5, 6, generator=g)
    index = torch.randint(0, 4, (5, 6), generator=g)
    index[0, 0] = 3
    mean, disp, counts = code_statistics(feat, index, 5)  # code 4 has no pixel
    pix = feat.reshape(2, 3, -1).permute(2, 0, 1)  # [P, L, D]
    flat = index.reshape(-1)
    for k in range(4):
        sel = pix[flat == k]
        assert counts[k] == sel.shape[0]
        assert torch.allclose(mean[k], sel.mean(0), atol=1e-6)
        assert torch.allclose(disp[k], (sel - sel.mean(0)).abs().mean(-1).mean(0), atol=1e-6)
    assert counts[4] == 0 and torch.equal(mean[4], torch.zeros(2, 3))


def test_group_loss_matches_the_digest_on_a_three_code_hierarchy():
    """Codes A = {m0}, B = {m0, m1}, C = {m2} (and an invalid code D): A and B share one
    mask, so they are positives at level 0 and negatives at level 1; A-C and B-C share
    none, negatives at level 0."""
    g = torch.Generator().manual_seed(1)
    levels, dim = 2, 4
    mean = torch.nn.functional.normalize(torch.randn(4, levels, dim, generator=g), dim=-1)
    disp = torch.rand(4, levels, generator=g)
    masks = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
    valid = torch.tensor([True, True, True, False])
    sim, dissim = group_loss(mean, disp, group_pairs(masks, valid, mean.shape[1]))

    w = level_weights(levels)

    def dist(k, m, lv):
        per = torch.stack([(mean[k, j] - mean[m, j]).abs().mean() for j in range(levels)])
        return (w[lv] * per).sum()

    relu = torch.relu
    want_sim = dist(0, 1, 0) + 2 * disp[:3, 0].mean() + 2 * disp[:3, 1].mean()
    want_dissim = (relu(1 - dist(0, 2, 0)) + relu(1 - dist(1, 2, 0))) / 2 + relu(1 - dist(0, 1, 1))
    assert sim.item() == pytest.approx(want_sim.item(), rel=1e-5)
    assert dissim.item() == pytest.approx(want_dissim.item(), rel=1e-5)


def test_group_loss_pulls_positives_together_and_pushes_negatives_apart():
    masks = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.bool)  # A, B share m0; C alone
    valid = torch.ones(3, dtype=torch.bool)
    disp = torch.zeros(3, 1)
    mean = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]], requires_grad=True)
    sim, dissim = group_loss(mean, disp, group_pairs(masks, valid, mean.shape[1]))
    (sim + dissim).backward()
    # A moves towards B (positive) and away from C (negative, which sits where A is).
    step = -mean.grad
    assert (step[0, 0] * (mean[1, 0] - mean[0, 0]).detach()).sum() > 0
    assert sim.item() > 0 and dissim.item() > 0
    none_valid = group_loss(mean, disp, group_pairs(masks, torch.zeros(3, dtype=torch.bool), 1))
    assert none_valid[0].item() == 0.0 and none_valid[1].item() == 0.0


def test_distill_and_encoder_losses():
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(4, 16, 6, 7, generator=g)
    assert distill_loss(feat, feat).item() == 0.0
    assert distill_loss(feat, torch.zeros_like(feat)).item() == pytest.approx(
        feat.square().mean(dim=(1, 2, 3)).sum().item(), rel=1e-6
    )
    # The per-code encoder loss has the gradient of the per-pixel MSE.
    index = torch.randint(0, 3, (6, 7), generator=g)
    mean, _, counts = code_statistics(feat, index, 3)
    table = torch.randn(3, 4, 16, generator=g, requires_grad=True)
    encoder_loss(table, mean, counts).backward()
    per_code = table.grad.clone()
    table.grad = None
    dense = table[index].permute(2, 3, 0, 1)  # [L, D, H, W]
    (dense - feat).square().mean(dim=1).sum(dim=0).mean().backward()
    assert torch.allclose(per_code, table.grad, atol=1e-6)


def test_segment_tv_ignores_borders_background_and_small_codes():
    index = torch.zeros(12, 12, dtype=torch.long)
    index[:, 6:] = 1  # two segments side by side
    index[:2] = 2  # a band of the uncovered code
    valid = torch.tensor([True, True, False])
    allowed = segment_tv_pixels(index, valid, erode=3)
    # The band and its 1-pixel rim go; the image border and segment borders stay.
    assert not allowed[:3].any() and allowed[3:].all()
    depth = torch.where(index == 1, 5.0, 2.0)[None].float()
    depth[:, :2] = torch.rand(2, 12) * 10  # noise on the background only
    assert segment_tv_loss(depth, index, allowed).item() == 0.0  # jumps only at the border
    depth[0, 6, 3] += 1.0  # a bump inside segment 0
    assert segment_tv_loss(depth, index, allowed).item() > 0.0


# ----------------------------------------------------------------------------- the model


def _model(n: int = 40, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    model = GaussianModel.from_points(torch.randn(n, 3, generator=g) * 0.3,
                                      torch.rand(n, 3, generator=g), 0)  # fmt: skip
    with torch.no_grad():
        model.params["opacities"].copy_(torch.linspace(-2, 3, n))
    return model


def _camera(name="v.png", x=0.0, w=48, h=40) -> Camera:
    return Camera(0, name, np.eye(3), np.array([x, 0.0, 3.0]), 50.0, 50.0, w / 2, h / 2, w, h)


def _opt_args() -> SimpleNamespace:
    return SimpleNamespace(position_lr_init=1.6e-4, scaling_lr=5e-3, rotation_lr=1e-3,
                           opacity_lr=0.025, feature_lr=2.5e-3)  # fmt: skip


def test_feature_key_survives_clone_split_and_prune_with_its_adam_moments():
    model = _model(10)
    FeatureField({}, FieldSettings()).add_parameter(model)
    assert model.params[FIELD_KEY].shape == (10, 4, 16)
    optimizer = build_training_optimizer(model, _opt_args(), 1.0)
    model.params[FIELD_KEY].sum().backward()
    optimizer.step()
    group = next(g for g in optimizer.param_groups if g["name"] == FIELD_KEY)
    assert group["lr"] == 0.0025
    # Tag each row's feature and moment with its index, then densify and prune.
    with torch.no_grad():
        model.params[FIELD_KEY].copy_(torch.arange(10.0)[:, None, None].expand(10, 4, 16))
    optimizer.state[model.params[FIELD_KEY]]["exp_avg"].copy_(
        torch.arange(10.0)[:, None, None].expand(10, 4, 16)
    )
    ops.duplicate(model, optimizer, torch.arange(10) == 3)  # clone row 3 -> row 10
    split(model, optimizer, torch.arange(11) == 5)  # row 5 -> two children at the end
    ops.remove(model, optimizer, torch.arange(12) == 0)  # prune row 0
    model.check()
    feats = model.params[FIELD_KEY][:, 0, 0].tolist()
    assert feats == [1, 2, 3, 4, 6, 7, 8, 9, 3, 5, 5]
    moments = optimizer.state[model.params[FIELD_KEY]]["exp_avg"][:, 0, 0].tolist()
    assert moments == [1, 2, 3, 4, 6, 7, 8, 9, 0, 0, 0]  # new rows start with zero moments
    group = next(g for g in optimizer.param_groups if g["name"] == FIELD_KEY)
    assert group["params"][0] is model.params[FIELD_KEY]


def _torch_render(cam, model, feats):
    from gaussian_renderer import render

    return render(cam, model, SimpleNamespace(), torch.zeros(3), features=feats,
                  backend="torch", depth=False)  # fmt: skip


def _maps(names: list[str], h: int, w: int, levels: int = 4, dim: int = 16,
          seed: int = 0) -> tuple[dict[str, DescriptorMap], DescriptorNet]:  # fmt: skip
    """Each view: codes {uncovered}, {m0}, {m0, m1}, {m2} in vertical bands; the tables from
    a random descriptor network, as mask_matching writes them."""
    torch.manual_seed(seed)
    codes = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    net = DescriptorNet([4] * len(names), levels, dim)
    index = torch.zeros(h, w, dtype=torch.long)
    index[:, w // 4 :] = 1
    index[:, w // 2 :] = 2
    index[:, 3 * w // 4 :] = 3
    with torch.no_grad():
        maps = {n: DescriptorMap(n, index.clone(), net(v, codes.float()), codes)
                for v, n in enumerate(names)}  # fmt: skip
    return maps, net


def test_the_feature_pass_trains_the_features_only_from_the_most_opaque_fifth():
    model = _model(40)
    cam = _camera()
    maps, _ = _maps([cam.image_name], 40, 48)
    field = FeatureField(maps, FieldSettings(start=0, distill_until=5, until=10))
    field.add_parameter(model)
    seen = []
    field.bind(model, lambda c, m, f: seen.append(m.num_gaussians) or _torch_render(c, m, f))
    feat = field.render(model, cam)
    assert feat.shape == (4, 16, 40, 48) and seen == [8]
    covered = feat.norm(dim=1) > 0.5  # [L, H, W] unit length where something is drawn
    assert covered.float().mean() > 0.2
    assert torch.allclose(feat.norm(dim=1)[covered], torch.ones(()), atol=1e-4)
    terms = field.terms(cam, 3)
    assert list(terms) == ["group_distill"]
    terms["group_distill"][1].backward()
    grads = {k: v.grad for k, v in model.params.items()}
    assert grads[FIELD_KEY] is not None and grads[FIELD_KEY].abs().sum() > 0
    assert all(grads[k] is None for k in grads if k != FIELD_KEY)  # geometry detached
    # Only the 8 most opaque Gaussians in view can have a gradient.
    moved = grads[FIELD_KEY].abs().sum(dim=(1, 2)) > 0
    assert 0 < int(moved.sum()) <= 8 and moved[model.get_opacity < 0.4].sum() == 0
    assert set(field.terms(cam, 7)) == {"group_sim", "group_dissim"}
    assert field.terms(cam, 10) == {} and field.phase(0) is None


def test_the_field_at_half_resolution():
    """--group_downscale 2: the field pass, its codes and its distillation target at
    24x20 for a 48x40 view, the same camera pose (the field's centre pixel sees what the
    full-resolution render's centre sees)."""
    model = _model(40)
    cam = _camera()
    maps, _ = _maps([cam.image_name], 40, 48)
    field = FeatureField(maps, FieldSettings(start=0, distill_until=5, until=10, downscale=2))
    field.add_parameter(model)
    field.bind(model, _torch_render)
    feat = field.render(model, cam)
    assert feat.shape == (4, 16, 20, 24)
    view = field.views[cam.image_name]
    assert view.code_index.shape == (20, 24) and view.valid.tolist() == [False, True, True, True]
    assert torch.isfinite(field.terms(cam, 3)["group_distill"][1])
    assert all(torch.isfinite(v) for _, v in field.terms(cam, 7).values())
    full = FeatureField(maps, FieldSettings(start=0, distill_until=5, until=10, topk=1.0))
    half = FeatureField(maps, FieldSettings(start=0, distill_until=5, until=10, topk=1.0,
                                            downscale=2))  # fmt: skip
    for f in (full, half):
        f.bind(model, _torch_render)
    a, b = full.render(model, cam), half.render(model, cam)
    # The pixel block 2x2 of the full render around the half render's pixel (10, 12).
    assert torch.allclose(a[:, :, 20:22, 24:26].mean(dim=(2, 3)), b[:, :, 10, 12], atol=0.15)


def test_the_refiner_trains_the_network_and_refreshes_the_shared_maps():
    names = ["a.png", "b.png"]
    maps, net = _maps(names, 20, 24)
    codes = {n: (v, maps[n].codes.float()) for v, n in enumerate(names)}
    refiner = MaskRefiner(net, codes, maps, every=5)
    table_before = maps["a.png"].table.clone()
    target = torch.nn.functional.normalize(torch.randn(4, 4, 16), dim=-1)
    counts = torch.tensor([10.0, 20.0, 30.0, 40.0])
    losses = []
    for _ in range(10):
        loss = refiner.loss("a.png", target, counts)
        loss.backward()
        losses.append(loss.item())
        refiner.step()
    assert losses[-1] < 0.7 * losses[0]
    assert refiner.steps == 10 and refiner.refreshes == 2
    assert not torch.allclose(maps["a.png"].table, table_before)
    with torch.no_grad():
        assert torch.allclose(maps["a.png"].table, net(0, codes["a.png"][1]))
    refiner.step()  # no gradient since the last step: nothing happens
    assert refiner.steps == 10


def test_count_views_and_the_warm_up_cull():
    cams = [_camera("a.png", 0.0), _camera("b.png", 1.0)]
    means = torch.tensor([[0.0, 0.0, 0.0], [1.3, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, -5.0]])
    # Camera b sits at x = -1 (T = [1, 0, 3]). Both see the origin (u = 24 and 40.7 of
    # 48); x = 1.3 is at u = 45.7 in a and 62.3 in b; x = 9 is outside both; z = -5 is
    # behind both.
    assert count_views(means, cams).tolist() == [2, 1, 0, 0]
    model = GaussianModel.from_points(means, torch.rand(4, 3), 0)
    optimizer = build_training_optimizer(model, _opt_args(), 1.0)
    state = {"grad2d": torch.arange(4.0)}
    n = cull_unseen(model, optimizer, state, cams, 2)
    assert n == 3 and model.num_gaussians == 1 and state["grad2d"].tolist() == [0.0]
    assert model.params["means"].tolist() == [[0.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------- a training run


def _write_maps(scene: str, names: list[str], h: int, w: int) -> None:
    """mask_matching/ with the maps of ``_maps`` (codes included) and their network."""
    maps, net = _maps(names, h, w)
    write_mask_matching(scene, maps, net)


def test_training_with_every_regsegfield_flag(tiny_scene, tmp_path, capsys):  # noqa: F811
    """Mask visibility, feature field with refinement, segment TV and the warm-up cull in
    one short run; after --train_rgb_until the geometry stays put while the field trains,
    and the field is saved beside the PLY for segment.py."""
    from gaussian.ply import load_ply

    for bad, says in ((["--refine_masks"], "add --feature_field"),
                      (["--feature_field", "--group_topk", "0"], "--group_topk 0.0")):  # fmt: skip
        with pytest.raises(SystemExit):
            train_script.main(common(tiny_scene, str(tmp_path / "bad")) + bad)
        assert says in capsys.readouterr().err
    for flag in (["--feature_field"], ["--lambda_segment_tv", "0.1"]):  # no maps yet
        missing = str(tmp_path / "missing")
        assert train_script.main(common(tiny_scene, missing) + flag) == 1
        assert "python -m mask_matching" in capsys.readouterr().err
        assert not os.path.exists(missing)
    split_file = json.load(open(os.path.join(tiny_scene, "split.json")))
    _write_maps(tiny_scene, split_file["train"], 36, 48)
    try:
        model = str(tmp_path / "regseg")
        flags = ["--lambda_mask_vis", "0.05", "--mask_vis_from", "0", "--mask_vis_tau", "2",
                 "--feature_field", "--group_from", "2", "--group_distill_until", "5",
                 "--group_until", "12", "--train_rgb_until", "14", "--refine_masks",
                 "--refine_every", "3", "--lambda_segment_tv", "0.1", "--segment_tv_from", "0",
                 "--cull_min_views", "2", "--cull_views_at", "3"]  # fmt: skip
        argv = common(tiny_scene, model, iters=18) + flags
        argv[argv.index("--save_iterations") + 1 : argv.index("--save_iterations") + 2] = [
            "15", "18"
        ]  # fmt: skip
        assert train_script.main(argv) == 0
        out = capsys.readouterr().out
        assert "Feature field: 4x16 per Gaussian" in out and "refined every 3 steps" in out
        assert "Gaussians inside fewer than 2 training views" in out
        at = {i: load_ply(os.path.join(model, f"point_cloud/iteration_{i}/point_cloud.ply"))
              for i in (15, 18)}  # fmt: skip
        for key in ("means", "scales", "opacities", "sh0"):
            assert torch.equal(at[15].params[key], at[18].params[key]), key
        f15, f18 = at[15].params[FIELD_KEY], at[18].params[FIELD_KEY]
        assert f18.shape == (at[18].num_gaussians, 4, 16) and torch.isfinite(f18).all()
        assert not torch.equal(f15, f18)
        # segment.py reads the field from the side file (no 2D feature maps in this scene).
        import segment as segment_script

        assert segment_script.main(["-m", model, "--k", "2", "--skip_train_renders"]) == 0
        seg = json.load(open(os.path.join(model, "segments", "segmentation.json")))
        assert seg["feature_sources"] == ["field"] and seg["feature_channels"] == 64
    finally:
        import shutil

        shutil.rmtree(os.path.join(tiny_scene, "mask_matching"))


# ----------------------------------------------------------------------------- one pass


@pytest.mark.parametrize(
    "backend",
    ["torch", pytest.param("gsplat", marks=[pytest.mark.gpu, requires_cuda])],
)
def test_extra_channels_in_one_pass_equal_separate_passes(backend):
    """The mask-visibility penalty and 64 field channels rendered with RGB in one pass give
    the RGB and the channels of separate passes, and the same gradients: those of the
    channels, and for the geometry the sum of both passes' gradients."""
    from gaussian_renderer import render

    device = "cuda" if backend == "gsplat" else "cpu"
    g = torch.Generator().manual_seed(3)
    model = random_gaussians(300, g, device)
    cam = _camera(w=64, h=48).to(device)
    feats = torch.randn(300, 65, generator=g).to(device)
    w_rgb = torch.randn(3, 48, 64, generator=g).to(device)
    w_feat = torch.randn(65, 48, 64, generator=g).to(device)
    pipe, bg = SimpleNamespace(), torch.zeros(3, device=device)

    def run(passes: str):
        for p in model.params.values():
            p.grad = None
        f = feats.clone().requires_grad_(True)
        if passes == "one":
            out = render(cam, model, pipe, bg, features=f, backend=backend, depth=False)
            rgb, ch = out["render"], out["features"]
        else:
            rgb = render(cam, model, pipe, bg, backend=backend, depth=False)["render"]
            ch = render(cam, model, pipe, bg, features=f, backend=backend, depth=False)["features"]
        ((rgb * w_rgb).sum() + (ch * w_feat).sum()).backward()
        grads = {k: v.grad.clone() for k, v in model.params.items() if v.grad is not None}
        return rgb.detach(), ch.detach(), f.grad.clone(), grads

    one, two = run("one"), run("two")
    assert torch.allclose(one[0], two[0], atol=1e-5)
    assert torch.allclose(one[1], two[1], atol=1e-4)
    assert torch.allclose(one[2], two[2], atol=1e-4, rtol=1e-4)
    assert set(one[3]) == set(two[3]) and {"means", "opacities", "scales"} <= set(one[3])
    for key in one[3]:
        scale = two[3][key].abs().max().clamp_min(1e-6)
        assert (one[3][key] - two[3][key]).abs().max() / scale < 1e-3, key
    assert one[1].abs().max() > 0.1 and one[2].abs().max() > 0  # not a vacuous check


@pytest.mark.gpu
@requires_cuda
def test_the_feature_pass_on_gsplat_matches_the_torch_backend():
    """The detached feature pass through gsplat's features-only render gives the torch
    backend's field, and gradients reach the features only.

    The field is compared where both passes are covered (alpha > 0.05): the per-level
    normalisation turns a fringe pixel that one backend covers at alpha ~ 1/255 and the
    other leaves empty into a unit vector against zero. The render itself, values and
    gradients, is compared in tests/test_gsplat_parity.py (render_features_only)."""
    from gaussian_renderer import render_features_only

    results = []
    for backend, device in (("torch", "cpu"), ("gsplat", "cuda")):
        model = _model(200, seed=4)
        model = GaussianModel.restore(model.capture(), device)
        cam = _camera(w=64, h=48).to(device)
        maps, _ = _maps([cam.image_name], 48, 64)
        maps = {k: v.to(device) for k, v in maps.items()}
        field = FeatureField(maps, FieldSettings(start=0, distill_until=5, until=10, topk=0.5))
        # The same field on both devices: CPU and CUDA draw different torch.rand streams
        # from one seed, so the initial values come from a CPU generator.
        init = torch.rand(
            model.num_gaussians, field.settings.levels, field.settings.dim,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        model.params[FIELD_KEY] = torch.nn.Parameter(init.to(device))
        field.add_parameter(model)  # keeps the field that is there, as on a resumed run
        alpha = []

        def render_fn(c, m, f, b=backend, alpha=alpha):
            out = render_features_only(c, m, f, backend=b)
            alpha.append(out["alpha"].detach().cpu())
            return out

        field.bind(model, render_fn)
        field.terms(cam, 3)["group_distill"][1].backward()
        assert model.params[FIELD_KEY].grad.abs().max() > 0
        assert all(v.grad is None for k, v in model.params.items() if k != FIELD_KEY)
        results.append((field.render(model, cam).detach().cpu(), alpha[-1][0]))
    (f_t, a_t), (f_g, a_g) = results
    covered = (a_t > 0.05) & (a_g > 0.05)
    assert covered.float().mean() > 0.5
    assert (f_t - f_g).abs().amax(dim=(0, 1))[covered].max() < 1e-3


def test_matched_descriptor_maps_as_2d_features(tmp_path, capsys):
    """python -m segmentation.features --from_mask_matching writes each training view's
    matched descriptor map as features/<stem>.npy, the 2D features segment.py distils."""
    from segmentation import features

    scene = str(tmp_path / "scene")
    assert features.main(["-s", scene, "--from_mask_matching"]) == 1
    assert "python -m mask_matching" in capsys.readouterr().err
    names = ["a.png", "b.png"]
    _write_maps(scene, names, 12, 16)
    assert features.main(["-s", scene, "--from_mask_matching"]) == 0
    maps, _ = _maps(names, 12, 16)
    for name in names:
        got = np.load(os.path.join(scene, "features", name[:-4] + ".npy"))
        want = maps[name].dense().reshape(64, 12, 16).numpy()
        assert got.shape == (64, 12, 16) and np.allclose(got, want, atol=1e-3)
    meta = json.load(open(os.path.join(scene, "features", "meta.json")))
    assert meta["channels"] == 64 and meta["views"] == names
