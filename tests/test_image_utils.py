"""PSNR (plain and masked) and white compositing."""

from __future__ import annotations

import math

import torch

from utils.image_utils import composite_on_white, masked_psnr, psnr


def test_psnr_matches_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 8, 9, generator=g), torch.rand(2, 3, 8, 9, generator=g)
    out = psnr(a, b)
    assert out.shape == (2,)
    for i in range(2):
        mse = ((a[i] - b[i]) ** 2).mean().item()
        assert math.isclose(out[i].item(), 10 * math.log10(1 / mse), rel_tol=1e-5)
    assert psnr(a[0], b[0]).shape == ()
    assert torch.isinf(psnr(a[0], a[0]))


def test_masked_psnr_counts_only_mask_pixels():
    gt = torch.full((3, 4, 5), 0.5)
    pred = gt.clone()
    mask = torch.zeros(1, 4, 5)
    mask[:, 1:3, 1:4] = 1
    pred[:, mask[0] > 0] += 0.1  # error 0.1 on the object
    pred[:, mask[0] == 0] = 1.0  # large error on the background: must not count
    assert math.isclose(masked_psnr(pred, gt, mask).item(), 20.0, rel_tol=1e-5)
    assert psnr(pred, gt).item() < 10
    assert torch.isnan(masked_psnr(pred, gt, torch.zeros(4, 5)))


def test_composite_on_white():
    img = torch.rand(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    out = composite_on_white(img, mask)
    assert torch.equal(out[:, :, :2], img[:, :, :2])
    assert (out[:, :, 2:] == 1).all()
