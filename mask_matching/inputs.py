"""The per-pixel input of the descriptor network: multi-hot mask membership.

Each training view carries K masks (``masks/<stem>.npz``, sorted by area, largest first).
A pixel's input is the vector of the masks it belongs to, with one channel put in front:
channel 0 is the "uncovered" region, the complement of the union of all masks eroded by
a 3x3 minimum (so the thin band along mask borders is in neither), channels 1..K are the
masks. This is RegSegField's input (seeds digest, section 1.3).

The network is a per-pixel function of that vector, and a view has only a few hundred
distinct vectors ("codes") among its hundred thousand pixels. So a view is stored as

- ``codes``       bool [U, C]: its distinct membership vectors (C = K + 1 channels),
- ``code_index``  int32 [H, W]: which code each pixel has,
- ``counts``      int64 [U]: pixels per code,

and everything downstream (training, descriptor maps) runs on the U codes and gathers
with ``code_index``. A descriptor map is ``table[code_index]``: exact, and small on disk.

A view with one mask or none carries no segment structure: it takes part with the
uncovered channel alone (C = 1), with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from priors.masks import label_map


class MaskMatchingWarning(UserWarning):
    """Input that mask matching can use, but in a degraded way (one line)."""


@dataclass
class ViewMasks:
    """One training view's membership codes (see the module docstring)."""

    name: str  # image name (relative to images/)
    codes: np.ndarray  # [U, C] bool, C = channels (uncovered + masks)
    code_index: np.ndarray  # [H, W] int32 into codes
    counts: np.ndarray  # [U] int64 pixels per code
    labels: np.ndarray  # [H, W] int32 finest-mask label map (0 = no mask), for union-find
    n_masks: int  # K masks used (0 when the view fell back to the uncovered channel)
    backend: str  # "sam2", "classical", "none" (no mask file) or "unknown"

    @property
    def channels(self) -> int:
        """C: the width of this view's input vector."""
        return int(self.codes.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the masks."""
        h, w = self.code_index.shape
        return int(h), int(w)

    def codes_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[U, C] float32 multi-hot input of the network."""
        return torch.from_numpy(self.codes.astype(np.float32)).to(device)


def erode3x3(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool: True where the whole 3x3 neighbourhood is True (borders replicated)."""
    p = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    out = np.ones_like(mask, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            out &= p[dy : dy + h, dx : dx + w]
    return out


def membership(masks: np.ndarray) -> np.ndarray:
    """[H, W, C] bool multi-hot input: eroded uncovered channel, then the K masks.

    ``masks`` [K, H, W] bool, sorted largest first (the file order).
    """
    uncovered = erode3x3(~masks.any(axis=0))  # [H, W]
    return np.concatenate([uncovered[..., None], np.moveaxis(masks, 0, -1)], axis=-1)


def unique_codes(member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of a [H, W, C] bool membership image.

    Returns ``codes`` [U, C] bool (sorted by pixel count, largest first), ``code_index``
    [H, W] int32 and ``counts`` [U] int64.
    """
    h, w, c = member.shape
    flat = member.reshape(-1, c)
    packed = np.packbits(flat, axis=1)  # [H*W, ceil(C/8)] uint8: cheap to unique
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    codes = flat[first[order]]
    return codes, rank[inverse.ravel()].reshape(h, w).astype(np.int32), counts[order]


def view_masks(name: str, masks: np.ndarray | None, backend: str) -> ViewMasks:
    """Build a view's codes from its [K, H, W] masks (largest first) or from none.

    ``masks`` None means the view has no mask file: give its (height, width) through a
    [0, H, W] array instead, since the codes need the size. With K <= 1 the view keeps
    only the uncovered channel and a ``MaskMatchingWarning`` says so.
    """
    if masks is None or masks.ndim != 3:
        raise ValueError(f"{name}: masks must be a bool [K, H, W] array (K may be 0)")
    masks = np.asarray(masks, dtype=bool)
    k = len(masks)
    member = membership(masks)  # [H, W, K + 1]
    n_used = k
    if k <= 1:
        warnings.warn(
            MaskMatchingWarning(
                f"{name}: {'no mask' if k == 0 else 'a single mask'}; the view takes part "
                "with the 'uncovered' channel only"
            ),
            stacklevel=2,
        )
        member = member[..., :1]
        n_used = 0
    codes, code_index, counts = unique_codes(member)
    return ViewMasks(
        name=name,
        codes=codes,
        code_index=code_index,
        counts=counts.astype(np.int64),
        labels=label_map(masks) if k else np.zeros(masks.shape[1:], np.int32),
        n_masks=n_used,
        backend=backend,
    )


def resize_index(code_index: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H, W] code index -> int64 [height, width] by nearest sampling at pixel centres.

    Pixel (i, j) of the output reads the input pixel whose area holds its centre, the rule
    of ``scene.priors.resize_nearest`` (``nearest-exact``), so maps line up with the masks
    that the prior loader gives the training cameras.
    """
    idx = torch.as_tensor(
        np.asarray(code_index) if isinstance(code_index, np.ndarray) else code_index
    )
    h, w = idx.shape
    if (h, w) == (height, width):
        return idx.long()
    ys = ((torch.arange(height, dtype=torch.float64) + 0.5) * h / height).floor().long()
    xs = ((torch.arange(width, dtype=torch.float64) + 0.5) * w / width).floor().long()
    return idx.long()[ys.clamp_(0, h - 1)][:, xs.clamp_(0, w - 1)]
