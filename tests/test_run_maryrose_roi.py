"""scripts/run_maryrose_roi.py: schedule scaling, the working scene folder, the table.

The training runs themselves are the GPU acceptance (see the script's docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_scene

from scripts import run_maryrose_roi as mr


def test_scaled_schedule_keeps_30k_values_and_scales():
    full = dict(zip(mr.scaled_schedule(30_000)[::2], mr.scaled_schedule(30_000)[1::2]))
    assert full["--roi_loss_focus_after"] == "20000" and full["--densify_until_iter"] == "15000"
    assert full["--edge_all_views_offset"] == "400" and full["--multistep_late_from"] == "22500"
    short = dict(zip(mr.scaled_schedule(6000)[::2], mr.scaled_schedule(6000)[1::2]))
    assert short["--roi_loss_focus_after"] == "4000" and short["--densify_until_iter"] == "3000"
    assert (
        short["--position_lr_max_steps"] == "6000" and short["--roi_prune_strict_until"] == "3000"
    )
    # "every view" steps stay on densification steps (multiples of 100).
    assert int(short["--edge_all_views_offset"]) % 100 == 0
    assert int(short["--edge_all_views_every"]) % 100 == 0


def test_prepare_scene_builds_pure_masks_and_refuses_foreign_folders(tmp_path: Path):
    require_scene("nerd_maryrose")
    data = mr.DEFAULT_DATA
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(mr.RunError, match="not made by this script"):
        mr.prepare_scene(data, foreign)
    scene = mr.prepare_scene(data, tmp_path / "run")
    images = sorted(p.stem for p in (scene / "images_4").iterdir())
    masks = sorted(p.name for p in (scene / "pure_masks").iterdir())
    assert len(images) == 69 and masks == [s + ".png" for s in images]
    assert (scene / "masks_4").is_dir() and (scene / "poses_bounds.npy").is_file()
    assert mr.prepare_scene(data, tmp_path / "run") == scene  # reused
    with pytest.raises(mr.RunError, match="not found"):
        mr.prepare_scene(tmp_path / "nowhere", tmp_path / "run2")


def test_white_composite_scene(tmp_path: Path):
    """--white_composite: images composited onto white through their masks, next to the
    plain scene in the same output folder."""
    require_scene("nerd_maryrose")
    import numpy as np
    from PIL import Image

    data = mr.DEFAULT_DATA
    scene = mr.prepare_scene(data, tmp_path / "run", white=True)
    assert scene.name == "scene_white" and len(list((scene / "images_4").iterdir())) == 69
    name = "IMG_9669"
    out = np.asarray(Image.open(scene / "images_4" / f"{name}.jpg"), dtype=np.float32)
    src = np.asarray(Image.open(data / "nerd_maryrose/images_4" / f"{name}.jpg"), np.float32)
    mask = np.asarray(Image.open(data / "nerd_maryrose/masks_4" / f"{name}.png")) > 127
    assert out[~mask].mean() > 250  # background white (JPEG rounding aside)
    assert np.abs(out[mask] - src[mask]).mean() < 3  # object kept


def test_table_targets_and_results_append(tmp_path: Path):
    rows = {
        "3dgs": dict(PSNR=20.0, SSIM=0.7, PSNR_masked=22.0, SSIM_masked=0.9,
                     gaussians=1000, train_s=60.0),
        "mask": dict(PSNR=18.0, SSIM=0.6, PSNR_masked=22.5, SSIM_masked=0.91,
                     gaussians=600, train_s=50.0),
    }  # fmt: skip
    table = mr.format_table(rows)
    assert (
        "| mask | `--use_mask` | 18.00 | 0.6000 | 22.50 | 0.9100 | 600 | -40.0% | 50.0 |" in table
    )
    (line,) = mr.target_lines(rows)
    assert "PSNR in mask >= 3DGS: yes" in line and "-40.0% vs 3DGS (target <= -30%): yes" in line
    assert "not slower: yes" in line
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nold\n")
    mr.append_results(results, "## new\n" + table)
    text = results.read_text()
    assert (
        text.startswith("# Results\n\nold\n\n## new\n")
        and not (tmp_path / "RESULTS.md.tmp").exists()
    )
    ply = tmp_path / "p.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 17\nend_header\n")
    assert mr.gaussian_count(ply) == 17
    assert json.loads(json.dumps(mr.CONFIGS))["roigs"][-1] == "improved"
