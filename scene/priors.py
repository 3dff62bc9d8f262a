"""The prior loader: attaches 2D priors from the scene folder to training cameras.

One loader for training and every later stage. For each camera it finds the prior files by
the image name (case-insensitively, the image's sub-folder kept), validates them, resizes
them to the camera's training resolution with nearest sampling, and stores on the camera's
device:

=====================  ========================  =========================================
``camera.priors[...]``  dtype, shape              from
=====================  ========================  =========================================
``"masks"``             bool [K, H, W]            ``masks/<stem>.npz`` (largest first)
``"mask_levels"``       int64 [K]                 the same file: granularity, 0 = coarsest
``"roi_mask"``          float32 [1, H, W] {0, 1}  ``pure_masks/<name>`` (> 127), or
                                                  ``<stem>.png|.jpg|.jpeg``
``"depth"``             float32 [1, H, W] metres  ``depth_pro/<name>.npy`` or ``<stem>.npy``
                        (kind "depth_mvs":        ``depth_mvs/<name>.npy``, scene units,
                        same key)                 0 where the stereo has no depth
=====================  ========================  =========================================

A missing folder turns that prior off with one warning line, unless it is ``required``
(a flag asked for it), which stops with the command that makes it. A missing file for one
view warns once and leaves that view without the prior. A prior whose aspect ratio differs
from the image's, or whose dtype or shape is wrong, stops with the file's name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from priors import PriorError
from priors.masks import load_mask_set

KINDS = ("masks", "roi", "depth", "depth_mvs")
FOLDERS = {"masks": "masks", "roi": "pure_masks", "depth": "depth_pro", "depth_mvs": "depth_mvs"}
MAKERS = {
    "masks": "python extract_mask.py -s {scene}",
    "roi": "python extract_mask.py -s {scene} --mode roi --prompts <prompts.json>",
    "depth": "python predepth.py -s {scene}",
    "depth_mvs": "python -m mvs -s {scene} --n_views <N> --split_protocol <protocol>",
}
# Relative tolerance on the aspect ratio of a prior versus its image (rounding of
# downscaled copies stays far below it; a prior of another image does not).
ASPECT_TOLERANCE = 0.02


def prior_candidates(kind: str, image_name: str) -> list[str]:
    """File names (relative to the prior's folder) that may hold ``image_name``'s prior."""
    folder, base = os.path.split(image_name.replace("\\", "/"))
    stem = os.path.splitext(base)[0]
    pre = folder + "/" if folder else ""
    names = {
        "masks": [f"{stem}.npz", f"{base}.npz"],
        "roi": [base, f"{stem}.png", f"{stem}.jpg", f"{stem}.jpeg", f"{base}.png"],
        "depth": [f"{base}.npy", f"{stem}.npy"],
        "depth_mvs": [f"{base}.npy", f"{stem}.npy"],
    }[kind]
    return [pre + n for n in names]


class FolderIndex:
    """Case-insensitive lookup of the files below one folder (walked once)."""

    def __init__(self, root: str):
        self.root = root
        self.files: dict[str, str] = {}
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                if f.startswith("."):
                    continue  # temporary files of an unfinished write
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                self.files.setdefault(rel.lower(), full)

    def find(self, candidates: Iterable[str]) -> str | None:
        for c in candidates:
            if (path := self.files.get(c.lower())) is not None:
                return path
        return None


@dataclass
class PriorReport:
    """What attach_priors found, for the one-line summary at the start of training."""

    n_views: int
    found: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    off: dict[str, str] = field(default_factory=dict)  # kind -> why it is off
    mask_counts: list[int] = field(default_factory=list)

    def line(self) -> str:
        parts = []
        for kind in KINDS:
            if kind in self.off:
                parts.append(f"{kind} off ({self.off[kind]})")
            elif kind in self.found:
                s = f"{kind} {self.found[kind]}/{self.n_views}"
                if kind == "masks" and self.mask_counts:
                    s += f" (K {min(self.mask_counts)}-{max(self.mask_counts)})"
                if self.missing.get(kind):
                    s += f" (missing {len(self.missing[kind])})"
                parts.append(s)
        return f"[priors] {self.n_views} views: " + (", ".join(parts) if parts else "none asked")

    def __str__(self) -> str:
        return self.line()


def _check_aspect(path: str, h: int, w: int, H: int, W: int) -> None:
    if abs((w / h) / (W / H) - 1.0) > ASPECT_TOLERANCE:
        raise PriorError(
            f"{path} is {w}x{h} but its image is {W}x{H} at training resolution (aspect "
            "ratio differs): it belongs to another image or crop; re-create the priors"
        )


def resize_nearest(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[C, h, w] -> [C, height, width] by nearest sampling at pixel centres (any dtype)."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    dtype = x.dtype
    y = x.to(torch.uint8) if dtype == torch.bool else x
    y = F.interpolate(y[None], size=(height, width), mode="nearest-exact")[0]
    return y.to(dtype)


def load_masks_prior(path: str, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [K, height, width] masks and int64 [K] levels of ``masks/<stem>.npz``."""
    ms = load_mask_set(path)
    _check_aspect(path, *ms.masks.shape[1:], height, width)
    masks = resize_nearest(torch.from_numpy(ms.masks), height, width)
    return masks, torch.from_numpy(ms.level.astype(np.int64))


def load_roi_prior(path: str, height: int, width: int) -> torch.Tensor:
    """float32 [1, height, width] in {0, 1}: pixels above 127 of a grey or colour image."""
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as e:
        raise PriorError(f"{path}: cannot read the ROI mask ({e}); re-run extract_mask.py") from e
    _check_aspect(path, *a.shape, height, width)
    m = torch.from_numpy(a > 127)[None]
    return resize_nearest(m, height, width).float()


def load_depth_prior(path: str, height: int, width: int) -> torch.Tensor:
    """float32 [1, height, width] metric depth of ``depth_pro/<name>.npy``."""
    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise PriorError(f"{path}: cannot read the depth file ({e}); re-run predepth.py") from e
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
        raise PriorError(
            f"{path}: depth is {d.dtype} {list(d.shape)}, expected float [H, W]; re-run predepth.py"
        )
    if not np.any(np.isfinite(d) & (d > 0)):
        raise PriorError(f"{path}: no finite positive depth in the file; re-run predepth.py")
    _check_aspect(path, *d.shape, height, width)
    return resize_nearest(torch.from_numpy(d.astype(np.float32))[None], height, width)


def attach_priors(
    cameras: list,
    source_path: str,
    kinds: Iterable[str],
    required: Iterable[str] = (),
    verbose: bool = True,
) -> PriorReport:
    """Load the asked priors into ``camera.priors`` for every camera; return the report.

    Args:
        cameras: objects with ``image_name``, ``image_width``, ``image_height``, ``device``
            and a ``priors`` dict (scene.cameras.Camera).
        source_path: the scene folder.
        kinds: any of "masks", "roi", "depth", "depth_mvs" (into ``priors["depth"]``).
        required: kinds whose missing folder is an error instead of a warning.
        verbose: print the warnings and the one-line report.
    """
    kinds = list(dict.fromkeys(kinds))
    unknown = [k for k in list(kinds) + list(required) if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown prior kind(s) {unknown}; choose from {KINDS}")
    report = PriorReport(len(cameras))
    say = print if verbose else (lambda *a, **k: None)
    for kind in kinds:
        folder = os.path.join(source_path, FOLDERS[kind])
        if not os.path.isdir(folder):
            make = MAKERS[kind].format(scene=source_path)
            if kind in required:
                raise PriorError(f"{folder}: no {kind} priors; make them with: {make}")
            report.off[kind] = f"no {FOLDERS[kind]}/"
            say(f"[priors] warning: {folder} not found, {kind} prior off (make it: {make})")
            continue
        index = FolderIndex(folder)
        report.found[kind] = 0
        report.missing[kind] = []
        for cam in cameras:
            cands = prior_candidates(kind, cam.image_name)
            path = index.find(cands)
            if path is None:
                report.missing[kind].append(cam.image_name)
                say(
                    f"[priors] warning: no {kind} prior for {cam.image_name} (looked for "
                    f"{', '.join(FOLDERS[kind] + '/' + c for c in cands)})"
                )
                continue
            H, W = cam.image_height, cam.image_width
            if kind == "masks":
                masks, levels = load_masks_prior(path, H, W)
                cam.priors["masks"] = masks.to(cam.device)
                cam.priors["mask_levels"] = levels.to(cam.device)
                report.mask_counts.append(len(masks))
            elif kind == "roi":
                cam.priors["roi_mask"] = load_roi_prior(path, H, W).to(cam.device)
            else:  # depth_pro/ or depth_mvs/
                cam.priors["depth"] = load_depth_prior(path, H, W).to(cam.device)
            report.found[kind] += 1
    say(report.line())
    return report


def check_mvs_depth_split(source_path: str, train_names: list[str]) -> None:
    """Stop unless ``depth_mvs/meta.json`` says the maps were made from exactly these
    training views (stereo of another split would leak other views into training)."""
    import json

    path = os.path.join(source_path, FOLDERS["depth_mvs"], "meta.json")
    make = MAKERS["depth_mvs"].format(scene=source_path)
    try:
        with open(path) as f:
            made_from = sorted(json.load(f)["train"])
    except (OSError, ValueError, KeyError) as e:
        raise PriorError(f"{path}: cannot read which views made depth_mvs/ ({e}); {make}") from e
    if made_from != sorted(train_names):
        raise PriorError(
            f"{path}: depth_mvs/ was made from the {len(made_from)} views {made_from[:4]}..., "
            f"not this run's {len(train_names)} training views; remake it: "
            + make.replace("<N>", str(len(train_names)))
        )
