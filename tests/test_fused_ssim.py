"""Fused SSIM (submodules/fused-ssim) against its PyTorch twin utils.loss_utils.ssim_map.

CPU tests cover the dispatch fallback, the pure-Python parts of the package and, in float64
PyTorch, the exact algorithm the kernels run (derivative maps from the forward pass, adjoint
blur in the backward pass) against autograd of the twin. GPU tests hold the kernels to the twin.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import requires_cuda
from utils import loss_utils
from utils.loss_utils import (
    _gaussian_window_1d,
    fast_ssim,
    import_fused_ssim,
    load_fused_ssim,
    ssim_map,
)

C1, C2, R = 0.01**2, 0.03**2, 5


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest reference magnitude."""
    return ((a.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def _twin_value_and_grads(x, y, padding, weight=None):
    """Twin SSIM map and d(sum(weight * map))/d(x, y), by autograd."""
    x = x.detach().clone().requires_grad_(True)
    y = y.detach().clone().requires_grad_(True)
    out = ssim_map(x, y, padding=padding)
    w = torch.ones_like(out) if weight is None else weight
    gx, gy = torch.autograd.grad((out * w).sum(), (x, y))
    return out.detach(), gx, gy


# ---------------------------------------------------------------- the algorithm, in PyTorch


def _blur_same(t: torch.Tensor) -> torch.Tensor:  # [B, C, H, W], zero-padded "same" blur
    C = t.shape[1]
    g = _gaussian_window_1d(2 * R + 1, 1.5, t.device, t.dtype)
    t = F.conv2d(t, g.view(1, 1, 1, -1).expand(C, 1, 1, -1), padding=(0, R), groups=C)
    return F.conv2d(t, g.view(1, 1, -1, 1).expand(C, 1, -1, 1), padding=(R, 0), groups=C)


def _kernel_algorithm(x, y, grad_map, valid):
    """What ssim_kernels.cu computes, step by step: map, dL/dx, dL/dy."""
    m1, m2 = _blur_same(x), _blur_same(y)
    e11, e22, e12 = _blur_same(x * x), _blur_same(y * y), _blur_same(x * y)
    s1, s2, s12 = e11 - m1 * m1, e22 - m2 * m2, e12 - m1 * m2
    A1, A2 = 2 * m1 * m2 + C1, 2 * s12 + C2
    B1, B2 = m1 * m1 + m2 * m2 + C1, s1 + s2 + C2
    S = A1 * A2 / (B1 * B2)
    # forward: derivatives of S w.r.t. the blurred moments
    d_var, d_cov = -S / B2, 2 * A1 / (B1 * B2)
    d_m1 = 2 * m2 * A2 / (B1 * B2) - 2 * m1 * S / B1 - 2 * m1 * d_var - m2 * d_cov
    d_m2 = 2 * m1 * A2 / (B1 * B2) - 2 * m2 * S / B1 - 2 * m2 * d_var - m1 * d_cov
    # backward: g is zero outside the (cropped) map; the zero-padded blur is self-adjoint
    g = torch.zeros_like(x)
    if valid:
        g[..., R:-R, R:-R] = grad_map
        S = S[..., R:-R, R:-R]
    else:
        g = grad_map
    b_m1, b_var, b_cov, b_m2 = (_blur_same(g * d) for d in (d_m1, d_var, d_cov, d_m2))
    dx = b_m1 + 2 * x * b_var + y * b_cov
    dy = b_m2 + 2 * y * b_var + x * b_cov
    return S, dx, dy


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("shape", [(1, 3, 23, 17), (2, 1, 11, 13)])
def test_kernel_algorithm_matches_twin_autograd(shape, padding):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    out_shape = shape if padding == "same" else (*shape[:2], shape[2] - 2 * R, shape[3] - 2 * R)
    weight = torch.randn(out_shape, generator=gen, dtype=torch.float64)
    ref, ref_gx, ref_gy = _twin_value_and_grads(x, y, padding, weight)
    S, dx, dy = _kernel_algorithm(x, y, weight, padding == "valid")
    assert rel_err(S, ref) < 1e-12
    assert rel_err(dx, ref_gx) < 1e-10
    assert rel_err(dy, ref_gy) < 1e-10


# ---------------------------------------------------------------- package, pure Python


def test_import_needs_no_compiler_and_builds_nothing():
    fused = import_fused_ssim()
    assert callable(fused.fused_ssim) and callable(fused.fused_ssim_map)
    assert fused._extension is None or torch.cuda.is_available()


def test_gaussian_taps_equal_twin_window():
    taps = torch.tensor(import_fused_ssim().gaussian_taps(1.5), dtype=torch.float64)
    twin = _gaussian_window_1d(11, 1.5, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(taps, twin, rtol=0, atol=1e-15)
    assert taps.to(torch.float32).equal(twin.to(torch.float32))


def test_fused_ssim_rejects_bad_input_before_building():
    fused = import_fused_ssim()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="CUDA tensors"):
        fused.fused_ssim(x, x)
    with pytest.raises(ValueError, match="padding"):
        fused.fused_ssim(x, x, padding="reflect")
    with pytest.raises(ValueError, match="differ in shape"):
        fused.fused_ssim(x, x[..., :8])
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        fused.fused_ssim(x[0, 0], x[0, 0])


def test_build_key_tracks_versions_and_architecture(monkeypatch, tmp_path):
    from importlib import import_module

    build = import_module(import_fused_ssim().__name__ + "._build")
    assert build.build_key((9, 0)) == build.build_key((9, 0))
    assert build.build_key((9, 0)) != build.build_key((8, 6))
    monkeypatch.setenv("FUSED_SSIM_CACHE", str(tmp_path / "c"))
    assert build.cache_root() == tmp_path / "c"
    monkeypatch.delenv("FUSED_SSIM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.cache_root() == tmp_path / "segsplat" / "fused_ssim"


def test_broadcast_value_detection():
    is_bc = import_fused_ssim()._is_broadcast_value
    assert is_bc(torch.tensor(0.5).expand(1, 3, 7, 9))
    assert is_bc(torch.tensor(0.5).reshape(1, 1, 1, 1).expand(1, 3, 7, 9))
    assert not is_bc(torch.rand(1, 3, 7, 9))
    assert not is_bc(torch.rand(1, 3, 1, 9).expand(1, 3, 7, 9))


# ---------------------------------------------------------------- dispatch


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_fast_ssim_on_cpu_is_the_twin(padding):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 19, 25, generator=gen, requires_grad=True)
    y = torch.rand(2, 3, 19, 25, generator=gen)
    val = fast_ssim(x, y, padding=padding)
    (gx,) = torch.autograd.grad(val, x)
    ref = ssim_map(x, y, padding=padding).mean()
    (ref_gx,) = torch.autograd.grad(ref, x)
    assert torch.equal(val, ref) and torch.equal(gx, ref_gx)
    assert torch.equal(fast_ssim(x[0], y[0]), ssim_map(x[0], y[0]).mean())
    with pytest.raises(ValueError, match="padding"):
        fast_ssim(x, y, padding="reflect")


def test_load_failure_warns_once_and_returns_none(monkeypatch):
    class Broken:
        @staticmethod
        def load_extension(device):
            raise RuntimeError("no nvcc")

    monkeypatch.setattr(loss_utils, "import_fused_ssim", lambda: Broken)
    load_fused_ssim.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no nvcc"):
            assert load_fused_ssim(torch.device("cuda", 0)) is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_fused_ssim(torch.device("cuda", 0)) is None  # cached: no second notice
    finally:
        load_fused_ssim.cache_clear()


# ---------------------------------------------------------------- GPU: kernels vs twin

GPU_SHAPES = [(1, 3, 37, 53), (2, 3, 64, 97), (3, 1, 11, 11), (4, 2, 15, 129), (1, 3, 1080, 1920)]


def _graph_node_names(fn) -> set[str]:
    names, todo = set(), [fn]
    while todo:
        node = todo.pop()
        if node is not None:
            names.add(type(node).__name__)
            todo.extend(nxt for nxt, _ in node.next_functions)
    return names


def _pair(shape, seed, device="cuda"):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(shape, generator=gen, device=device)
    y = (0.7 * x + 0.3 * torch.rand(shape, generator=gen, device=device)).clamp(0, 1)
    return x, y


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_fused_values_and_gradients_equal_twin(shape, padding):
    fused = load_fused_ssim(torch.device("cuda", 0))
    assert fused is not None, "the CUDA extension did not build (see the warning)"
    x, y = _pair(shape, seed=sum(shape))
    out_shape = shape if padding == "same" else (*shape[:2], shape[2] - 2 * R, shape[3] - 2 * R)
    weight = torch.rand(out_shape, device="cuda", dtype=torch.float64)
    # reference: the twin in float64 (exact up to 1e-15); also the float32 twin without TF32
    ref, ref_gx, ref_gy = _twin_value_and_grads(x.double(), y.double(), padding, weight)
    xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    out = fused.fused_ssim_map(xg, yg, padding=padding)
    assert out.shape == ref.shape and out.dtype == torch.float32
    gx, gy = torch.autograd.grad((out * weight.float()).sum(), (xg, yg))
    assert rel_err(out, ref) < 1e-5
    assert rel_err(gx, ref_gx) < 1e-5
    assert rel_err(gy, ref_gy) < 1e-5
    with torch.backends.cudnn.flags(allow_tf32=False):
        ref32, ref32_gx, _ = _twin_value_and_grads(x, y, padding, weight.float())
    assert rel_err(out, ref32) < 1e-5
    assert rel_err(gx, ref32_gx) < 1e-5
    # the training case: only the render needs a gradient (no d_m2 map stored)
    xg = x.clone().requires_grad_(True)
    mean = fused.fused_ssim(xg, y, padding=padding)
    (gx_only,) = torch.autograd.grad(mean, xg)
    ref_mean = ref.mean()
    assert abs(mean.item() - ref_mean.item()) <= 1e-5 * abs(ref_mean.item())
    _, ref_mean_gx, _ = _twin_value_and_grads(x.double(), y.double(), padding)
    assert rel_err(gx_only, ref_mean_gx / ref.numel()) < 1e-5


@pytest.mark.gpu
@requires_cuda
def test_fused_eval_mode_layouts_and_dispatch():
    dev = torch.device("cuda", 0)
    fused = load_fused_ssim(dev)
    assert fused is not None
    x, y = _pair((3, 40, 31), seed=5)
    ref = ssim_map(x.double(), y.double())
    xg = x.clone().requires_grad_(True)
    ev = fused.fused_ssim_map(xg, y, train=False)  # [C, H, W] in, no graph out
    assert ev.shape == x.shape and ev.grad_fn is None and rel_err(ev, ref) < 1e-5
    with torch.no_grad():
        assert fused.fused_ssim_map(xg, y).grad_fn is None
    # non-contiguous and half inputs are converted to contiguous float32
    xt = x.transpose(-1, -2).contiguous().transpose(-1, -2)[None].expand(2, -1, -1, -1)
    assert rel_err(fused.fused_ssim_map(xt, y[None].expand(2, -1, -1, -1))[1], ref) < 1e-5
    half = fused.fused_ssim_map(x.half(), y.half())
    assert half.dtype == torch.float16 and rel_err(half, ref) < 2e-3
    # fast_ssim takes the kernel on CUDA, with the twin's value and gradient
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val = fast_ssim(xg, y)
    assert "_FusedSSIMBackward" in _graph_node_names(val.grad_fn)
    (g,) = torch.autograd.grad(val, xg)
    _, ref_g, _ = _twin_value_and_grads(x.double(), y.double(), "same")
    assert rel_err(g, ref_g / ref.numel()) < 1e-5
    # a plain sum reaches the kernel as a broadcast gradient (the uniform path)
    xg4 = x[None].clone().requires_grad_(True)
    (g_sum,) = torch.autograd.grad(fused.fused_ssim_map(xg4, y[None], padding="valid").sum(), xg4)
    _, ref_g_sum, _ = _twin_value_and_grads(x[None].double(), y[None].double(), "valid")
    assert rel_err(g_sum, ref_g_sum) < 1e-5
    # the fused mean equals the mean of the fused map, in eval mode too
    assert torch.allclose(fused.fused_ssim(x, y, train=False), fused.fused_ssim_map(x, y).mean())
    with pytest.raises(ValueError, match="at least 11x11"):
        fused.fused_ssim(x[:, :10], y[:, :10], padding="valid")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("shape", [(3, 37, 51), (2, 3, 16, 23)])
def test_fused_l1_dssim_matches_the_pytorch_sum(shape):
    """The one-node 3DGS loss: value, terms and gradient of (1 - w) L1 + w (1 - SSIM)."""
    fused = load_fused_ssim(torch.device("cuda", 0))
    x, y = _pair(shape, seed=11)
    w = 0.2
    xg = x.clone().requires_grad_(True)
    total, l1, dssim = fused.fused_l1_dssim(xg, y, w)
    assert total.grad_fn is not None and l1.grad_fn is None and dssim.grad_fn is None
    (g,) = torch.autograd.grad(3.0 * total, xg)  # a non-unit upstream gradient
    xd = x.double().requires_grad_(True)
    ref_l1 = (xd - y.double()).abs().mean()
    ref_dssim = 1.0 - ssim_map(xd, y.double()).mean()
    ref_total = (1 - w) * ref_l1 + w * ref_dssim
    (ref_g,) = torch.autograd.grad(3.0 * ref_total, xd)
    for value, ref in ((total, ref_total), (l1, ref_l1), (dssim, ref_dssim)):
        assert abs(value.item() - ref.item()) <= 1e-5 * abs(ref.item())
    assert rel_err(g, ref_g) < 1e-5
    # utils.loss_utils dispatches to it on CUDA, and to the PyTorch sum when asked
    loss, _, _ = loss_utils.l1_dssim_loss(xg, y, w)
    assert "_FusedL1DSSIMBackward" in _graph_node_names(loss.grad_fn)
    loss_t, l1_t, _ = loss_utils.l1_dssim_loss(xg, y, w, fused=False)
    assert "_FusedL1DSSIMBackward" not in _graph_node_names(loss_t.grad_fn)
    assert abs(loss_t.item() - ref_total.item()) <= 1e-5 * abs(ref_total.item())


def test_l1_dssim_loss_on_cpu_is_the_pytorch_sum():
    x, y = torch.rand(2, 3, 20, 17, dtype=torch.float64).unbind(0)
    x.requires_grad_(True)
    total, l1, dssim = loss_utils.l1_dssim_loss(x, y, 0.2)
    assert torch.equal(l1, (x - y).abs().mean())
    assert torch.equal(dssim, 1.0 - ssim_map(x, y).mean())
    assert torch.allclose(total, 0.8 * l1 + 0.2 * dssim, rtol=1e-12)
    total.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
