"""Mask-visibility loss (utils/mask_visibility.py) on the CPU: the ramp, the count on a
synthetic two-view scene, bad input, and a short training run with the flag on."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import train as train_script
from mask_matching.maps import DescriptorMap
from scene.cameras import Camera
from tests.conftest import requires_cuda
from tests.test_sparse_view import common, final_ply, tiny_scene  # noqa: F401 (fixture)
from utils.mask_visibility import (
    CodeAtlas,
    MaskVisibility,
    SourceViews,
    ramp,
    visibility_counts,
    visibility_penalty,
)

H, W, F = 30, 40, 30.0


def test_ramp_at_its_knots():
    assert [ramp(s) for s in (0, 500, 1000, 2000, 5000, 8000, 20000)] == pytest.approx(
        [2.0, 1.0, 0.0, 2.0, 1.05, 0.1, 0.1]
    )
    term = MaskVisibility({}, {}, weight=0.05, start=800, until=8000)
    assert term.weight_at(800) == 0.0 and term.weight_at(8000) == 0.0
    assert term.weight_at(2000) == pytest.approx(0.1)


def _two_segment_map(name: str, boundary: float) -> DescriptorMap:
    """Segment 0 left of column ``boundary``, segment 1 right of it (1 level, 2 dims)."""
    col = torch.arange(W).float() + 0.5
    code = (col >= boundary).long().expand(H, W).contiguous()
    table = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [U=2, L=1, D=2]
    return DescriptorMap(name, code, table)


def test_a_gaussian_inside_the_matched_segment_counts_one_and_outside_zero():
    """Two cameras 0.5 apart looking down +z at a wall at z = 3 whose left and right halves
    are two segments: the boundary is at column 20 in view a and 20 - fx b / z = 15 in b."""
    a = Camera(0, "a.png", np.eye(3), np.zeros(3), F, F, W / 2, H / 2, W, H)
    b = Camera(1, "b.png", np.eye(3), np.array([-0.5, 0.0, 0.0]), F, F, W / 2, H / 2, W, H)
    maps = {"a.png": _two_segment_map("a.png", 20.0), "b.png": _two_segment_map("b.png", 15.0)}
    means = torch.tensor([
        [-1.0, 0.0, 3.0],  # left half: left segment in both views
        [0.7, 0.0, 3.0],   # right half: right segment in both views
        [0.0, 0.0, 1.0],   # in front of the wall, a's boundary ray: a says right, b says left
        [5.0, 0.0, 3.0],   # outside view a
    ])  # fmt: skip
    count, seen = visibility_counts(means, a, maps["a.png"], [(b, maps["b.png"])])
    assert count.tolist() == [1, 1, 0, 0]
    assert seen.tolist() == [True, True, True, False]
    assert visibility_penalty(count, seen, tau=1).tolist() == [0.0, 0.0, 1.0, 0.0]
    assert visibility_penalty(count, seen, tau=2).tolist() == [1.0, 1.0, 2.0, 0.0]


def write_mask_matching(scene: str, maps: dict[str, DescriptorMap], net=None) -> None:
    """``<scene>/mask_matching/`` as ``python -m mask_matching`` lays it out: one npz per
    view (with its codes and counts when the map has codes), the network when given, and
    meta.json with every pair of views at 10 matches."""
    from mask_matching.maps import map_file, write_model

    folder = os.path.join(scene, "mask_matching")
    names = list(maps)
    files = {}
    for name, dm in maps.items():
        rel = map_file(name)
        arrays = {"code_index": dm.code_index.numpy().astype(np.int32), "table": dm.table.numpy()}
        if dm.codes is not None:
            counts = torch.bincount(dm.code_index.reshape(-1), minlength=len(dm.codes))
            arrays.update(codes=dm.codes.numpy(), counts=counts.numpy())
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        np.savez(os.path.join(folder, rel), **arrays)
        files[name] = rel
    if net is not None:
        write_model(folder, net, names)
    counts = [[0 if i == j else 10 for j in range(len(names))] for i in range(len(names))]
    meta = {"n_views": len(names), "train": names, "split_protocol": "custom", "levels": 4,
            "dim": 16, "maps": files, "match_counts": counts}  # fmt: skip
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f)


def _write_constant_maps(scene: str, names: list[str]) -> None:
    """One segment covering every view (all descriptors agree)."""
    one = torch.zeros(9, 12, dtype=torch.long), torch.ones(1, 4, 16) / 4.0
    write_mask_matching(scene, {n: DescriptorMap(n, *one) for n in names})


def test_training_with_mask_visibility(tiny_scene, tmp_path, capsys):  # noqa: F811
    """Without descriptor maps: one line naming the command, no model folder. With maps
    whose single segment every view agrees on, tau 3 > the 2 target views leaves every
    seen Gaussian a penalty of 1: the run trains and ends with lower opacities."""
    flags = ["--lambda_mask_vis", "5", "--mask_vis_tau", "3", "--mask_vis_from", "0"]
    missing = str(tmp_path / "missing")
    assert train_script.main(common(tiny_scene, missing) + flags) == 1
    assert "python -m mask_matching" in capsys.readouterr().err
    assert not os.path.exists(missing)

    split = json.load(open(os.path.join(tiny_scene, "split.json")))
    _write_constant_maps(tiny_scene, split["train"])
    try:
        plain, reg = str(tmp_path / "plain"), str(tmp_path / "reg")
        assert train_script.main(common(tiny_scene, plain)) == 0
        assert train_script.main(common(tiny_scene, reg) + flags) == 0
        assert "Mask visibility: weight 5.0, tau 3" in capsys.readouterr().out
        opacity = {m: final_ply(m)[:, 3] for m in (plain, reg)}  # logits
        assert np.isfinite(opacity[reg]).all()
        assert opacity[reg].mean() < opacity[plain].mean()
    finally:
        import shutil

        shutil.rmtree(os.path.join(tiny_scene, "mask_matching"))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu,
                                                                     requires_cuda])])  # fmt: skip
def test_the_batched_counts_equal_the_reference_and_follow_a_table_refresh(device):
    """SourceViews (training's path) against visibility_counts, on three views of different
    sizes with random block-segment maps whose codes 0-2 carry the same descriptors in every
    view; then one view's table is replaced, as the mask refinement does."""
    g = torch.Generator().manual_seed(0)
    normal = torch.nn.functional.normalize
    shared = normal(torch.randn(3, 2, 3, generator=g), dim=-1)  # [U, L, D]
    cams, maps = [], {}
    for i, (h, w) in enumerate([(H, W), (H + 4, W - 6), (H - 2, W + 3)]):
        cam = Camera(i, f"v{i}.png", np.eye(3), np.array([0.3 * i - 0.3, 0.1 * i, 0.0]), F, F,
                     w / 2, h / 2, w, h, device=device)  # fmt: skip
        blocks = torch.randint(0, 5, (h // 6 + 1, w // 6 + 1), generator=g)
        code = blocks.repeat_interleave(6, 0).repeat_interleave(6, 1)[:h, :w].contiguous()
        table = torch.cat([shared, normal(torch.randn(2, 2, 3, generator=g), dim=-1)])
        cams.append(cam)
        maps[cam.image_name] = DescriptorMap(cam.image_name, code, table).to(device)
    means = torch.randn(4000, 3, generator=g) * torch.tensor([1.5, 1.0, 0.5])
    means[:, 2] += 2.5
    means = means.to(device)
    source, targets = cams[0], [(c, maps[c.image_name]) for c in cams[1:]]
    views = SourceViews(source, cams[1:], maps, CodeAtlas(maps))
    want = visibility_counts(means, source, maps["v0.png"], targets)
    # Equal on the CPU; on CUDA the batched product may round a centre that sits on a pixel
    # border the other way, so a few in 10^3 may differ there.
    slack = 0 if device == "cpu" else 4

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return int((a != b).sum()) <= slack

    got = views.counts(means)
    assert same(got[0], want[0]) and same(got[1], want[1])
    assert 0 < (want[0] > 0).sum() < want[1].sum()  # some agree, not all
    maps["v1.png"].table = normal(torch.randn(5, 2, 3, generator=g), dim=-1).to(device)
    want = visibility_counts(means, source, maps["v0.png"], targets)
    assert same(views.counts(means)[0], want[0])


def test_profile_step_runs_the_extra_terms(tiny_scene, monkeypatch, capsys):  # noqa: F811
    """bench/profile_step.py with the mask-visibility and binocular terms on (a CPU smoke
    run, so that a GPU call does not find it broken): the terms' phases are timed and the
    loop finishes."""
    import sys

    from bench import profile_step

    split = json.load(open(os.path.join(tiny_scene, "split.json")))
    _write_constant_maps(tiny_scene, split["train"])
    argv = ["-s", tiny_scene, "--split_protocol", "custom", "--backend", "torch",
            "--data_device", "cpu", "--lambda_mask_vis", "0.05", "--mask_vis_from", "0",
            "--lambda_binocular", "0.5", "--binocular_from", "0", "--warmup", "3", "--steps",
            "2", "--phases", "--rows", "2"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["profile_step.py", *argv])
    try:
        assert profile_step.main() == 0
    finally:
        import shutil

        shutil.rmtree(os.path.join(tiny_scene, "mask_matching"))
    out = capsys.readouterr().out
    assert "Mask visibility: weight 0.05" in out and "Binocular consistency" in out
    assert "features" in out and "after_step" in out
