"""NeRF/Blender or instant-ngp ``transforms*.json`` -> COLMAP scene folder with split.json.

    # NeRF synthetic: transforms_{train,val,test}.json, the dataset's own split
    python scripts/prepare_blender.py --src <nerf_synthetic>/lego --out data_local/lego
    # instant-ngp capture (one transforms.json with distortion), 12 train / 12 test frames
    python scripts/prepare_blender.py --src <ngp>/fox --out data_local/fox \\
        --transforms transforms.json --split alternate --n_views 12

Poses are OpenGL camera-to-world; intrinsics come from ``fl_x/fl_y/cx/cy/w/h`` (or
``camera_angle_x/_y``), file-level or per frame. Images with OpenCV distortion (``k1 k2 p1
p2``, ``k3``; ``is_fisheye`` with ``k1..k4``) are undistorted to PINHOLE with COLMAP's
undistorter (pycolmap, in process), as 3DGS's convert.py does; others are copied as they are
(RGBA kept). Frames whose image file is missing are skipped with one warning line.

Splits (written to split.json): ``auto`` = the dataset's train/test files when present
(test = transforms_test.json, else transforms_val.json; ``--n_views`` picks round(linspace)
over the train list), none for a single transforms.json; ``alternate`` = 2N frames sampled
uniformly, alternating train/test (SPARS3R/InstantSplat); ``llff`` = every 8th frame test,
round(linspace) over the rest; ``none`` = no split.json.
"""

from __future__ import annotations

import json
import os
import sys
from argparse import ArgumentParser

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from scene.readers.blender import transforms_intrinsics  # noqa: E402
from scene.splits import linspace_pick, make_split  # noqa: E402
from sfm.colmap_ops import set_colmap_log_level  # noqa: E402
from sfm.converters import (  # noqa: E402
    ViewRecord,
    alternate_split,
    copy_images,
    opengl_c2w_to_w2c,
    staged_output,
    undistort_scene,
    unique_names,
    write_split,
    write_views_model,
)
from sfm.errors import SceneError  # noqa: E402

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2", "is_fisheye")


def _load_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SceneError(f"{path}: cannot read transforms ({e})") from e


def _resolve_image(base: str, file_path: str) -> str | None:
    path = os.path.normpath(os.path.join(base, file_path))
    if os.path.isfile(path):
        return path
    for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):  # Blender omits the extension
        if os.path.isfile(path + ext):
            return path + ext
    return None


def frame_view(meta: dict, frame: dict, image_path: str) -> ViewRecord:
    """One frame's pose and intrinsics (frame-level keys override file-level ones)."""
    m = {k: meta[k] for k in INTRINSIC_KEYS + DISTORTION_KEYS if k in meta}
    m.update({k: frame[k] for k in INTRINSIC_KEYS + DISTORTION_KEYS if k in frame})
    if "w" in m and "h" in m:
        w, h = int(round(m["w"])), int(round(m["h"]))
    else:
        with Image.open(image_path) as im:
            w, h = im.size
    fx, fy, cx, cy = transforms_intrinsics(m, w, h, f"{image_path}: its transforms")
    R, t = opengl_c2w_to_w2c(np.asarray(frame["transform_matrix"], dtype=np.float64))
    k = {key: float(m.get(key, 0.0)) for key in ("k1", "k2", "k3", "k4", "p1", "p2")}
    if m.get("is_fisheye"):
        dist, model = (k["k1"], k["k2"], k["k3"], k["k4"]), "OPENCV_FISHEYE"
    elif k["k3"] or k["k4"]:
        dist, model = (
            (k["k1"], k["k2"], k["p1"], k["p2"], k["k3"], k["k4"], 0.0, 0.0),
            "FULL_OPENCV",
        )
    else:
        dist, model = (k["k1"], k["k2"], k["p1"], k["p2"]), "OPENCV"
    dist = dist if any(dist) else ()
    return ViewRecord("", R, t, w, h, fx, fy, cx, cy, dist, model)


def read_transforms(src: str, transforms: str | None) -> tuple[list, dict[str, list[int]]]:
    """[(image path, view)], and the frame indices of each predefined split file."""
    if transforms:
        files = {"all": os.path.join(src, transforms)}
    elif os.path.isfile(os.path.join(src, "transforms_train.json")):
        files = {
            s: os.path.join(src, f"transforms_{s}.json")
            for s in ("train", "val", "test")
            if os.path.isfile(os.path.join(src, f"transforms_{s}.json"))
        }
    elif os.path.isfile(os.path.join(src, "transforms.json")):
        files = {"all": os.path.join(src, "transforms.json")}
    else:
        raise SceneError(f"{src}: no transforms.json or transforms_train.json")
    records, groups, missing = [], {}, []
    for split, path in files.items():
        if not os.path.isfile(path):
            raise SceneError(f"{path}: missing")
        meta = _load_json(path)
        frames = meta.get("frames")
        if not isinstance(frames, list):
            raise SceneError(f"{path}: no 'frames' list")
        for fr in frames:
            img = _resolve_image(os.path.dirname(path), fr.get("file_path", ""))
            if img is None:
                missing.append(fr.get("file_path", "?"))
                continue
            groups.setdefault(split, []).append(len(records))
            records.append((img, frame_view(meta, fr, img)))
    if missing:
        print(f"warning: {len(missing)} frame(s) without an image file skipped ({missing[0]}, ...)")
    if not records:
        raise SceneError(f"{src}: no frame of the transforms has its image file")
    return records, groups


def prepare_blender(
    src: str,
    out: str,
    transforms: str | None,
    split_mode: str,
    n_views: int,
    overwrite: bool,
) -> str:
    records, groups = read_transforms(src, transforms)
    names = unique_names([p for p, _ in records])
    for name, (_, v) in zip(names, records):
        v.name = name
    order = np.argsort(names)  # image ids follow sorted names
    with staged_output(out, overwrite) as tmp:
        img_dir = os.path.join(tmp, "images")
        os.makedirs(img_dir)
        copy_images([(p, os.path.join(img_dir, n)) for (p, _), n in zip(records, names)])
        views = [records[i][1] for i in order]
        model_dir = os.path.join(tmp, "sparse", "0")
        write_views_model(views, model_dir)
        distorted = any(v.distortion for v in views)
        if distorted:
            undistort_scene(tmp, img_dir, model_dir)
        split = None
        by_name = {s: sorted(names[i] for i in idx) for s, idx in groups.items()}
        if split_mode == "alternate":
            split = alternate_split(names, n_views or 12)
        elif split_mode == "llff":
            split = make_split(names, "llff", n_views)
        elif split_mode == "auto" and "train" in by_name:
            # The dataset's own lists; --n_views spreads N views over its training list.
            train = by_name["train"]
            if n_views:
                if n_views > len(train):
                    raise SceneError(f"--n_views {n_views} but {len(train)} training frames")
                train = linspace_pick(train, n_views)
            test = by_name.get("test", by_name.get("val", []))
            split = {"protocol": "custom", "n_views": len(train), "train": train, "test": test}
        if split is not None:
            write_split(tmp, split)
    what = (
        f"split.json {split['n_views']} train / {len(split['test'])} test" if split else "no split"
    )
    return (
        f"wrote {out}: {len(names)} views{', undistorted to PINHOLE' if distorted else ''}, {what}"
    )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="transforms.json scene -> COLMAP scene folder")
    p.add_argument("--src", required=True, help="folder holding the transforms file(s)")
    p.add_argument("--out", required=True, help="output scene folder")
    p.add_argument("--transforms", default=None, help="one transforms file (relative to --src)")
    p.add_argument(
        "--split", default="auto", choices=["auto", "alternate", "llff", "none"], help="split.json"
    )
    p.add_argument("--n_views", type=int, default=0, help="training views (0: all of the split)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a = p.parse_args(argv)
    set_colmap_log_level(False)
    try:
        print(prepare_blender(a.src, a.out, a.transforms, a.split, a.n_views, a.overwrite))
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
