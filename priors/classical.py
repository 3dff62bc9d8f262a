"""Weight-free fallbacks: a multi-scale felzenszwalb hierarchy and GrabCut ROI masks.

Hierarchy. Felzenszwalb-Huttenlocher graph segmentation merges regions while the edge
between them is weaker than their internal variation plus ``scale / |region|``, so a larger
``scale`` gives larger regions. Segmentations at several scales are not nested by
themselves; we nest them from fine to coarse: every region of the finer level joins the
coarser region it overlaps most, and the coarser region is redefined as the union of its
children. Coarse masks then follow the fine boundaries exactly, and every finer mask lies
inside exactly one coarser mask. The segmentation runs on a copy whose longer side is at
most ``max_side`` pixels; label maps are brought back with nearest resampling.

ROI. GrabCut (iterated graph cuts over colour GMMs) from a box, optionally with point
seeds: foreground clicks become hard foreground, background clicks hard background.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.segmentation import felzenszwalb

from priors import PriorError
from priors.masks import MaskSet

DEFAULT_SCALES = (3200.0, 800.0, 200.0)  # coarse to fine, at the working resolution
# A nested region covering at least this fraction of its parent is the same mask again.
DUPLICATE_FRACTION = 0.95


def _resize_for_work(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w)) if max_side > 0 else 1.0
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, s


def nest_labels(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Coarse labels redefined as unions of fine regions.

    Args:
        fine, coarse: [H, W] int label maps (0..N-1) of the same image.
    Returns:
        [H, W] int32 coarse labels, relabelled 0..M-1, constant on every fine region.
    """
    nf, nc = int(fine.max()) + 1, int(coarse.max()) + 1
    counts = np.bincount(fine.ravel() * nc + coarse.ravel(), minlength=nf * nc)
    parent = counts.reshape(nf, nc).argmax(axis=1)
    _, parent = np.unique(parent, return_inverse=True)
    return parent.astype(np.int32)[fine]


def felzenszwalb_hierarchy(
    image: np.ndarray,  # [H, W, 3] uint8
    scales: tuple[float, ...] = DEFAULT_SCALES,
    sigma: float = 0.8,
    min_area: int = 500,
    max_side: int = 512,
    coarse_factor: float = 0.5,
) -> list[np.ndarray]:
    """Nested label maps, coarse to fine, at the working resolution (longer side max_side).

    The finest scale runs at the working resolution; the coarser ones, whose regions only
    decide which fine regions group together, run ``coarse_factor`` smaller (about 3x less
    time for them). Their scale is multiplied by the same factor: felzenszwalb's threshold
    ``scale / |C|`` counts region sizes in pixels, while the downsampled image also has
    larger edge weights; on maryrose this keeps region counts within about 1.5x of a
    full-resolution run. ``min_area`` is in pixels of the full image.
    """
    work, s = _resize_for_work(image, max_side)
    wh, ww = work.shape[:2]
    order = [int(i) for i in np.argsort(scales)]  # fine (small scale) first
    small, _ = _resize_for_work(work, round(max(wh, ww) * coarse_factor))
    f = small.shape[1] / ww
    raw = {}
    for j, i in enumerate(order):
        full = j == 0 or f >= 1.0  # the finest scale at the working resolution
        img, g = (work, 1.0) if full else (small, f)
        lab = felzenszwalb(
            img, scale=float(scales[i]) * g, sigma=sigma,
            min_size=max(1, int(min_area * (s * g) ** 2)),
        )  # fmt: skip
        if not full:
            lab = cv2.resize(lab.astype(np.int32), (ww, wh), interpolation=cv2.INTER_NEAREST)
        raw[i] = lab
    nested = {order[0]: raw[order[0]].astype(np.int32)}
    for finer, coarser in zip(order[:-1], order[1:]):
        nested[coarser] = nest_labels(nested[finer], raw[coarser])
    return [nested[i] for i in reversed(order)]


def classical_masks(
    image: np.ndarray,  # [H, W, 3] uint8
    scales: tuple[float, ...] = DEFAULT_SCALES,
    sigma: float = 0.8,
    min_area: int = 500,
    max_side: int = 512,
    coarse_factor: float = 0.5,
) -> MaskSet:
    """Multi-level masks (level 0 = coarsest) of the felzenszwalb hierarchy, largest first.

    A region that the next finer scale does not split (or splits off less than 5% of)
    would repeat as a (near-)identical mask: it is kept once, at its coarsest level. Scores
    are 1: the classical backend has no quality estimate. Regions are connected and at
    least ``min_area`` already, so no small-region cleaning is needed.
    """
    h, w = image.shape[:2]
    levels = [
        cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
        for lab in felzenszwalb_hierarchy(image, scales, sigma, min_area, max_side, coarse_factor)
    ]
    items = []  # (area, level, label) of every mask to keep
    prev_areas = None
    for lvl, labels in enumerate(levels):
        areas = np.bincount(labels.ravel())
        keep = areas >= max(min_area, 1)
        if lvl > 0:
            # A region nearly as large as its parent (one it is nested in) repeats it.
            n_par = len(prev_areas)
            pairs = np.unique(labels.ravel().astype(np.int64) * n_par + levels[lvl - 1].ravel())
            parent = np.zeros(len(areas), np.int64)
            parent[pairs // n_par] = pairs % n_par
            keep &= areas < DUPLICATE_FRACTION * prev_areas[parent]
        items += [(int(areas[lab]), lvl, int(lab)) for lab in np.flatnonzero(keep)]
        prev_areas = areas
    items.sort(key=lambda t: (-t[0], t[1]))
    masks = np.empty((len(items), h, w), dtype=bool)
    for k, (_, lvl, lab) in enumerate(items):
        np.equal(levels[lvl], lab, out=masks[k])
    k = len(items)
    return MaskSet(masks, np.ones(k), np.ones(k), [t[1] for t in items], "classical")


def grabcut_roi(
    image: np.ndarray,  # [H, W, 3] uint8 RGB
    box: tuple[float, float, float, float] | None,  # x0, y0, x1, y1 in pixels
    points: np.ndarray | None = None,  # [P, 2] x, y in pixels
    labels: np.ndarray | None = None,  # [P] 1 foreground, 0 background
    iterations: int = 5,
    max_side: int = 640,
    seed_radius: int = 5,
) -> np.ndarray:
    """[H, W] bool foreground of GrabCut from a box and/or point seeds.

    Without a box (clicks only), everything but a 5% border is "probably foreground".
    GrabCut runs on a copy whose longer side is at most ``max_side``; the result is
    resized back (nearest) and the largest connected component is kept.
    """
    h, w = image.shape[:2]
    pts = np.zeros((0, 2)) if points is None else np.asarray(points, float).reshape(-1, 2)
    lab = np.zeros(0, int) if labels is None else np.asarray(labels, int).reshape(-1)
    if box is None:
        if not (lab == 1).any():
            raise PriorError("a GrabCut ROI needs a box or at least one foreground point")
        # Clicks only: the image minus a 5% border is "probably foreground" and the border
        # is background, which suits object-centred captures; clicks are hard seeds.
        box = (0.05 * w, 0.05 * h, 0.95 * w, 0.95 * h)
    work, s = _resize_for_work(image, max_side)
    wh, ww = work.shape[:2]
    x0, y0, x1, y1 = (float(v) * s for v in box)
    x0, y0 = int(np.clip(np.floor(x0), 0, ww - 1)), int(np.clip(np.floor(y0), 0, wh - 1))
    x1, y1 = int(np.clip(np.ceil(x1), x0 + 1, ww)), int(np.clip(np.ceil(y1), y0 + 1, wh))
    mask = np.full((wh, ww), cv2.GC_BGD, np.uint8)
    mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    r = max(1, round(seed_radius * s))
    for (x, y), l in zip(pts * s, lab):
        cv2.circle(mask, (int(x), int(y)), r, cv2.GC_FGD if l == 1 else cv2.GC_BGD, -1)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(work[..., ::-1])
    full_box = x0 == 0 and y0 == 0 and x1 == ww and y1 == wh
    if full_box and not (lab == 0).any():
        # GrabCut needs some background samples to fit its background model.
        raise PriorError(
            "the ROI box covers the whole image and there is no background point: GrabCut "
            "has no background to learn from; give a tighter box or a background click"
        )
    try:
        cv2.grabCut(bgr, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error as e:
        raise PriorError(f"GrabCut failed on this prompt ({e.err})") from e
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    fg = cv2.resize(fg.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return largest_component(fg)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of an [H, W] bool mask (empty stays empty)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if n <= 2:
        return mask
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool with every background region not connected to the border filled."""
    pad = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(pad, None, (0, 0), 0)
    return mask | pad[1:-1, 1:-1].astype(bool)
