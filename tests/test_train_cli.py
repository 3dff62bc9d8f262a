"""train.py / render.py end to end on a tiny demo scene (torch backend, CPU): the 3DGS
output layout, checkpoints and resume, sparse Adam, the video path, and bad input."""

from __future__ import annotations

import json
import os

import pytest

import render as render_script
import train as train_script
from scripts.make_demo_scene import make_demo_scene


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    scene = str(root / "scene")
    make_demo_scene(scene, width=48, height=36, n_train=3, n_test=2, n_points=600,
                    supersample=1, progress=False)  # fmt: skip
    return scene


def common(scene, model, iters=20):
    return ["-s", scene, "-m", model, "--split_protocol", "custom", "--backend", "torch",
            "--data_device", "cpu", "--iterations", str(iters), "--test_iterations", str(iters),
            "--save_iterations", str(iters), "--densify_from_iter", "5",
            "--densification_interval", "5", "--log_interval", "5"]  # fmt: skip


def assert_tensorboard_logs(model: str) -> None:
    """The 3DGS TensorBoard tags: loss terms, and at --test_iterations the renders and
    ground truths of the test views and 5 training views (images encoded on threads); and
    this project's additions: each logged view's depth, speed, the scale histogram."""
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea_mod.EventAccumulator(model, size_guidance={"images": 0})
    acc.Reload()
    images = set(acc.Tags()["images"])
    assert {"train_loss_patches/l1_loss", "train_loss_patches/ssim_loss",
            "test/loss_viewpoint - psnr"} <= set(acc.Tags()["scalars"])  # fmt: skip
    # 2 test views and 3 distinct training views, each with its ground truth and depth.
    assert len(images) == 3 * (2 + 3) and all(t.endswith(("/render", "/ground_truth", "/depth"))
                                              for t in images)  # fmt: skip
    assert "speed/iterations_per_second" in acc.Tags()["scalars"]
    assert {"scene/opacity_histogram", "scene/log10_max_scale_histogram"} <= set(
        acc.Tags()["histograms"])  # fmt: skip
    event = acc.Images(sorted(images)[0])[0]
    assert (event.width, event.height) == (48, 36) and event.encoded_image_string[:4] == b"\x89PNG"


def test_train_render_layout_and_resume(tiny_scene, tmp_path):
    model = str(tmp_path / "model")
    assert train_script.main(common(tiny_scene, model) + ["--checkpoint_iterations", "10"]) == 0
    for rel in ["cfg_args", "cameras.json", "input.ply", "split.json", "chkpnt10.pth",
                "training_summary.json", "point_cloud/iteration_20/point_cloud.ply"]:  # fmt: skip
        assert os.path.isfile(os.path.join(model, rel)), rel
    assert_tensorboard_logs(model)
    cams = json.load(open(os.path.join(model, "cameras.json")))
    assert list(cams[0]) == ["id", "img_name", "width", "height", "position", "rotation", "fy",
                             "fx"]  # fmt: skip
    assert len(cams) == 5  # test cameras, then train cameras
    resumed = str(tmp_path / "resumed")
    args = common(tiny_scene, resumed)
    args += ["--start_checkpoint", os.path.join(model, "chkpnt10.pth")]
    assert train_script.main(args) == 0
    assert json.load(open(os.path.join(resumed, "training_summary.json")))["iterations"] == 10

    assert render_script.main(["-m", model, "--video", "--video_frames", "6"]) == 0
    for split, n in (("train", 3), ("test", 2)):
        base = os.path.join(model, split, "ours_20")
        assert sorted(os.listdir(os.path.join(base, "renders"))) == [f"{i:05d}.png" for i in
                                                                     range(n)]  # fmt: skip
        assert os.path.isfile(os.path.join(base, "gt", "00000.png"))
        assert os.path.isfile(os.path.join(base, "depth", "00000.npy"))
    video = os.path.join(model, "video")
    assert os.path.isfile(os.path.join(video, "ours_20.mp4")) or os.path.isdir(
        os.path.join(video, "ours_20_frames"))  # fmt: skip


def test_sparse_adam_runs(tiny_scene, tmp_path):
    model = str(tmp_path / "sparse")
    assert train_script.main(common(tiny_scene, model, 12) + ["--optimizer_type",
                                                              "sparse_adam"]) == 0  # fmt: skip


def test_bad_input_leaves_no_model_folder(tmp_path, capsys):
    scene = tmp_path / "empty_scene"
    (scene / "images").mkdir(parents=True)
    model = tmp_path / "model"
    assert train_script.main(["-s", str(scene), "-m", str(model), "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(scene) in err and err.count("\n") == 1
    assert not model.exists()


def test_cuda_graph_blocker_names_the_first_reason():
    """train.py says why a run does not replay its step from CUDA graphs (the graph step
    itself is GPU-tested in test_graph_step.py)."""
    from types import SimpleNamespace

    import torch

    from gaussian.model import GaussianModel
    from gaussian.strategy.default import DefaultStrategy
    from utils.binocular import BinocularConsistency
    from utils.extra_losses import ExtraLosses
    from utils.loss_utils import fast_ssim, ssim

    model = GaussianModel.from_points(torch.rand(8, 3), torch.rand(8, 3))
    adam = torch.optim.Adam(model.params.values())
    opt, pipe = SimpleNamespace(optimizer_type="default"), SimpleNamespace()

    def reason(cuda_graphs="auto", nodes="fused", backend="gsplat", extra=None, ssim_fn=ssim):
        speed = SimpleNamespace(cuda_graphs=cuda_graphs, autograd_nodes=nodes)
        return train_script.cuda_graph_blocker(speed, backend, pipe, opt, extra, ssim_fn, adam,
                                               DefaultStrategy(), None, model)  # fmt: skip

    assert reason(cuda_graphs="off") == "--cuda_graphs off"
    assert reason(nodes="stages") == "--autograd_nodes stages"
    assert reason(backend="torch", ssim_fn=fast_ssim) == "the torch backend"
    assert reason(extra=ExtraLosses(lambda_lpdr=0.1)) == "extra loss terms"
    # The binocular term alone leaves its off-iterations to the graphs.
    bino = ExtraLosses(lambda_binocular=0.5, binocular=BinocularConsistency(0.1, every=2))
    assert reason(extra=bino) == "--ssim_impl torch"
    assert reason() == "--ssim_impl torch"
