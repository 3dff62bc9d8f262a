"""DTU scan -> COLMAP scene folder with split.json (DTU protocol) and evaluation masks.

    # IDR / MonoSDF layout: cameras.npz (world_mat_i, scale_mat_i) + image/ or rgb/ (+ mask/)
    python scripts/prepare_dtu.py --src <idr>/scan24 --out data_local/dtu_scan24
    # original DTU release: Rectified/ + Calibration/cal18/pos_XXX.txt, 1/4 resolution
    python scripts/prepare_dtu.py --src <DTU> --scan 24 --factor 4 --masks <idrmasks>/scan24 \\
        --out data_local/dtu_scan24

Images are named as DTU's light condition 3, ``rect_{i+1:03d}_3_r5000.png`` (i = view id
0..48), so the DTU protocol ids (train 25, 22, 28, ...) index the sorted names. Poses come
from the 3x4 projection matrices (IDR: ``world_mat @ scale_mat``, i.e. the object inside the
unit sphere; raw DTU: millimetres). Object masks, when given, are copied to
``masks_object/<image name>`` for evaluation only (they never enter training or COLMAP).
"""

from __future__ import annotations

import os
import re
import sys
from argparse import ArgumentParser

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from scene.splits import make_split  # noqa: E402
from sfm.converters import (  # noqa: E402
    copy_images,
    projection_views,
    staged_output,
    write_split,
    write_views_model,
)
from sfm.errors import SceneError  # noqa: E402
from sfm.images import list_images  # noqa: E402


def dtu_name(view_id: int) -> str:
    return f"rect_{view_id + 1:03d}_3_r5000.png"


def _idr_inputs(src: str, normalize: bool) -> tuple[list[str], list[np.ndarray], str | None]:
    cams_path = os.path.join(src, "cameras.npz")
    try:
        cams = np.load(cams_path)
    except (OSError, ValueError) as e:
        raise SceneError(f"{cams_path}: cannot read ({e})") from e
    ids = sorted(int(k[len("world_mat_") :]) for k in cams.files if k.startswith("world_mat_"))
    if not ids:
        raise SceneError(f"{cams_path}: no world_mat_<i> entries (not an IDR cameras file)")
    for sub in ("image", "images", "rgb"):
        if os.path.isdir(os.path.join(src, sub)):
            img_dir = os.path.join(src, sub)
            break
    else:
        raise SceneError(f"{src}: no image/, images/ or rgb/ folder next to cameras.npz")
    files = list_images(img_dir)
    if len(files) != len(ids):
        raise SceneError(f"{img_dir}: {len(files)} images but {cams_path} has {len(ids)} cameras")
    projections = []
    for i in ids:
        P = cams[f"world_mat_{i}"].astype(np.float64)
        if normalize and f"scale_mat_{i}" in cams.files:
            P = P @ cams[f"scale_mat_{i}"].astype(np.float64)
        projections.append(P[:3, :4])
    mask_dir = os.path.join(src, "mask")
    return (
        [os.path.join(img_dir, f) for f in files],
        projections,
        (mask_dir if os.path.isdir(mask_dir) else None),
    )


def _raw_dtu_inputs(src: str, scan: int) -> tuple[list[str], list[np.ndarray]]:
    for sub in (f"scan{scan}_train", f"scan{scan}"):
        img_dir = os.path.join(src, "Rectified", sub)
        if os.path.isdir(img_dir):
            break
    else:
        raise SceneError(f"{src}/Rectified: no scan{scan}_train/ or scan{scan}/ folder")
    images, projections = [], []
    for i in range(49):
        img = os.path.join(img_dir, dtu_name(i))
        pos = os.path.join(src, "Calibration", "cal18", f"pos_{i + 1:03d}.txt")
        if not os.path.isfile(img):
            raise SceneError(f"{img}: missing (light condition 3 image of view {i})")
        try:
            projections.append(np.loadtxt(pos).reshape(3, 4))
        except (OSError, ValueError) as e:
            raise SceneError(f"{pos}: cannot read the 3x4 projection ({e})") from e
        images.append(img)
    return images, projections


def _mask_files(mask_dir: str, n: int) -> list[str]:
    """Mask per view id: files named by id ({i:03d}.png, 000000.png...) or n sorted files."""
    files = list_images(mask_dir)
    by_id = {}
    for f in files:
        m = re.search(r"(\d+)", os.path.splitext(f)[0])
        if m:
            by_id.setdefault(int(m.group(1)), f)
    if all(i in by_id for i in range(n)):
        return [os.path.join(mask_dir, by_id[i]) for i in range(n)]
    if len(files) == n:
        return [os.path.join(mask_dir, f) for f in files]
    raise SceneError(f"{mask_dir}: cannot match {len(files)} mask files to {n} views")


DTU_RELEASE_SIZE = (1600, 1200)


def guess_calib_size(
    projections: list[np.ndarray], size: tuple[int, int]
) -> tuple[int, int] | None:
    """None when the matrices fit the images; DTU's 1600x1200 when their principal points
    fall outside the images (MonoSDF's 384x384 crops keep the original calibration)."""
    from sfm.converters import decompose_projection

    w, h = size
    inside = all(
        0 <= K[0, 2] <= w and 0 <= K[1, 2] <= h
        for K, _, _ in (decompose_projection(P) for P in projections)
    )
    return None if inside else DTU_RELEASE_SIZE


def prepare_dtu(
    src: str,
    out: str,
    scan: int | None,
    factor: int,
    masks: str | None,
    n_views: int,
    normalize: bool,
    overwrite: bool,
    calib_size: tuple[int, int] | None = None,
) -> str:
    if os.path.isfile(os.path.join(src, "cameras.npz")):
        images, projections, auto_masks = _idr_inputs(src, normalize)
        masks = masks or auto_masks
    elif scan is not None:
        images, projections = _raw_dtu_inputs(src, scan)
    else:
        raise SceneError(f"{src}: no cameras.npz (IDR layout); for the DTU release pass --scan N")
    n = len(images)
    names = [dtu_name(i) for i in range(n)]
    mask_files = _mask_files(masks, n) if masks else None
    with Image.open(images[0]) as im:
        w0, h0 = im.size
    size = (round(w0 / factor), round(h0 / factor))
    with staged_output(out, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        sizes = copy_images(
            [(s, os.path.join(tmp, "images", d)) for s, d in zip(images, names)],
            size if factor != 1 else None,
        )
        if len(set(sizes)) != 1:
            raise SceneError(f"{os.path.dirname(images[0])}: images of different sizes")
        # The matrices are for the source images (or for a larger calibration size, as in
        # MonoSDF's crops); projection_views maps them onto the written size.
        calib = calib_size or guess_calib_size(projections, (w0, h0)) or (w0, h0)
        views = projection_views(projections, names, sizes, calib)
        write_views_model(views, os.path.join(tmp, "sparse", "0"))
        if mask_files:
            os.makedirs(os.path.join(tmp, "masks_object"))
            copy_images(
                [(s, os.path.join(tmp, "masks_object", d)) for s, d in zip(mask_files, names)],
                sizes[0],
                desc="masks",
            )
        write_split(tmp, make_split(names, "dtu", n_views))
    note = (
        "" if calib == (w0, h0) else f" (cameras mapped from a {calib[0]}x{calib[1]} calibration)"
    )
    return (
        f"wrote {out}: {n} views {sizes[0][0]}x{sizes[0][1]}{note}, "
        f"{'object masks in masks_object/' if mask_files else 'no object masks'}, "
        f"DTU split with {n_views} training views"
    )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="DTU scan -> COLMAP scene folder")
    p.add_argument("--src", required=True, help="IDR/MonoSDF scan folder, or the DTU root")
    p.add_argument("--out", required=True, help="output scene folder")
    p.add_argument("--scan", type=int, default=None, help="scan number (DTU release layout)")
    p.add_argument(
        "--factor",
        type=int,
        default=1,
        help="downscale factor (DTU protocol: 4 "
        "from the 1600x1200 release; 1 for IDR/MonoSDF copies)",
    )
    p.add_argument(
        "--masks",
        default=None,
        help="object mask folder (IDR mask/ is found automatically); copied for evaluation only",
    )
    p.add_argument("--n_views", type=int, default=3, help="training views in split.json")
    p.add_argument(
        "--no_normalize",
        action="store_true",
        help="IDR: keep world_mat's frame instead of the unit-sphere frame",
    )
    p.add_argument(
        "--calib_size",
        default="auto",
        help="WxH the projection matrices are "
        "calibrated for when the images are a centred crop of it (auto: the image "
        "size, or 1600x1200 when the principal points fall outside the images)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a = p.parse_args(argv)
    calib = None if a.calib_size == "auto" else tuple(int(v) for v in a.calib_size.split("x"))
    try:
        print(
            prepare_dtu(
                a.src,
                a.out,
                a.scan,
                a.factor,
                a.masks,
                a.n_views,
                not a.no_normalize,
                a.overwrite,
                calib,
            )
        )
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
