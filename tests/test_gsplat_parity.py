"""The two render backends agree: gsplat (CUDA) against the pure-PyTorch rasterizer.

GPU only (marker ``gpu``): run on the GPU machine with scripts/gpu_check.sh.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import random_gaussians, requires_cuda

from gaussian_renderer import render
from scene.cameras import Camera

pytestmark = [pytest.mark.gpu, requires_cuda]


def scene(n=3000, seed=0, with_features=False):
    g = torch.Generator().manual_seed(seed)
    model = random_gaussians(n, g)
    R = np.eye(3)
    cam = Camera(0, "v.png", R, np.array([0.1, -0.2, 3.0]), 180.0, 170.0, 70.3, 61.7, 141, 119,
                 device="cuda")  # fmt: skip
    feats = torch.rand(n, 5, generator=g).cuda().requires_grad_() if with_features else None
    return model, cam, feats


def run(backend, model, cam, feats, antialiasing=False, fused=True, depth=True,
        scaling_modifier=1.0, absgrad=False):  # fmt: skip
    pipe = SimpleNamespace(antialiasing=antialiasing)
    for p in model.params.values():
        p.grad = None
    if feats is not None:
        feats.grad = None
    out = render(cam, model, pipe, torch.tensor([0.1, 0.3, 0.6], device="cuda"),
                 scaling_modifier, features=feats, backend=backend, depth=depth, fused=fused,
                 absgrad=absgrad)  # fmt: skip
    out["viewspace_points"].retain_grad()
    loss = out["render"].pow(2).sum() + out["alpha"].sum()
    if depth:
        loss = loss + 0.1 * out["depth"].sum()
    if feats is not None:
        loss = loss + out["features"].sin().sum()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.params.items()}
    grads["means2d"] = out["viewspace_points"].grad.reshape(-1, 2).clone()
    if absgrad:
        grads["means2d_abs"] = out["viewspace_points"].absgrad.reshape(-1, 2).clone()
    if feats is not None:
        grads["features"] = feats.grad.clone()
    return out, grads


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("with_features", [False, True])
@pytest.mark.parametrize("antialiasing", [False, True])
def test_backends_agree(with_features, antialiasing):
    model, cam, feats = scene(with_features=with_features)
    out_g, grads_g = run("gsplat", model, cam, feats, antialiasing)
    out_t, grads_t = run("torch", model, cam, feats, antialiasing)
    assert out_t["alpha"].mean() > 0.3
    assert torch.equal(out_g["radii"], out_t["radii"])
    for key in ["render", "alpha"] + (["features"] if with_features else []):
        assert (out_g[key] - out_t[key]).abs().max() < 2e-4, key
    covered = out_t["alpha"] > 0.5
    depth_diff = (out_g["depth"] - out_t["depth"]).abs()[covered]
    assert depth_diff.max() < 1e-3
    errors = {key: rel_err(grads_g[key], grads_t[key]) for key in grads_t}
    assert all(e < 2e-3 for e in errors.values()), errors


@pytest.mark.parametrize("with_features", [False, True])
@pytest.mark.parametrize("antialiasing", [False, True])
def test_direct_stages_match_gsplat_rasterization(monkeypatch, with_features, antialiasing):
    """The default gsplat path (its four stages called directly) renders and differentiates
    exactly like ``gsplat.rasterization`` (the staged autograd path)."""
    from gaussian_renderer import gsplat_backend

    model, cam, feats = scene(with_features=with_features)
    out_d, grads_d = run("gsplat", model, cam, feats, antialiasing, fused=False)
    monkeypatch.setattr(
        gsplat_backend,
        "rasterize_gsplat",
        lambda *a, **kw: gsplat_backend._rasterize_api(*a, **{"packed": False, **kw}),
    )
    out_a, grads_a = run("gsplat", model, cam, feats, antialiasing, fused=False)
    assert torch.equal(out_d["radii"], out_a["radii"])
    for key in ["render", "alpha", "depth"] + (["features"] if with_features else []):
        assert (out_d[key] - out_a[key]).abs().max() < 1e-5, key
    errors = {key: rel_err(grads_d[key], grads_a[key]) for key in grads_a}
    assert all(e < 1e-5 for e in errors.values()), errors


@pytest.mark.parametrize("backend", ["gsplat", "torch"])
def test_render_without_depth(backend):
    """``depth=False`` drops the depth channel and changes nothing else."""
    model, cam, _ = scene()
    pipe = SimpleNamespace(antialiasing=False)
    bg = torch.tensor([0.1, 0.3, 0.6], device="cuda")
    outs, grads = [], []
    for depth in (True, False):
        for p in model.params.values():
            p.grad = None
        out = render(cam, model, pipe, bg, backend=backend, depth=depth)
        (out["render"].pow(2).sum() + out["alpha"].sum()).backward()
        outs.append(out)
        grads.append({k: p.grad.clone() for k, p in model.params.items()})
    assert "depth" in outs[0] and "depth" not in outs[1]
    for key in ("render", "alpha"):
        assert (outs[0][key] - outs[1][key]).abs().max() < 1e-6, key
    errors = {k: rel_err(grads[1][k], grads[0][k]) for k in grads[0]}
    assert all(e < 1e-5 for e in errors.values()), errors


@pytest.mark.parametrize(
    "with_features,depth,scaling_modifier,absgrad",
    [(False, False, 1.0, False), (False, True, 1.0, False), (True, True, 0.7, False),
     (True, False, 1.0, True), (False, True, 1.3, True)],
)  # fmt: skip
def test_fused_node_matches_the_staged_path(with_features, depth, scaling_modifier, absgrad):
    """gsplat_fused (one autograd node, handwritten backward) against the staged path
    (gsplat's autograd functions per stage): same outputs, same gradients."""
    model, cam, feats = scene(with_features=with_features)
    kw = {"depth": depth, "scaling_modifier": scaling_modifier, "absgrad": absgrad}
    out_f, grads_f = run("gsplat", model, cam, feats, fused=True, **kw)
    out_s, grads_s = run("gsplat", model, cam, feats, fused=False, **kw)
    assert out_f["render"].grad_fn.name() == "_FusedSplatBackward"
    assert out_f["alpha"].mean() > 0.3
    assert torch.equal(out_f["radii"], out_s["radii"])
    assert torch.equal(out_f["visibility_filter"], out_s["visibility_filter"])
    keys = ["render", "alpha"] + (["depth"] if depth else []) + (["features"] * with_features)
    for key in keys:
        assert out_f[key].shape == out_s[key].shape, key
        assert (out_f[key] - out_s[key]).abs().max() < 1e-5, key
    vis = out_s["visibility_filter"]
    means2d_f = out_f["viewspace_points"].detach().reshape(-1, 2)[vis]
    assert torch.equal(means2d_f, out_s["viewspace_points"].detach().reshape(-1, 2)[vis])
    assert grads_f.keys() == grads_s.keys()
    errors = {key: rel_err(grads_f[key], grads_s[key]) for key in grads_s}
    assert all(e < 1e-5 for e in errors.values()), errors


def test_fused_node_without_gradients():
    """Evaluation renders (no graph) take the fused node too and give the same images."""
    model, cam, _ = scene()
    pipe = SimpleNamespace(antialiasing=False)
    bg = torch.tensor([0.1, 0.3, 0.6], device="cuda")
    with torch.no_grad():
        out = render(cam, model, pipe, bg, backend="gsplat")
    ref = render(cam, model, pipe, bg, backend="gsplat", fused=False)
    assert out["render"].grad_fn is None and not out["viewspace_points"].requires_grad
    for key in ("render", "alpha", "depth"):
        assert (out[key] - ref[key]).abs().max() < 1e-6, key


@pytest.mark.parametrize("channels", [5, 64])
def test_features_only_backends_agree(channels):
    """render_features_only: gsplat against its torch twin, values and the gradients of the
    features and of the geometry; and the gsplat values equal render()'s feature channels."""
    from gaussian_renderer import render_features_only

    results = {}
    for backend in ("gsplat", "torch"):
        model, cam, _ = scene()
        g = torch.Generator().manual_seed(5)
        feats = torch.rand(model.num_gaussians, channels, generator=g).cuda().requires_grad_()
        out = render_features_only(cam, model, feats, backend=backend)
        (out["features"].sin().sum() + out["alpha"].sum()).backward()
        grads = {k: p.grad.clone() for k, p in model.params.items() if p.grad is not None}
        grads["features"] = feats.grad.clone()
        results[backend] = (out, grads)
    (out_g, grads_g), (out_t, grads_t) = results["gsplat"], results["torch"]
    assert out_g["features"].shape == (channels, cam.image_height, cam.image_width)
    for key in ("features", "alpha"):
        assert (out_g[key] - out_t[key]).abs().max() < 2e-4, key
    assert {"means", "quats", "scales", "opacities", "features"} <= set(grads_t)
    errors = {key: rel_err(grads_g[key], grads_t[key]) for key in grads_t}
    assert all(e < 2e-3 for e in errors.values()), errors
    with torch.no_grad():
        model, cam, _ = scene()
        full = render(cam, model, SimpleNamespace(), torch.zeros(3, device="cuda"),
                      features=feats.detach(), backend="gsplat", depth=False)  # fmt: skip
        only = render_features_only(cam, model, feats.detach(), backend="gsplat")
    assert (full["features"] - only["features"]).abs().max() < 1e-5


def test_batched_views_match_the_torch_twin_with_pose_gradients():
    """render_views (test-time pose optimisation): gsplat's batched cameras against one
    torch render per view, values and the exact gradient of the view matrices, rotation
    included (gsplat's own viewmats gradient leaves out the covariance term)."""
    from gaussian_renderer import render_views
    from utils.graphics_utils import quat_to_rotmat

    model, cam, _ = scene()
    shift = torch.eye(4, device="cuda").repeat(3, 1, 1)
    half_angles = torch.tensor([[0, 0, 0], [0.02, -0.01, 0.015], [-0.015, 0.02, 0]])
    shift[:, :3, :3] = quat_to_rotmat(torch.cat([torch.ones(3, 1), half_angles], 1)).cuda()
    shift[:, 0, 3] = torch.tensor([0.0, 0.05, -0.05], device="cuda")
    results = {}
    for backend in ("gsplat", "torch"):
        vms = (shift @ cam.viewmat).requires_grad_()
        Ks = cam.K.expand(3, -1, -1)
        imgs = render_views(vms, Ks, cam.image_width, cam.image_height, model, SimpleNamespace(),
                            torch.tensor([0.1, 0.3, 0.6], device="cuda"), backend)  # fmt: skip
        imgs.pow(2).sum().backward()
        results[backend] = (imgs.detach(), vms.grad.clone())
    (img_g, grad_g), (img_t, grad_t) = results["gsplat"], results["torch"]
    assert img_g.shape == (3, 3, cam.image_height, cam.image_width)
    assert (img_g - img_t).abs().max() < 2e-4
    assert rel_err(grad_g, grad_t) < 2e-3
