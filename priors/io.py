"""Image listing and loading, atomic writes, scene discovery.

Every file a prior stage writes goes through :func:`atomic_write`: the data is written to a
hidden temporary name in the target folder and renamed into place, so an interrupted run
never leaves a truncated file behind under the real name.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from priors import PriorError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Smaller images cannot be segmented or fed to the models meaningfully.
MIN_IMAGE_SIDE = 8


def list_images(images_dir: str) -> list[str]:
    """Image files below ``images_dir`` (recursive), as sorted relative paths with '/'."""
    if not os.path.isdir(images_dir):
        raise PriorError(
            f"{images_dir}: no such image folder (pass the scene with -s and, if the images "
            "live elsewhere in it, the folder name with --images)"
        )
    names = []
    for root, dirs, files in os.walk(images_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                rel = os.path.relpath(os.path.join(root, f), images_dir)
                names.append(rel.replace(os.sep, "/"))
    if not names:
        raise PriorError(f"{images_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return sorted(names)


def load_rgb(path: str) -> np.ndarray:
    """[H, W, 3] uint8 RGB of any image PIL reads (grey, RGBA, 16-bit and palette included).

    EXIF orientation is not applied, as in the 3DGS loaders: pixels stay as stored, so
    priors line up with the images training reads.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = np.clip(a / max(float(a.max()), 1.0) * 255.0, 0, 255).astype(np.uint8)
                rgb = np.repeat(a[..., None], 3, axis=2)
            else:
                rgb = np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise PriorError(f"{path}: cannot read the image ({e}); replace or remove it") from e
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise PriorError(
            f"{path}: the image is {w}x{h}; priors need at least {MIN_IMAGE_SIDE} pixels a side"
        )
    return np.ascontiguousarray(rgb)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise PriorError(f"{path}: cannot read the image ({e}); replace or remove it") from e


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path``; rename it to ``path`` only on success."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_file(path: str, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into an atomically renamed file."""
    with atomic_write(path) as f:
        write(f)


def save_npy(path: str, array: np.ndarray) -> None:
    write_file(path, lambda f: np.save(f, array))


def save_json(path: str, obj, indent: int = 2) -> None:
    """``obj`` as JSON (a trailing newline), atomically."""
    import json

    write_file(path, lambda f: f.write((json.dumps(obj, indent=indent) + "\n").encode()))


def save_npz(path: str, compresslevel: int = 1, **arrays: np.ndarray) -> None:
    """An ``.npz`` that ``np.load`` reads, deflated at ``compresslevel`` (0: stored).

    ``np.savez_compressed`` always uses zlib's default level, about 2x slower than level 1
    on large boolean mask stacks for a few hundred kB of difference.
    """

    def write(f: BinaryIO) -> None:
        method = zipfile.ZIP_DEFLATED if compresslevel > 0 else zipfile.ZIP_STORED
        with zipfile.ZipFile(f, "w", method, compresslevel=compresslevel or None) as z:
            for key, value in arrays.items():
                with z.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

    write_file(path, write)


def save_image(path: str, image: Image.Image | np.ndarray, **params) -> None:
    """Save with the format given by the extension of ``path`` (PIL), atomically."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise PriorError(f"{path}: unknown image extension")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    write_file(path, lambda f: image.save(f, format=fmt, **params))


def train_views_of(split_json: str, names: list[str]) -> list[str]:
    """The names of ``names`` that ``split_json`` (a split.json as colmap_match.py writes it
    for ``--n_views``) lists as training views, in the order of ``names``.

    A sparse-view run reads the priors of its training views only; the other photos of the
    folder need none (on NeRD maryrose, 12 of 69)."""
    import json

    try:
        with open(split_json) as f:
            train = json.load(f)["train"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PriorError(
            f"{split_json}: not a split.json with a 'train' list ({e}); make it with "
            "python colmap_match.py -s <scene> --n_views N"
        ) from e
    wanted = set(train)
    chosen = [n for n in names if n in wanted]
    missing = sorted(wanted - set(chosen))
    if missing:
        raise PriorError(
            f"{split_json}: {len(missing)} training view(s) not in the image folder "
            f"(e.g. {missing[0]}); is --images the folder of the split?"
        )
    return chosen


def find_scenes(root: str, images: str = "images") -> list[str]:
    """Scene folders below ``root`` (``root`` itself included): those holding ``images``."""
    if not os.path.isdir(root):
        raise PriorError(f"{root}: no such folder (--dataset_root)")
    scenes = []
    for dirpath, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if os.path.isdir(os.path.join(dirpath, images)):
            scenes.append(dirpath)
            dirs[:] = []  # a scene's own subfolders are not scenes
    if not scenes:
        raise PriorError(f"{root}: no scene folder with an '{images}' subfolder below it")
    return scenes


def scenes_from_args(args) -> list[str]:
    """The scene folders a prior CLI works on: ``-s <scene>`` or every scene below
    ``--dataset_root`` (exactly one of the two)."""
    if bool(args.source_path) == bool(args.dataset_root):
        raise PriorError("give exactly one of -s <scene> and --dataset_root <folder>")
    if args.dataset_root:
        return find_scenes(args.dataset_root, args.images)
    return [args.source_path]
