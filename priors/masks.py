"""The multi-level mask format shared by every mask backend.

``masks/<stem>.npz`` (relative sub-folders of ``images/`` kept) holds:

===================  ==================  ===============================================
key                  dtype, shape        meaning
===================  ==================  ===============================================
``masks``            bool [K, H, W]      one segment per slice, at the image's resolution,
                                         sorted by area, largest first
``area``             int64 [K]           pixels per mask
``predicted_iou``    float32 [K]         the model's own quality estimate (1 for the
                                         classical backend, which has none)
``stability_score``  float32 [K]         IoU of the mask thresholded at logit +-1 (SAM);
                                         1 for the classical backend
``level``            int16 [K]           granularity it came from, 0 = coarsest
``backend``          str []              "sam2" or "classical"
===================  ==================  ===============================================

``masks/<stem>.png`` is a palette PNG label map for inspection and for label-based
matching: masks are painted largest first, so the finest mask wins; pixel value ``k + 1``
is mask ``k`` of the npz, 0 is uncovered (16-bit grey when K > 255).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from priors import PriorError
from priors.io import save_image, save_npz


@dataclass
class MaskSet:
    """Masks of one image with their per-mask scores (see the module docstring)."""

    masks: np.ndarray  # [K, H, W] bool
    predicted_iou: np.ndarray  # [K] float32
    stability_score: np.ndarray  # [K] float32
    level: np.ndarray  # [K] int16
    backend: str

    def __post_init__(self) -> None:
        k = len(self.masks)
        self.masks = np.asarray(self.masks, dtype=bool).reshape(k, *np.shape(self.masks)[1:])
        self.predicted_iou = np.asarray(self.predicted_iou, dtype=np.float32).reshape(k)
        self.stability_score = np.asarray(self.stability_score, dtype=np.float32).reshape(k)
        self.level = np.asarray(self.level, dtype=np.int16).reshape(k)

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def area(self) -> np.ndarray:
        """[K] int64 pixel counts."""
        return np.count_nonzero(self.masks.reshape(len(self), -1), axis=1).astype(np.int64)

    def subset(self, keep: np.ndarray) -> MaskSet:
        return MaskSet(
            self.masks[keep],
            self.predicted_iou[keep],
            self.stability_score[keep],
            self.level[keep],
            self.backend,
        )

    def sorted_by_area(self) -> MaskSet:
        """Largest first; ties keep the coarser level first (stable sort)."""
        order = np.lexsort((self.level, -self.area))
        if np.array_equal(order, np.arange(len(self))):
            return self  # already sorted: no copy of the masks
        return self.subset(order)


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Fill holes and drop islands smaller than ``min_area`` pixels in one [H, W] mask.

    What SAM's automatic generator does with ``min_mask_region_area``, done here at full
    resolution with OpenCV so that it needs no CUDA extension.
    """
    if min_area <= 0:
        return mask
    out = mask.copy()
    for fill_value in (True, False):  # first holes (background blobs), then islands
        region = ~out if fill_value else out
        n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1
        if len(small) == 0:
            continue
        if not fill_value and len(small) == n - 1:
            # Every island is small: keep the largest rather than erase the mask.
            small = small[small != 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
        out[np.isin(labels, small)] = fill_value
    return out


def dedupe(ms: MaskSet, iou_threshold: float = 0.95, stride: int = 4) -> MaskSet:
    """Drop masks whose IoU with an earlier kept mask reaches ``iou_threshold``.

    The order of ``ms`` is the preference order. IoU is measured on every ``stride``-th
    pixel, plenty to tell near-duplicates apart.
    """
    if len(ms) < 2:
        return ms
    sub = ms.masks[:, ::stride, ::stride].reshape(len(ms), -1).astype(np.float32)
    inter = sub @ sub.T
    area = np.diag(inter)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0)
    keep: list[int] = []
    for i in range(len(ms)):
        if not keep or iou[i, keep].max() < iou_threshold:
            keep.append(i)
    return ms.subset(np.array(keep, dtype=np.int64))


def finalize(ms: MaskSet, min_area: int, clean: bool = True) -> MaskSet:
    """Clean small regions, drop masks under ``min_area``, remove duplicates, sort."""
    if len(ms) == 0:
        return ms
    if clean and min_area > 0:
        ms = MaskSet(
            np.stack([remove_small_regions(m, min_area) for m in ms.masks]),
            ms.predicted_iou,
            ms.stability_score,
            ms.level,
            ms.backend,
        )
    ms = ms.subset(ms.area >= max(min_area, 1))
    # Preference for duplicates: coarser level, then higher quality.
    pref = np.lexsort((-ms.predicted_iou, ms.level))
    return dedupe(ms.subset(pref)).sorted_by_area()


def label_map(masks: np.ndarray) -> np.ndarray:
    """[H, W] int32: 1 + index of the last (smallest) mask covering each pixel, 0 if none.

    ``masks`` [K, H, W] bool must be sorted largest first, so the finest mask wins.
    """
    labels = np.zeros(masks.shape[1:], dtype=np.int32)
    for k, m in enumerate(masks):
        labels[m] = k + 1
    return labels


def _palette(n: int) -> np.ndarray:
    """[n, 3] uint8 distinct colours (golden-ratio hues), colour 0 black."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.full(n, 230)], axis=1).astype(np.uint8)
    rgb = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
    rgb[0] = 0
    return rgb


def label_preview(labels: np.ndarray) -> Image.Image:
    """Palette PNG image of a label map (16-bit grey when there are more than 255 labels)."""
    k = int(labels.max())
    if k > 255:
        return Image.fromarray(labels.astype(np.uint16))
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(_palette(256).reshape(-1).tolist())
    return im


def save_mask_set(npz_path: str, png_path: str, ms: MaskSet) -> None:
    """Write the npz and its label preview (each atomically)."""
    ms = ms.sorted_by_area()
    save_npz(
        npz_path,
        masks=ms.masks,
        area=ms.area,
        predicted_iou=ms.predicted_iou,
        stability_score=ms.stability_score,
        level=ms.level,
        backend=np.array(ms.backend),
    )
    save_image(png_path, label_preview(label_map(ms.masks)))


def load_mask_set(path: str) -> MaskSet:
    """Read and validate ``masks/<stem>.npz``; raises PriorError naming the file."""
    fix = "re-run extract_mask.py for this scene"
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise PriorError(f"{path}: cannot read the mask file ({e}); {fix}") from e
    if "masks" not in data:
        raise PriorError(f"{path}: no 'masks' array in the file; {fix}")
    m = data["masks"]
    if m.dtype != np.bool_ or m.ndim != 3:
        raise PriorError(
            f"{path}: 'masks' is {m.dtype} {list(m.shape)}, expected bool [K, H, W]; {fix}"
        )
    k = len(m)

    def per_mask(key: str, default: float) -> np.ndarray:
        v = data.get(key, np.full(k, default))
        if v.shape != (k,):
            raise PriorError(f"{path}: '{key}' has shape {list(v.shape)}, expected [{k}]; {fix}")
        return v

    return MaskSet(
        m,
        per_mask("predicted_iou", 1.0),
        per_mask("stability_score", 1.0),
        per_mask("level", 0),
        str(data["backend"]) if "backend" in data else "unknown",
    )
