"""A short training run of train.py (CPU; the same with gsplat on the GPU) with every roigs
flag on (ROI gate and pruning, ROI-weighted L1, LPDR, Improved-GS with its optimizer set and
multi-step schedule, both depth losses), on the tiny demo scene with its ground-truth depth
standing in for Depth Pro; then a resume from a checkpoint (the optimizer set's state round
trip)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import requires_cuda

pytest.importorskip("scene.priors", reason="needs the prior loader (scene/priors.py)")

from scripts.make_demo_scene import make_demo_scene  # noqa: E402
from train import main as train_main  # noqa: E402

TINY = dict(width=64, height=48, n_train=4, n_test=3, seed=3, n_points=600, progress=False)

ALL_FLAGS = [
    "--use_mask", "--use_lpdr", "--densify_strategy", "improved",
    "--lambda_depth_ssi", "0.1", "--depth_ssi_from", "0",
    "--lambda_depth_pearson", "0.05", "--depth_pearson_from", "0", "--depth_patch_size", "8",
    "--densify_from_iter", "4", "--densify_until_iter", "20", "--densification_interval", "4",
    "--opacity_reset_interval", "12", "--budget_ramp_until", "18", "--score_gradient_after", "14",
    "--budget", "5000", "--cams", "2", "--edge_all_views_every", "8",
    "--edge_all_views_offset", "0", "--edge_all_views_until", "12",
    "--roi_loss_focus_after", "6", "--roi_prune_strict_until", "16",
    "--multistep_from", "16", "--multistep_every", "2",
    "--multistep_late_from", "20", "--multistep_late_every", "3",
]  # fmt: skip


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("roigs") / "scene"
    make_demo_scene(out, **TINY)
    shutil.copytree(out / "depth_gt", out / "depth_pro")  # exact depth as the "prior"
    return out


@pytest.mark.parametrize(
    "backend",
    ["torch", pytest.param("gsplat", marks=[pytest.mark.gpu, requires_cuda])],
)
def test_short_run_with_every_flag(backend: str, scene_dir: Path, tmp_path: Path, capsys):
    if backend == "gsplat":
        pytest.importorskip("gsplat")
    device = "cpu" if backend == "torch" else "cuda"
    model = tmp_path / "model"
    common = ["-s", str(scene_dir), "-m", str(model), "--eval", "--split_protocol", "custom",
              "--backend", backend, "--data_device", device, "--iterations", "24",
              "--test_iterations", "0", "--position_lr_max_steps", "24"]  # fmt: skip
    argv = common + ["--save_iterations", "24", "--checkpoint_iterations", "18"] + ALL_FLAGS
    assert train_main(argv) == 0
    out = capsys.readouterr().out
    assert "[roi] 4 views: 4 mask+depth, 0 mask only, 0 without ROI" in out
    assert (model / "point_cloud" / "iteration_24" / "point_cloud.ply").is_file()
    assert (model / "chkpnt18.pth").is_file()
    # Resume from the checkpoint: the OptimizerSet's state loads back.
    resumed = tmp_path / "resumed"
    argv = [a if a != str(model) else str(resumed) for a in common]
    argv += ["--save_iterations", "24", "--start_checkpoint", str(model / "chkpnt18.pth")]
    assert train_main(argv + ALL_FLAGS) == 0
    assert (resumed / "point_cloud" / "iteration_24" / "point_cloud.ply").is_file()


def test_use_mask_without_pure_masks_stops_before_writing(scene_dir: Path, tmp_path: Path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(scene_dir, bare, ignore=shutil.ignore_patterns("pure_masks"))
    model = tmp_path / "model"
    argv = ["-s", str(bare), "-m", str(model), "--eval", "--split_protocol", "custom",
            "--backend", "torch", "--data_device", "cpu", "--iterations", "2"]  # fmt: skip
    argv.append("--use_mask")
    assert train_main(argv) == 1
    assert "pure_masks" in capsys.readouterr().err
    assert not model.exists()
