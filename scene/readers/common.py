"""Helpers shared by the dataset readers: image listing, image headers, poses, masks."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from scene.errors import SceneError

# Image files a reader accepts in a folder listing (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Tried, in order, when a transforms.json file_path has no extension.
TRY_EXTENSIONS = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".JPEG")


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str, fix: str) -> list[str]:
    """Sorted image file names directly inside ``folder``.

    Raises ``SceneError`` when the folder is missing or holds no images; ``fix`` is the
    sentence appended to the message (what the user should do).
    """
    if not os.path.isdir(folder):
        raise SceneError(f"{folder}: image folder not found; {fix}")
    names = sorted(n for n in os.listdir(folder) if is_image_file(n))
    if not names:
        raise SceneError(f"{folder}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); {fix}")
    return names


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError:
        raise SceneError(
            f"{path}: image file not found; restore it or remove it from the scene"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SceneError(
            f"{path}: cannot read the image ({type(e).__name__}: {e}); replace the file with "
            "a valid PNG/JPEG or delete it"
        ) from None


def scale_to_disk(
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    size_declared: tuple[float, float],
    size_disk: tuple[int, int],
    where: str,
) -> tuple[float, float, float, float]:
    """Rescale intrinsics given for ``size_declared`` (w, h) to the image on disk.

    Images stored at a reduced size (``-i images_4`` with a full-resolution model) are fine
    as long as the aspect ratio matches to within one pixel; a different aspect ratio means
    the calibration does not belong to this image and raises ``SceneError`` (``where`` names
    the image and the calibration file).
    """
    wd, hd = size_declared
    w, h = size_disk
    if (w, h) == (wd, hd):
        return fx, fy, cx, cy
    sx, sy = w / wd, h / hd
    if abs(wd * sy - w) > 1.0 and abs(hd * sx - h) > 1.0:
        raise SceneError(
            f"{where}: image is {w}x{h} but its camera is {wd:g}x{hd:g} (different aspect "
            "ratio); use the images the cameras were computed for, or recompute the cameras"
        )
    return fx * sx, fy * sy, cx * sx, cy * sy


def pose_from_c2w(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3DGS (R, T) from a [3|4, 4] camera-to-world matrix in the COLMAP/OpenCV axes
    (x right, y down, z forward): R = camera-to-world rotation, T = world-to-camera
    translation."""
    R = np.asarray(c2w, dtype=np.float64)[:3, :3]
    t = np.asarray(c2w, dtype=np.float64)[:3, 3]
    # Orthonormalise: json files store rotations in single precision.
    u, _, vt = np.linalg.svd(R)
    R = u @ vt
    return R, -R.T @ t


def find_eval_mask(source: str, images_dir: str, image_name: str) -> str | None:
    """Object mask used for masked evaluation metrics, if the scene has one.

    Looked up in ``<source>/masks_object/`` as ``<image name>``, ``<image name>.png``,
    ``<stem>.png`` or ``<stem>.jpg`` (the DTU converter writes this folder), then, when the
    images come from ``images_N/``, in ``masks_N/`` next to it (the NeRD layout, e.g.
    maryrose's ``masks_4/<stem>.png``).
    """
    stem = os.path.splitext(image_name)[0]
    folders = [os.path.join(source, "masks_object")]
    base = os.path.basename(os.path.normpath(images_dir))
    if base.startswith("images_"):
        folders.append(os.path.join(source, "masks_" + base[len("images_") :]))
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for cand in (image_name, image_name + ".png", stem + ".png", stem + ".jpg"):
            path = os.path.join(folder, cand)
            if os.path.isfile(path):
                return path
    return None
