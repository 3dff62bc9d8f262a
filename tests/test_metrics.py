"""metrics.py end to end on synthetic model folders (renders/gt/masks PNGs)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from lpips_testing import (
    closed_port_url,
    isolate_weight_caches,
    redirect_weight_urls,
    write_random_lpips_weights,
)
from PIL import Image

import metrics
from utils.loss_utils import ssim

H, W = 48, 64


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_model(root: Path, method: str = "ours_100", n: int = 3, masks: bool = True, seed=0):
    """A model folder as render.py writes it; returns {name: (render, gt, mask)} uint8."""
    rng = np.random.default_rng(seed)
    views = {}
    for i in range(n):
        name = f"{i:05d}.png"
        gt = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        noise = rng.integers(-20 * (i + 1), 20 * (i + 1) + 1, (H, W, 3))
        render = np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)
        mask = np.zeros((H, W), np.uint8)
        mask[8 : 8 + 10 * (i + 1), 10:50] = 255
        d = root / "test" / method
        _save(d / "renders" / name, render)
        _save(d / "gt" / name, gt)
        if masks:
            _save(d / "masks" / name, mask)
        views[name] = (render, gt, mask)
    return views


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


def np_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    err = (a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2
    if mask is not None:
        err = err[mask > 127]
    return 10 * math.log10(1 / err.mean())


@pytest.fixture
def offline(monkeypatch, tmp_path):
    isolate_weight_caches(monkeypatch, tmp_path)
    redirect_weight_urls(monkeypatch, closed_port_url())


def test_end_to_end_with_masks_and_lpips(tmp_path, offline, capsys):
    views = make_model(tmp_path / "m")
    ref = write_random_lpips_weights("vgg", tmp_path / "w", seed=1)
    argv = ["-m", str(tmp_path / "m"), "--lpips_weights", str(tmp_path / "w"), "--device", "cpu"]
    assert metrics.main(argv) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "m" / "results.json").read_text())
    per_view = json.loads((tmp_path / "m" / "per_view.json").read_text())
    keys = ["SSIM", "PSNR", "LPIPS", "PSNR_masked", "SSIM_masked", "LPIPS_masked"]
    assert list(results) == ["ours_100"] and list(results["ours_100"]) == keys
    assert list(per_view["ours_100"]) == keys
    for key in keys:
        assert list(per_view["ours_100"][key]) == sorted(views)
        vals = list(per_view["ours_100"][key].values())
        assert math.isclose(results["ours_100"][key], sum(vals) / len(vals), rel_tol=1e-9)

    for name, (render, gt, mask) in views.items():
        pv = {k: per_view["ours_100"][k][name] for k in keys}
        assert math.isclose(pv["PSNR"], np_psnr(render, gt), rel_tol=1e-5)
        assert math.isclose(pv["PSNR_masked"], np_psnr(render, gt, mask), rel_tol=1e-5)
        r, g = _to_tensor(render), _to_tensor(gt)
        m = torch.from_numpy(mask > 127).float()[None, None]
        rw, gw = r * m + (1 - m), g * m + (1 - m)
        assert math.isclose(pv["SSIM"], ssim(r, g).item(), rel_tol=1e-5)
        assert math.isclose(pv["SSIM_masked"], ssim(rw, gw).item(), rel_tol=1e-5)
        with torch.no_grad():
            assert math.isclose(pv["LPIPS"], ref(r, g).item(), rel_tol=1e-5)
            assert math.isclose(pv["LPIPS_masked"], ref(rw, gw).item(), rel_tol=1e-5)
    # Noise grows with the view index: PSNR falls.
    psnrs = list(per_view["ours_100"]["PSNR"].values())
    assert psnrs[0] > psnrs[1] > psnrs[2]

    # 3DGS console lines, then the summary table.
    for label in ("SSIM ", "PSNR ", "LPIPS"):
        value = results["ours_100"][label.strip()]
        assert f"  {label}: {value:>12.7f}" in out
    assert re.search(r"^model\s+method\s+views\s+PSNR\s+SSIM\s+LPIPS\s+PSNR_m", out, re.M)
    assert re.search(rf"ours_100\s+3\s+{results['ours_100']['PSNR']:.4f}", out)
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]


def test_lpips_3dgs_inputs_flag(tmp_path, offline):
    views = make_model(tmp_path / "m", n=1, masks=False)
    ref = write_random_lpips_weights("alex", tmp_path / "w", seed=2)
    argv = ["-m", str(tmp_path / "m"), "--lpips_net", "alex", "--lpips_weights"]
    argv += [str(tmp_path / "w"), "--lpips_3dgs_inputs", "--device", "cpu"]
    assert metrics.main(argv) == 0
    per_view = json.loads((tmp_path / "m" / "per_view.json").read_text())["ours_100"]
    assert "PSNR_masked" not in per_view  # no masks folder, no masked metrics
    render, gt, _ = views["00000.png"]
    with torch.no_grad():
        expected = ref(_to_tensor(render), _to_tensor(gt), normalize=False).item()
        standard = ref(_to_tensor(render), _to_tensor(gt)).item()
    assert math.isclose(per_view["LPIPS"]["00000.png"], expected, rel_tol=1e-5)
    assert not math.isclose(expected, standard, rel_tol=1e-3)


def test_no_weights_notice_once_and_no_lpips_keys(tmp_path, offline, capsys):
    make_model(tmp_path / "a")
    make_model(tmp_path / "b", method="ours_7000", masks=False, seed=1)
    make_model(tmp_path / "b", method="ours_30000", masks=False, seed=2)
    assert metrics.main(["-m", str(tmp_path / "a"), str(tmp_path / "b"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("LPIPS (vgg) left out") == 1
    assert len([ln for ln in out.splitlines() if "vgg16-397923af.pth" in ln]) == 1
    assert "download failed" in out
    for model in ("a", "b"):
        results = json.loads((tmp_path / model / "results.json").read_text())
        per_view = json.loads((tmp_path / model / "per_view.json").read_text())
        for method in results:
            assert "LPIPS" not in results[method] and "LPIPS_masked" not in results[method]
            assert "LPIPS" not in per_view[method]
    assert list(json.loads((tmp_path / "b" / "results.json").read_text())) == [
        "ours_30000",
        "ours_7000",
    ]
    results_a = json.loads((tmp_path / "a" / "results.json").read_text())["ours_100"]
    assert list(results_a) == ["SSIM", "PSNR", "PSNR_masked", "SSIM_masked"]
    assert "LPIPS" not in out.split("model")[-1]  # no LPIPS column in the table


def test_masked_psnr_counts_only_mask_pixels(tmp_path, offline):
    d = tmp_path / "m" / "test" / "ours_1"
    gt = np.full((H, W, 3), 100, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 20:40] = 255
    render = np.full((H, W, 3), 255, np.uint8)  # background: large error
    render[mask > 0] = 126  # object: error 26/255
    _save(d / "renders" / "00000.png", render)
    _save(d / "gt" / "00000.png", gt)
    _save(d / "masks" / "00000.png", mask)
    assert metrics.main(["-m", str(tmp_path / "m"), "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "m" / "results.json").read_text())["ours_1"]
    assert math.isclose(res["PSNR_masked"], 20 * math.log10(255 / 26), rel_tol=1e-5)
    assert res["PSNR"] < 10
    # White composites: the background is identical, only the object differs.
    assert 0 < res["SSIM_masked"] < 1 and res["SSIM_masked"] > res["SSIM"]


def test_train_split_and_errors(tmp_path, offline, capsys):
    make_model(tmp_path / "good", n=1)
    (tmp_path / "good" / "test").rename(tmp_path / "good" / "train")
    make_model(tmp_path / "bad", n=1)
    Image.new("RGB", (W + 1, H)).save(tmp_path / "bad" / "test" / "ours_100" / "gt" / "00000.png")
    argv = ["-m", str(tmp_path / "bad"), str(tmp_path / "missing"), "--device", "cpu"]
    assert metrics.main(argv) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert "00000.png" in errors[0] and "resolution" in errors[0]
    assert str(tmp_path / "missing" / "test") in errors[1] and "render.py" in errors[1]
    assert not (tmp_path / "bad" / "results.json").exists()

    argv = ["-m", str(tmp_path / "good"), "--split", "train", "--device", "cpu"]
    assert metrics.main(argv) == 0
    assert (tmp_path / "good" / "results_train.json").is_file()
    assert (tmp_path / "good" / "per_view_train.json").is_file()
    assert not (tmp_path / "good" / "results.json").exists()


def test_bad_weights_folder_is_an_error(tmp_path, offline, capsys):
    make_model(tmp_path / "m", n=1)
    argv = ["-m", str(tmp_path / "m"), "--lpips_weights", str(tmp_path / "nowhere")]
    assert metrics.main(argv + ["--device", "cpu"]) == 1
    assert "error: --lpips_weights" in capsys.readouterr().out
    assert not (tmp_path / "m" / "results.json").exists()


@pytest.mark.gpu
@requires_cuda
def test_cuda_matches_cpu(tmp_path, offline):
    make_model(tmp_path / "m")
    write_random_lpips_weights("vgg", tmp_path / "w", seed=1)
    out = {}
    for device in ("cpu", "cuda"):
        argv = ["-m", str(tmp_path / "m"), "--lpips_weights", str(tmp_path / "w")]
        assert metrics.main(argv + ["--device", device]) == 0
        out[device] = json.loads((tmp_path / "m" / "per_view.json").read_text())["ours_100"]
    assert list(out["cpu"]) == list(out["cuda"])
    for key, views in out["cpu"].items():
        for name, value in views.items():
            assert math.isclose(out["cuda"][key][name], value, rel_tol=1e-4, abs_tol=1e-5), key
