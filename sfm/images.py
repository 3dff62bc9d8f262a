"""Listing and checking the photos of a scene before COLMAP sees them.

COLMAP skips unreadable files with a log line and carries on; here they stop the run with
the file's name instead, before anything is written.
"""

from __future__ import annotations

import os

from PIL import Image
from tqdm import tqdm

from sfm.errors import SceneError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_images(image_dir: str) -> list[str]:
    """Sorted image file names (relative to ``image_dir``, no subfolders)."""
    if not os.path.isdir(image_dir):
        raise SceneError(f"{image_dir}: no such image folder; put the photos there or pass -i")
    names = sorted(
        n
        for n in os.listdir(image_dir)
        if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(image_dir, n))
    )
    if not names:
        raise SceneError(
            f"{image_dir}: folder holds no images ({'/'.join(IMAGE_EXTENSIONS)}); "
            "put the photos there or pass -i <folder>"
        )
    return names


def image_sizes(image_dir: str, names: list[str], decode: bool = True) -> dict[str, tuple]:
    """(width, height) of every image; raises SceneError naming the first unreadable one.

    ``decode=True`` decodes the pixels too, which also catches truncated files.
    """
    sizes = {}
    for name in tqdm(names, desc="checking images", leave=False, disable=len(names) < 20):
        path = os.path.join(image_dir, name)
        try:
            with Image.open(path) as im:
                if decode:
                    im.load()
                sizes[name] = im.size
        except (OSError, SyntaxError, ValueError) as e:
            raise SceneError(f"{path}: unreadable image ({e}); replace or delete the file") from e
    return sizes


def check_single_size(sizes: dict[str, tuple], where: str) -> tuple[int, int]:
    """The one (width, height) shared by all images, or SceneError listing the sizes."""
    distinct: dict[tuple, list[str]] = {}
    for name, size in sizes.items():
        distinct.setdefault(tuple(size), []).append(name)
    if len(distinct) > 1:
        desc = ", ".join(
            f"{w}x{h} ({v[0]}{f' +{len(v) - 1}' if len(v) > 1 else ''})"
            for (w, h), v in sorted(distinct.items(), key=lambda kv: -len(kv[1]))
        )
        raise SceneError(
            f"{where}: images of different sizes under one camera: {desc}; resize them to one "
            "size or use --camera_mode per_image"
        )
    return next(iter(distinct))
