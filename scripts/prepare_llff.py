"""LLFF scene (poses_bounds.npy + images) -> COLMAP scene folder with split.json.

    python scripts/prepare_llff.py --src <llff>/fern --out data_local/fern --factor 8 --n_views 3

Reads ``images_<factor>/`` when present (else resizes ``images/`` by the factor), writes
``images/`` at that resolution, ``sparse/0`` (PINHOLE cameras at that resolution, known poses,
no points), ``near_far.json`` ({image name: [near, far]}, LLFF's depth bounds) and
``split.json`` (LLFF protocol: test = every 8th image, train = round(linspace) over the rest).
"""

from __future__ import annotations

import json
import os
import sys
from argparse import ArgumentParser

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from scene.splits import make_split  # noqa: E402
from sfm.converters import (  # noqa: E402
    copy_images,
    llff_to_views,
    staged_output,
    write_split,
    write_views_model,
)
from sfm.errors import SceneError  # noqa: E402
from sfm.images import list_images  # noqa: E402


def prepare_llff(src: str, out: str, factor: int, n_views: int, overwrite: bool) -> str:
    pb_path = os.path.join(src, "poses_bounds.npy")
    if not os.path.isfile(pb_path):
        raise SceneError(f"{pb_path}: missing; --src must be an LLFF scene folder")
    try:
        pb = np.load(pb_path)
    except (OSError, ValueError) as e:
        raise SceneError(f"{pb_path}: cannot read ({e})") from e
    sub = os.path.join(src, f"images_{factor}")
    resize = None
    if factor > 1 and os.path.isdir(sub):
        img_dir = sub
    elif os.path.isdir(os.path.join(src, "images")):
        img_dir = os.path.join(src, "images")
        if factor > 1:
            with Image.open(os.path.join(img_dir, list_images(img_dir)[0])) as im:
                w, h = im.size
            resize = (round(w / factor), round(h / factor))
    else:
        raise SceneError(f"{src}: neither images_{factor}/ nor images/ found")
    names = list_images(img_dir)
    if len(names) != len(pb):
        raise SceneError(
            f"{img_dir}: {len(names)} images but {pb_path} has {len(pb)} poses; use the matching "
            "image folder"
        )
    out_names = [os.path.splitext(n)[0] + ".png" for n in names] if resize else names
    with staged_output(out, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        sizes = copy_images(
            [
                (os.path.join(img_dir, a), os.path.join(tmp, "images", b))
                for a, b in zip(names, out_names)
            ],
            resize,
        )
        if len(set(sizes)) != 1:
            raise SceneError(f"{img_dir}: images of different sizes: {sorted(set(sizes))}")
        w, h = sizes[0]
        views, bounds = llff_to_views(pb, out_names, w, h)
        write_views_model(views, os.path.join(tmp, "sparse", "0"))
        with open(os.path.join(tmp, "near_far.json"), "w") as f:
            json.dump(
                {n: [float(a), float(b)] for n, (a, b) in zip(out_names, bounds)}, f, indent=1
            )
        write_split(tmp, make_split(out_names, "llff", n_views))
        masks = copy_object_masks(src, img_dir, names, out_names, (w, h), tmp)
    extra = f", {masks} object masks in masks_object/" if masks else ""
    return (
        f"wrote {out}: {len(views)} views {w}x{h}, LLFF split with {n_views} training views{extra}"
    )


def copy_object_masks(src: str, img_dir: str, names: list[str], out_names: list[str],
                      size: tuple[int, int], out: str) -> int:  # fmt: skip
    """The NeRD layout's object masks (``masks_<k>/<stem>.png`` beside ``images_<k>/``) as
    ``<out>/masks_object/<stem>.png`` at the output size (nearest), so masked metrics and
    segment.py's foreground IoU keep working on the converted scene; returns how many."""
    base = os.path.basename(os.path.normpath(img_dir))
    folder = os.path.join(src, "masks" + base[len("images") :]) if base != "images" else ""
    if not folder or not os.path.isdir(folder):
        return 0
    done = 0
    os.makedirs(os.path.join(out, "masks_object"), exist_ok=True)
    for a, b in zip(names, out_names):
        path = os.path.join(folder, os.path.splitext(a)[0] + ".png")
        if os.path.isfile(path):
            with Image.open(path) as m:
                m.convert("L").resize(size, Image.NEAREST).save(
                    os.path.join(out, "masks_object", os.path.splitext(b)[0] + ".png")
                )
            done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="LLFF scene -> COLMAP scene folder")
    p.add_argument("--src", required=True, help="LLFF scene folder (poses_bounds.npy, images*/)")
    p.add_argument("--out", required=True, help="output scene folder")
    p.add_argument("--factor", type=int, default=8, help="downscale factor (protocol: 8)")
    p.add_argument("--n_views", type=int, default=3, help="training views in split.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a = p.parse_args(argv)
    try:
        print(prepare_llff(a.src, a.out, a.factor, a.n_views, a.overwrite))
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
