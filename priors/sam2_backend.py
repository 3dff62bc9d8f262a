"""SAM 2.1 through the ``sam2`` package: checkpoints, multi-level automatic masks, propagation.

Everything that imports ``sam2`` does so inside a function: ``import sam2`` initialises
Hydra globally, and sam2 needs torchvision, which only GPU machines have here.

Checkpoints. ``sam2.1_hiera_{tiny,small,base_plus,large}.pt`` from the official location
(:data:`SAM2_URL`), each with its packaged config ``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``.
A checkpoint is looked up in this order: ``--sam_ckpt``; ``$SEGSPLAT_CACHE/sam2/`` (default
``~/.cache/segsplat/sam2/``); ``./checkpoints/`` (the sam2 repository's own place). When
the sam2 backend is asked for and none is found, it is downloaded into the cache; offline,
the stage stops with the URL and the place to put the file.

Granularity. For each point prompt SAM predicts three masks (its "whole, part, subpart"
outputs). Their order is not guaranteed to follow size, so a mask's ``level`` is the rank of
its area among the three masks of the same prompt: 0 = the largest (coarsest).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import urllib.request
from collections.abc import Callable

import cv2
import numpy as np
import torch

from priors import PriorError
from priors.masks import MaskSet, finalize

SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
# size name -> (checkpoint file, packaged config)
SAM2_MODELS = {
    "tiny": ("sam2.1_hiera_tiny.pt", "configs/sam2.1/sam2.1_hiera_t.yaml"),
    "small": ("sam2.1_hiera_small.pt", "configs/sam2.1/sam2.1_hiera_s.yaml"),
    "base_plus": ("sam2.1_hiera_base_plus.pt", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
    "large": ("sam2.1_hiera_large.pt", "configs/sam2.1/sam2.1_hiera_l.yaml"),
}
# Checkpoints of the first SAM 2 release share the architecture names.
_SAM2_V1_CONFIGS = {
    f"sam2_hiera_{size}.pt": f"configs/sam2/sam2_hiera_{short}.yaml"
    for size, short in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l"))
}


# ----------------------------------------------------------------------------- checkpoints


def cache_dir() -> str:
    """Where downloaded weights live: ``$SEGSPLAT_CACHE`` or ``~/.cache/segsplat``."""
    root = os.environ.get("SEGSPLAT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "segsplat"
    )
    return os.path.join(root, "sam2")


def sam2_importable() -> str | None:
    """None when sam2 can be imported, else the reason (without importing it)."""
    for mod in ("sam2", "hydra", "torchvision"):
        if importlib.util.find_spec(mod) is None:
            return f"the '{mod}' package is not installed (see requirements-gpu.txt)"
    return None


def find_cached_checkpoint(model: str = "large") -> str | None:
    """Path of the checkpoint of ``model`` in the cache or ./checkpoints, else None."""
    name = SAM2_MODELS[model][0]
    for folder in (cache_dir(), "checkpoints"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def config_for_checkpoint(ckpt_path: str) -> str | None:
    """The packaged config that matches an official checkpoint file name, else None."""
    base = os.path.basename(ckpt_path)
    for ckpt, config in SAM2_MODELS.values():
        if base == ckpt:
            return config
    return _SAM2_V1_CONFIGS.get(base)


def download_checkpoint(model: str, folder: str | None = None) -> str:
    """Fetch ``model``'s checkpoint from the official location into ``folder`` (the cache).

    Written under a temporary name and renamed, so an interrupted download leaves nothing
    that looks like a checkpoint.
    """
    name = SAM2_MODELS[model][0]
    folder = folder or cache_dir()
    dest = os.path.join(folder, name)
    url = SAM2_URL + name
    os.makedirs(folder, exist_ok=True)
    tmp = dest + f".part{os.getpid()}"
    print(f"[sam2] downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, dest)
    except OSError as e:
        raise PriorError(
            f"could not download {url} ({e}): fetch it on a machine with internet access and "
            f"pass it with --sam_ckpt, or put it at {dest}"
        ) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def resolve_checkpoint(
    sam_ckpt: str, sam_config: str, model: str, allow_download: bool
) -> tuple[str, str]:
    """(checkpoint path, packaged config name) from the flags, the cache or a download."""
    if sam_ckpt:
        if not os.path.isfile(sam_ckpt):
            raise PriorError(
                f"{sam_ckpt}: no such checkpoint file (--sam_ckpt). Official files: "
                f"{SAM2_URL}<{'|'.join(c for c, _ in SAM2_MODELS.values())}>"
            )
        path = sam_ckpt
    else:
        path = find_cached_checkpoint(model)
        if path is None:
            if not allow_download:
                raise PriorError(
                    f"no SAM 2 checkpoint: pass --sam_ckpt, or put {SAM2_MODELS[model][0]} "
                    f"(from {SAM2_URL}) into {cache_dir()}"
                )
            path = download_checkpoint(model)
    config = sam_config or config_for_checkpoint(path)
    if config is None:
        raise PriorError(
            f"{path}: cannot tell which config this checkpoint needs from its name; pass "
            "--sam_config (e.g. configs/sam2.1/sam2.1_hiera_l.yaml for a Hiera-L model)"
        )
    return path, config


def load_state_dict(ckpt_path: str) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a SAM 2 checkpoint, validated as far as a file allows."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise PriorError(
            f"{ckpt_path}: cannot read the checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); it is probably truncated or corrupt: "
            f"download it again from {SAM2_URL}"
        ) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise PriorError(
            f"{ckpt_path}: not a SAM 2 checkpoint (no 'model' state dict inside); use one of "
            f"the official files from {SAM2_URL}"
        )
    return ckpt["model"]


def check_state_matches(
    model: torch.nn.Module, state: dict[str, torch.Tensor], ckpt_path: str, config: str
) -> None:
    """Raise PriorError unless ``state`` has exactly the keys and shapes of ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        example = (shape or missing or unexpected)[0]
        raise PriorError(
            f"{ckpt_path} does not match the config {config} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shape)} differently shaped weights, e.g. "
            f"{example}); pass the config of the same model size with --sam_config "
            "(tiny: sam2.1_hiera_t.yaml, small: _s, base_plus: _b+, large: _l)"
        )


def build_model(
    config: str,
    ckpt_path: str | None,
    device: torch.device,
    video: bool = False,
) -> torch.nn.Module:
    """A SAM 2 model (image or video predictor) from a packaged config and a checkpoint.

    ``ckpt_path=None`` keeps the random initialisation: for tests only, the caller must say
    so loudly. The checkpoint is loaded here rather than by ``build_sam2`` so that a
    corrupt file or a config of another size stops with a clear message.
    """
    if (reason := sam2_importable()) is not None:
        raise PriorError(f"the SAM 2 backend cannot run: {reason}; or use --backend classical")
    state = load_state_dict(ckpt_path) if ckpt_path is not None else None
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    builder = build_sam2_video_predictor if video else build_sam2
    try:
        model = builder(config, ckpt_path=None, device=str(device), mode="eval")
    except Exception as e:  # Hydra reports unknown config names as MissingConfigException
        raise PriorError(
            f"cannot build SAM 2 from config '{config}' ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); use a packaged config name such as "
            "configs/sam2.1/sam2.1_hiera_l.yaml"
        ) from e
    if state is not None:
        check_state_matches(model, state, ckpt_path, config)
        model.load_state_dict(state)
    if video and importlib.util.find_spec("sam2._C") is None:
        # Hole filling in the video predictor needs sam2's optional CUDA extension; without
        # it sam2 warns and skips the step on every frame. Skip it quietly instead.
        model.fill_hole_area = 0
    return model


def autocast(device: torch.device, precision: str):
    """Mixed precision context: bf16 by default on CUDA (what SAM 2 is run with upstream)."""
    if device.type != "cuda" or precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


# -------------------------------------------------------------------- automatic masks


def make_mask_generator(model: torch.nn.Module, **kwargs):
    """``SAM2AutomaticMaskGenerator`` that records each mask's granularity level.

    The subclass keeps the package's point grids, crops, thresholds and NMS, and changes
    two things: every predicted mask carries the area rank of its multimask output
    (``level``), and box NMS runs within a level, so that a whole and its part with
    similar boxes both survive (near-identical masks across levels are removed later by
    mask IoU, see :func:`priors.masks.finalize`).

    ``kwargs`` go to ``SAM2AutomaticMaskGenerator`` (points_per_side, points_per_batch,
    pred_iou_thresh, stability_score_thresh, box_nms_thresh, crop_n_layers, ...).
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.utils.amg import (
        MaskData,
        batch_iterator,
        batched_mask_to_box,
        calculate_stability_score,
        is_box_near_crop_edge,
        mask_to_rle_pytorch,
        uncrop_boxes_xyxy,
        uncrop_masks,
        uncrop_points,
    )
    from torchvision.ops.boxes import batched_nms

    class MultiLevelMaskGenerator(SAM2AutomaticMaskGenerator):
        def _process_batch(self, points, im_size, crop_box, orig_size, normalize=False):
            orig_h, orig_w = orig_size
            pts = torch.as_tensor(points, dtype=torch.float32, device=self.predictor.device)
            in_pts = self.predictor._transforms.transform_coords(
                pts, normalize=normalize, orig_hw=im_size
            )
            in_labels = torch.ones(len(in_pts), dtype=torch.int, device=in_pts.device)
            logits, iou_preds, _ = self.predictor._predict(
                in_pts[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True
            )  # [B, C, h, w], [B, C]
            n_out = logits.shape[1]
            area = (logits > self.mask_threshold).flatten(2).sum(-1)
            level = area.argsort(dim=1, descending=True).argsort(dim=1)
            data = MaskData(
                masks=logits.flatten(0, 1),
                iou_preds=iou_preds.flatten(0, 1).float(),
                points=pts.repeat_interleave(n_out, dim=0),
                level=level.flatten(0, 1),
            )
            del logits
            if self.pred_iou_thresh > 0.0:
                data.filter(data["iou_preds"] > self.pred_iou_thresh)
            data["stability_score"] = calculate_stability_score(
                data["masks"], self.mask_threshold, self.stability_score_offset
            ).float()
            if self.stability_score_thresh > 0.0:
                data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > self.mask_threshold
            data["boxes"] = batched_mask_to_box(data["masks"])
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep):
                data.filter(keep)
            data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = mask_to_rle_pytorch(data["masks"])
            del data["masks"]
            return data

        def _process_crop(self, image, crop_box, crop_layer_idx, orig_size):
            x0, y0, x1, y1 = crop_box
            cropped = image[y0:y1, x0:x1, :]
            self.predictor.set_image(cropped)
            scale = np.array(cropped.shape[:2])[None, ::-1]
            points = self.point_grids[crop_layer_idx] * scale
            data = MaskData()
            for (batch,) in batch_iterator(self.points_per_batch, points):
                data.cat(
                    self._process_batch(
                        batch, cropped.shape[:2], crop_box, orig_size, normalize=True
                    )
                )
            self.predictor.reset_predictor()
            keep = batched_nms(
                data["boxes"].float(),
                data["iou_preds"],
                data["level"],
                iou_threshold=self.box_nms_thresh,
            )
            data.filter(keep)
            data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
            data["points"] = uncrop_points(data["points"], crop_box)
            data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))])
            return data

    return MultiLevelMaskGenerator(model, output_mode="binary_mask", **kwargs)


def sam2_auto_masks(
    generator,
    image: np.ndarray,  # [H, W, 3] uint8 RGB
    min_area: int,
    device: torch.device,
    precision: str = "auto",
) -> MaskSet:
    """Multi-level masks of one image, cleaned, deduplicated and sorted (largest first)."""
    from sam2.utils.amg import rle_to_mask

    with torch.inference_mode(), autocast(device, precision):
        data = generator._generate_masks(image)
    h, w = image.shape[:2]
    rles = data["rles"]
    masks = np.stack([rle_to_mask(r) for r in rles]) if rles else np.zeros((0, h, w), bool)
    ms = MaskSet(
        masks,
        np.asarray(data["iou_preds"], np.float32),
        np.asarray(data["stability_score"], np.float32),
        np.asarray(data["level"]).round().astype(np.int16),
        "sam2",
    )
    return finalize(ms, min_area)


# ------------------------------------------------------------------- ROI propagation


def propagate_masks(
    predictor: torch.nn.Module,
    frames: list[np.ndarray],  # N x [H, W, 3] uint8 RGB, all the same size
    prompts: dict[int, list[dict]],  # frame index -> [{obj_id, points, labels, box}]
    device: torch.device,
    precision: str = "auto",
    offload_video: bool = False,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """[N, H, W] bool union over objects of SAM 2's video propagation of the prompts.

    The frames are written as ``00000.jpg ...`` into a temporary folder (the video
    predictor reads a JPEG folder), tracked forward from the first prompted frame and then
    backward from it, so that prompts on any frames reach every frame.
    """
    n = len(frames)
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory(prefix="sam2frames") as tmp:
        for i, f in enumerate(frames):
            cv2.imwrite(
                os.path.join(tmp, f"{i:05d}.jpg"), f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
        with torch.inference_mode(), autocast(device, precision):
            state = predictor.init_state(video_path=tmp, offload_video_to_cpu=offload_video)
    out = np.zeros((n, h, w), dtype=bool)
    done = np.zeros(n, dtype=bool)
    with torch.inference_mode(), autocast(device, precision):
        for frame_idx in sorted(prompts):
            for p in prompts[frame_idx]:
                predictor.add_new_points_or_box(
                    state,
                    frame_idx=frame_idx,
                    obj_id=int(p["obj_id"]),
                    points=None if p.get("points") is None else np.asarray(p["points"], np.float32),
                    labels=None if p.get("labels") is None else np.asarray(p["labels"], np.int32),
                    box=None if p.get("box") is None else np.asarray(p["box"], np.float32),
                )
        for reverse in (False, True):
            for idx, _, logits in predictor.propagate_in_video(state, reverse=reverse):
                # logits: [num_objects, 1, H, W] at the frames' resolution
                out[idx] = (logits > 0.0).any(dim=0)[0].cpu().numpy()
                if not done[idx] and progress is not None:
                    progress(1)
                done[idx] = True
    return out


def image_predictor(model: torch.nn.Module):
    """``SAM2ImagePredictor`` over a built model (for the interactive preview)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(model)
