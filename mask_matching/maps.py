"""Descriptor maps on disk, and the loaders the training side uses.

``<scene>/mask_matching/`` (written by ``python -m mask_matching``, meta.json last):

===========================  ==============================================================
``meta.json``                ``{"n_views", "train": [names], "split_protocol", "levels",
                             "dim", "tolerance", "mask_backend", "maps": {name: file}}``
``model.pt``                 the descriptor network: ``{"config", "state_dict", "train"}``
``maps/<stem>.npz``          one training view: ``code_index`` int32 [H, W], ``table``
                             float32 [U, L, D] (the descriptor of each code),
                             ``codes`` bool [U, C], ``counts`` int64 [U],
                             ``uf_ids`` int32 [H, W] (union-find global segment, -1 none)
``preview/<stem>.png``       the picture of the matching (see ``report.py``)
``report.json``, ``report.md``  segments found, match agreement per level, timings
===========================  ==============================================================

A view's descriptor map is ``table[code_index]`` ([H, W, L, D]; ``DescriptorMap.dense``
gives [L, D, H, W]) at the resolution of its masks; the loaders resize the code index with
nearest sampling, which resizes the map exactly as the prior loader resizes the masks.

Training side::

    from mask_matching import load_descriptor_maps, views_agree
    maps = load_descriptor_maps(scene_dir, [c.image_name for c in train_cams],
                                sizes={c.image_name: (c.image_height, c.image_width) ...},
                                device="cuda")
    desc, inside = maps[name].sample(xy)          # xy [N, 2] pixels, centre of (0, 0) at 0.5
    ok = views_agree(desc_source, desc_target)    # [N] bool, best level, tolerance 0.02

``load_descriptor_maps`` refuses maps made for other training views (another ``--n_views``
or split) with the command that remakes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from mask_matching.inputs import ViewMasks, resize_index
from mask_matching.network import DescriptorNet
from priors.io import atomic_write, save_npz
from scene.errors import SceneError

OUT_DIR = "mask_matching"
META = "meta.json"
MODEL = "model.pt"


def output_dir(scene_dir: str) -> str:
    return os.path.join(scene_dir, OUT_DIR)


def map_file(name: str) -> str:
    """``maps/<stem>.npz`` for an image name (its sub-folder kept)."""
    return "maps/" + os.path.splitext(name.replace("\\", "/"))[0] + ".npz"


def remake_command(scene_dir: str, n_views: int, protocol: str = "<protocol>") -> str:
    return (
        f"python -m mask_matching -s {scene_dir} --n_views {n_views} "
        f"--split_protocol {protocol} --overwrite"
    )


@dataclass
class DescriptorMap:
    """One view's descriptors: ``table[code_index]``, kept factored (exact and small)."""

    name: str
    code_index: torch.Tensor  # [H, W] int64
    table: torch.Tensor  # [U, L, D] float32
    codes: torch.Tensor | None = None  # [U, C] bool membership of each code (channel 0:
    # uncovered), for the losses that group pixels by segment (utils/feature_field.py)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.code_index.shape[0]), int(self.code_index.shape[1])

    def dense(self) -> torch.Tensor:
        """[L, D, H, W] float32 descriptor map."""
        return self.table[self.code_index].permute(2, 3, 0, 1)

    def sample(self, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Descriptors at pixel coordinates ``xy`` [N, 2] (x, y; pixel (0, 0) spans
        [0, 1) x [0, 1), its centre at 0.5): ([N, L, D], inside [N] bool). Points outside
        the map read the nearest border pixel and have ``inside`` False."""
        h, w = self.size
        col = torch.floor(xy[:, 0])
        row = torch.floor(xy[:, 1])
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        col = col.clamp(0, w - 1).long()
        row = row.clamp(0, h - 1).long()
        return self.table[self.code_index[row, col]], inside

    def resized(self, height: int, width: int) -> DescriptorMap:
        index = resize_index(self.code_index, height, width)
        return DescriptorMap(self.name, index, self.table, self.codes)

    def to(self, device: torch.device | str) -> DescriptorMap:
        codes = None if self.codes is None else self.codes.to(device)
        return DescriptorMap(self.name, self.code_index.to(device), self.table.to(device), codes)


# ------------------------------------------------------------------------------ writing


def write_view_map(
    folder: str, view: ViewMasks, table: np.ndarray, uf_ids: np.ndarray | None = None
) -> str:
    """Write ``maps/<stem>.npz`` of one view under ``folder``; returns its relative path."""
    rel = map_file(view.name)
    arrays = {
        "code_index": view.code_index.astype(np.int32),
        "table": np.asarray(table, dtype=np.float32),
        "codes": view.codes,
        "counts": view.counts.astype(np.int64),
    }
    if uf_ids is not None:
        arrays["uf_ids"] = uf_ids.astype(np.int32)
    save_npz(os.path.join(folder, rel), **arrays)
    return rel


def write_model(folder: str, net: DescriptorNet, train: list[str]) -> None:
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_write(os.path.join(folder, MODEL)) as f:
        torch.save({"config": net.config(), "state_dict": state, "train": list(train)}, f)


# ------------------------------------------------------------------------------ reading


def load_meta(scene_dir: str) -> dict:
    """``<scene>/mask_matching/meta.json``; SceneError naming the command when absent."""
    path = os.path.join(output_dir(scene_dir), META)
    if not os.path.isfile(path):
        raise SceneError(
            f"{path}: missing; make the descriptor maps with python -m mask_matching -s "
            f"{scene_dir} --n_views <N> --split_protocol <protocol>"
        )
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SceneError(f"{path}: cannot read it ({e}); rerun python -m mask_matching") from None
    if not isinstance(meta.get("train"), list) or "n_views" not in meta:
        raise SceneError(f"{path}: no 'train' list or 'n_views'; rerun python -m mask_matching")
    return meta


def check_meta(meta: dict, scene_dir: str, train_names: list[str]) -> None:
    """Refuse maps made for other training views (another --n_views, split or views)."""
    made = list(meta["train"])
    if len(made) != len(train_names) or set(made) != set(train_names):
        protocol = meta.get("split_protocol", "<protocol>")
        raise SceneError(
            f"{os.path.join(output_dir(scene_dir), META)}: descriptor maps were made for "
            f"--n_views {meta['n_views']} ({', '.join(made)}) but this run trains on "
            f"{len(train_names)} views ({', '.join(train_names)}); rerun "
            f"{remake_command(scene_dir, len(train_names), protocol)}"
        )


def load_descriptor_maps(
    scene_dir: str,
    train_names: list[str],
    sizes: dict[str, tuple[int, int]] | tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, DescriptorMap]:
    """Descriptor maps of the training views, checked against ``meta.json``.

    Args:
        scene_dir: the scene folder.
        train_names: this run's training image names (any order).
        sizes: (height, width) to resize every map to, or a dict name -> (height, width)
            (the cameras' training resolutions); None keeps the masks' resolution.
        device: where the tensors go.

    Returns:
        name -> ``DescriptorMap`` (code index [H, W] int64, table [U, L, D] float32).
    """
    meta = load_meta(scene_dir)
    check_meta(meta, scene_dir, train_names)
    files = meta.get("maps", {})
    out = {}
    for name in train_names:
        path = os.path.join(output_dir(scene_dir), files.get(name, map_file(name)))
        try:
            with np.load(path, allow_pickle=False) as z:
                code_index = torch.from_numpy(z["code_index"].astype(np.int64))
                table = torch.from_numpy(z["table"].astype(np.float32))
                codes = torch.from_numpy(z["codes"].astype(bool)) if "codes" in z else None
        except (OSError, ValueError, KeyError) as e:
            raise SceneError(
                f"{path}: cannot read the descriptor map ({e}); rerun "
                f"{remake_command(scene_dir, len(train_names), meta.get('split_protocol', 'P'))}"
            ) from None
        dm = DescriptorMap(name, code_index, table, codes)
        size = sizes.get(name) if isinstance(sizes, dict) else sizes
        if size is not None:
            dm = dm.resized(int(size[0]), int(size[1]))
        out[name] = dm.to(device)
    return out


def target_views(
    scene_dir: str, train_names: list[str], source: str, k: int = 6, min_matches: int = 0
) -> list[str]:
    """Up to ``k`` other training views for ``source``, most COLMAP matches first.

    The visibility loss compares a Gaussian's descriptor in the source view with these
    views (seeds digest 1.4, with its defect fixed: chosen by match count, never the source
    itself). Ties keep the training-view order (shuffle them if the caller wants
    RegSegField's random tie-break); views with fewer than ``min_matches`` matches with the
    source are left out (0 keeps every other view, the unmatched ones last).
    """
    meta = load_meta(scene_dir)
    check_meta(meta, scene_dir, train_names)
    order = list(meta["train"])
    if source not in order:
        raise SceneError(f"{source} is not a training view of {output_dir(scene_dir)}")
    counts = np.asarray(meta["match_counts"], dtype=np.int64)[order.index(source)]  # [V]
    others = [
        (-int(counts[i]), i)
        for i in range(len(order))
        if order[i] != source and counts[i] >= min_matches
    ]
    return [order[i] for _, i in sorted(others)[:k]]


def load_descriptor_model(
    scene_dir: str, train_names: list[str], device: torch.device | str = "cpu"
) -> tuple[DescriptorNet, list[ViewMasks]]:
    """The trained network and the training views' codes, in the network's view order.

    For the iterative refinement (issue 14 item 4): retrain the network against rendered
    features and recompute the maps with ``mask_matching.descriptor_tables(net, views)``.
    The views come from ``maps/<stem>.npz``, so ``masks/`` is not read again.
    """
    meta = load_meta(scene_dir)
    check_meta(meta, scene_dir, train_names)
    path = os.path.join(output_dir(scene_dir), MODEL)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise SceneError(f"{path}: cannot load the descriptor network ({e})") from None
    net = DescriptorNet(**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    views = []
    files = meta.get("maps", {})
    for name in ckpt["train"]:
        mp = os.path.join(output_dir(scene_dir), files.get(name, map_file(name)))
        with np.load(mp, allow_pickle=False) as z:
            views.append(
                ViewMasks(
                    name=name,
                    codes=z["codes"],
                    code_index=z["code_index"],
                    counts=z["counts"],
                    labels=np.zeros(z["code_index"].shape, np.int32),
                    n_masks=int(z["codes"].shape[1]) - 1,
                    backend=str(meta.get("mask_backend", "unknown")),
                )
            )
    return net.to(device).eval(), views
