"""Sparse-view split for the COLMAP stage.

Uses ``scene.splits.make_split`` when the scene package provides it; until then a minimal
copy of the same rules (seeds digest section 6). TEMPORARY: delete the fallback once
scene/splits.py is on main.
"""

from __future__ import annotations

import json
import os

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


def linspace_pick(pool: list[str], n: int) -> list[str]:
    """``n`` names spread evenly over ``pool`` (FreeNeRF/FSGS rounding)."""
    if n <= 1:
        return pool[:n]
    return [pool[round(i * (len(pool) - 1) / (n - 1))] for i in range(n)]


def _fallback_make_split(
    names: list[str],
    protocol: str,
    n_views: int,
    train_views: list[str] | None,
    source_split: dict | None,
    where: str,
) -> dict:
    names = sorted(names)
    every_8th = [n for i, n in enumerate(names) if i % 8 == 0]
    if train_views:
        protocol = "custom"
    if protocol in ("llff", "mip360"):
        pool = [n for n in names if n not in set(every_8th)]
        if n_views > len(pool):
            raise SceneError(f"{where}: --n_views {n_views} but only {len(pool)} non-test images")
        return {
            "protocol": protocol,
            "n_views": n_views,
            "train": linspace_pick(pool, n_views),
            "test": every_8th,
        }
    if protocol == "dtu":
        if len(names) != 49:
            raise SceneError(
                f"{where}: --split_protocol dtu needs the 49 DTU views, the scene has {len(names)}"
            )
        skip = set(DTU_TRAIN_IDS + DTU_EXCLUDE_IDS)
        return {
            "protocol": "dtu",
            "n_views": n_views,
            "train": [names[i] for i in DTU_TRAIN_IDS[:n_views]],
            "test": [names[i] for i in range(49) if i not in skip],
        }
    if protocol != "custom":
        raise SceneError(f"{where}: unknown --split_protocol {protocol!r}")
    if train_views:
        train, test_pool = list(train_views), every_8th
    elif source_split is not None:
        train, test_pool = list(source_split["train"]), list(source_split.get("test", []))
    else:
        raise SceneError(f"{where}: --split_protocol custom needs --train_views or split.json")
    unknown = [n for n in train + test_pool if n not in set(names)]
    if unknown:
        raise SceneError(f"{where}: unknown image name(s) {', '.join(unknown[:5])}")
    if n_views:
        if n_views > len(train):
            raise SceneError(f"{where}: --n_views {n_views} > {len(train)} training views given")
        train = train[:n_views]
    test = sorted(n for n in test_pool if n not in set(train))
    return {"protocol": "custom", "n_views": n_views, "train": train, "test": test}


def make_split(
    names: list[str],
    protocol: str,
    n_views: int,
    train_views: list[str] | None = None,
    source_split: dict | None = None,
    where: str = "scene",
) -> dict:
    """``{"protocol", "n_views", "train", "test"}`` for the scene's image names.

    ``source_split``: the scene's split.json (used by the custom protocol).
    """
    try:
        from scene.splits import make_split as scene_make_split
    except ImportError:
        return _fallback_make_split(names, protocol, n_views, train_views, source_split, where)
    return scene_make_split(  # pragma: no cover - once the scene package is merged
        names,
        protocol,
        n_views,
        train_views or None,
        None,
        eval=True,
        source_split=source_split,
        where=where,
    )
