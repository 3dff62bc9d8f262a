"""Train 3D Gaussians on one scene folder (3DGS command line and output layout).

    python train.py -s <scene> [-m <model>] [--eval | --n_views N --split_protocol llff]

Outputs (same as 3DGS): <model>/cfg_args, cameras.json, input.ply, split.json,
point_cloud/iteration_N/point_cloud.ply, chkpnt<N>.pth (when asked), TensorBoard events.

Nothing is lost when a run stops early (utils/training_guard.py): after Ctrl-C or SIGTERM
the loop ends at the next iteration boundary and saves point_cloud/iteration_<N>/ and
chkpnt<N>.pth; a NaN or infinite loss term or parameter, found at the once-per-log-interval
read-back, stops the run and saves the last state that passed that check. Either way one
line gives the command that resumes the run with ``--start_checkpoint``, and the exit
status is non-zero (130 after SIGINT, 143 after SIGTERM, 1 after divergence).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from argparse import ArgumentParser, Namespace
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from arguments import (
    BackendParams,
    DensifyParams,
    DepthLossParams,
    MaskRegParams,
    ModelParams,
    OptimizationParams,
    PipelineParams,
    ROIParams,
    SparseRegParams,
    SparseViewParams,
    SpeedParams,
    apply_sparse_view_preset,
)
from gaussian.dropout import DropGaussian, build_drop
from gaussian.model import CORE_KEYS, GaussianModel
from gaussian.opacity_decay import decay_opacity_
from gaussian.optim import (
    FusedAdam,
    StepSchedule,
    build_step_schedule,
    build_training_optimizer,
    means_lr_schedule,
    set_lr,
)
from gaussian.ply import save_ply
from gaussian.strategy.base import Strategy
from gaussian.strategy.default import DefaultStrategy
from gaussian.strategy.factory import build_strategy
from gaussian.strategy.roi import ROIGate, far_scene_depths
from gaussian.view_cull import cull_unseen
from gaussian_renderer import render, render_features_only, resolve_backend
from gaussian_renderer.gsplat_backend import load_gsplat_extension
from mask_matching.maps import check_meta, load_meta
from scene import Scene
from scene.errors import SceneError
from segmentation.pca import pca_rgb
from utils.binocular import build_binocular
from utils.extra_losses import ExtraLosses, build_extra_losses, segment_tv_inputs
from utils.feature_field import build_feature_field
from utils.general_utils import pick_device, seed_everything
from utils.image_utils import psnr
from utils.loss_utils import fast_ssim, l1_dssim_loss, l1_loss, load_fused_ssim, ssim
from utils.mask_visibility import build_mask_visibility, load_training_maps, uses_maps
from utils.roi import attach_training_priors, weighted_l1
from utils.training_guard import (
    LastGoodState,
    StopSignals,
    TrainingStopped,
    first_nonfinite,
    param_norms,
    resume_command,
)

TIMELINE_EVERY = 500  # iterations between the timeline entries of training_summary.json

# ----------------------------------------------------------------------------- setup


def prepare_output_and_logger(args: Namespace):
    """Create the model folder, write cfg_args, open TensorBoard (None if unavailable)."""
    if not args.model_path:
        args.model_path = os.path.join("./output/", str(uuid.uuid4())[0:10])
    print(f"Output folder: {args.model_path}")
    os.makedirs(args.model_path, exist_ok=True)
    with open(os.path.join(args.model_path, "cfg_args"), "w") as f:
        f.write(str(Namespace(**vars(args))))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("Tensorboard not available: not logging progress")
        return None
    return SummaryWriter(args.model_path)


def initial_gaussians(scene: Scene, sh_degree: int, device: torch.device) -> GaussianModel:
    pcd = scene.point_cloud
    points = torch.as_tensor(pcd.points, dtype=torch.float32, device=device)
    colors = torch.as_tensor(pcd.colors, dtype=torch.float32, device=device)
    print(f"Number of points at initialisation : {points.shape[0]}")
    return GaussianModel.from_points(points, colors, sh_degree)


# ----------------------------------------------------------------------------- one step


def render_step(camera, gaussians, pipe, bg, backend: str, depth: bool = True,
                fused: bool = True, drop: DropGaussian | None = None,
                features: torch.Tensor | None = None) -> dict:  # fmt: skip
    """The training render; ``features`` [N, C]: extra channels in the same pass."""
    gain = None if drop is None else drop.gain(gaussians.num_gaussians)
    return render(camera, gaussians, pipe, bg, backend=backend, depth=depth, fused=fused,
                  opacity_gain=gain, features=features)  # fmt: skip


def compute_losses(
    render_pkg: dict,
    camera,
    opt,
    ssim_fn=fast_ssim,
    extra: ExtraLosses | None = None,
    iteration: int = 0,
    fused: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its named terms (each logged as train_loss_patches/<name>).

    (1 - lambda_dssim) * L1 + lambda_dssim * (1 - SSIM), as 3DGS: with ``fused``,
    ``fast_ssim`` and a plain L1 one autograd node (utils.loss_utils.l1_dssim_loss). With ``extra``
    (ROI, LPDR, depth flags; utils/extra_losses.py) L1 may be ROI-weighted and weighted
    extra terms join the sum.
    """
    image, gt = render_pkg["render"], camera.original_image
    roi_weight = None if extra is None else extra.l1_weight(camera, iteration)
    if fused and roi_weight is None and ssim_fn is fast_ssim:
        total, l1, dssim = l1_dssim_loss(image, gt, opt.lambda_dssim)
        terms = {"l1_loss": l1, "ssim_loss": dssim}
    else:
        l1 = l1_loss(image, gt) if roi_weight is None else weighted_l1(image, gt, roi_weight)
        terms = {"l1_loss": l1, "ssim_loss": 1.0 - ssim_fn(image, gt)}
        total = torch.lerp(terms["l1_loss"], terms["ssim_loss"], opt.lambda_dssim)
    if extra is not None:
        for name, (weight, value) in extra.terms(render_pkg, camera, iteration).items():
            terms[name] = value
            total = torch.add(total, value, alpha=weight)  # one fused multiply-add launch
    return total, terms


def optimizer_step(
    optimizer,
    visible: torch.Tensor | None = None,
    iteration: int = 0,
    schedule: StepSchedule | None = None,
) -> None:
    """Adam step (selective when ``visible`` is given), then clear the gradients; with a
    multi-step ``schedule`` only at its steps (gradients accumulate in between)."""
    if schedule is not None and not schedule.should_step(iteration):
        return
    if visible is None:
        optimizer.step()
    else:
        optimizer.step(visible=visible)
    optimizer.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- method


def build_method(
    scene: Scene, opt, dataset, pipe, background, backend: str, method=None, seed: int = 0
) -> tuple[Strategy, ExtraLosses | None, StepSchedule | None]:
    """Strategy, extra loss terms and step schedule for the ROI / densification / depth /
    binocular flags (``method``: their values, or None). With every such flag off this is
    3DGS: ``DefaultStrategy.from_opt``, no extra terms, a step every iteration. The priors
    must already be attached (``attach_training_priors``); the binocular term still needs
    its renderer (``BinocularConsistency.bind``)."""
    roi = getattr(method, "roi", None)
    densify = getattr(method, "densify", None)
    depth = getattr(method, "depth", None)
    reg = getattr(method, "sparse_reg", None)
    train_cams = scene.getTrainCameras()
    gate = None
    if roi is not None and roi.use_mask:
        points = torch.as_tensor(scene.point_cloud.points, dtype=torch.float32)
        gate = ROIGate.from_args(roi, far_scene_depths(points, train_cams))

    def render_fn(camera, model, features):
        return render(camera, model, pipe, background, features=features, backend=backend,
                      depth=False)  # fmt: skip

    strategy = build_strategy(
        opt, scene.cameras_extent, dataset.white_background, densify, gate, train_cams, render_fn
    )
    schedule = build_step_schedule(densify, opt.optimizer_type)
    binocular = build_binocular(reg, scene, seed, opt.lambda_dssim)
    mask_reg = getattr(method, "mask_reg", None)
    maps = load_training_maps(scene, mask_reg, background.device)
    mask_vis = build_mask_visibility(scene, mask_reg, background.device, maps)
    field = build_feature_field(scene, mask_reg, maps, opt.iterations)
    segment_tv = segment_tv_inputs(mask_reg, maps)
    lambda_binocular = getattr(reg, "lambda_binocular", 0.0)
    extra = build_extra_losses(roi, depth, lambda_binocular, binocular, mask_vis, field,
                               segment_tv)  # fmt: skip
    return strategy, extra, schedule


def cuda_graph_blocker(speed, backend: str, pipe, opt, extra_losses, ssim_fn, optimizer,
                       strategy, schedule, gaussians) -> str | None:  # fmt: skip
    """Why the loop cannot replay its step from CUDA graphs (gaussian_renderer/
    graph_step.py), or None when it can: plain 3DGS on gsplat only."""
    switches = ("antialiasing", "compute_cov3D_python", "convert_SHs_python")
    checks = {  # in order; each evaluated only when the ones before it pass
        "--cuda_graphs off": lambda: speed.cuda_graphs == "off",
        "--autograd_nodes stages": lambda: speed.autograd_nodes != "fused",
        f"the {backend} backend": lambda: backend != "gsplat",
        "extra loss terms": lambda: extra_losses is not None and not extra_losses.graphable,
        "--ssim_impl torch": lambda: ssim_fn is not fast_ssim,
        "fused SSIM unavailable": lambda: load_fused_ssim(gaussians.device) is None,
        "not 3DGS's Adam": lambda: (
            not isinstance(optimizer, FusedAdam)
            or schedule is not None
            or opt.optimizer_type != "default"
        ),
        "not 3DGS's densification": lambda: (
            type(strategy) is not DefaultStrategy or strategy.roi is not None
        ),
        "a PyTorch SH/covariance or antialiasing switch": lambda: any(
            getattr(pipe, k, False) for k in switches
        ),
        "parameters beyond 3DGS's": lambda: set(gaussians.params) != set(CORE_KEYS),
    }
    return next((reason for reason, failed in checks.items() if failed()), None)


def bind_term_renders(extra_losses, gaussians, pipe, background, backend: str) -> None:
    """Give the terms that render on their own (the binocular term's shifted view, the
    feature field's pass) the render of the current Gaussians."""
    if extra_losses is None:
        return
    if extra_losses.binocular is not None:
        extra_losses.binocular.bind(
            lambda cam: render(cam, gaussians, pipe, background, backend=backend, depth=False)
        )
    if extra_losses.feature_field is not None:
        extra_losses.feature_field.bind(
            gaussians,
            lambda cam, model, feats: render_features_only(cam, model, feats, backend=backend),
        )


def build_graphed_step(speed, backend: str, pipe, opt, extra_losses, ssim_fn, optimizer,
                       strategy, schedule, gaussians, background,
                       drop: DropGaussian | None = None):  # fmt: skip
    """The CUDA-graph step for this run, or None (``cuda_graph_blocker`` says why; printed
    either way). ``drop``: DropGaussian, whose masks the graph draws itself."""
    blocker = cuda_graph_blocker(speed, backend, pipe, opt, extra_losses, ssim_fn, optimizer,
                                 strategy, schedule, gaussians)  # fmt: skip
    print(f"CUDA graphs: {'on' if blocker is None else f'off ({blocker})'}")
    if blocker is not None:
        return None
    from gaussian_renderer.graph_step import GraphedStep

    absgrad = getattr(strategy, "absgrad", False)
    return GraphedStep(gaussians, background, opt.lambda_dssim, absgrad, drop)


# ----------------------------------------------------------------------------- saving


def save_checkpoint(model_path: str, gaussians: GaussianModel, optimizer_state: dict,
                    state: dict, iteration: int) -> str:  # fmt: skip
    """<model>/chkpnt<iteration>.pth, the tuple ``--start_checkpoint`` reads: ``({"model",
    "optimizer", "state"}, iteration)``; written under a temporary name, then renamed."""
    path = os.path.join(model_path, f"chkpnt{iteration}.pth")
    payload = {"model": gaussians.capture(), "optimizer": optimizer_state, "state": state}
    torch.save((payload, iteration), path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def save_stopped_run(model_path: str, gaussians: GaussianModel, optimizer_state: dict,
                     state: dict, iteration: int) -> tuple[str, str]:  # fmt: skip
    """The Gaussians (point_cloud/iteration_<N>/, as at --save_iterations) and a checkpoint
    of a run that stops early; returns both paths."""
    ply = os.path.join(model_path, f"point_cloud/iteration_{iteration}/point_cloud.ply")
    save_ply(gaussians, ply)
    return ply, save_checkpoint(model_path, gaussians, optimizer_state, state, iteration)


# ----------------------------------------------------------------------------- loop


def training(
    dataset,
    opt,
    pipe,
    sparse,
    backend_args,
    speed,
    testing_iterations: list[int],
    saving_iterations: list[int],
    checkpoint_iterations: list[int],
    checkpoint: str | None,
    debug_from: int,
    args: Namespace,
    method=None,
) -> GaussianModel:
    """3DGS training. ``method`` holds the ROIParams / DensifyParams / DepthLossParams /
    SparseRegParams / MaskRegParams values as attributes ``roi``, ``densify``, ``depth``,
    ``sparse_reg``, ``mask_reg`` (None: plain 3DGS). ``args.seed`` seeds every random
    choice: the initial random points, the order of the training views, DropGaussian's
    masks (seed_everything)."""
    marks = {"start": time.perf_counter()}  # phase boundaries for training_summary.json
    device = pick_device("cuda")
    backend = resolve_backend(backend_args.backend, device)
    # The scene is read and checked before anything is written: bad input leaves no folder.
    scene = Scene(dataset, sparse, device=device, seed=args.seed)
    # Priors the ROI / depth flags ask for: read (and checked) before anything is written.
    attach_training_priors(
        scene.getTrainCameras(), scene.source_path, getattr(method, "roi", None),
        getattr(method, "depth", None),
    )  # fmt: skip
    mask_reg = getattr(method, "mask_reg", None)
    if uses_maps(mask_reg):  # the descriptor maps exist, made for these views?
        names = [c.image_name for c in scene.getTrainCameras()]
        check_meta(load_meta(scene.source_path), scene.source_path, names)
    created = not os.path.isdir(args.model_path) if args.model_path else True
    try:
        tb_writer = prepare_output_and_logger(args)
        scene.write_model_files(args.model_path)
        gaussians = initial_gaussians(scene, dataset.sh_degree, device)
    except BaseException:
        if created and args.model_path and os.path.isdir(args.model_path):
            shutil.rmtree(args.model_path, ignore_errors=True)
        raise
    marks["scene"] = time.perf_counter()
    print(f"Backend: {backend} on {device}")
    bg_color = [1.0, 1.0, 1.0] if dataset.white_background else [0.0, 0.0, 0.0]
    background = torch.tensor(bg_color, dtype=torch.float32, device=device)
    strategy, extra_losses, step_schedule = build_method(
        scene, opt, dataset, pipe, background, backend, method, args.seed
    )
    densify = getattr(method, "densify", None)
    field = None if extra_losses is None else extra_losses.feature_field
    if field is not None:
        field.add_parameter(gaussians)  # before the optimizer, which then trains it
    sparse_adam = opt.optimizer_type == "sparse_adam"
    optimizer = build_training_optimizer(gaussians, opt, scene.cameras_extent, densify)
    means_lr = means_lr_schedule(opt, scene.cameras_extent)
    state = strategy.initialize_state(gaussians)

    first_iter = 0
    if checkpoint:
        saved, first_iter = torch.load(checkpoint, map_location=device, weights_only=False)
        gaussians = GaussianModel.restore(saved["model"], device)
        optimizer = build_training_optimizer(gaussians, opt, scene.cameras_extent, densify)
        optimizer.load_state_dict(saved["optimizer"])
        state = {k: v.to(device) if torch.is_tensor(v) else v for k, v in saved["state"].items()}

    train_cams = scene.getTrainCameras()
    order = torch.Generator().manual_seed(args.seed)
    reg = getattr(method, "sparse_reg", None)
    bind_term_renders(extra_losses, gaussians, pipe, background, backend)
    cull_views = getattr(mask_reg, "cull_min_views", 0)
    opacity_decay = getattr(reg, "opacity_decay", 1.0)
    if opacity_decay < 1.0:
        print(f"Opacity decay: x{opacity_decay} per step until iteration "
              f"{opt.densify_until_iter}")  # fmt: skip
    drop = build_drop(getattr(reg, "drop_rate", 0.0), getattr(reg, "drop_schedule", "constant"),
                      opt.iterations, device)  # fmt: skip
    if drop is not None:
        print(f"DropGaussian: rate {drop.rate} ({drop.schedule})")
    view_stack: list[int] = []
    ssim_fn = ssim if speed.ssim_impl == "torch" else fast_ssim
    marks["setup"] = time.perf_counter()
    # Build/load the CUDA extensions now, not inside the timed loop.
    if ssim_fn is fast_ssim and device.type == "cuda":
        load_fused_ssim(device)
    if backend == "gsplat":
        load_gsplat_extension()
    marks["extensions"] = time.perf_counter()
    # evaluation, saving and checkpoints in the loop; densification steps (strategy calls
    # that edited the set, their wait for the GPU included)
    in_loop = {"eval": 0.0, "save": 0.0, "densify": 0.0}
    timeline: list[list] = []  # [iteration, loop seconds, Gaussians] every TIMELINE_EVERY
    log_every = max(1, speed.log_interval)
    ema_loss = torch.zeros((), device=device)
    fused = speed.autograd_nodes == "fused"
    graphed = build_graphed_step(speed, backend, pipe, opt, extra_losses, ssim_fn, optimizer,
                                 strategy, step_schedule, gaussians, background,
                                 drop)  # fmt: skip
    progress = tqdm(range(first_iter, opt.iterations), desc="Training progress")
    # The state each finiteness check passed (at first the initial or resumed one).
    last_good = LastGoodState()
    last_good.take(gaussians, first_iter, gaussians.active_sh_degree)
    diverged: str | None = None  # what was non-finite, and when
    signals = StopSignals()
    first_iter += 1
    loop_start = iter_start = time.perf_counter()
    for iteration in signals.iterations(first_iter, opt.iterations):  # ends on Ctrl-C/SIGTERM
        set_lr(optimizer, "means", means_lr(iteration))
        sh_degree = gaussians.active_sh_degree  # that of the state before this iteration
        if iteration % 1000 == 0:
            gaussians.oneupSHdegree()
        if not view_stack:
            view_stack = torch.randperm(len(train_cams), generator=order).tolist()
        camera = train_cams[view_stack.pop()]
        if iteration - 1 == debug_from:
            pipe.debug = True
        bg = torch.rand(3, device=device) if opt.random_background else background
        if drop is not None:
            drop.set_iteration(iteration)

        frozen = field is not None and field.geometry_frozen(iteration)
        # The first step runs eagerly: it loads every kernel the graphs will record. So do
        # the steps where an extra term acts (the binocular term's every N-th).
        plain = extra_losses is None or extra_losses.plain_step(iteration)
        if graphed is not None and iteration > first_iter and not pipe.debug and plain:
            render_pkg, loss, terms = graphed.step(camera, bg if opt.random_background else None)
        elif frozen:  # only the feature field trains: no RGB render, no densification
            render_pkg = None
            loss, terms = field.loss(camera, iteration)
            loss.backward()
        else:
            features = (
                None
                if extra_losses is None
                else extra_losses.render_features(gaussians, camera, iteration)
            )
            # The depth channel costs rasterization work: only when a loss reads it.
            depth = extra_losses is not None and extra_losses.reads_rendered_depth(iteration)
            render_pkg = render_step(camera, gaussians, pipe, bg, backend, depth, fused, drop,
                                     features)  # fmt: skip
            strategy.step_pre_backward(render_pkg, state, iteration)
            loss, terms = compute_losses(render_pkg, camera, opt, ssim_fn, extra_losses,
                                         iteration, fused)  # fmt: skip
            loss.backward()

        with torch.no_grad():
            # The loss stays on the device; it is read back once per log interval only.
            ema_loss.lerp_(loss.detach(), 0.4)  # 0.4 * loss + 0.6 * ema, as 3DGS
            if speed.sync_every_step:
                ema_loss.item()  # the stock loop's per-step read-back (for comparisons)
            if iteration % log_every == 0 or iteration == opt.iterations:
                # One read-back: the loss terms and the norm of each parameter.
                norms = param_norms(gaussians.params)
                values = torch.stack([ema_loss, loss.detach(), *terms.values(),
                                      *norms.values()]).tolist()  # fmt: skip
                diverged = check_finite(terms, norms, values, iteration)
                if diverged is not None:
                    break
                # The parameters are still those the last step left: the state after
                # iteration - 1, now known to be finite.
                last_good.take(gaussians, iteration - 1, sh_degree)
                progress.set_postfix({"Loss": f"{values[0]:.7f}"})
                progress.update(iteration - progress.n - first_iter + 1)
                if tb_writer is not None:
                    elapsed = (time.perf_counter() - iter_start) * 1000.0 / log_every
                    iter_start = time.perf_counter()
                    log_training(tb_writer, iteration, values[1], dict(zip(terms, values[2:])),
                                 elapsed, gaussians)  # fmt: skip
            if iteration == opt.iterations:
                progress.close()
            io_start = time.perf_counter()
            if iteration in testing_iterations:
                evaluate(
                    tb_writer, iteration, scene, gaussians, pipe, background, backend,
                    log_gt=iteration == testing_iterations[0], field=field,
                )  # fmt: skip
            in_loop["eval"] += time.perf_counter() - io_start
            io_start = time.perf_counter()
            if iteration in saving_iterations:
                print(f"\n[ITER {iteration}] Saving Gaussians")
                save_ply(
                    gaussians,
                    os.path.join(
                        args.model_path, f"point_cloud/iteration_{iteration}/point_cloud.ply"
                    ),
                )
            in_loop["save"] += time.perf_counter() - io_start
            strategy_start = time.perf_counter()
            if not frozen and strategy.step_post_backward(gaussians, optimizer, state, iteration,
                                                          render_pkg, camera):  # fmt: skip
                in_loop["densify"] += time.perf_counter() - strategy_start  # it densified
            if iteration % TIMELINE_EVERY == 0:  # host time: never more than a step ahead
                timeline.append([iteration, round(time.perf_counter() - loop_start, 3),
                                 gaussians.num_gaussians])  # fmt: skip
            # After a densification step the parameters are new tensors without gradients,
            # so the step below does nothing (as upstream) and the stale mask is never used.
            visible = render_pkg["visibility_filter"] if sparse_adam and not frozen else None
            optimizer_step(optimizer, visible, iteration, step_schedule)
            if extra_losses is not None:
                extra_losses.after_step(iteration)
            if opacity_decay < 1.0 and iteration < opt.densify_until_iter and not frozen:
                decay_opacity_(gaussians, opacity_decay)
            if cull_views > 0 and iteration == mask_reg.cull_views_at:
                n = cull_unseen(gaussians, optimizer, state, train_cams, cull_views)
                print(f"\n[ITER {iteration}] Removed {n} Gaussians inside fewer than "
                      f"{cull_views} training views")  # fmt: skip
            if iteration in checkpoint_iterations:
                io_start = time.perf_counter()
                print(f"\n[ITER {iteration}] Saving Checkpoint")
                save_checkpoint(args.model_path, gaussians, optimizer.state_dict(), state,
                                iteration)  # fmt: skip
                in_loop["save"] += time.perf_counter() - io_start
    if signals.stopped_before is not None or diverged is not None:
        progress.close()
        if tb_writer is not None:
            tb_writer.close()
        stop_early(args.model_path, signals, diverged, gaussians, optimizer, state, last_good,
                   strategy, (opt, scene.cameras_extent, densify))  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    marks["loop"] = time.perf_counter()
    n_iters = opt.iterations - first_iter + 1
    phases = {
        "scene_seconds": marks["scene"] - marks["start"],
        "setup_seconds": marks["setup"] - marks["scene"],
        "extensions_seconds": marks["extensions"] - marks["setup"],
        "eval_save_seconds": in_loop["eval"] + in_loop["save"],
        "eval_seconds": in_loop["eval"],
        "save_seconds": in_loop["save"],
        "densify_seconds": in_loop["densify"],
    }
    if graphed is not None:
        phases.update({f"graph_captures_{k}": v for k, v in graphed.captures.items()})
    write_summary(args.model_path, marks["loop"] - loop_start, n_iters, gaussians, backend,
                  device, phases, timeline)  # fmt: skip
    if tb_writer is not None:
        tb_writer.close()
    return gaussians


def check_finite(terms: dict[str, torch.Tensor], norms: dict[str, torch.Tensor],
                 values: list[float], iteration: int) -> str | None:  # fmt: skip
    """What the log read-back ``values`` ([running loss, loss, *terms, *norms]) found
    non-finite at ``iteration`` (e.g. ``loss term ssim_loss is NaN at iteration 1230``),
    or None. The loss terms are named first: they are what went wrong first. A non-finite
    running loss alone means that the loss of an iteration since the last check was."""
    n = len(terms)
    named = {f"loss term {k}": v for k, v in zip(terms, values[2 : 2 + n])}
    named["loss"] = values[1]
    named.update({f"parameter {k}": v for k, v in zip(norms, values[2 + n :])})
    named["running loss"] = values[0]
    problem = first_nonfinite(named)
    return None if problem is None else f"{problem} at iteration {iteration}"


def stop_early(model_path: str, signals: StopSignals, diverged: str | None,
               gaussians: GaussianModel, optimizer, state: dict, last_good: LastGoodState,
               strategy: Strategy, optimizer_args: tuple) -> None:  # fmt: skip
    """Save a run that stops before its last iteration, then raise ``TrainingStopped``.

    After a signal: the current state, after the last iteration that completed. After
    divergence, or a signal that finds a parameter non-finite (one read-back, here): the
    last state a check passed, with a new optimizer (``build_training_optimizer(model,
    *optimizer_args)``: Adam's moments at zero) and new densification statistics, as the
    diverged run's hold the bad values too.
    """
    done = None if signals.stopped_before is None else signals.stopped_before - 1
    if diverged is None:
        norms = param_norms(gaussians.params)
        found = first_nonfinite({f"parameter {k}": float(v) for k, v in norms.items()})
        if found is None:
            ply, ckpt = save_stopped_run(model_path, gaussians, optimizer.state_dict(), state,
                                         done)  # fmt: skip
            raise TrainingStopped(
                f"interrupted by {signals.name} after iteration {done}: saved {ply} and "
                f"{ckpt}", signals.exit_code, ckpt,
            )  # fmt: skip
        diverged = f"{found} at iteration {done}"
    good = GaussianModel.restore(last_good.capture())
    fresh = build_training_optimizer(good, *optimizer_args)
    ply, ckpt = save_stopped_run(model_path, good, fresh.state_dict(),
                                 strategy.initialize_state(good), last_good.iteration)  # fmt: skip
    code = signals.exit_code if signals.received is not None else 1
    raise TrainingStopped(
        f"{diverged}; saved the state of iteration {last_good.iteration} to {ply} and {ckpt} "
        "(Adam moments reset)", code, ckpt,
    )  # fmt: skip


def write_summary(model_path, seconds, iterations, gaussians, backend, device,
                  phases: dict[str, float] | None = None,
                  timeline: list | None = None) -> None:  # fmt: skip
    """training_summary.json: loop time (evaluation and saving at their iterations
    included, and also given alone as eval_save_seconds), speed, memory, size, the
    time of the phases before the loop, and the timeline [iteration, loop seconds,
    Gaussians] (read by bench/train_speed.py)."""
    summary = {
        "loop_seconds": round(seconds, 3),
        **{k: round(v, 3) for k, v in (phases or {}).items()},
        "iterations": iterations,
        "it_per_s": round(iterations / max(seconds, 1e-9), 2),
        "num_gaussians": gaussians.num_gaussians,
        "backend": backend,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda"
        else None,
        "timeline": timeline or [],
    }
    print(f"\n[train] {iterations} iterations in {seconds:.1f} s ({summary['it_per_s']} it/s), "
          f"{summary['num_gaussians']} Gaussians")  # fmt: skip
    path = os.path.join(model_path, "training_summary.json")
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(path + ".tmp", path)


# ----------------------------------------------------------------------------- logging


def log_training(tb_writer, iteration, loss: float, terms: dict[str, float], elapsed_ms,
                 gaussians) -> None:  # fmt: skip
    for name, value in terms.items():
        tb_writer.add_scalar(f"train_loss_patches/{name}", value, iteration)
    tb_writer.add_scalar("train_loss_patches/total_loss", loss, iteration)
    tb_writer.add_scalar("iter_time", elapsed_ms, iteration)
    tb_writer.add_scalar("total_points", gaussians.num_gaussians, iteration)
    # Beyond 3DGS's tags: speed and memory (host-side values, no extra device sync).
    tb_writer.add_scalar("speed/iterations_per_second", 1000.0 / max(elapsed_ms, 1e-9), iteration)
    if gaussians.device.type == "cuda":
        allocated = torch.cuda.memory_allocated(gaussians.device) / 2**20
        tb_writer.add_scalar("memory/allocated_mib", allocated, iteration)


def log_images(tb_writer, images: list[tuple[str, torch.Tensor]], step: int) -> None:
    """``add_images`` for each (tag, [1, 3, H, W] image), PNG-encoded on several threads:
    the encoder releases the GIL, and encoding one image after the other took about a
    second of each evaluation of a 3-view LLFF scene on the GPU machine."""
    cpu_images = [(tag, image.detach().cpu()) for tag, image in images]

    def add(item: tuple[str, torch.Tensor]) -> None:
        tb_writer.add_images(item[0], item[1], global_step=step)

    workers = min(len(cpu_images), os.cpu_count() or 1, 8)
    if workers <= 1:
        for item in cpu_images:
            add(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(add, cpu_images))  # list(): re-raises a worker's exception here


def depth_image(depth: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """[3, H, W] grey picture of a rendered depth [1, H, W] for TensorBoard: near is bright,
    scaled between the 2nd and 98th percentiles of the covered pixels (alpha > 0.5)."""
    covered = depth[alpha > 0.5]
    if covered.numel() < 2:
        return depth.new_zeros(3, *depth.shape[1:])
    lo, hi = torch.quantile(
        covered.float()[:100_000], torch.tensor([0.02, 0.98], device=depth.device)
    )
    near = 1.0 - ((depth - lo) / (hi - lo).clamp_min(1e-8)).clamp(0.0, 1.0)
    return (near * (alpha > 0.5)).expand(3, -1, -1)


def prior_images(camera) -> list[tuple[str, torch.Tensor]]:
    """[3, H, W] pictures of the priors a training view carries (scene/priors.py): the
    ROI mask, the segment masks (finest mask wins, one colour each) and the depth prior."""
    priors = getattr(camera, "priors", {}) or {}
    out = []
    if "roi_mask" in priors:
        out.append(("prior_roi", priors["roi_mask"].float().expand(3, -1, -1)))
    if "masks" in priors and len(priors["masks"]):
        from priors.masks import label_map, label_preview

        rgb = np.asarray(label_preview(label_map(priors["masks"].cpu().numpy())).convert("RGB"))
        out.append(("prior_masks", torch.from_numpy(rgb.copy()).permute(2, 0, 1) / 255.0))
    if "depth" in priors:
        depth = priors["depth"]
        out.append(("prior_depth", depth_image(depth, (depth > 0).float())))
    return out


@torch.no_grad()
def evaluate(
    tb_writer,
    iteration,
    scene,
    gaussians,
    pipe,
    background,
    backend,
    log_gt: bool = True,
    field=None,
) -> None:
    """3DGS's training_report: test views and 5 training views, L1 and PSNR; with the
    feature field (``field``), a PCA picture of it beside each logged render."""
    train = scene.getTrainCameras()
    configs = [
        ("test", scene.getTestCameras()),
        ("train", [train[idx % len(train)] for idx in range(5, 30, 5)]),
    ]
    images: list[tuple[str, torch.Tensor]] = []  # for TensorBoard, encoded together below
    for name, cameras in configs:
        if not cameras:
            continue
        l1_sum, psnr_sum = 0.0, 0.0
        for idx, camera in enumerate(cameras):
            logged = tb_writer is not None and idx < 5
            out = render(camera, gaussians, pipe, background, backend=backend, depth=logged)
            image = torch.clamp(out["render"], 0.0, 1.0)
            gt = torch.clamp(camera.original_image.to(image.device), 0.0, 1.0)
            if logged:
                tag = f"{name}_view_{camera.image_stem}"
                images.append((f"{tag}/render", image[None]))
                images.append((f"{tag}/depth", depth_image(out["depth"], out["alpha"])[None]))
                if field is not None:
                    feat = field.render(gaussians, camera)  # [L, D, H, W]
                    picture = pca_rgb(feat.reshape(-1, *feat.shape[2:]))[0]
                    images.append((f"{tag}/feature_field", picture[None]))
                if log_gt:
                    images.append((f"{tag}/ground_truth", gt[None]))
                    images += [(f"{tag}/{k}", v[None]) for k, v in prior_images(camera)]
            l1_sum += l1_loss(image, gt).item()
            psnr_sum += psnr(image, gt).mean().item()
        l1_mean, psnr_mean = l1_sum / len(cameras), psnr_sum / len(cameras)
        print(f"\n[ITER {iteration}] Evaluating {name}: L1 {l1_mean} PSNR {psnr_mean}")
        if tb_writer is not None:
            tb_writer.add_scalar(f"{name}/loss_viewpoint - l1_loss", l1_mean, iteration)
            tb_writer.add_scalar(f"{name}/loss_viewpoint - psnr", psnr_mean, iteration)
    if tb_writer is not None:
        log_images(tb_writer, images, iteration)
        tb_writer.add_histogram("scene/opacity_histogram", gaussians.get_opacity, iteration)
        # log10 of each Gaussian's largest scale (scene units): floaters and needles show.
        largest = gaussians.get_scaling.amax(dim=-1).clamp_min(1e-12).log10()
        tb_writer.add_histogram("scene/log10_max_scale_histogram", largest, iteration)
        tb_writer.add_scalar("total_points", gaussians.num_gaussians, iteration)


# ----------------------------------------------------------------------------- main


def build_parser() -> tuple[ArgumentParser, dict]:
    """train.py's command line: the parser and its parameter groups by name (``model``,
    ``opt``, ``pipe``, ``sparse``, ``backend``, ``speed``, ``roi``, ``densify``, ``depth``),
    shared with bench/profile_step.py."""
    parser = ArgumentParser(description="Training script parameters")
    groups = {
        "model": ModelParams(parser),
        "opt": OptimizationParams(parser),
        "pipe": PipelineParams(parser),
        "sparse": SparseViewParams(parser),
        "backend": BackendParams(parser),
        "speed": SpeedParams(parser),
        "roi": ROIParams(parser),
        "densify": DensifyParams(parser),
        "depth": DepthLossParams(parser),
        "sparse_reg": SparseRegParams(parser),
        "mask_reg": MaskRegParams(parser),
    }
    parser.add_argument("--debug_from", type=int, default=-1)
    parser.add_argument("--detect_anomaly", action="store_true", default=False)
    parser.add_argument("--test_iterations", nargs="+", type=int, default=[7_000, 30_000])
    parser.add_argument("--save_iterations", nargs="+", type=int, default=[7_000, 30_000])
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[])
    parser.add_argument("--start_checkpoint", type=str, default=None)
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser, groups


def method_args(groups: dict, args: Namespace) -> Namespace:
    """The ROI / densification / depth / sparse-view / mask regularisation flag values as
    ``training``'s ``method``."""
    keys = ("roi", "densify", "depth", "sparse_reg", "mask_reg")
    return Namespace(**{k: groups[k].extract(args) for k in keys})


def main(argv: list[str] | None = None) -> int:
    parser, g = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    preset = apply_sparse_view_preset(args, argv)
    if preset:
        print(f"--sparse_view: {' '.join(preset)}")
    try:
        build_drop(args.drop_rate, args.drop_schedule, 1, "cpu")  # bad values: one line
    except ValueError as exc:
        parser.error(str(exc))
    if not 0.0 < args.opacity_decay <= 1.0:
        parser.error(f"--opacity_decay {args.opacity_decay}: give a factor in (0, 1] (1: off)")
    if args.lambda_binocular < 0 or args.binocular_shift < 0:
        parser.error("--lambda_binocular and --binocular_shift must be >= 0")
    if args.binocular_every < 1:
        parser.error(f"--binocular_every {args.binocular_every}: give an interval >= 1")
    if not args.feature_field and (args.refine_masks or args.train_rgb_until >= 0):
        parser.error("--refine_masks and --train_rgb_until act on the feature field: "
                     "add --feature_field")  # fmt: skip
    if not 0.0 < args.group_topk <= 1.0:
        parser.error(f"--group_topk {args.group_topk}: give a fraction in (0, 1]")
    if args.group_downscale < 1:
        parser.error(f"--group_downscale {args.group_downscale}: give a factor >= 1")
    args.save_iterations.append(args.iterations)
    print("Optimizing " + args.model_path)
    seed_everything(args.seed)
    torch.autograd.set_detect_anomaly(args.detect_anomaly)
    try:
        training(
            g["model"].extract(args),
            g["opt"].extract(args),
            g["pipe"].extract(args),
            g["sparse"].extract(args),
            g["backend"].extract(args),
            g["speed"].extract(args),
            args.test_iterations,
            args.save_iterations,
            args.checkpoint_iterations,
            args.start_checkpoint,
            args.debug_from,
            args,
            method_args(g, args),
        )
    except SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingStopped as exc:  # the state is saved; say how to go on from it
        resume = resume_command(argv, exc.checkpoint, args.model_path)
        print(f"\n{exc}; resume with: {resume}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside the loop (setup, or a second one while saving)
        print("\ninterrupted (SIGINT) outside the training loop: no state saved", file=sys.stderr)
        return 130
    print("\nTraining complete.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
