"""What ``extract_mask.py`` does for one scene: multi-level masks and ROI masks.

Outputs (the scene-folder contract, names relative to the images folder kept):
    masks/<stem>.npz, masks/<stem>.png      --mode auto   (format: priors/masks.py)
    pure_masks/<image name>                 --mode roi    binary, 255 foreground / 0
    pure_masks_overlay/<stem>.jpg           --mode roi --save_overlays
    roi_prompts.json                        the prompts clicked in the interactive window

The options are the argparse namespace of extract_mask.py (arguments/priors.py).
"""

from __future__ import annotations

import os
from argparse import Namespace
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from tqdm import tqdm

from priors import PriorError
from priors import sam2_backend as sb
from priors.classical import classical_masks, fill_holes, grabcut_roi
from priors.io import (
    atomic_write,
    image_size,
    list_images,
    load_rgb,
    save_image,
    train_views_of,
)
from priors.masks import save_mask_set
from priors.prompts import (
    ObjectPrompt,
    display_available,
    interactive_prompt,
    load_prompts,
    overlay,
    prompts_json,
)

RANDOM_WEIGHTS_BANNER = (
    "!!! RANDOM WEIGHTS (--random_init_weights): the model is untrained and every output "
    "is meaningless. For testing the code path only. !!!"
)


@dataclass
class MaskBackend:
    """The chosen backend and, for SAM 2, the loaded model (built once per run)."""

    name: str  # "sam2" or "classical"
    device: torch.device
    ckpt: str | None = None
    config: str | None = None
    model: torch.nn.Module | None = None
    generator: object | None = None


def choose_backend(args: Namespace, device: torch.device) -> MaskBackend:
    """Backend from --backend (auto: SAM 2 when a checkpoint is given or cached), announced."""
    why = ""
    name = args.backend
    ckpt = config = None
    if args.random_init_weights:
        if name == "classical":
            raise PriorError("--random_init_weights only applies to the sam2 backend")
        name = "sam2"
        config = args.sam_config or sb.SAM2_MODELS[args.sam_model][1]
        why = f"random weights, config {config}"
    elif name == "auto":
        cached = args.sam_ckpt or sb.find_cached_checkpoint(args.sam_model)
        reason = sb.sam2_importable()
        if args.sam_ckpt and reason is not None:
            # A checkpoint on the command line asks for SAM 2: do not quietly do otherwise.
            raise PriorError(f"--sam_ckpt given but SAM 2 cannot run: {reason}")
        if cached and reason is None:
            name = "sam2"
        else:
            name = "classical"
            why = (
                f"cached {cached}, but {reason}"
                if cached
                else f"no SAM 2 checkpoint given (--sam_ckpt) or cached in {sb.cache_dir()}"
            )
    if name == "sam2" and not args.random_init_weights:
        ckpt, config = sb.resolve_checkpoint(
            args.sam_ckpt, args.sam_config, args.sam_model, allow_download=True
        )
        why = f"{ckpt}, config {config}"
    print(f"[extract_mask] backend: {name}" + (f" ({why})" if why else ""))
    if args.random_init_weights:
        print(RANDOM_WEIGHTS_BANNER)
    return MaskBackend(name, device, ckpt, config)


def _ensure_model(be: MaskBackend, args: Namespace, video: bool) -> None:
    if be.model is None:
        be.model = sb.build_model(be.config, be.ckpt, be.device, video=video)
    if not video and be.generator is None:
        be.generator = sb.make_mask_generator(
            be.model,
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou,
            stability_score_thresh=args.stability,
            box_nms_thresh=args.box_nms,
        )


def _stem_path(folder: str, name: str, ext: str) -> str:
    return os.path.join(folder, os.path.splitext(name)[0] + ext)


# ------------------------------------------------------------------------- auto mode


def extract_auto(scene: str, args: Namespace, be: MaskBackend) -> int:
    """masks/<stem>.npz + .png for every image (or the training views of
    ``--train_views_of``); returns how many were written.

    Images for which no mask passes the thresholds get no file and are reported together
    at the end (PriorError), after the others are written.
    """
    images_dir = os.path.join(scene, args.images)
    names = list_images(images_dir)
    if getattr(args, "train_views_of", ""):
        names = train_views_of(args.train_views_of, names)
    out_dir = os.path.join(scene, "masks")
    if be.name == "sam2":
        _ensure_model(be, args, video=False)
    empty, counts = [], []
    for name in tqdm(names, desc=f"masks ({be.name})", unit="img"):
        image = load_rgb(os.path.join(images_dir, name))
        if be.name == "sam2":
            ms = sb.sam2_auto_masks(be.generator, image, args.min_area, be.device, args.precision)
        else:
            ms = classical_masks(
                image,
                scales=tuple(args.scales),
                min_area=args.min_area,
                max_side=args.classical_max_side,
            )
        if len(ms) == 0:
            empty.append(name)
            continue
        save_mask_set(_stem_path(out_dir, name, ".npz"), _stem_path(out_dir, name, ".png"), ms)
        counts.append(len(ms))
    if counts:
        print(
            f"[extract_mask] {scene}: {len(counts)} images -> {out_dir} "
            f"(masks per image {min(counts)}-{max(counts)}, mean {np.mean(counts):.0f})"
        )
    if empty:
        thr = f"--min_area {args.min_area}"
        if be.name == "sam2":
            thr = f"--pred_iou {args.pred_iou}, --stability {args.stability}, " + thr
        raise PriorError(
            f"no mask passed the thresholds ({thr}) for {len(empty)} image(s): "
            f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}; nothing was written "
            "for them: lower the thresholds"
        )
    return len(counts)


# -------------------------------------------------------------------------- ROI mode


def _get_prompts(
    scene: str, args: Namespace, names: list[str], sizes: dict, be: MaskBackend
) -> list[ObjectPrompt]:
    if args.prompts:
        return load_prompts(args.prompts, sizes)
    if not display_available():
        raise PriorError(
            "--mode roi needs prompts: pass --prompts <file.json> (format in docs/PRIORS.md), "
            "or run where a display and a GUI build of OpenCV exist for the click window"
        )
    refs = args.ref_images or [names[0]]
    images_dir = os.path.join(scene, args.images)
    prompts = []
    for ref in refs:
        if ref not in sizes:
            raise PriorError(f"--ref_images: {ref} is not an image of {images_dir}")
        image = load_rgb(os.path.join(images_dir, ref))
        prompts.append(interactive_prompt(image, ref, _preview_fn(image, args, be)))
    path = os.path.join(scene, "roi_prompts.json")
    with atomic_write(path) as f:
        f.write(prompts_json(prompts).encode())
    print(f"[extract_mask] prompts saved to {path} (re-run with --prompts {path})")
    return prompts


def _preview_fn(image: np.ndarray, args: Namespace, be: MaskBackend):
    if be.name == "classical":
        return lambda p: grabcut_roi(
            image, p.box, p.points, p.labels, max_side=args.grabcut_max_side
        )
    _ensure_model(be, args, video=True)
    predictor = sb.image_predictor(be.model)
    with torch.inference_mode(), sb.autocast(be.device, args.precision):
        predictor.set_image(image)

    def preview(p: ObjectPrompt) -> np.ndarray:
        with torch.inference_mode(), sb.autocast(be.device, args.precision):
            masks, scores, _ = predictor.predict(
                point_coords=p.points, point_labels=p.labels, box=p.box, multimask_output=False
            )
        return masks[0] > 0

    return preview


def _roi_classical(
    images_dir: str, names: list[str], sizes: dict, prompts: list[ObjectPrompt], args
) -> list[np.ndarray]:
    """GrabCut per view; a view without prompts borrows those of the nearest prompted view."""
    by_image: dict[str, list[ObjectPrompt]] = {}
    for p in prompts:
        by_image.setdefault(p.image, []).append(p)
    prompted = [i for i, n in enumerate(names) if n in by_image]
    borrowed = 0
    out = []
    for i, name in enumerate(tqdm(names, desc="roi (grabcut)", unit="img")):
        src = names[min(prompted, key=lambda j: (abs(j - i), j))]
        borrowed += src != name
        w, h = sizes[name]
        sw, sh = sizes[src]
        image = load_rgb(os.path.join(images_dir, name))
        mask = np.zeros((h, w), bool)
        for p in by_image[src]:
            p = p.scaled(w / sw, h / sh) if (w, h) != (sw, sh) else p
            mask |= grabcut_roi(image, p.box, p.points, p.labels, max_side=args.grabcut_max_side)
        out.append(mask)
    if borrowed:
        print(
            f"[extract_mask] {borrowed} view(s) without their own prompt used the prompt of "
            "the nearest prompted view (classical backend: no tracking; prompt every view for "
            "moving objects)"
        )
    return out


def _roi_sam2(
    images_dir: str,
    names: list[str],
    sizes: dict,
    prompts: list[ObjectPrompt],
    args: Namespace,
    be: MaskBackend,
) -> list[np.ndarray]:
    """SAM 2 video propagation over the views sorted by name, at one common frame size."""
    _ensure_model(be, args, video=True)
    w0, h0 = sizes[prompts[0].image]
    frames = []
    for name in tqdm(names, desc="load frames", unit="img"):
        im = load_rgb(os.path.join(images_dir, name))
        if im.shape[:2] != (h0, w0):
            im = cv2.resize(im, (w0, h0), interpolation=cv2.INTER_AREA)
        frames.append(im)
    index = {n: i for i, n in enumerate(names)}
    per_frame: dict[int, list[dict]] = {}
    for p in prompts:
        w, h = sizes[p.image]
        q = p.scaled(w0 / w, h0 / h) if (w, h) != (w0, h0) else p
        d = {"obj_id": q.obj_id, "points": None, "labels": None, "box": q.box}
        if len(q.points):
            d["points"], d["labels"] = q.points, q.labels
        per_frame.setdefault(index[p.image], []).append(d)
    with tqdm(total=len(names), desc="roi (sam2 propagation)", unit="img") as bar:
        masks = sb.propagate_masks(
            be.model, frames, per_frame, be.device, args.precision, args.offload_video, bar.update
        )
    out = []
    for name, m in zip(names, masks):
        w, h = sizes[name]
        if (w, h) != (w0, h0):
            m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        out.append(m)
    return out


def extract_roi(scene: str, args: Namespace, be: MaskBackend) -> int:
    """pure_masks/<image name> for every view; all computed before anything is written."""
    images_dir = os.path.join(scene, args.images)
    names = list_images(images_dir)
    sizes = {n: image_size(os.path.join(images_dir, n)) for n in names}
    prompts = _get_prompts(scene, args, names, sizes, be)
    if be.name == "sam2":
        masks = _roi_sam2(images_dir, names, sizes, prompts, args, be)
    else:
        masks = _roi_classical(images_dir, names, sizes, prompts, args)
    if args.fill_holes:
        masks = [fill_holes(m) for m in masks]
    empty = [n for n, m in zip(names, masks) if not m.any()]
    if empty and not args.allow_empty:
        raise PriorError(
            f"the ROI is empty in {len(empty)} of {len(names)} views ({', '.join(empty[:5])}"
            f"{' ...' if len(empty) > 5 else ''}); nothing was written: add prompts on those "
            "views (or pass --allow_empty if the object really leaves them)"
        )
    out_dir = os.path.join(scene, "pure_masks")
    for name, m in zip(names, tqdm(masks, desc="write pure_masks", unit="img")):
        save_roi_mask(os.path.join(out_dir, name), m)
        if args.save_overlays:
            image = load_rgb(os.path.join(images_dir, name))
            ov_path = _stem_path(os.path.join(scene, "pure_masks_overlay"), name, ".jpg")
            save_image(ov_path, overlay(image, m), quality=90)
    cover = np.mean([m.mean() for m in masks])
    print(
        f"[extract_mask] {scene}: {len(names)} ROI masks -> {out_dir} "
        f"(mean foreground {100 * cover:.1f}% of the image)"
    )
    return len(names)


def save_roi_mask(path: str, mask: np.ndarray) -> None:
    """255/0 single-channel image in the format of the file name's extension.

    JPEG names (the image's own name) are written at quality 100: a grey JPEG of a binary
    mask then differs from 0/255 by a few levels at most, and the loader thresholds at 127.
    """
    im = mask.astype(np.uint8) * 255
    ext = os.path.splitext(path)[1].lower()
    params = {"quality": 100} if ext in (".jpg", ".jpeg") else {}
    save_image(path, im, **params)
