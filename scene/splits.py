"""Train/test splits of the sparse-view protocols, and ``split.json``.

``make_split`` is pure: image names in, a split dict out::

    {"protocol": "llff" | "dtu" | "mip360" | "custom" | "3dgs",
     "n_views": N,            # as requested; 0 = every non-test view
     "train": [names],        # in protocol order (dtu: 25, 22, 28, ...)
     "test": [names]}         # sorted by name

Rules (names are compared as sorted strings, as 3DGS sorts ``image_name``):

- no ``n_views`` and no ``train_views`` ("3dgs"): 3DGS ``--eval``: test = every 8th name
  (index % 8 == 0), train = the rest; with a predefined split (Blender train/test files)
  its lists; without ``eval`` every view trains and there is no test view.
- ``llff`` / ``mip360``: test = every 8th name, pool = the rest (or the predefined train
  and test lists); train = ``pool[round(i)] for i in linspace(0, len(pool) - 1, N)``
  with Python's ``round`` as FreeNeRF/FSGS do.
- ``dtu``: the 49 DTU views by sorted index; train = the first N of
  25, 22, 28, 40, 44, 48, 0, 8, 13; test = 0..48 minus those nine and minus the excluded
  3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 36, 37, 38, 39 (25 views, the pixelNeRF split).
- ``custom``: ``train_views`` as given (names or stems; first N when ``n_views`` is set),
  test = the every-8th names (or predefined test names) not in train; without
  ``train_views``, the scene folder's own ``split.json`` (its train, first N, and test).
"""

from __future__ import annotations

import json
import os

import numpy as np

from scene.errors import SceneError

LLFF_HOLD = 8
DTU_TRAIN_IDS = [25, 22, 28, 40, 44, 48, 0, 8, 13]
DTU_EXCLUDE_IDS = [3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 36, 37, 38, 39]
DTU_NUM_VIEWS = 49
PROTOCOLS = ("llff", "dtu", "mip360", "custom")


def every_8th(names: list[str]) -> list[str]:
    """3DGS/LLFF hold-out: sorted names whose index is a multiple of 8."""
    return [n for i, n in enumerate(sorted(names)) if i % LLFF_HOLD == 0]


def linspace_pick(pool: list[str], n_views: int) -> list[str]:
    """``n_views`` names spread evenly over ``pool`` (FreeNeRF/FSGS rounding)."""
    idx = np.linspace(0, len(pool) - 1, n_views)
    return [pool[round(float(i))] for i in idx]


def _resolve_names(requested: list[str], names: list[str], where: str) -> list[str]:
    """Map names or unique stems to scene image names; SceneError on unknown ones."""
    by_name = set(names)
    by_stem: dict[str, list[str]] = {}
    for n in names:
        by_stem.setdefault(os.path.splitext(os.path.basename(n))[0], []).append(n)
        by_stem.setdefault(os.path.splitext(n)[0], []).append(n)
    out, unknown = [], []
    for r in requested:
        if r in by_name:
            out.append(r)
        elif len(set(by_stem.get(r, []))) == 1:
            out.append(by_stem[r][0])
        else:
            unknown.append(r)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise SceneError(
            f"{where}: unknown image name(s) {shown}; use names from the scene's image folder "
            f"(e.g. {', '.join(sorted(names)[:3])})"
        )
    if len(set(out)) != len(out):
        raise SceneError(f"{where}: the same view is listed twice in the training views")
    return out


def make_split(
    names: list[str],
    protocol: str = "llff",
    n_views: int = 0,
    train_views: list[str] | None = None,
    predefined_split: dict[str, list[str]] | None = None,
    eval: bool = False,
    source_split: dict | None = None,
    where: str = "scene",
) -> dict:
    """Train and test image names under a protocol (rules in the module docstring).

    Args:
        names: every image name of the scene.
        protocol: llff, dtu, mip360 or custom (``train_views`` implies custom).
        n_views: number of training views; 0 = no sparse-view protocol (3DGS behaviour).
        train_views: explicit training names or stems (``--train_views``).
        predefined_split: the dataset's own {"train", "test"} lists (Blender), or None.
        eval: 3DGS ``--eval`` (only used when no sparse-view protocol applies).
        source_split: the scene folder's split.json contents (``custom`` without names).
        where: scene folder, named in error messages.
    """
    names = sorted(names)
    n_views = int(n_views or 0)
    if n_views < 0:
        raise SceneError(f"{where}: --n_views must be >= 0, got {n_views}")
    if predefined_split:
        known = set(names)
        predefined_split = {
            k: [n for n in predefined_split.get(k, []) if n in known] for k in ("train", "test")
        }
    if train_views:
        protocol = "custom"
    elif n_views == 0 and protocol != "custom":
        if not eval:
            return {"protocol": "3dgs", "n_views": 0, "train": names, "test": []}
        if predefined_split:
            test = sorted(predefined_split["test"])
            train = sorted(predefined_split["train"])
        else:
            test = every_8th(names)
            train = [n for n in names if n not in set(test)]
        return {"protocol": "3dgs", "n_views": 0, "train": train, "test": test}

    if protocol not in PROTOCOLS:
        raise SceneError(f"{where}: unknown --split_protocol {protocol!r}; use one of {PROTOCOLS}")

    def default_test() -> list[str]:
        if predefined_split:
            return sorted(predefined_split["test"])
        return every_8th(names)

    if protocol in ("llff", "mip360"):
        test = default_test()
        if predefined_split:
            pool = sorted(n for n in predefined_split["train"] if n not in set(test))
        else:
            pool = [n for n in names if n not in set(test)]
        if n_views > len(pool):
            raise SceneError(
                f"{where}: --n_views {n_views} is larger than the {len(pool)} views available "
                f"for training under --split_protocol {protocol}; use --n_views <= {len(pool)}"
            )
        return {
            "protocol": protocol,
            "n_views": n_views,
            "train": linspace_pick(pool, n_views),
            "test": test,
        }

    if protocol == "dtu":
        if len(names) != DTU_NUM_VIEWS:
            raise SceneError(
                f"{where}: --split_protocol dtu needs the {DTU_NUM_VIEWS} DTU views, the scene "
                f"has {len(names)}; use --split_protocol llff or custom"
            )
        if n_views > len(DTU_TRAIN_IDS):
            raise SceneError(
                f"{where}: --n_views {n_views} is larger than the {len(DTU_TRAIN_IDS)} DTU "
                f"training views; use --n_views <= {len(DTU_TRAIN_IDS)}"
            )
        train = [names[i] for i in DTU_TRAIN_IDS[:n_views]]
        skip = set(DTU_TRAIN_IDS) | set(DTU_EXCLUDE_IDS)
        test = [names[i] for i in range(DTU_NUM_VIEWS) if i not in skip]
        return {"protocol": "dtu", "n_views": n_views, "train": train, "test": test}

    # custom
    if train_views:
        train = _resolve_names(list(train_views), names, f"{where} (--train_views)")
        test_pool = default_test()
    elif source_split is not None:
        split_file = os.path.join(where, "split.json")
        train = _resolve_names(list(source_split.get("train", [])), names, split_file)
        test_pool = _resolve_names(list(source_split.get("test", [])), names, split_file)
        if not train:
            raise SceneError(f"{split_file}: the 'train' list is empty; list training views")
    else:
        raise SceneError(
            f"{where}: --split_protocol custom needs --train_views or {where}/split.json; "
            "give one of them"
        )
    if n_views:
        if n_views > len(train):
            raise SceneError(
                f"{where}: --n_views {n_views} is larger than the {len(train)} training views "
                f"given; use --n_views <= {len(train)}"
            )
        train = train[:n_views]
    test = sorted(n for n in test_pool if n not in set(train))
    return {"protocol": "custom", "n_views": n_views, "train": train, "test": test}


def save_split(split: dict, path: str) -> str:
    """Write ``split`` to ``path`` (a split.json file or a folder to hold one), atomically.

    Returns the file path.
    """
    if os.path.isdir(path) or not path.endswith(".json"):
        path = os.path.join(path, "split.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = {k: split[k] for k in ("protocol", "n_views", "train", "test")}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load_split(path: str) -> dict:
    """Read a split.json (``path`` is the file or its folder) and check its shape."""
    if os.path.isdir(path) or not path.endswith(".json"):
        path = os.path.join(path, "split.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SceneError(
            f"{path}: split file not found; train the model first (train.py writes it) or "
            "point -m at the model folder"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise SceneError(f"{path}: cannot parse the split file ({e}); fix or delete it") from None
    ok = (
        isinstance(data, dict)
        and isinstance(data.get("train"), list)
        and isinstance(data.get("test", []), list)
        and all(isinstance(n, str) for n in data["train"] + data.get("test", []))
    )
    if not ok:
        raise SceneError(
            f'{path}: expected {{"train": [names], "test": [names]}}; fix or delete the file'
        )
    return {
        "protocol": str(data.get("protocol", "custom")),
        "n_views": int(data.get("n_views", len(data["train"]))),
        "train": list(data["train"]),
        "test": list(data.get("test", [])),
    }
