"""LPIPS: network layouts, the real weight-loading path (random weights in the real file
formats), download behaviour, and the metric's basic properties."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import zipfile
from functools import partial

import pytest
import torch
from lpips_testing import (
    closed_port_url,
    isolate_weight_caches,
    redirect_weight_urls,
    write_random_lpips_weights,
)

from utils.lpips import (
    BACKBONE_FILES,
    HEAD_FILES,
    LPIPS,
    TAP_CHANNELS,
    AlexNetFeatures,
    LPIPSWeightsError,
    LPIPSWeightsMissing,
    VGG16Features,
    load_lpips,
)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty user caches and weight URLs that cannot be reached."""
    isolate_weight_caches(monkeypatch, tmp_path)
    redirect_weight_urls(monkeypatch, closed_port_url())


def _images(seed: int = 0, shape=(2, 3, 64, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def test_vgg_layout_and_taps():
    net = VGG16Features()
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16 numbering
    expected = {f"{i}.{p}" for i in convs for p in ("weight", "bias")}
    assert set(net.features.state_dict()) == expected
    taps = net(torch.rand(1, 3, 64, 48))
    assert [t.shape[1] for t in taps] == list(TAP_CHANNELS["vgg"]) == [64, 128, 256, 512, 512]
    assert [tuple(t.shape[2:]) for t in taps] == [(64, 48), (32, 24), (16, 12), (8, 6), (4, 3)]
    assert all((t >= 0).all() for t in taps)  # taps are ReLU outputs


def test_alexnet_layout_and_taps():
    net = AlexNetFeatures()
    expected = {f"{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    assert set(net.features.state_dict()) == expected
    assert tuple(net.features[0].weight.shape) == (64, 3, 11, 11)
    taps = net(torch.rand(1, 3, 128, 128))
    assert [t.shape[1] for t in taps] == list(TAP_CHANNELS["alex"]) == [64, 192, 384, 256, 256]
    assert [t.shape[-1] for t in taps] == [31, 15, 7, 7, 7]


def test_head_keys_match_lpips_files():
    keys = set(LPIPS("alex").heads.state_dict())
    assert keys == {f"lin{k}.model.1.weight" for k in range(5)}
    assert set(LPIPS("vgg").state_dict()) == {
        f"backbone.features.{k}" for k in VGG16Features().features.state_dict()
    } | {f"heads.{k}" for k in keys}


@pytest.mark.parametrize("net,legacy", [("vgg", False), ("alex", True)])
def test_weights_load_through_real_path(net, legacy, tmp_path, offline):
    ref = write_random_lpips_weights(net, tmp_path / "w", seed=3, legacy_format=legacy)
    assert zipfile.is_zipfile(tmp_path / "w" / BACKBONE_FILES[net].name) != legacy
    model = load_lpips(net, tmp_path / "w", download=False)
    assert [p.name for p in model.weight_files] == [BACKBONE_FILES[net].name, HEAD_FILES[net].name]
    x, y = _images(1, (2, 3, 40, 48))
    with torch.no_grad():
        assert torch.equal(model(x, y), ref(x, y))
        assert model(x, x).abs().max().item() == 0.0
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k


def test_found_in_cache_dirs(tmp_path, offline):
    from utils.lpips import default_cache_dir, search_dirs

    assert default_cache_dir() == tmp_path / "xdg_cache" / "segsplat" / "lpips"
    write_random_lpips_weights("alex", default_cache_dir())
    assert load_lpips("alex", download=False).weight_files[0].parent == default_cache_dir()
    torch_ckpt = search_dirs()[-1]
    assert torch_ckpt == tmp_path / "torch_home" / "hub" / "checkpoints"
    write_random_lpips_weights("vgg", torch_ckpt)
    assert load_lpips("vgg", download=False).weight_files[1].parent == torch_ckpt


def test_lpips_properties(tmp_path, offline):
    # AlexNet keeps this fast; the properties do not depend on the trunk.
    write_random_lpips_weights("alex", tmp_path)
    model = load_lpips("alex", tmp_path, download=False)
    g = torch.Generator().manual_seed(0)
    # A smooth image, so that noise is the dominant difference.
    base = torch.nn.functional.interpolate(
        torch.rand(1, 3, 8, 8, generator=g), size=(96, 96), mode="bilinear", align_corners=False
    )
    noise = torch.randn(1, 3, 96, 96, generator=g)
    with torch.no_grad():
        assert model(base, base).item() == 0.0
        d = [model(base, (base + s * noise).clamp(0, 1)).item() for s in (0.02, 0.1, 0.3)]
        assert 0 < d[0] < d[1] < d[2]
        x, y = _images(2, (2, 3, 96, 96))
        # normalize=True is the [0,1] -> [-1,1] map; single images and batches agree.
        assert torch.allclose(model(x, y), model(2 * x - 1, 2 * y - 1, normalize=False))
        assert torch.allclose(model(x[0], y[0]), model(x, y)[0])
        assert torch.allclose(model(x, y), model(y, x))
    # Gradients reach the inputs while the weights stay frozen.
    x = x.requires_grad_(True)
    model(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_missing_weights_one_line(tmp_path, offline):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LPIPSWeightsMissing) as info:
        load_lpips("vgg", tmp_path / "empty", download=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "vgg16-397923af.pth" in msg and "vgg.pth" in msg and str(tmp_path / "empty") in msg


def test_download_fails_fast_offline(tmp_path, offline):
    t0 = time.perf_counter()
    with pytest.raises(LPIPSWeightsMissing) as info:
        load_lpips("alex", download=True, timeout=2.0)
    assert time.perf_counter() - t0 < 5
    assert "download failed" in str(info.value)
    assert not (tmp_path / "xdg_cache").exists()  # nothing created on disk when offline
    assert "alexnet-owt-7be5be79.pth" in str(info.value) and "alex.pth" in str(info.value)


def test_explicit_folder_must_exist(tmp_path, offline):
    with pytest.raises(LPIPSWeightsError, match="not a folder"):
        load_lpips("vgg", tmp_path / "nope", download=False)


def test_corrupt_or_wrong_files(tmp_path, offline):
    write_random_lpips_weights("vgg", tmp_path)
    backbone = tmp_path / BACKBONE_FILES["vgg"].name
    backbone.write_bytes(b"not a checkpoint")
    with pytest.raises(LPIPSWeightsError, match="vgg16-397923af.pth"):
        load_lpips("vgg", tmp_path, download=False)
    # AlexNet tensors under the VGG name: wrong shapes are caught, naming the key.
    alex = write_random_lpips_weights("alex", tmp_path / "alex")
    torch.save(
        {f"features.{k}": v for k, v in alex.backbone.features.state_dict().items()}, backbone
    )
    with pytest.raises(LPIPSWeightsError, match="features.0.weight"):
        load_lpips("vgg", tmp_path, download=False)
    write_random_lpips_weights("vgg", tmp_path)
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "vgg.pth")
    with pytest.raises(LPIPSWeightsError, match="lin1"):
        load_lpips("vgg", tmp_path, download=False)


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/served over HTTP on localhost; yields the base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_path(monkeypatch, tmp_path, http_server):
    served, url = http_server
    isolate_weight_caches(monkeypatch, tmp_path)
    ref = write_random_lpips_weights("alex", served, seed=5)
    name = BACKBONE_FILES["alex"].name
    good = hashlib.sha256((served / name).read_bytes()).hexdigest()[:8]

    # Wrong hash: refused, nothing left in the cache.
    redirect_weight_urls(monkeypatch, url, {name: "00000000"})
    with pytest.raises(LPIPSWeightsError, match="SHA-256"):
        load_lpips("alex", download=True, timeout=5)
    from utils.lpips import default_cache_dir

    assert not default_cache_dir().exists() or not any(default_cache_dir().iterdir())

    redirect_weight_urls(monkeypatch, url, {name: good})
    model = load_lpips("alex", download=True, timeout=5)
    assert sorted(p.name for p in default_cache_dir().iterdir()) == ["alex.pth", name]
    x, y = _images(4, (1, 3, 96, 96))
    with torch.no_grad():
        assert torch.equal(model(x, y), ref(x, y))


def test_formula_by_hand():
    """LPIPS = sum over taps of the spatial mean of sum_c w_c (x_hat - y_hat)^2, where
    x_hat are unit-normalised features of the scaled [-1, 1] input."""
    torch.manual_seed(0)
    model = LPIPS("alex")
    x, y = _images(7, (1, 3, 80, 80))
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    with torch.no_grad():
        fx = model.backbone(((2 * x - 1) - shift) / scale)
        fy = model.backbone(((2 * y - 1) - shift) / scale)
        expected = 0.0
        for k, (a, b) in enumerate(zip(fx, fy)):
            w = model.heads[k].model[1].weight.view(1, -1, 1, 1)
            na = torch.nn.functional.normalize(a, dim=1)
            nb = torch.nn.functional.normalize(b, dim=1)
            expected += (w * (na - nb) ** 2).sum(1).mean().item()
        assert abs(model(x, y).item() - expected) < 1e-5 * max(1.0, abs(expected))
