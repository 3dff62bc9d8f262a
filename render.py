"""Render the train and test views of a trained model (3DGS layout), optionally a video.

    python render.py -m <model> [--iteration N] [--skip_train] [--skip_test] [--video]
                     [--test_pose_opt STEPS [--test_pose_schedule spars3r|fast]]

Writes <model>/{train,test}/ours_<N>/renders/00000.png, gt/, depth/ (.npy expected z-depth
and a colourised .png), and masks/ when the scene has object masks (masked metrics).

``--test_pose_opt STEPS`` (SPARS3R's test-time pose optimisation, gaussian_renderer/
pose_opt.py) also writes <model>/test/ours_<N>_pose_opt/: the same views rendered after a
per-view SO(3)xR3 correction of the test camera fitted against its test image (Gaussians
frozen), and poses.json with the corrected poses. ours_<N> is left as it is, so metrics.py
reports both side by side.
"""

from __future__ import annotations

import json
import os
import sys
import time
from argparse import ArgumentParser, Namespace

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from arguments import (
    BackendParams,
    ModelParams,
    PipelineParams,
    SparseViewParams,
    get_combined_args,
)
from arguments.pose import PoseOptParams
from gaussian.model import GaussianModel
from gaussian.ply import load_ply
from gaussian_renderer import render, resolve_backend
from scene import Scene
from scene.cameras import Camera
from scene.errors import SceneError
from utils.camera_path import smooth_path
from utils.general_utils import pick_device
from utils.image_utils import colorize, save_image, to_uint8


def search_for_max_iteration(folder: str) -> int:
    iters = [int(f.split("_")[-1]) for f in os.listdir(folder) if f.startswith("iteration_")]
    if not iters:
        raise SceneError(f"{folder}: no iteration_N folders; train the model first (train.py)")
    return max(iters)


def check_model_args(args: Namespace) -> None:
    """One-line ``SceneError`` when ``-m`` is not a model folder train.py wrote: no folder,
    or no cfg_args (which names the scene) and no ``-s`` either. A missing point_cloud/ is
    ``load_model``'s to report."""
    model_path = getattr(args, "model_path", None)
    if not model_path:
        raise SceneError("no model folder given: pass -m <model>, a folder written by train.py")
    if not os.path.isdir(model_path):
        raise SceneError(f"{model_path} not found: -m takes a model folder written by train.py")
    if not getattr(args, "source_path", None):
        raise SceneError(
            f"{os.path.join(model_path, 'cfg_args')} not found: {model_path} is not a model "
            "folder written by train.py (or pass the scene with -s)"
        )


def load_model(model_path: str, iteration: int, device: torch.device) -> tuple[GaussianModel, int]:
    folder = os.path.join(model_path, "point_cloud")
    if not os.path.isdir(folder):
        raise SceneError(
            f"{folder} not found: {model_path} holds no trained Gaussians (train.py writes "
            "them at --save_iterations, at its end and when stopped)"
        )
    if iteration == -1:
        iteration = search_for_max_iteration(folder)
    path = os.path.join(folder, f"iteration_{iteration}", "point_cloud.ply")
    if not os.path.isfile(path):
        raise SceneError(f"{path} not found; pick an existing --iteration")
    print(f"Loading trained model at iteration {iteration}")
    try:
        return load_ply(path, device), iteration
    except ValueError as exc:  # load_ply's one line names the file
        raise SceneError(f"{exc}; train again or pick another --iteration") from exc


POSE_OPT_SUFFIX = "_pose_opt"  # ours_<N>_pose_opt: the method folder after pose optimisation


def render_set(model_path, name, iteration, views, gaussians, pipeline, background, backend,
               method: str | None = None) -> str:  # fmt: skip
    """Render ``views`` into ``<model>/<name>/<method>`` (default ``ours_<iteration>``).

    A view may be any object ``render()`` accepts that also carries ``original_image`` and
    ``eval_mask`` (a ``Camera``, or a pose-corrected ``CorrectedCamera``). Returns the folder.
    """
    base = os.path.join(model_path, name, method or f"ours_{iteration}")
    dirs = {k: os.path.join(base, k) for k in ("renders", "gt", "depth")}
    if any(v.eval_mask is not None for v in views):
        dirs["masks"] = os.path.join(base, "masks")
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    for idx, view in enumerate(tqdm(views, desc="Rendering progress")):
        out = render(view, gaussians, pipeline, background, backend=backend)
        stem = f"{idx:05d}"
        save_image(out["render"], os.path.join(dirs["renders"], stem + ".png"))
        save_image(view.original_image[0:3], os.path.join(dirs["gt"], stem + ".png"))
        depth = out["depth"][0].cpu().numpy().astype(np.float32)
        valid = out["alpha"][0].cpu().numpy() > 0.5
        np.save(os.path.join(dirs["depth"], stem + ".npy"), depth)
        Image.fromarray(colorize(depth, valid)).save(os.path.join(dirs["depth"], stem + ".png"))
        if "masks" in dirs and view.eval_mask is not None:
            save_image(view.eval_mask, os.path.join(dirs["masks"], stem + ".png"))
    return base


def render_pose_opt_set(model_path, iteration, views, gaussians, pipeline, background, backend,
                        steps: int, schedule: str, scale: float) -> str:  # fmt: skip
    """Test-time pose optimisation of every test view, then its renders and poses.json.

    Each view's correction is fitted independently (``optimize_camera_poses``, views of
    one size in batches; translation in units of ``scale``, the scene's
    ``cameras_extent``). The corrected views are written by ``render_set`` into
    ``<model>/test/ours_<N>_pose_opt`` and the poses into its ``poses.json``: ``{"steps",
    "schedule", "scale", "seconds" (the optimisation's), "views": [{image_name,
    viewmat_before, viewmat_after, R, T, rotation_change_deg, translation_change,
    loss_before, loss_after}]}`` (``R`` camera-to-world and ``T`` as in 3DGS; views in
    render order).
    """
    from gaussian_renderer.pose_opt import POSE_BATCH, optimize_camera_poses

    start = time.perf_counter()
    print(f"[pose_opt] {len(views)} test views, {steps} steps, up to {POSE_BATCH} views at once")
    pairs = optimize_camera_poses(list(views), gaussians, pipeline, background, steps, scale,
                                  schedule, backend)  # fmt: skip
    corrected, records = [c for c, _ in pairs], [r for _, r in pairs]
    seconds = time.perf_counter() - start  # each view's result is read back: no sync needed
    method = f"ours_{iteration}{POSE_OPT_SUFFIX}"
    base = render_set(model_path, "test", iteration, corrected, gaussians, pipeline, background,
                      backend, method=method)  # fmt: skip
    poses = {"steps": steps, "schedule": schedule, "scale": scale,
             "seconds": round(seconds, 3), "views": [r.as_json() for r in records]}  # fmt: skip
    tmp = os.path.join(base, ".poses.json.tmp")
    with open(tmp, "w") as f:
        json.dump(poses, f, indent=1)
    os.replace(tmp, os.path.join(base, "poses.json"))
    if records:
        rot = [r.rotation_change_deg for r in records]
        tr = [r.translation_change / scale for r in records]
        print(
            f"[pose_opt] {len(records)} test views: rotation change mean {np.mean(rot):.3f} "
            f"deg (max {np.max(rot):.3f}), translation change mean {100 * np.mean(tr):.3f} % "
            f"of the scene scale (max {100 * np.max(tr):.3f} %) in {seconds:.1f} s; poses in "
            f"{base}/poses.json"
        )
    return base


def render_video(model_path, iteration, cameras, gaussians, pipeline, background, backend,
                 n_frames: int, fps: int) -> str:  # fmt: skip
    """Fly a smooth path through the training cameras; mp4 if an encoder exists, else PNGs."""
    ref = cameras[0]
    c2w = []
    for cam in cameras:
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = cam.R.T, cam.T
        c2w.append(np.linalg.inv(w2c)[:3])
    frames = []
    for pose in tqdm(smooth_path(np.stack(c2w), n_frames), desc="Rendering video"):
        R, centre = pose[:, :3], pose[:, 3]
        cam = Camera(0, "video", R, -R.T @ centre, ref.fx, ref.fy, ref.cx, ref.cy,
                     ref.image_width, ref.image_height, device=ref.device)  # fmt: skip
        frames.append(to_uint8(render(cam, gaussians, pipeline, background, backend=backend)
                               ["render"]))  # fmt: skip
    out_dir = os.path.join(model_path, "video")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"ours_{iteration}.mp4")
    try:
        import imageio.v2 as imageio

        tmp = path + ".tmp.mp4"
        with imageio.get_writer(tmp, fps=fps, macro_block_size=1) as writer:
            for f in frames:
                writer.append_data(f)
        os.replace(tmp, path)
        return path
    except Exception as exc:  # no ffmpeg backend: fall back to frames
        frame_dir = os.path.join(out_dir, f"ours_{iteration}_frames")
        os.makedirs(frame_dir, exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(os.path.join(frame_dir, f"{i:05d}.png"))
        print(f"[video] no mp4 encoder ({exc}); wrote PNG frames instead")
        return frame_dir


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Testing script parameters")
    model = ModelParams(parser, sentinel=True)
    pipeline = PipelineParams(parser)
    sparse = SparseViewParams(parser, sentinel=True)
    BackendParams(parser, sentinel=True)
    PoseOptParams(parser)
    parser.add_argument("--iteration", default=-1, type=int)
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--skip_test", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    video = parser.add_argument_group("Video")
    video.add_argument("--video", action="store_true", help="render a smooth path video")
    video.add_argument("--video_frames", type=int, default=120)
    video.add_argument("--fps", type=int, default=30)
    try:
        args = get_combined_args(parser, argv)
    except (SyntaxError, ValueError) as exc:  # an unreadable cfg_args
        cfg = os.path.join(parser.parse_args(argv).model_path or "", "cfg_args")
        print(f"error: cannot read {cfg} ({exc}); train the model again", file=sys.stderr)
        return 1
    try:
        check_model_args(args)
        print("Rendering " + args.model_path)
        device = pick_device("cuda")
        backend = resolve_backend(getattr(args, "backend", None) or "auto", device)
        dataset, sp = model.extract(args), sparse.extract(args)
        with torch.no_grad():
            gaussians, iteration = load_model(args.model_path, args.iteration, device)
            scene = Scene(dataset, sp, device=device, model_path=args.model_path,
                          reuse_split=True)  # fmt: skip
            bg = [1.0, 1.0, 1.0] if dataset.white_background else [0.0, 0.0, 0.0]
            background = torch.tensor(bg, dtype=torch.float32, device=device)
            pipe = pipeline.extract(args)
            if not args.skip_train:
                render_set(args.model_path, "train", iteration, scene.getTrainCameras(),
                           gaussians, pipe, background, backend)  # fmt: skip
            if not args.skip_test and scene.getTestCameras():
                render_set(args.model_path, "test", iteration, scene.getTestCameras(),
                           gaussians, pipe, background, backend)  # fmt: skip
            steps = int(getattr(args, "test_pose_opt", 0) or 0)
            if steps > 0 and not args.skip_test and scene.getTestCameras():
                render_pose_opt_set(args.model_path, iteration, scene.getTestCameras(),
                                    gaussians, pipe, background, backend, steps,
                                    args.test_pose_schedule, scene.cameras_extent)  # fmt: skip
            if args.video:
                path = render_video(args.model_path, iteration, scene.getTrainCameras(),
                                    gaussians, pipe, background, backend, args.video_frames,
                                    args.fps)  # fmt: skip
                print(f"Video: {path}")
    except SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
