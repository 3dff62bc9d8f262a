"""The dynamic Laplacian pyramid loss and the depth-prior losses."""

from __future__ import annotations

import pytest
import torch

from utils.depth_losses import pearson_patch_loss, ssi_depth_loss
from utils.lpdr import band_weights, laplacian_pyramid, lpdr_loss


def img(seed=0, h=32, w=40):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_lpdr_zero_for_identical_images_and_positive_otherwise():
    a, b = img(0), img(1)
    assert lpdr_loss(a, a.clone()).item() == 0.0
    pred = a.clone().requires_grad_(True)
    loss = lpdr_loss(pred, b)
    assert loss.item() > 0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_pyramid_reconstructs_and_band_weights_sum_to_one():
    a = img(2)
    bands, dc = laplacian_pyramid(a, levels=3)
    assert [tuple(b.shape[-2:]) for b in bands] == [(32, 40), (16, 20), (8, 10)]
    assert tuple(dc.shape[-2:]) == (4, 5)
    # Collapsing the pyramid (upsample + add) gives the image back exactly.
    x = dc
    for band in reversed(bands):
        x = torch.nn.functional.interpolate(x, size=band.shape[-2:], mode="bilinear",
                                            align_corners=False) + band  # fmt: skip
    assert torch.allclose(x[0], a, atol=1e-5)
    w = band_weights(bands, gamma=1.2)
    assert w.shape == (3,) and float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    # Energy-driven: fine noise puts the weight on the finest band, smooth ramps do not.
    ramp = torch.linspace(0, 1, 40).expand(3, 32, 40).contiguous()
    w_ramp = band_weights(laplacian_pyramid(ramp, 3)[0])
    assert w[0] == w.max() and w_ramp[0] < w[0]


def test_lpdr_dc_term_and_weights():
    a = img(3)
    shifted = a + 0.1  # only the low-pass residual changes
    bands_only = lpdr_loss(shifted, a, dc_weight=0.0)
    assert bands_only.item() == pytest.approx(0.0, abs=1e-5)
    assert lpdr_loss(shifted, a, dc_weight=0.3).item() == pytest.approx(0.03, rel=1e-4)


def test_ssi_depth_loss_ignores_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    prior = torch.rand(1, 24, 24, generator=g) * 3 + 1
    prior[0, 0, :5] = float("inf")
    prior[0, 1, :5] = 0.0
    rendered = (0.25 * prior + 2.0).nan_to_num(posinf=7.0)
    assert ssi_depth_loss(rendered, prior).item() == pytest.approx(0.0, abs=1e-5)
    noise = torch.rand(1, 24, 24, generator=g)
    r = noise.clone().requires_grad_(True)
    loss = ssi_depth_loss(r, prior)
    assert loss.item() > 0.05
    loss.backward()
    assert torch.isfinite(r.grad).all()
    # Too few valid pixels: zero with a zero gradient.
    empty = torch.zeros(1, 24, 24)
    assert ssi_depth_loss(r, empty).item() == 0.0


def test_pearson_patch_loss():
    g = torch.Generator().manual_seed(1)
    prior = torch.rand(1, 40, 40, generator=g) + 0.5
    affine_per_tile = prior * 2.0 + 1.0
    assert pearson_patch_loss(affine_per_tile, prior, patch=16).item() == pytest.approx(0, abs=1e-5)
    anti = -prior
    assert pearson_patch_loss(anti, prior, patch=16).item() == pytest.approx(2.0, abs=1e-5)
    r = torch.rand(1, 40, 40, generator=g).requires_grad_(True)
    loss = pearson_patch_loss(r, prior, patch=16)
    assert 0.5 < loss.item() < 1.5
    loss.backward()
    assert torch.isfinite(r.grad).all()
    assert pearson_patch_loss(r, torch.zeros(1, 40, 40), patch=16).item() == 0.0


@pytest.mark.parametrize("size", [(32, 48), (33, 27), (5, 6)])
def test_blur_pool_equals_blur_then_average_pool(size):
    """The fused strided kernel gives avg_pool2d(gaussian_blur(x), 2), odd sizes included."""
    import torch.nn.functional as F

    from utils.lpdr import blur_pool, gaussian_blur

    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(blur_pool(x), F.avg_pool2d(gaussian_blur(x), 2, stride=2))


def reference_lpdr(pred, gt, gamma=1.2, dc_weight=0.3):
    """LPDR as written in the module docstring: two pyramids, band by band."""
    p_bands, p_dc = laplacian_pyramid(pred)
    g_bands, g_dc = laplacian_pyramid(gt)
    w = band_weights(g_bands, gamma)
    bands = sum(w[i] * (p - q).abs().mean() for i, (p, q) in enumerate(zip(p_bands, g_bands)))
    return bands + dc_weight * (p_dc - g_dc).abs().mean()


@pytest.mark.parametrize("shape", [(3, 40, 36), (2, 3, 33, 27)])
def test_lpdr_matches_definition_values_and_gradients(shape):
    """One pyramid of pred - gt (linearity) and cached coefficients equal the definition."""
    from utils.lpdr import lpdr_coefficients

    g = torch.Generator().manual_seed(1)
    gt = torch.rand(*shape, generator=g, dtype=torch.float64)
    pred = torch.rand(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
    ref = reference_lpdr(pred, gt)
    (ref_grad,) = torch.autograd.grad(ref, pred)
    for coefficients in (None, lpdr_coefficients(gt)):
        loss = lpdr_loss(pred, gt, coefficients=coefficients)
        (grad,) = torch.autograd.grad(loss, pred)
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(grad, ref_grad)
