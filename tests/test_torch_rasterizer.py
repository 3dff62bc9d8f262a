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
