"""Sparse-view split for the COLMAP stage.

Uses ``scene.splits.make_split`` when the scene package provides it; until then a minimal
copy of the same rules (seeds digest section 6). TEMPORARY: delete the fallback once
scene/splits.py is on main.
"""

from __future__ import annotations

import json
import os

import numpy as np

from sfm.errors import SceneError

DTU_TRAIN_IDS = [25, 22, 28, 40, 44, 48, 0, 8, 13]
DTU_EXCLUDE_IDS = [3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 36, 37, 38, 39]


def read_split_json(scene_dir: str) -> dict | None:
    path = os.path.join(scene_dir, "split.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            split = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SceneError(f"{path}: cannot read split ({e}); fix or delete the file") from e
    if not isinstance(split, dict) or not isinstance(split.get("train"), list):
        raise SceneError(f"{path}: needs a 'train' list of image names")
    return split


def _fallback_make_split(
    names: list[str],
    protocol: str,
    n_views: int,
    train_views: list[str] | None = None,
    predefined_split: dict | None = None,
) -> dict:
    names = sorted(names)
    if train_views:
        protocol = "custom"
        train = list(train_views)
        test = [n for n in (predefined_split or {}).get("test", []) if n not in train]
    elif protocol in ("llff", "mip360"):
        test = [n for i, n in enumerate(names) if i % 8 == 0]
        pool = [n for i, n in enumerate(names) if i % 8 != 0]
        n = n_views or len(pool)
        if n > len(pool):
            raise SceneError(f"--n_views {n} but only {len(pool)} non-test images")
        idx = np.round(np.linspace(0, len(pool) - 1, n)).astype(int)
        train = [pool[i] for i in idx]
    elif protocol == "dtu":
        if len(names) < 49:
            raise SceneError(
                f"dtu protocol needs the 49 DTU views (ids 0..48), scene has {len(names)} images"
            )
        n = n_views or 3
        train = [names[i] for i in DTU_TRAIN_IDS[:n]]
        test = [names[i] for i in range(49) if i not in DTU_TRAIN_IDS + DTU_EXCLUDE_IDS]
    elif protocol == "custom":
        if not predefined_split:
            raise SceneError("custom split: the scene has no split.json; pass --train_views")
        train = list(predefined_split["train"])
        test = list(predefined_split.get("test", []))
        if n_views and n_views != len(train):
            if n_views > len(train):
                raise SceneError(
                    f"--n_views {n_views} but split.json lists {len(train)} training views"
                )
            idx = np.round(np.linspace(0, len(train) - 1, n_views)).astype(int)
            train = [train[i] for i in idx]
    else:
        raise SceneError(f"unknown split protocol {protocol!r} (llff, dtu, mip360, custom)")
    missing = [n for n in train + test if n not in set(names)]
    if missing:
        raise SceneError(f"split names not among the scene's images: {missing[:5]}")
    return {"protocol": protocol, "n_views": len(train), "train": train, "test": test}


def make_split(
    names: list[str],
    protocol: str,
    n_views: int,
    train_views: list[str] | None = None,
    predefined_split: dict | None = None,
) -> dict:
    """``{"protocol", "n_views", "train", "test"}`` for the scene's image names."""
    try:
        from scene.splits import make_split as scene_make_split
    except ImportError:
        return _fallback_make_split(names, protocol, n_views, train_views, predefined_split)
    return scene_make_split(
        names, protocol, n_views, train_views, predefined_split, eval=True
    )  # pragma: no cover
