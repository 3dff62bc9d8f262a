"""Reading a scene for mask matching: the training views, their masks, their matches.

Inputs (each missing one stops with one line naming the command that makes it):

- the training views of the split (``scene.splits.make_split`` over ``<scene>/images``,
  the same rule as train.py, colmap_match.py and ``python -m mvs``);
- ``<scene>/masks/<stem>.npz`` of each training view (``python extract_mask.py``); a view
  without a file takes part with the uncovered channel only (warning);
- ``<scene>/colmap_<N>views/matches.npz`` (``python colmap_match.py --n_views N``), which
  must have been made for exactly these training views.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from mask_matching.inputs import MaskMatchingWarning, ViewMasks, view_masks
from mask_matching.union_find import pixel_index
from priors.io import image_size, list_images
from priors.masks import load_mask_set
from scene.errors import SceneError
from scene.priors import FolderIndex, prior_candidates
from scene.splits import make_split
from sfm.matches import TrainMatches


@dataclass
class PairMatches:
    """COLMAP inlier matches of one training pair, located in both views' code maps."""

    a: int  # view index (order of the training views)
    b: int
    xy_a: np.ndarray  # [M, 2] float32 COLMAP pixel coordinates in view a (image on disk)
    xy_b: np.ndarray  # [M, 2]
    code_a: np.ndarray  # [M] int64 code index of the matched pixel in view a
    code_b: np.ndarray  # [M] int64


@dataclass
class MatchingInput:
    """Everything the descriptor network trains on."""

    scene_dir: str
    train: list[str]  # training image names, protocol order
    views: list[ViewMasks]  # same order
    pairs: list[PairMatches]  # every pair with >= 1 match
    image_sizes: list[tuple[int, int]]  # (width, height) on disk, per view
    backend: str  # which backend made the masks ("sam2", "classical", mixed: "a+b")

    @property
    def n_views(self) -> int:
        return len(self.train)


def mask_command(scene_dir: str) -> str:
    return f"python extract_mask.py -s {scene_dir} --mode auto"


def match_command(scene_dir: str, n_views: int, protocol: str) -> str:
    return f"python colmap_match.py -s {scene_dir} --n_views {n_views} --split_protocol {protocol}"


def resolve_train_views(
    scene_dir: str,
    n_views: int,
    protocol: str = "llff",
    train_views: list[str] | None = None,
    images: str = "images",
) -> list[str]:
    """The training image names of the split, in protocol order (as train.py picks them)."""
    if not os.path.isdir(scene_dir):
        raise SceneError(f"{scene_dir}: no such scene folder (-s)")
    if not n_views and not train_views:
        raise SceneError("mask matching needs the training views: pass --n_views N")
    names = list_images(os.path.join(scene_dir, images))
    source_split = None
    split_file = os.path.join(scene_dir, "split.json")
    if protocol == "custom" and os.path.isfile(split_file):
        import json

        with open(split_file) as f:
            source_split = json.load(f)
    split = make_split(
        names,
        protocol=protocol,
        n_views=n_views,
        train_views=train_views or None,
        source_split=source_split,
        where=scene_dir,
    )
    if len(split["train"]) < 2:
        raise SceneError(f"{scene_dir}: mask matching needs >= 2 training views")
    return list(split["train"])


def load_views(scene_dir: str, train: list[str]) -> list[ViewMasks]:
    """Membership codes of each training view from ``masks/`` (warnings for weak views)."""
    folder = os.path.join(scene_dir, "masks")
    if not os.path.isdir(folder):
        raise SceneError(f"{folder}: missing; make the masks with {mask_command(scene_dir)}")
    index = FolderIndex(folder)
    views = []
    for name in train:
        path = index.find(prior_candidates("masks", name))
        if path is None:
            w, h = image_size(os.path.join(scene_dir, "images", name))
            warnings.warn(MaskMatchingWarning(f"{folder}: no mask file for {name}"), stacklevel=2)
            views.append(view_masks(name, np.zeros((0, h, w), bool), "none"))
            continue
        ms = load_mask_set(path).sorted_by_area()
        views.append(view_masks(name, ms.masks, ms.backend))
    return views


def load_pair_matches(
    scene_dir: str,
    train: list[str],
    views: list[ViewMasks],
    protocol: str = "llff",
) -> tuple[list[PairMatches], list[tuple[int, int]]]:
    """Matches of every training pair located in the code maps, and the image sizes."""
    n = len(train)
    path = os.path.join(scene_dir, f"colmap_{n}views", "matches.npz")
    if not os.path.isfile(path):
        raise SceneError(f"{path}: missing; make it with {match_command(scene_dir, n, protocol)}")
    try:
        tm = TrainMatches.load(path)
    except (OSError, ValueError, KeyError) as e:
        raise SceneError(
            f"{path}: cannot read it ({e}); rerun {match_command(scene_dir, n, protocol)} "
            "--overwrite"
        ) from None
    if set(tm.names) != set(train):
        raise SceneError(
            f"{path} was made for other training views ({', '.join(tm.names)}) than this split "
            f"({', '.join(train)}); rerun {match_command(scene_dir, n, protocol)} --overwrite"
        )
    order = {name: tm.names.index(name) for name in train}
    sizes = [tuple(int(v) for v in tm.sizes[order[name]]) for name in train]
    for view, (w, h) in zip(views, sizes):
        mh, mw = view.size
        if abs((mw / mh) / (w / h) - 1.0) > 0.02:
            raise SceneError(
                f"masks of {view.name} are {mw}x{mh} but the image is {w}x{h} (aspect ratio "
                f"differs); re-create them with {mask_command(scene_dir)}"
            )
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            xa, xb = tm.get(train[i], train[j])
            if len(xa) == 0:
                continue
            pa = pixel_index(xa, views[i].size, sizes[i])
            pb = pixel_index(xb, views[j].size, sizes[j])
            pairs.append(
                PairMatches(
                    a=i,
                    b=j,
                    xy_a=xa,
                    xy_b=xb,
                    code_a=views[i].code_index[pa[:, 0], pa[:, 1]].astype(np.int64),
                    code_b=views[j].code_index[pb[:, 0], pb[:, 1]].astype(np.int64),
                )
            )
    return pairs, sizes


def load_matching_input(
    scene_dir: str,
    n_views: int,
    protocol: str = "llff",
    train_views: list[str] | None = None,
    images: str = "images",
) -> MatchingInput:
    """Training views, masks and matches of a scene (bad input: ``SceneError``)."""
    scene_dir = os.path.normpath(scene_dir)
    train = resolve_train_views(scene_dir, n_views, protocol, train_views, images)
    masks_dir = os.path.join(scene_dir, "masks")
    n = len(train)
    # Check both inputs exist before the slow part, so one run reports the first missing.
    if not os.path.isdir(masks_dir):
        raise SceneError(f"{masks_dir}: missing; make the masks with {mask_command(scene_dir)}")
    mpath = os.path.join(scene_dir, f"colmap_{n}views", "matches.npz")
    if not os.path.isfile(mpath):
        raise SceneError(f"{mpath}: missing; make it with {match_command(scene_dir, n, protocol)}")
    views = load_views(scene_dir, train)
    pairs, sizes = load_pair_matches(scene_dir, train, views, protocol)
    if not pairs:
        raise SceneError(
            f"{mpath}: no matches between any training views; rerun "
            f"{match_command(scene_dir, n, protocol)} --overwrite with more views"
        )
    backends = sorted({v.backend for v in views if v.backend != "none"}) or ["none"]
    return MatchingInput(scene_dir, train, views, pairs, sizes, "+".join(backends))
