"""2D feature maps for distillation: the ``features/<stem>.npy`` format, and a weight-free maker.

Format (any 2D extractor may write it: DINO, CLIP, LSeg, SEEM, ...)::

    <scene>/features/<stem>.npy     float16/float32 [C, h, w], any h x w (e.g. ViT patches);
                                    segment.py resizes it bilinearly to the training views
    <scene>/features/meta.json      optional: {"extractor": ..., "channels": C, ...}

``<stem>`` is the image file name without extension (``images/view_000.png`` ->
``features/view_000.npy``), keeping sub-folders of ``images/``.

The maker here (``python -m segmentation.features -s <scene>``) needs no network weights.
It reads the multi-level masks of extract_mask.py (``masks/<stem>.npz``, SAM 2 or the
classical felzenszwalb hierarchy) and gives every pixel, at every level, the DESCRIPTOR OF THE
MASK THAT CONTAINS IT:

    d(mask) = [mean RGB, std RGB, 4x4x4 colour histogram]           (70 numbers)

embedded into ``--dim`` channels per level by one fixed random projection (seeded, the same
matrix for every view and level: a Johnson-Lindenstrauss map, which keeps distances between
descriptors roughly intact). Levels are concatenated coarse to fine, optionally followed by
the pixel's own RGB times ``--rgb_weight``.

Why a mask descriptor and not a random code per mask: mask ids mean nothing across views (mask
3 of one view is unrelated to mask 3 of the next), so per-mask codes would give the same
object conflicting targets. A descriptor computed from the mask's own pixels IS comparable
across views: the same object, seen as a segment in two views, has about the same colour
statistics. The features are therefore constant inside a segment, change at segment borders
(a feature edge the 3D grouping can follow), and agree between views. A pixel that no mask of
a level covers gets the descriptor of itself (a one-pixel segment).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # python segmentation/features.py
    sys.path.insert(0, REPO_ROOT)

from priors import PriorError  # noqa: E402
from scene.errors import SceneError  # noqa: E402
from segmentation.errors import SegmentationError  # noqa: E402

FEATURE_DIR = "features"
HIST_BINS = 4  # per colour channel: 4^3 = 64 histogram cells
DESC_DIM = 6 + HIST_BINS**3


def mask_descriptors(rgb: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """[n, 70] descriptors of the segments 0..n-1 of ``labels`` [H, W] over ``rgb`` [H, W, 3]
    in [0, 1]: mean RGB, std RGB, normalised 4x4x4 histogram (see the module docstring)."""
    lab = labels.ravel()
    x, cell = _pixels_and_cells(rgb)
    ok = lab >= 0
    lab, x, cell = lab[ok], x[ok], cell[ok]
    cnt = np.maximum(np.bincount(lab, minlength=n), 1).astype(np.float64)[:, None]
    mean = np.stack([np.bincount(lab, x[:, c], n) for c in range(3)], 1) / cnt
    sq = np.stack([np.bincount(lab, x[:, c] ** 2, n) for c in range(3)], 1) / cnt
    std = np.sqrt(np.clip(sq - mean**2, 0.0, None))
    hist = np.bincount(lab * HIST_BINS**3 + cell, minlength=n * HIST_BINS**3)
    hist = hist.reshape(n, HIST_BINS**3) / cnt
    return np.concatenate([mean, std, hist], 1)


def _pixels_and_cells(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [H*W, 3] float64 and the index of each one's histogram cell [H*W]."""
    x = rgb.reshape(-1, 3).astype(np.float64)
    q = np.clip((x * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
    return x, (q[:, 0] * HIST_BINS + q[:, 1]) * HIST_BINS + q[:, 2]


def pixel_descriptors(rgb: np.ndarray) -> np.ndarray:
    """[H*W, 70] descriptors of one-pixel segments (std 0, a one-hot histogram)."""
    x, cell = _pixels_and_cells(rgb)
    hist = np.zeros((len(x), HIST_BINS**3))
    hist[np.arange(len(x)), cell] = 1.0
    return np.concatenate([x, np.zeros_like(x), hist], 1)


def pixel_embedding(rgb: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """``pixel_descriptors(rgb) @ proj`` [H*W, D] without the [H*W, 70] matrix: the one-hot
    histogram picks one row of ``proj`` and the std part is zero."""
    x, cell = _pixels_and_cells(rgb)
    return x @ proj[:3] + proj[6 + cell]


def level_labels(masks: np.ndarray, levels: np.ndarray, level: int) -> np.ndarray:
    """[H, W] index of the smallest mask of ``level`` covering each pixel, -1 where none."""
    out = np.full(masks.shape[1:], -1, dtype=np.int64)
    ids = np.flatnonzero(levels == level)
    if len(ids) == 0:
        return out
    areas = masks[ids].reshape(len(ids), -1).sum(1)
    for i in ids[np.argsort(-areas, kind="stable")]:  # largest first: the finest wins
        out[masks[i]] = i
    return out


def projection_matrix(dim: int, seed: int = 0) -> np.ndarray:
    """The fixed [70, dim] random projection (Gaussian entries / sqrt(dim))."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((DESC_DIM, dim)) / np.sqrt(dim)


def mask_feature_map(
    rgb: np.ndarray,  # [H, W, 3] in [0, 1]
    masks: np.ndarray,  # [K, H, W] bool
    levels: np.ndarray,  # [K] int
    n_levels: int,
    proj: np.ndarray,  # [70, D]
    rgb_weight: float = 0.0,
) -> np.ndarray:  # [n_levels * D (+3), H, W] float32
    """The feature map of one image (see the module docstring)."""
    h, w = rgb.shape[:2]
    if masks.shape[1:] != (h, w):
        raise SegmentationError(
            f"masks are {masks.shape[1]}x{masks.shape[2]} but the image is {h}x{w}; "
            "re-run extract_mask.py on these images"
        )
    own = pixel_embedding(rgb, proj)  # [HW, D]
    chans = []
    for lvl in range(n_levels):
        lab = level_labels(masks, levels, lvl).ravel()
        emb = own.copy()
        if (lab >= 0).any():
            desc = mask_descriptors(rgb, lab.reshape(h, w), len(masks)) @ proj  # [K, D]
            emb[lab >= 0] = desc[lab[lab >= 0]]
        chans.append(emb.T.reshape(-1, h, w))
    if rgb_weight > 0:
        chans.append(rgb_weight * rgb.transpose(2, 0, 1))
    return np.concatenate(chans, 0).astype(np.float32)


def make_scene_features(
    source: str,
    images: str = "images",
    dim: int = 16,
    rgb_weight: float = 0.0,
    seed: int = 0,
    overwrite: bool = True,
    progress: bool = True,
    train_views_of: str = "",
) -> dict:
    """Write ``<source>/features/<stem>.npy`` for every image with ``masks/<stem>.npz`` (or
    only the training views of the split.json ``train_views_of``).

    Returns the meta.json content. Raises ``SegmentationError`` when there are no masks.
    """
    from tqdm import tqdm

    from priors.io import list_images, load_rgb, save_npy
    from priors.io import train_views_of as split_train_views
    from priors.masks import load_mask_set

    img_dir = os.path.join(source, images)
    mask_dir = os.path.join(source, "masks")
    if not os.path.isdir(img_dir):
        raise SegmentationError(f"{img_dir} not found; pass the scene folder with -s")
    names = list_images(img_dir)
    if train_views_of:
        names = split_train_views(train_views_of, names)
    stems = [os.path.splitext(n)[0] for n in names]
    have = [os.path.isfile(os.path.join(mask_dir, s + ".npz")) for s in stems]
    if not any(have):
        raise SegmentationError(
            f"{mask_dir}: no masks/<stem>.npz; make them first with "
            f"python extract_mask.py -s {source} --mode auto"
        )
    missing = [n for n, h in zip(names, have) if not h]
    if missing:
        raise SegmentationError(
            f"{mask_dir}: no masks for {len(missing)} images (e.g. {missing[0]}); re-run "
            f"python extract_mask.py -s {source} --mode auto"
        )
    sets = {}
    n_levels = 1
    for s in stems:
        ms = load_mask_set(os.path.join(mask_dir, s + ".npz"))
        sets[s] = ms
        if len(ms):
            n_levels = max(n_levels, int(ms.level.max()) + 1)
    proj = projection_matrix(dim, seed)
    out_dir = os.path.join(source, FEATURE_DIR)
    os.makedirs(out_dir, exist_ok=True)
    for name, s in tqdm(list(zip(names, stems)), desc="mask features", disable=not progress):
        path = os.path.join(out_dir, s + ".npy")
        if os.path.isfile(path) and not overwrite:
            continue
        rgb = load_rgb(os.path.join(img_dir, name)).astype(np.float32)
        rgb = rgb / 255.0 if rgb.max() > 1.0 else rgb
        ms = sets[s]
        fmap = mask_feature_map(rgb[..., :3], ms.masks, ms.level, n_levels, proj, rgb_weight)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_npy(path, fmap.astype(np.float16))
    meta = {
        "extractor": "segmentation.features (mask descriptors; no learned weights)",
        "channels": n_levels * dim + (3 if rgb_weight > 0 else 0),
        "levels": n_levels,
        "dim_per_level": dim,
        "rgb_weight": rgb_weight,
        "descriptor": "mean RGB, std RGB, 4x4x4 colour histogram of the containing mask",
        "projection_seed": seed,
        "mask_backend": str(next(iter(sets.values())).backend),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def matched_scene_features(source: str) -> dict:
    """Write ``<source>/features/<stem>.npy`` for each training view of mask_matching/: its
    matched descriptor map, the L levels concatenated ([L*D, h, w] float16, at the masks'
    resolution). These features agree across views by construction (mask_matching trains
    them on the COLMAP matches), so distilling them groups a segment seen in several views.
    Only the training views get maps, which is all that segment.py distils from.

    Returns the meta.json content; ``SceneError`` (one line) without mask_matching/.
    """
    from mask_matching.maps import load_descriptor_maps, load_meta
    from priors.io import save_npy

    meta_mm = load_meta(source)
    names = list(meta_mm["train"])
    maps = load_descriptor_maps(source, names)
    out_dir = os.path.join(source, FEATURE_DIR)
    for name in names:
        dense = maps[name].dense()  # [L, D, h, w]
        save_npy(feature_path(source, name), dense.reshape(-1, *dense.shape[2:]).numpy()
                 .astype(np.float16))  # fmt: skip
    levels, dim = (int(v) for v in maps[names[0]].table.shape[1:])
    meta = {
        "extractor": "mask_matching (matched descriptor maps of the training views)",
        "channels": levels * dim,
        "levels": levels,
        "dim_per_level": dim,
        "views": names,
        "mask_backend": meta_mm.get("mask_backend", "unknown"),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def feature_path(source: str, image_name: str) -> str:
    """``<source>/features/<stem>.npy`` of an image name (sub-folders kept)."""
    return os.path.join(source, FEATURE_DIR, os.path.splitext(image_name)[0] + ".npy")


def load_feature_maps(source: str, image_names: list[str]) -> list[np.ndarray]:
    """The [C, h, w] float32 maps of ``image_names``; one-line error when any is missing."""
    paths = [feature_path(source, n) for n in image_names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise SegmentationError(
            f"{missing[0]} not found ({len(missing)} of {len(paths)} views without 2D "
            f"features); make them with python -m segmentation.features -s {source} (from "
            "extract_mask.py masks) or any 2D extractor writing features/<stem>.npy [C, h, w]"
        )
    maps = []
    for p in paths:
        m = np.load(p)
        if m.ndim != 3:
            raise SegmentationError(f"{p}: expected a [C, h, w] array, got shape {m.shape}")
        maps.append(m.astype(np.float32))
    if len({m.shape[0] for m in maps}) > 1:
        raise SegmentationError(
            f"{os.path.dirname(paths[0])}: feature maps disagree on the channel count "
            f"({sorted({m.shape[0] for m in maps})}); re-extract them with one extractor"
        )
    return maps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Weight-free 2D feature maps from the mask hierarchy of extract_mask.py: "
        "each pixel gets, per mask level, a random projection of the colour descriptor of the "
        "mask containing it (see the module docstring). Writes <scene>/features/<stem>.npy."
    )
    p.add_argument("-s", "--source_path", required=True, help="scene folder")
    p.add_argument("-i", "--images", default="images", help="image subfolder of the scene")
    p.add_argument("--dim", type=int, default=16, help="channels per mask level")
    p.add_argument("--rgb_weight", type=float, default=0.0, help="append pixel RGB times this")
    p.add_argument("--seed", type=int, default=0, help="seed of the random projection")
    p.add_argument("--train_views_of", default="", metavar="SPLIT_JSON",
                   help="only the training views listed in this split.json (segment.py "
                   "distils the training views; colmap_match.py --n_views N writes "
                   "<scene>/colmap_<N>views/split.json)")  # fmt: skip
    p.add_argument("--from_mask_matching", action="store_true",
                   help="write the matched descriptor maps of python -m mask_matching instead "
                   "(training views only; agree across views by construction)")  # fmt: skip
    args = p.parse_args(argv)
    try:
        if args.dim < 1:
            raise SegmentationError(f"--dim must be >= 1 (got {args.dim})")
        if args.from_mask_matching:
            meta = matched_scene_features(args.source_path)
            print(f"[features] {args.source_path}/{FEATURE_DIR}: {meta['channels']} channels "
                  f"(mask_matching, {len(meta['views'])} training views)")  # fmt: skip
            return 0
        meta = make_scene_features(
            args.source_path, args.images, args.dim, args.rgb_weight, args.seed,
            train_views_of=args.train_views_of,
        )  # fmt: skip
    except (SegmentationError, SceneError, ValueError, PriorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"[features] {args.source_path}/{FEATURE_DIR}: {meta['channels']} channels "
        f"({meta['levels']} mask levels x {meta['dim_per_level']}"
        + (" + RGB" if args.rgb_weight > 0 else "")
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
