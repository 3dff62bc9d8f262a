"""Depth Pro through transformers with a tiny random-init model: files, focal handling, errors."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import predepth
from priors import PriorError
from priors.depth_pro import (
    focal_from_fov,
    load_depth_pro,
    metric_depth,
    predict_inverse_depth,
    preprocess,
)
from scene.colmap_io import ColmapCamera, ColmapImage, write_model


def tiny_config(use_fov: bool = True, fusion: int = 16):
    """A DepthProConfig small enough for CPU tests (network input 128 px)."""
    from transformers import DepthProConfig

    sub = dict(
        model_type="dinov2",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=64,
    )
    return DepthProConfig(
        patch_size=64,
        fusion_hidden_size=fusion,
        intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[8, 8],
        scaled_images_ratios=[0.5, 1.0],
        scaled_images_overlap_ratios=[0.0, 0.25],
        scaled_images_feature_dims=[16, 16],
        image_model_config=dict(sub),
        patch_model_config=dict(sub),
        fov_model_config=dict(sub),
        use_fov_model=use_fov,
        num_fov_head_layers=1,
    )


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A saved tiny model (config.json + model.safetensors) with a FoV head."""
    from transformers import DepthProForDepthEstimation

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("depthpro") / "tiny"
    model = DepthProForDepthEstimation(tiny_config())
    with torch.no_grad():
        # Random weights give inverse depths near 0 (clamped to 1e4 m); shift the last
        # layer so that the output is a varied positive inverse depth around 0.5.
        model.head.layers[4].weight.mul_(0.01)
        model.head.layers[4].bias.fill_(0.5)
        # and a field of view near 60 degrees instead of a random (even negative) one.
        model.fov_model.head.layers[-1].weight.mul_(0.01)
        model.fov_model.head.layers[-1].bias.fill_(60.0)
    model.save_pretrained(path)
    return path


def _scene(tmp_path, sizes=((40, 30), (37, 53))):
    scene = tmp_path / "scene"
    (scene / "images" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i, (w, h) in enumerate(sizes):
        name = f"IMG_{i}.JPG" if i == 0 else f"sub/v{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            scene / "images" / name
        )
        names.append(name)
    return scene, names


def test_metric_depth_formula():
    inv = torch.full((8, 8), 0.25)
    d = metric_depth(inv, 30, 40, focal_px=100.0)
    assert d.shape == (30, 40) and d.dtype == np.float32
    np.testing.assert_allclose(d, 100.0 / (40 * 0.25), rtol=1e-6)
    assert focal_from_fov(90.0, 40) == pytest.approx(20.0)


def test_preprocess_follows_the_processor_steps():
    """Rescale to [0, 1], normalise with 0.5/0.5, then resize bilinearly (no antialias)."""
    im = np.random.default_rng(1).integers(0, 255, (13, 9, 3), dtype=np.uint8)
    x = preprocess([im, im[:7, :5]], 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    ref = torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    expected = torch.nn.functional.interpolate(
        ref[None], size=(16, 16), mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(x[0], expected)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_predepth_cli_model_focal(tmp_path, tiny_weights, capsys):
    scene, names = _scene(tmp_path)
    argv = ["-s", str(scene), "--device", "cpu", "--depth_model", str(tiny_weights)]
    assert predepth.main(argv) == 0
    assert "focal length from the model's FoV head" in capsys.readouterr().out
    for name, (w, h) in zip(names, ((40, 30), (37, 53))):
        base = scene / "depth_pro" / name
        d = np.load(str(base) + ".npy")
        assert d.shape == (h, w) and d.dtype == np.float32 and np.isfinite(d).all()
        assert (d > 0).all()
        meta = np.load(str(base) + "_meta.npz")
        assert str(meta["focal_source"]) == "model"
        assert float(meta["focallength_px"]) == pytest.approx(float(meta["model_focallength_px"]))
        assert meta["image_size"].tolist() == [w, h]
        assert Image.open(str(base) + ".png").size == (w, h)
    leftovers = [f for _, _, fs in os.walk(scene / "depth_pro") for f in fs if f.startswith(".")]
    assert not leftovers


def test_predepth_colmap_focal_rescales_consistently(tmp_path, tiny_weights):
    scene, names = _scene(tmp_path, sizes=((40, 30),))
    # A COLMAP model of the full-resolution images (2x): fx must be halved.
    cam = ColmapCamera(1, "PINHOLE", 80, 60, np.array([50.0, 52.0, 40.0, 30.0]))
    img = ColmapImage(1, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, names[0])
    write_model({1: cam}, {1: img}, {}, str(scene / "sparse" / "0"))
    base = ["-s", str(scene), "--device", "cpu", "--depth_model", str(tiny_weights)]
    assert predepth.main(base + ["--ignore_colmap"]) == 0
    d_model = np.load(scene / "depth_pro" / f"{names[0]}.npy")
    f_model = float(np.load(scene / "depth_pro" / f"{names[0]}_meta.npz")["focallength_px"])
    assert predepth.main(base) == 0
    d_colmap = np.load(scene / "depth_pro" / f"{names[0]}.npy")
    meta = np.load(scene / "depth_pro" / f"{names[0]}_meta.npz")
    assert str(meta["focal_source"]) == "colmap"
    assert float(meta["focallength_px"]) == pytest.approx(25.0)
    # The file is the network's inverse depth turned metric with the known focal length.
    runner = load_depth_pro(str(tiny_weights), torch.device("cpu"))
    image = np.asarray(Image.open(scene / "images" / names[0]).convert("RGB"))
    inv, fov = predict_inverse_depth(runner, [image])
    np.testing.assert_allclose(d_colmap, metric_depth(inv[0], 30, 40, 25.0), rtol=1e-5)
    assert f_model == pytest.approx(focal_from_fov(float(fov[0]), 40), rel=1e-5)
    # Same network output: depth is proportional to the focal length used (where the
    # inverse depth is not clamped; the tiny net has a few zero pixels).
    ok = (d_model < 1e3) & (d_colmap < 1e3)
    assert ok.mean() > 0.5
    np.testing.assert_allclose(d_colmap[ok] / d_model[ok], 25.0 / f_model, rtol=1e-4)


def test_predepth_without_fov_head_needs_colmap(tmp_path):
    from transformers import DepthProForDepthEstimation

    weights = tmp_path / "nofov"
    DepthProForDepthEstimation(tiny_config(use_fov=False)).save_pretrained(weights)
    scene, _ = _scene(tmp_path)
    argv = ["-s", str(scene), "--device", "cpu", "--depth_model", str(weights)]
    assert predepth.main(argv) == 1
    assert not (scene / "depth_pro").exists()


def test_depth_pro_bad_weights(tmp_path, tiny_weights):
    cpu = torch.device("cpu")
    with pytest.raises(PriorError, match="no such folder"):
        load_depth_pro(str(tmp_path / "missing"), cpu)
    # config.json of another size next to the weights: transformers would re-initialise
    # the mismatched layers with a warning; we stop.
    bad = tmp_path / "bad"
    tiny_config(fusion=8).save_pretrained(bad)
    os.symlink(tiny_weights / "model.safetensors", bad / "model.safetensors")
    with pytest.raises(PriorError, match="do not match config.json"):
        load_depth_pro(str(bad), cpu)
    # Weights without the FoV head under a config that has one: missing weights.
    from transformers import DepthProForDepthEstimation

    nofov = tmp_path / "nofov"
    DepthProForDepthEstimation(tiny_config(use_fov=False)).save_pretrained(nofov)
    tiny_config(use_fov=True).save_pretrained(nofov)
    with pytest.raises(PriorError, match="do not match config.json"):
        load_depth_pro(str(nofov), cpu)
    corrupt = tmp_path / "corrupt"
    tiny_config().save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(PriorError, match="cannot load Depth Pro"):
        load_depth_pro(str(corrupt), cpu)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PriorError, match="config.json, model.safetensors"):
        load_depth_pro(str(empty), cpu)


def test_random_init_from_config_folder(tmp_path):
    cfg_dir = tmp_path / "cfg"
    tiny_config().save_pretrained(cfg_dir)
    runner = load_depth_pro(str(cfg_dir), torch.device("cpu"), random_init=True)
    assert runner.size == 128 and runner.has_fov and runner.precision == "fp32"
    assert math.isclose(runner.mean[0], 0.5)
