"""LLFF ``poses_bounds.npy`` scenes (fern and the other forward-facing captures, NeRD).

Each row holds a 3x5 matrix flattened row-major, then the near and far depth bounds. Its
first three columns are the camera axes *down, right, backwards* in world coordinates
(camera-to-world), the fourth the camera centre, the fifth (H, W, f) at the capture's full
resolution. The COLMAP/OpenCV axes (right, down, forward) are therefore
``[col1, col0, -col2]``. Rows follow the sorted image names of the image folder.

The poses stay in LLFF's world frame (no recentring or bound rescaling as NeRF's loader
does): Gaussian splatting does not need a normalised frame, and the near/far bounds keep
their meaning as camera depths.
"""

from __future__ import annotations

import os

import numpy as np

from scene.errors import SceneError
from scene.readers.common import image_size, list_images, pose_from_c2w
from scene.types import CameraInfo, SceneInfo

FALLBACK_FOLDERS = ("images", "images_8", "images_4", "images_2")


def llff_to_c2w(pose: np.ndarray) -> np.ndarray:
    """[3, 4] camera-to-world in COLMAP axes from one LLFF [3, 5] (down, right, back, t, hwf)."""
    pose = np.asarray(pose, dtype=np.float64)
    return np.concatenate([pose[:, 1:2], pose[:, 0:1], -pose[:, 2:3], pose[:, 3:4]], axis=1)


def pick_image_folder(source: str, images: str = "images") -> str:
    """``<source>/<images>`` if it exists, else the first of images/, images_8/, images_4/,
    images_2/ that exists."""
    for name in (images, *FALLBACK_FOLDERS):
        if os.path.isdir(os.path.join(source, name)):
            return os.path.join(source, name)
    raise SceneError(
        f"{source}: no image folder ({images}/ or {', '.join(f + '/' for f in FALLBACK_FOLDERS)}) "
        "next to poses_bounds.npy; put the photos in images/"
    )


def read_llff(source: str, images: str = "images") -> SceneInfo:
    path = os.path.join(source, "poses_bounds.npy")
    try:
        arr = np.load(path)
    except (OSError, ValueError) as e:
        raise SceneError(
            f"{path}: cannot read ({e}); regenerate it with LLFF's imgs2poses"
        ) from None
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.all(np.isfinite(arr)):
        raise SceneError(
            f"{path}: expected an [N, 17] finite array (LLFF poses_bounds), got shape "
            f"{arr.shape}; regenerate it with LLFF's imgs2poses"
        )
    folder = pick_image_folder(source, images)
    names = list_images(folder, "put the photos matching poses_bounds.npy there")
    if len(names) != len(arr):
        raise SceneError(
            f"{path}: {len(arr)} poses but {folder} holds {len(names)} images; the rows must "
            "match the sorted images one to one (remove extra images or regenerate the poses)"
        )
    poses = arr[:, :15].reshape(-1, 3, 5)
    bounds = arr[:, 15:17]
    cams, bound_map = [], {}
    for i, name in enumerate(names):
        image_path = os.path.join(folder, name)
        w, h = image_size(image_path)
        H, W, f = poses[i, :, 4]
        s = w / W
        if abs(H * s - h) > 1.0 and abs(W * (h / H) - w) > 1.0:
            raise SceneError(
                f"{image_path}: image is {w}x{h} but poses_bounds.npy says {W:g}x{H:g} "
                "(different aspect ratio); use the images the poses were computed for"
            )
        sy = h / H
        R, T = pose_from_c2w(llff_to_c2w(poses[i, :, :4]))
        cams.append(
            CameraInfo(
                uid=i,
                R=R,
                T=T,
                fx=float(f * s),
                fy=float(f * sy),
                cx=w / 2.0,
                cy=h / 2.0,
                width=w,
                height=h,
                image_path=image_path,
                image_name=name,
                downscale=float(W / w),
            )
        )
        bound_map[name] = (float(bounds[i, 0]), float(bounds[i, 1]))
    return SceneInfo(
        cameras=cams,
        point_cloud=None,
        reader="llff",
        extras={"bounds": bound_map, "images_dir": folder},
    )
