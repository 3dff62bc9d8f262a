"""The pure-PyTorch rasterizer against a per-Gaussian reference loop (values and gradients).

The reference walks the depth-sorted Gaussians one by one over all pixels, exactly like the
CUDA kernels do per pixel, so it shares no code path with the pair-list implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaussian_renderer.torch_backend import (
    ALPHA_THRESHOLD,
    T_THRESHOLD,
    project_gaussians,
    rasterize_pixels,
)


def reference_rasterize(means2d, conics, colors, opacities, depths, radii, width, height, bg):
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )  # fmt: skip
    px, py = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5
    P = px.numel()
    T = torch.ones(P, dtype=torch.float64)
    done = torch.zeros(P, dtype=torch.bool)
    out = torch.zeros(P, colors.shape[1], dtype=torch.float64)
    for g in torch.argsort(depths.detach(), stable=True).tolist():
        if not (radii[g] > 0).any():
            continue
        dx, dy = px - means2d[g, 0], py - means2d[g, 1]
        in_box = (dx.abs() <= radii[g, 0]) & (dy.abs() <= radii[g, 1])
        a, b, c = conics[g]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opacities[g] * torch.exp(-sigma), max=0.999)
        valid = in_box & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done
        next_T = T * (1 - alpha)
        stop = valid & (next_T <= T_THRESHOLD)
        done = done | stop
        use = valid & ~stop
        out = out + torch.where(use[:, None], (alpha * T)[:, None] * colors[g][None], 0.0)
        T = torch.where(use, next_T, T)
    out = out + T[:, None] * bg[None]
    return out.reshape(height, width, -1), (1 - T).reshape(height, width, 1)


def random_scene(n=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.6
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=dtype) * 0.4 - 2.2)
    opac = torch.sigmoid(torch.randn(n, generator=g, dtype=dtype) * 2 + 1)
    colors = torch.rand(n, 4, generator=g, dtype=dtype)
    viewmat = torch.eye(4, dtype=dtype)
    viewmat[2, 3] = 3.0
    K = torch.tensor([[40.0, 0, 17.3], [0, 42.0, 13.1], [0, 0, 1]], dtype=dtype)
    return means, quats, scales, opac, colors, viewmat, K


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "tile,chunk,max_elems",
    [(8, 64, 10**7), (16, 3, 10**7), (4, 2, 40)],  # batched and tiny batches
)
def test_matches_reference_values_and_gradients(seed, tile, chunk, max_elems):
    W, H = 35, 27
    means, quats, scales, opac, colors, viewmat, K = random_scene(seed=seed)
    leaves = [t.requires_grad_() for t in (means, quats, scales, opac, colors)]
    bg = torch.tensor([0.2, 0.5, 0.1, 0.0], dtype=torch.float64)

    def run(fn):
        proj = project_gaussians(means, quats, scales, opac, viewmat, K, W, H)
        args = (proj["means2d"], proj["conics"], colors, proj["opacities"], proj["depths"],
                proj["radii"], W, H, bg)  # fmt: skip
        img, alpha = fn(*args)
        w = torch.linspace(0.1, 1.0, img.numel(), dtype=img.dtype).reshape(img.shape)
        loss = (img * w).sum() + 0.3 * alpha.sum()
        grads = torch.autograd.grad(loss, leaves)
        return img.detach(), alpha.detach(), grads

    img, alpha, grads = run(
        lambda *a: rasterize_pixels(*a, tile=tile, chunk=chunk, max_elems=max_elems)
    )
    ref_img, ref_alpha, ref_grads = run(reference_rasterize)
    assert alpha.max() > 0.5  # the scene covers the image
    torch.testing.assert_close(img, ref_img, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-9, atol=1e-9)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-7, atol=1e-9)


def test_early_termination_is_exclusive():
    """An opaque stack stops at T <= 1e-4 without the Gaussian that would cross it."""
    n = 12
    means2d = torch.tensor([[4.5, 4.5]], dtype=torch.float64).repeat(n, 1)
    conics = torch.tensor([[0.01, 0.0, 0.01]], dtype=torch.float64).repeat(n, 1)
    opac = torch.full((n,), 0.95, dtype=torch.float64)
    depths = torch.arange(n, dtype=torch.float64)
    radii = torch.full((n, 2), 20, dtype=torch.int32)
    colors = torch.eye(n, dtype=torch.float64)  # one channel per Gaussian = its weight
    img, alpha = rasterize_pixels(means2d, conics, colors, opac, depths, radii, 9, 9)
    w = img[4, 4]
    # alpha = 0.95 at the centre, T after k layers 0.05^k: the 4th layer would leave
    # 6.25e-6 <= 1e-4, so the pixel stops before it and keeps T = 0.05^3.
    assert (w[:3] > 0).all() and (w[3:] == 0).all()
    assert abs(float(alpha[4, 4]) - (1 - 0.05**3)) < 1e-12


def test_projection_of_a_centred_gaussian():
    means = torch.tensor([[0.0, 0.0, 0.0]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.tensor([[0.1, 0.2, 0.3]])
    viewmat = torch.eye(4)
    viewmat[2, 3] = 2.0
    K = torch.tensor([[100.0, 0, 50.0], [0, 100.0, 40.0], [0, 0, 1]])
    p = project_gaussians(means, quats, scales, torch.tensor([0.5]), viewmat, K, 100, 80)
    assert torch.allclose(p["means2d"], torch.tensor([[50.0, 40.0]]))
    # Sigma2d = J Sigma J^T + 0.3 I with J = f / z on the axes: (100/2)^2 s^2 + 0.3
    cov = np.diag([(50 * 0.1) ** 2 + 0.3, (50 * 0.2) ** 2 + 0.3])
    inv = np.linalg.inv(cov)
    assert np.allclose(p["conics"][0].numpy(), [inv[0, 0], inv[0, 1], inv[1, 1]], rtol=1e-5)
    extend = min(3.33, np.sqrt(2 * np.log(0.5 * 255)))
    assert p["radii"][0].tolist() == [int(np.ceil(extend * np.sqrt(cov[0, 0]))),
                                      int(np.ceil(extend * np.sqrt(cov[1, 1])))]  # fmt: skip


def test_culling():
    means = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [50.0, 0.0, 1.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1)
    scales = torch.full((3, 3), 0.01)
    viewmat = torch.eye(4)
    K = torch.tensor([[10.0, 0, 5.0], [0, 10.0, 5.0], [0, 0, 1]])
    p = project_gaussians(means, quats, scales, torch.full((3,), 0.9), viewmat, K, 10, 10)
    visible = (p["radii"] > 0).any(-1).tolist()
    assert visible == [False, True, False]  # behind the camera, inside, outside the image


def test_render_depth_flag_on_cpu():
    """render(depth=False) on the torch backend: no depth key, the same image and alpha."""
    from types import SimpleNamespace

    from gaussian.model import GaussianModel
    from gaussian_renderer import render
    from scene.cameras import Camera

    g = torch.Generator().manual_seed(0)
    model = GaussianModel.from_points(torch.randn(300, 3, generator=g) * 0.5,
                                      torch.rand(300, 3, generator=g), 3)  # fmt: skip
    cam = Camera(0, "v.png", np.eye(3), np.array([0.0, 0.0, 3.0]), 60.0, 60.0, 24.0, 20.0, 48, 40)
    pipe, bg = SimpleNamespace(), torch.tensor([0.2, 0.4, 0.6])
    with_depth = render(cam, model, pipe, bg, backend="torch")
    without = render(cam, model, pipe, bg, backend="torch", depth=False)
    assert with_depth["depth"].shape == (1, 40, 48) and "depth" not in without
    assert torch.allclose(with_depth["render"], without["render"], atol=1e-6)
    assert torch.allclose(with_depth["alpha"], without["alpha"], atol=1e-6)


def _grads_of(fn, leaves, make_args):
    img, alpha = fn(*make_args())
    w = torch.linspace(0.1, 1.0, img.numel(), dtype=img.dtype).reshape(img.shape)
    loss = (img * w).sum() + 0.3 * alpha.sum()
    return img.detach(), alpha.detach(), torch.autograd.grad(loss, leaves)


def _projected(seed, dtype, n=60, W=37, H=29, opacity=None):
    scene = random_scene(n=n, seed=seed)  # drawn in float64, then cast
    means, quats, scales, opac, colors, viewmat, K = (t.to(dtype) for t in scene)
    if opacity is not None:
        opac = torch.full_like(opac, opacity)
    leaves = [t.requires_grad_() for t in (means, quats, scales, opac, colors)]

    def make_args():
        proj = project_gaussians(means, quats, scales, opac, viewmat, K, W, H)
        return (proj["means2d"], proj["conics"], colors, proj["opacities"], proj["depths"],
                proj["radii"], W, H, torch.tensor([0.2, 0.5, 0.1, 0.0], dtype=dtype))  # fmt: skip

    return leaves, make_args


@pytest.mark.parametrize("seed", [0, 1])
def test_tile_culling_drops_only_pairs_that_contribute_nothing(monkeypatch, seed):
    """Culled (tile, Gaussian) pairs have alpha < 1/255 at every pixel of the tile: the
    same values and gradients as with every bounding-box pair kept."""
    from gaussian_renderer import torch_backend

    leaves, args = _projected(seed, torch.float64)
    culled = _grads_of(rasterize_pixels, leaves, args)
    monkeypatch.setattr(torch_backend, "_LOG_ALPHA_KEEP", -float("inf"))
    kept = _grads_of(rasterize_pixels, leaves, args)
    for a, b in zip(culled[:2] + culled[2], kept[:2] + kept[2]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tile,chunk,max_elems", [(4, 5, 10**7), (4, 16, 300), (8, 7, 10**7)])
def test_chunked_and_batched_paths_agree_in_float32(tile, chunk, max_elems):
    """Blocks of any size, one tile batch or many: the same image and gradients (float32,
    the training precision) as the default walk."""
    leaves, args = _projected(3, torch.float32, n=200)
    ref = _grads_of(rasterize_pixels, leaves, args)
    out = _grads_of(
        lambda *a: rasterize_pixels(*a, tile=tile, chunk=chunk, max_elems=max_elems), leaves, args
    )
    for a, b in zip(out[:2] + out[2], ref[:2] + ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_float32_matches_float64():
    """The log-alpha polynomial in tile-local coordinates loses no float32 accuracy."""
    l64, a64 = _projected(4, torch.float64, n=200, W=96, H=80)
    l32, a32 = _projected(4, torch.float32, n=200, W=96, H=80)
    img64, alpha64, g64 = _grads_of(rasterize_pixels, l64, a64)
    img32, alpha32, g32 = _grads_of(rasterize_pixels, l32, a32)
    assert (img32.double() - img64).abs().max() < 1e-5
    assert (alpha32.double() - alpha64).abs().max() < 1e-5
    for a, b in zip(g32, g64):
        assert float((a.double() - b).norm() / b.norm()) < 1e-4


@pytest.mark.parametrize("chunk", [2, 3, 16])
def test_clamped_alphas_and_stops_across_chunk_ends(chunk):
    """Gaussians centred on pixel centres with opacity 0.9995 (alpha clamped at 0.999 there,
    no gradient through the clamp), stacked so that pixels stop inside a chunk and at its
    end, among fainter ones: values and gradients against the reference."""
    g = torch.Generator().manual_seed(7)
    W, H, n = 19, 14, 90
    centres = torch.stack([torch.randint(0, W, (n,), generator=g),
                           torch.randint(0, H, (n,), generator=g)], dim=-1)  # fmt: skip
    means2d = (
        centres.double()
        + 0.5
        + (torch.rand(n, 1, generator=g) < 0.5) * torch.rand(n, 2, generator=g)
    )
    s = torch.rand(n, generator=g, dtype=torch.float64) * 0.6 + 0.2
    conics = torch.stack([s, 0.2 * s * (torch.rand(n, generator=g) - 0.5), s], dim=-1)
    opac = torch.where(torch.rand(n, generator=g) < 0.7, 0.9995, 0.3).double()
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    depths = torch.rand(n, generator=g, dtype=torch.float64)
    radii = torch.full((n, 2), 12, dtype=torch.int32)  # alpha < 1/255 beyond
    leaves = [t.requires_grad_() for t in (means2d, conics, colors, opac)]
    bg = torch.tensor([0.2, 0.5, 0.1], dtype=torch.float64)

    def make_args():
        return means2d, conics, colors, opac, depths, radii, W, H, bg

    img, alpha, grads = _grads_of(lambda *a: rasterize_pixels(*a, chunk=chunk), leaves, make_args)
    ref_img, ref_alpha, ref_grads = _grads_of(reference_rasterize, leaves, make_args)
    # Many pixels behind two layers of alpha 0.999 (they stop: a third would leave T < 1e-4).
    assert (alpha > 0.998).sum() > 20
    torch.testing.assert_close(img, ref_img, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-9, atol=1e-9)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-7, atol=1e-9)


def test_nothing_visible():
    """No Gaussian in view: the background, zero alpha and zero gradients."""
    means, quats, scales, opac, colors, viewmat, K = random_scene(n=10)
    means = (means + torch.tensor([0.0, 0.0, -10.0], dtype=means.dtype)).requires_grad_()
    colors.requires_grad_()
    proj = project_gaussians(means, quats, scales, opac, viewmat, K, 20, 16)
    assert not (proj["radii"] > 0).any()
    bg = torch.tensor([0.2, 0.5, 0.1, 0.3], dtype=torch.float64)
    img, alpha = rasterize_pixels(proj["means2d"], proj["conics"], colors, proj["opacities"],
                                  proj["depths"], proj["radii"], 20, 16, bg)  # fmt: skip
    assert torch.equal(img, bg.expand(16, 20, 4)) and not alpha.any()
    (img.sum() + alpha.sum()).backward()
    assert not means.grad.any() and not colors.grad.any()


@pytest.mark.parametrize("with_covars", [False, True])
def test_projection_matches_the_matrix_form(with_covars):
    """The per-row EWA projection equals J R Sigma R^T J^T written with matrices (values
    and gradients), from quaternions and scales or from given covariances."""
    from utils.graphics_utils import covariance_from_scale_rot

    means, quats, scales, opac, _, viewmat, K = random_scene(n=50, seed=3)
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1),
                                    dtype=torch.float64))[0]  # fmt: skip
    viewmat[:3, :3] = R * torch.sign(torch.det(R))
    leaves = [t.requires_grad_() for t in (means, quats, scales)]
    W, H = 35, 27

    def matrix_form():
        covars = covariance_from_scale_rot(scales, quats)
        mean_c = means @ viewmat[:3, :3].T + viewmat[:3, 3]
        x, y, z = mean_c.unbind(-1)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        lim_x = (cx / fx + 0.3 * 0.5 * W / fx, (W - cx) / fx + 0.3 * 0.5 * W / fx)
        lim_y = (cy / fy + 0.3 * 0.5 * H / fy, (H - cy) / fy + 0.3 * 0.5 * H / fy)
        tx = z * torch.clamp(x / z, -lim_x[0], lim_x[1])
        ty = z * torch.clamp(y / z, -lim_y[0], lim_y[1])
        zero = torch.zeros_like(z)
        J = torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2],
                        dim=-1).reshape(-1, 2, 3)  # fmt: skip
        Rv = viewmat[:3, :3]
        return J @ Rv @ covars @ Rv.T @ J.transpose(1, 2)

    cov = matrix_form()
    a, b, c = cov[:, 0, 0] + 0.3, cov[:, 0, 1], cov[:, 1, 1] + 0.3
    det = a * c - b * b
    ref = torch.stack([c / det, -b / det, a / det], dim=-1)
    covars = covariance_from_scale_rot(scales, quats) if with_covars else None
    proj = project_gaussians(means, quats, scales, opac, viewmat, K, W, H, covars=covars)
    assert (proj["radii"] > 0).any(-1).sum() > 20
    torch.testing.assert_close(proj["conics"], ref, rtol=1e-10, atol=1e-12)
    w = torch.rand(ref.shape, generator=torch.Generator().manual_seed(2), dtype=ref.dtype)
    for g, rg in zip(torch.autograd.grad((proj["conics"] * w).sum(), leaves),
                     torch.autograd.grad((ref * w).sum(), leaves)):  # fmt: skip
        torch.testing.assert_close(g, rg, rtol=1e-8, atol=1e-10)
