"""Command-line parameter groups.

Same mechanism and flags as the original 3DGS code: every attribute of a ``ParamGroup``
subclass becomes a flag, a leading underscore adds a one-letter short flag, a ``bool``
default becomes ``store_true``, a list default becomes ``nargs="*"``. ``extract(args)``
returns a plain namespace holding only that group's values.

Upstream groups (``ModelParams``, ``PipelineParams``, ``OptimizationParams``) keep the
3DGS names and defaults. Everything this project adds lives in new groups, so that an
upstream command line means exactly what it meant upstream.

``cfg_args`` keeps the upstream format (``str(Namespace(...))``) but is parsed with
``ast`` instead of ``eval``.
"""

from __future__ import annotations

import ast
import os
import sys
from argparse import ArgumentParser, Namespace
from typing import Any, ClassVar


class GroupParams:
    """A bag of attributes extracted from the parsed arguments."""

    def __repr__(self) -> str:
        return f"GroupParams({vars(self)})"


class ParamGroup:
    """Turns attributes into argparse flags.

    Subclasses may define ``_help`` (flag name -> help text) and ``_choices``
    (flag name -> allowed values) as class attributes.
    """

    _help: ClassVar[dict[str, str]] = {}
    _choices: ClassVar[dict[str, list]] = {}

    def __init__(self, parser: ArgumentParser, name: str, fill_none: bool = False):
        group = parser.add_argument_group(name)
        for key, value in vars(self).items():
            shorthand = key.startswith("_")
            key = key.lstrip("_")
            flags = [f"--{key}"] + ([f"-{key[0:1]}"] if shorthand else [])
            kwargs: dict[str, Any] = {"default": None if fill_none else value}
            kwargs["help"] = self._help.get(key)
            if key in self._choices:
                kwargs["choices"] = self._choices[key]
            if isinstance(value, bool):
                kwargs["action"] = "store_true"
            elif isinstance(value, list):
                kwargs["nargs"] = "*"
                kwargs["type"] = type(value[0]) if value else str
            else:
                kwargs["type"] = type(value)
            group.add_argument(*flags, **kwargs)

    def extract(self, args: Namespace) -> GroupParams:
        group = GroupParams()
        for key, value in vars(args).items():
            if key in vars(self) or ("_" + key) in vars(self):
                setattr(group, key, value)
        return group


class ModelParams(ParamGroup):
    _help = {
        "sh_degree": "maximum spherical-harmonics degree",
        "source_path": "scene folder (COLMAP, Blender/NeRF transforms, LLFF poses_bounds.npy "
        "or IDR cameras.npz)",
        "model_path": "output folder (default ./output/<random id>)",
        "images": "image subfolder of the scene",
        "resolution": "1, 2, 4 or 8: downscale factor (uses images_N/ when present); "
        "another value: target width; -1: shrink to 1.6K width if wider",
        "white_background": "composite RGBA images and renders on white instead of black",
        "data_device": "where the ground-truth images live (cuda or cpu)",
        "eval": "hold out every 8th image (3DGS split) when --n_views is not given",
    }

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.sh_degree = 3
        self._source_path = ""
        self._model_path = ""
        self._images = "images"
        self._resolution = -1
        self._white_background = False
        self.data_device = "cuda"
        self.eval = False
        super().__init__(parser, "Loading Parameters", sentinel)

    def extract(self, args: Namespace) -> GroupParams:
        g = super().extract(args)
        g.source_path = os.path.abspath(g.source_path) if g.source_path else g.source_path
        return g


class PipelineParams(ParamGroup):
    _help = {
        "convert_SHs_python": "evaluate spherical harmonics in PyTorch instead of the "
        "backend's kernel",
        "compute_cov3D_python": "build 3D covariances in PyTorch instead of the backend's kernel",
        "debug": "check render inputs for NaN/Inf before every rasterization",
        "antialiasing": "Mip-Splatting 2D opacity compensation (antialiased rasterization)",
    }

    def __init__(self, parser: ArgumentParser):
        self.convert_SHs_python = False
        self.compute_cov3D_python = False
        self.debug = False
        self.antialiasing = False
        super().__init__(parser, "Pipeline Parameters")


class OptimizationParams(ParamGroup):
    _help = {
        "optimizer_type": "default: Adam; sparse_adam: only Gaussians visible in the current "
        "view are updated (3DGS's option of the same name)",
    }
    _choices = {"optimizer_type": ["default", "sparse_adam"]}

    def __init__(self, parser: ArgumentParser):
        self.iterations = 30_000
        self.position_lr_init = 0.00016
        self.position_lr_final = 0.0000016
        self.position_lr_delay_mult = 0.01
        self.position_lr_max_steps = 30_000
        self.feature_lr = 0.0025
        self.opacity_lr = 0.025
        self.scaling_lr = 0.005
        self.rotation_lr = 0.001
        self.percent_dense = 0.01
        self.lambda_dssim = 0.2
        self.densification_interval = 100
        self.opacity_reset_interval = 3000
        self.densify_from_iter = 500
        self.densify_until_iter = 15_000
        self.densify_grad_threshold = 0.0002
        self.random_background = False
        self.optimizer_type = "default"
        super().__init__(parser, "Optimization Parameters")


class SparseViewParams(ParamGroup):
    """Sparse-view protocol: which views train, which test, how the Gaussians start."""

    _help = {
        "n_views": "number of training views (0: all non-test views, 3DGS --eval behaviour)",
        "split_protocol": "llff/mip360: test = every 8th image sorted by name, train = "
        "round(linspace) over the rest; dtu: the pixelNeRF view ids; custom: the scene's "
        "split.json or --train_views",
        "train_views": "explicit training image names (implies --split_protocol custom)",
        "random_init": "start from N random points in the cameras' bounding volume instead "
        "of the scene's points (0: off)",
        "init": "initial points: auto (--random_init when set, else the train-only SfM points "
        "or the scene's); sfm (the SfM points, --random_init ignored); dense (the multi-view "
        "stereo cloud colmap_<N>views/dense/points3D.ply of python -m mvs); aligned (SfM "
        "points and the dense prior aligned to them, alignment/points3D.ply of python -m "
        "alignment); random "
        "(--random_init N points, 100000 when unset)",
    }
    _choices = {
        "split_protocol": ["llff", "dtu", "mip360", "custom"],
        "init": ["auto", "sfm", "dense", "aligned", "random"],
    }

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.n_views = 0
        self.split_protocol = "llff"
        self.train_views: list[str] = []
        self.random_init = 0
        self.init = "auto"
        super().__init__(parser, "Sparse-view Parameters", sentinel)


class SparseRegParams(ParamGroup):
    """Sparse-view regularisation: DropGaussian, binocular stereo consistency, opacity
    decay, and the sparse-view preset."""

    _help = {
        "drop_rate": "DropGaussian: probability of leaving each Gaussian out of a training "
        "render, survivors' opacity scaled by 1/(1-p) (0: off; the paper uses 0.1)",
        "drop_schedule": "constant: the rate at every step; linear: from 0 to --drop_rate "
        "over the run",
        "lambda_binocular": "weight of the binocular stereo consistency term "
        "(utils/binocular.py; 0: off): each training render is checked against a render "
        "of the camera shifted sideways, warped back with the rendered depth",
        "binocular_shift": "largest sideways shift of the binocular term, as a fraction "
        "of the median depth of the initial points in the training views",
        "binocular_axes": "direction of the binocular term's shifts: x, along the camera's "
        "x axis (a stereo pair, as published); xy, along a random direction in the image "
        "plane, so that vertical parallax is checked too",
        "binocular_from": "first iteration of the binocular term",
        "binocular_every": "take the binocular term at every N-th iteration from "
        "--binocular_from (1: every one, as published); the iterations between run plain "
        "3DGS's step, from CUDA graphs where the run allows them",
        "opacity_decay": "multiply every opacity by this after each optimizer step while "
        "densifying (Binocular3DGS's opacity decay; 1: off): Gaussians that the images do "
        "not keep up fade and are pruned",
        "sparse_view": "the sparse-view preset for 3 to 12 views (docs/RESULTS.md, "
        "'Sparse-view preset'): sets the flags listed in arguments.SPARSE_VIEW_PRESET that "
        "the command line does not set itself",
    }
    _choices = {"drop_schedule": ["constant", "linear"], "binocular_axes": ["x", "xy"]}

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.drop_rate = 0.0
        self.drop_schedule = "constant"
        self.lambda_binocular = 0.0
        self.binocular_shift = 0.05
        self.binocular_axes = "x"
        self.binocular_from = 1000
        self.binocular_every = 1
        self.opacity_decay = 1.0
        self.sparse_view = False
        super().__init__(parser, "Sparse-view Regularisation Parameters", sentinel)


class MaskRegParams(ParamGroup):
    """Mask regularisation (RegSegField), over the descriptor maps of ``python -m
    mask_matching``: the mask-visibility loss (utils/mask_visibility.py), the hierarchical
    feature field and the mask refinement (utils/feature_field.py), the segment-aware
    depth TV (utils/depth_losses.py) and the warm-up visibility cull
    (gaussian/view_cull.py)."""

    _help = {
        "lambda_mask_vis": "weight of the mask-visibility loss (0: off; RegSegField: 0.05 on "
        "DTU, 0.01 on mip-NeRF 360), times the 2-0-2-0.1 ramp over steps 0/1000/2000/8000",
        "mask_vis_tau": "other training views that must see a Gaussian in the same segment "
        "(RegSegField: 2 on DTU, 1 on mip-NeRF 360)",
        "mask_vis_from": "the loss is active after this step",
        "mask_vis_until": "and before this one",
        "mask_vis_targets": "target views per source view, most COLMAP matches first",
        "feature_field": "train a 4x16 group feature per Gaussian (RegSegField's hierarchical "
        "feature field, utils/feature_field.py): distilled from the descriptor maps, then "
        "the multi-level group loss; saved beside the PLY for segment.py --source field",
        "group_from": "the field's distillation starts after this step",
        "group_distill_until": "distillation before this step, the group loss from it",
        "group_until": "the group loss stops at this step (it resumes after --train_rgb_until)",
        "train_rgb_until": "after this step only the field trains: RGB losses, "
        "densification and geometry stop (-1: never; RegSegField: 20000 of 22000)",
        "group_topk": "fraction of the Gaussians, the most opaque in view, that render the "
        "field (RegSegField: 0.2)",
        "group_downscale": "render the field and take its losses at 1/N of the training "
        "resolution (1: RegSegField; 2 makes the field pass about 4x cheaper)",
        "refine_masks": "retrain the descriptor network against the rendered field while the "
        "group loss runs and refresh the descriptor maps (needs --feature_field)",
        "refine_every": "steps between two refreshes of the descriptor maps",
        "lambda_segment_tv": "weight of the total variation of rendered depth inside each "
        "segment (0: off; RegSegField: 0.05 on DTU, 0.1 on mip-NeRF 360)",
        "segment_tv_from": "the depth TV is active from this step",
        "segment_tv_until": "until this one",
        "cull_min_views": "remove, once, the Gaussians whose centre lies in fewer training "
        "views than this (0: off; RegSegField: 2)",
        "cull_views_at": "the step of that cull (RegSegField: the end of its warm-up, 500)",
    }

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.lambda_mask_vis = 0.0
        self.mask_vis_tau = 1
        self.mask_vis_from = 800
        self.mask_vis_until = 8000
        self.mask_vis_targets = 6
        self.feature_field = False
        self.group_from = 1000
        self.group_distill_until = 1200
        self.group_until = 6000
        self.train_rgb_until = -1
        self.group_topk = 0.2
        self.group_downscale = 1
        self.refine_masks = False
        self.refine_every = 500
        self.lambda_segment_tv = 0.0
        self.segment_tv_from = 3000
        self.segment_tv_until = 8000
        self.cull_min_views = 0
        self.cull_views_at = 500
        super().__init__(parser, "Mask Regularisation Parameters", sentinel)


# What --sparse_view sets (flag -> value, or a function of the parsed arguments), each only
# where the command line leaves it unset: the best combination measured on LLFF fern and DTU
# scan24 at 3 views (docs/RESULTS.md, "Sparse-view quality" and "Sparse-view preset, part
# 2", "Session 14" to "Session 17"): the stereo cloud of the training views as the start,
# densification without the opacity reset, with opacity decay, and the binocular term.
# 3DGS's densification resets every opacity to 0.01 at iteration 3000, and at 3 views the
# set never recovers from it: fern falls from 21.7 dB at 2000 iterations to 16.8 at 10k
# from the stereo start (14.1 from the SfM points); without densification the stereo
# points alone keep 21.1 dB (+4.3 over the stereo start with densification, +7.0 over
# vanilla), on DTU scan24 15.8 against 15.5 and 11.9 (2 seeds). Densifying without the
# reset is as good on fern (21.2) but worse on scan24 (14.4), so sessions 7 to 16 did not
# densify (--densify_until_iter 0) until the opacity decay below. The MVS depth prior,
# DropGaussian and the FSGS/DropGaussian optimisation settings did not beat the stereo start
# and stay out.
# The binocular term (weight 0.5 at every 2nd iteration from 1000; session 14, 3 seeds on
# the GPU) adds +0.56 dB on fern and +0.34 on scan24, every seed better, for 2.8x the
# loop time (scan24 alone on an H100: 32.9 s against 11.6 s); at every iteration it is no
# better (+0.58 / +0.29) for 5.0x, at every 4th it gives +0.45 / +0.27 for 1.9x. Larger shifts
# (session 15, 3 seeds on the GPU, the same cost): 0.1 of the median depth instead of 0.05
# gave +0.33 dB on fern and +0.21 on scan24, 0.2 another +0.23 and +0.32 (every seed better
# each time), 0.4 another +0.22 and +0.18 (scan24 inside its spread: one seed 0.07 lower).
# At 0.1, every 3rd iteration lost 0.21 dB on scan24, and DropGaussian 0.1 gave fern +0.59
# but broke scan24 after 4000 iterations (-1.05 dB mean), so both stay out; at 0.2, weight
# 1.0 gave -0.10 / +0.10. Session 16 (3 seeds on the GPU): shifts in a random direction of
# the image plane (`--binocular_axes xy`) instead of along x gave +0.03 dB on fern and +0.11
# on scan24, every seed better on both (small: inside the spread), for the same cost; 0.6
# instead of 0.4 gave +0.09 on fern but -0.30 on scan24. Session 17 (3 seeds on the GPU):
# densifying until iteration 5000 without the opacity reset, with Binocular3DGS's opacity
# decay (x0.995 per step while densifying; faded Gaussians fall below the pruning
# threshold) gave +0.43 dB on fern and +0.83 on scan24, every seed better on both; the
# same densification without the decay gave scan24 -0.09, and the decay until 10k +0.67.
# It costs 7.7 to 7.9 s per 10k iterations (scan24 and fern alone on an H100).
SPARSE_VIEW_PRESET: dict[str, Any] = {
    "init": "dense",
    "densify_until_iter": 5000,
    "opacity_reset_interval": 100_000,
    "opacity_decay": 0.995,
    "lambda_binocular": 0.5,
    "binocular_every": 2,
    "binocular_shift": 0.4,
    "binocular_axes": "xy",
}


def apply_sparse_view_preset(args: Namespace, argv: list[str]) -> list[str]:
    """Fill ``args`` with SPARSE_VIEW_PRESET where ``args.sparse_view`` is on and ``argv``
    does not give the flag itself; returns the flags it set, as ``--flag value`` strings."""
    if not getattr(args, "sparse_view", False):
        return []
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    applied = []
    for key, value in SPARSE_VIEW_PRESET.items():
        if f"--{key}" not in given:
            value = value(args) if callable(value) else value
            setattr(args, key, value)
            applied.append(f"--{key} {value}")
    return applied


class BackendParams(ParamGroup):
    """Which rasterizer runs the splatting."""

    _help = {
        "backend": "auto: gsplat on CUDA, torch otherwise; gsplat: CUDA package; torch: pure "
        "PyTorch (CPU or GPU)",
    }
    _choices = {"backend": ["auto", "gsplat", "torch"]}

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.backend = "auto"
        super().__init__(parser, "Backend Parameters", sentinel)


class SpeedParams(ParamGroup):
    """Loop-level speed switches (results are the same up to float rounding)."""

    _help = {
        "log_interval": "iterations between progress-bar/TensorBoard updates (each update "
        "waits for the GPU once)",
        "ssim_impl": "auto: the fused CUDA SSIM on GPU, PyTorch otherwise; torch: always the "
        "PyTorch SSIM (for comparisons)",
        "sync_every_step": "read the loss back to the host every iteration like the stock 3DGS "
        "loop (for speed comparisons only)",
        "autograd_nodes": "fused: the gsplat render (gaussian_renderer/gsplat_fused.py) and the "
        "L1 + D-SSIM loss are one autograd node each; stages: gsplat's autograd function per "
        "stage and the loss as PyTorch terms (same results; for comparisons)",
        "cuda_graphs": "auto: replay the plain 3DGS step (render, L1 + D-SSIM, backward) from "
        "CUDA graphs where it applies (gaussian_renderer/graph_step.py: gsplat, fused nodes, no "
        "prior-based loss, default densification and Adam; train.py prints why not otherwise); "
        "off: the eager step (same results; for comparisons)",
    }
    _choices = {
        "ssim_impl": ["auto", "torch"],
        "autograd_nodes": ["fused", "stages"],
        "cuda_graphs": ["auto", "off"],
    }

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.log_interval = 10
        self.ssim_impl = "auto"
        self.sync_every_step = False
        self.autograd_nodes = "fused"
        self.cuda_graphs = "auto"
        super().__init__(parser, "Speed Parameters", sentinel)


def parse_cfg_args(text: str) -> Namespace:
    """Parse a ``cfg_args`` file (``str(Namespace(...))``) without ``eval``."""
    node = ast.parse(text.strip(), mode="eval").body
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Namespace"):
        raise ValueError("cfg_args does not hold a Namespace(...) expression")
    return Namespace(**{kw.arg: ast.literal_eval(kw.value) for kw in node.keywords})


def get_combined_args(parser: ArgumentParser, argv: list[str] | None = None) -> Namespace:
    """Command-line values on top of the ones stored in ``<model_path>/cfg_args``.

    Groups built with ``sentinel=True`` default to ``None``, so a flag given on the command
    line can be told apart from a default and wins over the stored value.
    """
    cmdline = parser.parse_args(sys.argv[1:] if argv is None else argv)
    stored = Namespace()
    cfg_path = os.path.join(cmdline.model_path or "", "cfg_args")
    try:
        with open(cfg_path) as f:
            print(f"Looking for config file in {cfg_path}")
            stored = parse_cfg_args(f.read())
            print(f"Config file found: {cfg_path}")
    except FileNotFoundError:
        print(f"Config file not found at {cfg_path}")
    merged = vars(stored).copy()
    for key, value in vars(cmdline).items():
        if value is not None:
            merged[key] = value
    return Namespace(**merged)


class ColmapParams(ParamGroup):
    """COLMAP stage (colmap_match.py): features, matching, mapping, registration."""

    _help = {
        "matcher": "full SfM pairing: exhaustive (photos) or sequential (video frames); the "
        "train-only stage always matches exhaustively with guided matching",
        "camera_model": "full SfM camera model (auto: OPENCV for one shared camera, "
        "SIMPLE_RADIAL for one camera per image; any COLMAP model name)",
        "camera_mode": "full SfM cameras: auto (shared when all images have one size), single, "
        "per_image",
        "max_image_size": "longest image side SIFT sees (keypoints are still written at full "
        "resolution); lower it to speed up CPU runs",
        "max_num_features": "SIFT features per image",
        "max_num_matches": "matches per image pair",
        "min_pair_matches": "inlier matches below which a training-view pair counts as unmatched",
        "register": "spars3r: also reconstruct train and train+test views without poses and "
        "register the test cameras onto the train-only frame (robust Sim(3))",
        "register_threshold": "SPARS3R inlier distance of a camera centre, in train-only SfM units",
        "num_threads": "CPU threads for COLMAP (-1: all)",
        "seed": "RANSAC and mapper random seed",
        "overwrite": "replace an existing colmap_<N>views/ (or distorted/) folder",
        "verbose": "show COLMAP's own log",
        "dense": "after the train-only stage, run the dense MVS stage (python -m mvs) with "
        "its default settings",
    }
    _choices = {
        "matcher": ["exhaustive", "sequential"],
        "camera_mode": ["auto", "single", "per_image"],
        "register": ["none", "spars3r"],
    }

    def __init__(self, parser: ArgumentParser):
        self.matcher = "exhaustive"
        self.camera_model = "auto"
        self.camera_mode = "auto"
        self.max_image_size = 3200
        self.max_num_features = 16384
        self.max_num_matches = 32768
        self.min_pair_matches = 15
        self.register = "none"
        self.register_threshold = 1.0
        self.num_threads = -1
        self.seed = 0
        self.overwrite = False
        self.verbose = False
        self.dense = False
        super().__init__(parser, "COLMAP Parameters")


class MetricsParams(ParamGroup):
    """metrics.py: which renders to score and how LPIPS is obtained."""

    _help = {
        "split": "score <model>/test (writes results.json, per_view.json) or <model>/train "
        "(writes results_train.json, per_view_train.json)",
        "lpips_net": "LPIPS backbone: vgg (3DGS convention) or alex",
        "lpips_weights": "folder holding the LPIPS weights (vgg16-397923af.pth + vgg.pth, or "
        "alexnet-owt-7be5be79.pth + alex.pth); also searched: ~/.cache/segsplat/lpips and "
        "$TORCH_HOME/hub/checkpoints",
        "lpips_3dgs_inputs": "feed [0,1] images to LPIPS unchanged, as the original 3DGS "
        "metrics.py did, to compare with published 3DGS numbers (standard LPIPS maps "
        "them to [-1,1])",
        "lpips_no_download": "never try to download missing LPIPS weights",
        "device": "cuda (falls back to the CPU when unavailable) or cpu",
    }
    _choices = {"split": ["test", "train"], "lpips_net": ["vgg", "alex"]}

    def __init__(self, parser: ArgumentParser):
        self.split = "test"
        self.lpips_net = "vgg"
        self.lpips_weights = ""
        self.lpips_3dgs_inputs = False
        self.lpips_no_download = False
        self.device = "cuda"
        super().__init__(parser, "Metrics Parameters")


class ROIParams(ParamGroup):
    """ROI-guided training (the roigs method): a region of interest from the ``pure_masks/``
    prior (and ``depth_pro/`` when present) gates densification, prunes outside it,
    reweights the L1 term; plus the dynamic Laplacian pyramid loss (LPDR).

    Every default leaves training exactly 3DGS. Iteration thresholds are absolute steps:
    scale them with ``--iterations`` for shorter runs (scripts/run_maryrose_roi.py does).
    """

    _help = {
        "use_mask": "ROI-guided training: build the ROI from pure_masks/ (and depth_pro/), "
        "gate densification to it, prune outside it, reweight L1 after roi_loss_focus_after",
        "depth_margin_ratio": "ROI keeps pixels with depth <= R * (1 + ratio), R = max over "
        "training views of the median depth inside the mask",
        "roi_mask_dilate": "dilation (px) of the ROI in the L1 weight map",
        "roi_mask_soft_edges": "blur the dilated ROI with a box filter in the L1 weight map",
        "roi_mask_blur_kernel": "odd box-filter size of the soft edges",
        "roi_gate_mode": "always: gate densification from the start; late: only from "
        "roi_grow_from_iter (the ROI prune waits too)",
        "roi_grow_from_iter": "first gated iteration in --roi_gate_mode late",
        "roi_prune_strict_until": "prune low-opacity Gaussians outside the ROI or far away at "
        "densification steps before this iteration",
        "roi_prune_opacity": "opacity below which ROI/far pruning removes a Gaussian",
        "roi_edge_damp": "opacity factor for Gaussians on the ROI edge band (1 = off)",
        "roi_edge_cap": "opacity cap for Gaussians on the ROI edge band",
        "roi_gate_depth": "densify only Gaussians with normalised depth <= this",
        "roi_far_depth": "normalised depth above which a Gaussian counts as far (pruning)",
        "roi_depth_space": "normalised depth of the gate: scene = z / (2 x the camera's far "
        "scene depth); ndc = the camera's NDC depth (roigs literally; degenerate with 3DGS's "
        "znear 0.01 / zfar 100, see gaussian/strategy/roi.py)",
        "roi_loss_focus_after": "from this iteration the L1 term is weighted by the ROI",
        "roi_loss_outside_weight": "L1 weight outside the ROI",
        "use_lpdr": "add the dynamic Laplacian pyramid loss (weight lambda_lpdr)",
        "lambda_lpdr": "weight of the LPDR term",
        "lpdr_levels": "LPDR pyramid levels (bands)",
        "lpdr_kernel_size": "LPDR Gaussian blur size",
        "lpdr_sigma": "LPDR Gaussian blur sigma",
        "lpdr_gamma": "band weights = GT band energy ** gamma, normalised",
        "lpdr_dc_weight": "weight of the low-pass residual L1 inside LPDR (0: bands only)",
    }
    _choices = {
        "roi_gate_mode": ["always", "late"],
        "roi_mask_soft_edges": ["on", "off"],
        "roi_depth_space": ["scene", "ndc"],
    }

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.use_mask = False
        self.depth_margin_ratio = 0.0
        self.roi_mask_dilate = 2
        self.roi_mask_soft_edges = "on"
        self.roi_mask_blur_kernel = 5
        self.roi_gate_mode = "always"
        self.roi_grow_from_iter = 10_000
        self.roi_prune_strict_until = 15_000
        self.roi_prune_opacity = 0.02
        self.roi_edge_damp = 0.97
        self.roi_edge_cap = 0.75
        self.roi_gate_depth = 0.9
        self.roi_far_depth = 0.95
        self.roi_depth_space = "scene"
        self.roi_loss_focus_after = 20_000
        self.roi_loss_outside_weight = 0.05
        self.use_lpdr = False
        self.lambda_lpdr = 0.2
        self.lpdr_levels = 3
        self.lpdr_kernel_size = 5
        self.lpdr_sigma = 1.0
        self.lpdr_gamma = 1.2
        self.lpdr_dc_weight = 0.3
        super().__init__(parser, "ROI-guided Training Parameters", sentinel)


class DensifyParams(ParamGroup):
    """Which densification strategy runs, and the Improved-GS settings.

    ``default`` is 3DGS (the OptimizationParams densify_* flags). ``improved`` is Improved-GS
    as roigs uses it: edge-aware importance, a Gaussian budget reached along a sqrt ramp, a
    per-step cap, long-axis splits, opacity reset to 0.05, a separate SH-rest optimizer and
    multi-step optimizer updates late in training. It reads densify_from_iter,
    densify_until_iter, densification_interval, densify_grad_threshold and
    opacity_reset_interval from the 3DGS group.
    """

    _help = {
        "densify_strategy": "default: 3DGS clone/split; improved: Improved-GS budgeted "
        "long-axis densification",
        "budget": "maximum number of Gaussians (reached along a sqrt ramp)",
        "budget_ramp_until": "iteration at which the budget ramp reaches --budget",
        "split_distance": "children sit at +-split_distance * 3 sigma_max along the longest axis",
        "opacity_reduction": "children's opacity = this x the parent's",
        "cams": "views rendered for the edge-aware importance at each densification step",
        "edge_all_views_every": "use every training view for the importance when "
        "iteration %% this == edge_all_views_offset and iteration < edge_all_views_until",
        "edge_all_views_offset": "see edge_all_views_every",
        "edge_all_views_until": "see edge_all_views_every",
        "score_gradient_after": "after this iteration the split score is the gradient, and the "
        "threshold drops by 1.5 while under budget",
        "densify_cap_profile": "per-step cap: ultra = clamp(0.02 N, 2048, 32768); ultra+ = "
        "clamp(0.04 N, 4096, 65536)",
        "max_new_points_per_iter": "explicit per-step cap (0: the profile's)",
        "improved_opacity_reset": "opacity reset value of the improved strategy",
        "shfeature_lr": "learning rate of the separate SH-rest optimizer is this / 20",
        "multistep_from": "from this iteration the optimizer steps every multistep_every "
        "iterations (gradients accumulate in between)",
        "multistep_every": "see multistep_from",
        "multistep_late_from": "from this iteration it steps every multistep_late_every",
        "multistep_late_every": "see multistep_late_from",
    }
    _choices = {
        "densify_strategy": ["default", "improved"],
        "densify_cap_profile": ["ultra", "ultra+"],
    }

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.densify_strategy = "default"
        self.budget = 3_000_000
        self.budget_ramp_until = 14_500
        self.split_distance = 0.45
        self.opacity_reduction = 0.6
        self.cams = 10
        self.edge_all_views_every = 3000
        self.edge_all_views_offset = 400
        self.edge_all_views_until = 9000
        self.score_gradient_after = 14_500
        self.densify_cap_profile = "ultra"
        self.max_new_points_per_iter = 0
        self.improved_opacity_reset = 0.05
        self.shfeature_lr = 0.005
        self.multistep_from = 15_000
        self.multistep_every = 5
        self.multistep_late_from = 22_500
        self.multistep_late_every = 20
        super().__init__(parser, "Densification Strategy Parameters", sentinel)


class DepthLossParams(ParamGroup):
    """Depth supervision from a depth prior: ``depth_pro/`` (monocular metric depth) or
    ``depth_mvs/`` (multi-view stereo of the training views, python -m mvs; 0 = no depth)."""

    _help = {
        "depth_source": "depth_pro: depth_pro/ (predepth.py); mvs: depth_mvs/ (python -m mvs, "
        "semi-dense, made from the same training views)",
        "lambda_depth_l1": "weight of the relative L1 depth loss mean(|d - d_prior| / d_prior) "
        "over pixels with a prior (for metric priors such as depth_mvs/; 0: off)",
        "depth_l1_from": "first iteration of the relative L1 depth loss",
        "depth_l1_until": "last iteration (exclusive) of the relative L1 depth loss",
        "lambda_depth_ssi": "weight of the scale-and-shift-invariant depth loss (0: off)",
        "depth_ssi_from": "first iteration of the SSI depth loss",
        "depth_ssi_until": "last iteration (exclusive) of the SSI depth loss",
        "lambda_depth_pearson": "weight of the patch-wise Pearson depth loss (0: off)",
        "depth_pearson_from": "first iteration of the Pearson depth loss",
        "depth_pearson_until": "last iteration (exclusive) of the Pearson depth loss",
        "depth_patch_size": "patch size (px) of the Pearson depth loss",
    }

    _choices = {"depth_source": ["depth_pro", "mvs"]}

    def __init__(self, parser: ArgumentParser, sentinel: bool = False):
        self.depth_source = "depth_pro"
        self.lambda_depth_l1 = 0.0
        self.depth_l1_from = 0
        self.depth_l1_until = 30_000
        self.lambda_depth_ssi = 0.0
        self.depth_ssi_from = 0
        self.depth_ssi_until = 30_000
        self.lambda_depth_pearson = 0.0
        self.depth_pearson_from = 1000
        self.depth_pearson_until = 6500
        self.depth_patch_size = 16
        super().__init__(parser, "Depth Loss Parameters", sentinel)
