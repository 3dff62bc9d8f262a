"""What segment.py writes into ``<model>/segments/``: label renders, overlays, PLYs.

Label maps are rendered, not projected: each Gaussian carries the one-hot code of its cluster
as K feature channels, ``render(..., features=onehot)`` blends them like colours, and a
pixel's label is the channel with the largest blended weight (the cluster that contributes
most of the pixel's opacity). Pixels whose accumulated opacity is below ``min_alpha`` see
nothing and get the void label -1. So occlusion, splat footprints and transparency are those
of the RGB render, in the same pass.

Layout::

    segments/labels.npy                  int32 [N] cluster of every Gaussian (PLY order)
    segments/cluster_<i>.ply             the Gaussians of cluster i (Inria PLY)
    segments/{train,test}/labels/<stem>.png   uint8/uint16 label + 1 (0 = void)
    segments/{train,test}/overlay/<stem>.png  label colours over the RGB render
    segments/selected.ply                the selected segment (--select / region growing)
    segments/selected/{train,test}/<stem>.png its renders (black background)
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch import nn

from gaussian.model import GaussianModel
from gaussian.ply import save_ply
from gaussian_renderer import render
from utils.image_utils import to_uint8


def subset_model(model: GaussianModel, keep: np.ndarray | torch.Tensor) -> GaussianModel:
    """A new model holding the Gaussians where ``keep`` [N] is true (params and extras)."""
    keep_t = torch.as_tensor(np.asarray(keep) if not torch.is_tensor(keep) else keep)
    keep_t = keep_t.to(model.device, dtype=torch.bool)
    out = GaussianModel(model.max_sh_degree)
    out.active_sh_degree = model.active_sh_degree
    out.params = {k: nn.Parameter(v.detach()[keep_t].clone(), requires_grad=False)
                  for k, v in model.params.items()}  # fmt: skip
    out.extras = {k: v[keep_t].clone() for k, v in model.extras.items()
                  if torch.is_tensor(v) and v.shape[:1] == keep_t.shape}  # fmt: skip
    return out


def palette(k: int) -> np.ndarray:
    """[k, 3] uint8 distinct colours (golden-ratio hues, alternating brightness)."""
    h = (np.arange(k) * 0.618034) % 1.0
    v = np.where(np.arange(k) % 2 == 0, 0.95, 0.7)
    kk = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0
    rgb = v[:, None] * (1.0 - 0.8 * np.clip(np.minimum(kk, 4.0 - kk), 0.0, 1.0))
    return np.round(rgb * 255).astype(np.uint8)


@torch.no_grad()
def render_label_map(
    camera, model, pipe, bg, labels: torch.Tensor, k: int, backend: str = "auto",
    min_alpha: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(label map [H, W] int32 with -1 = void, RGB render [H, W, 3] uint8) of one view.

    ``labels`` [N] long in [0, k) (negative: the Gaussian belongs to no cluster and renders
    into no channel, but still occludes).
    """
    n = model.num_gaussians
    onehot = torch.zeros(n, k, device=model.device)
    valid = labels >= 0
    onehot[torch.nonzero(valid).squeeze(1), labels[valid]] = 1.0
    out = render(camera, model, pipe, bg, features=onehot, backend=backend, depth=False)
    lab = out["features"].argmax(0).to(torch.int32)
    lab[out["alpha"][0] < min_alpha] = -1
    lab[out["features"].max(0).values <= 0] = -1
    return lab.cpu().numpy(), to_uint8(out["render"])


def overlay(
    rgb: np.ndarray, labels: np.ndarray, colors: np.ndarray, strength: float = 0.55
) -> np.ndarray:
    """Label colours blended over ``rgb`` [H, W, 3] uint8 (void pixels left as they are)."""
    out = rgb.astype(np.float32).copy()
    m = labels >= 0
    out[m] = (1 - strength) * out[m] + strength * colors[labels[m]].astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def save_label_png(path: str, labels: np.ndarray) -> None:
    """label + 1 (0 = void) as 8-bit PNG, 16-bit when there are more than 254 labels."""
    v = labels.astype(np.int64) + 1
    arr = v.astype(np.uint8) if v.max(initial=0) < 256 else v.astype(np.uint16)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def write_cluster_plys(model: GaussianModel, labels: np.ndarray, k: int, folder: str) -> list[str]:
    """``cluster_<i>.ply`` for every non-empty cluster i; returns the paths written."""
    paths = []
    for i in range(k):
        keep = labels == i
        if not keep.any():
            continue
        path = os.path.join(folder, f"cluster_{i}.ply")
        save_ply(subset_model(model, keep), path)
        paths.append(path)
    return paths


@torch.no_grad()
def alpha_mask(camera, model: GaussianModel, pipe, bg, backend: str = "auto",
               min_alpha: float = 0.5) -> np.ndarray:  # fmt: skip
    """[H, W] bool: where a (sub)model rendered alone reaches ``min_alpha`` accumulated
    opacity (the silhouette of an extracted object; all False for an empty model)."""
    if model.num_gaussians == 0:
        return np.zeros((camera.image_height, camera.image_width), bool)
    out = render(camera, model, pipe, bg, backend=backend, depth=False)
    return (out["alpha"][0] >= min_alpha).cpu().numpy()


@torch.no_grad()
def render_segment(camera, model: GaussianModel, pipe, bg, backend: str = "auto") -> np.ndarray:
    """RGB render [H, W, 3] uint8 of a (sub)model; an empty model renders the background."""
    if model.num_gaussians == 0:
        h, w = camera.image_height, camera.image_width
        return np.broadcast_to(to_uint8(bg[:, None, None].expand(3, h, w)), (h, w, 3)).copy()
    return to_uint8(render(camera, model, pipe, bg, backend=backend, depth=False)["render"])
