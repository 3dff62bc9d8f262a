"""Depth Pro on the GPU machine: the real image processor and the package's default config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from PIL import Image

import predepth
from priors.depth_pro import load_depth_pro, predict_inverse_depth, preprocess
from scene.colmap_io import ColmapCamera, ColmapImage, write_model

pytestmark = [pytest.mark.gpu, requires_cuda]


def test_torch_preprocessing_matches_the_processor():
    pytest.importorskip("torchvision")
    from transformers import DepthProImageProcessor

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (301, 457, 3), dtype=np.uint8) for _ in range(2)]
    proc = DepthProImageProcessor(size={"height": 384, "width": 384})
    ref = proc(images=images, return_tensors="pt")["pixel_values"]
    ours = preprocess(images, 384)
    diff = (ref.float() - ours).abs().max().item()
    print(f"max |processor - torch twin| = {diff:.3g}")
    assert ref.shape == ours.shape and diff < 1e-4


def test_default_config_random_init_end_to_end(tmp_path):
    device = torch.device("cuda")
    runner = load_depth_pro("apple/DepthPro-hf", device, random_init=True)
    assert runner.size == 1536 and runner.precision == "fp16" and runner.has_fov
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (201, 303, 3), dtype=np.uint8) for _ in range(2)]
    inv, fov = predict_inverse_depth(runner, images)
    assert inv.shape[0] == 2 and inv.dtype == torch.float32 and torch.isfinite(inv).all()
    assert fov is not None and fov.shape == (2,)

    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(scene / "images" / f"v{i}.png")
    cam = ColmapCamera(1, "PINHOLE", 303, 201, np.array([250.0, 250.0, 151.5, 100.5]))
    ims = {
        i + 1: ColmapImage(i + 1, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, f"v{i}.png")
        for i in range(2)
    }
    write_model({1: cam}, ims, {}, str(scene / "sparse" / "0"))
    argv = ["-s", str(scene), "--random_init_weights", "--batch_size", "2"]
    assert predepth.main(argv) == 0
    for i in range(2):
        d = np.load(scene / "depth_pro" / f"v{i}.png.npy")
        assert d.shape == (201, 303) and d.dtype == np.float32
        meta = np.load(scene / "depth_pro" / f"v{i}.png_meta.npz")
        assert str(meta["focal_source"]) == "colmap" and float(meta["focallength_px"]) == 250.0
