"""Loading ground-truth images at the training resolution.

The resolution rule is 3DGS's ``loadCam`` (``-r/--resolution``):

- 1, 2, 4 or 8: downscale factor, ``round(w / r) x round(h / r)``. When the image lies in
  ``<source>/<images>/`` and ``<source>/<images>_r/`` holds a file of the same name, that
  file is read as it is (no resampling). A base folder that is already downscaled (LLFF
  ``images_8/`` read because ``images/`` is absent; ``CameraInfo.downscale`` = 8) counts:
  the factor applied is ``r / downscale`` (never below 1: no upsampling, one notice).
- -1: images wider than 1600 px shrink to 1600 px wide (one notice), others stay.
- any other positive value: the target width.

Intrinsics follow the real size ratio (pixel-centre convention +0.5, so scaling is a plain
multiplication). RGBA images are composited on the background at full resolution and the
alpha is kept as ``Camera.alpha_mask``. instant-ngp distortion is removed with OpenCV at the
stored resolution before resizing. Resampling is PIL's bicubic, as 3DGS's ``PILtoTorch``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from scene.cameras import Camera
from scene.errors import SceneError
from scene.readers.common import image_size, scale_to_disk
from scene.types import CameraInfo

MAX_WIDTH = 1600  # 3DGS's -r -1 limit


def training_size(
    width: int, height: int, resolution: int | float, downscale: float = 1.0
) -> tuple[int, int]:
    """Training size of a ``width`` x ``height`` image under ``-r resolution`` (3DGS rule).

    ``downscale`` is how much the stored image is already reduced from full resolution
    (only used for the 1/2/4/8 factors).
    """
    if resolution in (1, 2, 4, 8):
        factor = max(resolution / downscale, 1.0)
        return round(width / factor), round(height / factor)
    if resolution == -1:
        scale = width / MAX_WIDTH if width > MAX_WIDTH else 1.0
    elif resolution > 0:
        scale = width / resolution
    else:
        raise SceneError(
            f"-r/--resolution {resolution}: use 1, 2, 4, 8 (downscale), -1 (auto) or a width"
        )
    return int(width / scale), int(height / scale)


@dataclass
class ImagePlan:
    """Which file one camera reads and the camera at the training size."""

    path: str
    file_size: tuple[int, int]  # (w, h) of ``path``
    size: tuple[int, int]  # (w, h) at training resolution
    K_file: tuple[float, float, float, float]  # fx, fy, cx, cy at ``file_size``
    K: tuple[float, float, float, float]  # fx, fy, cx, cy at ``size``
    notice: str | None = None


def plan_image(cam: CameraInfo, source: str, images: str, resolution: int) -> ImagePlan:
    """Resolve the file to read and the training size of one camera (headers only)."""
    path, file_size = cam.image_path, (cam.width, cam.height)
    K_file = (cam.fx, cam.fy, cam.cx, cam.cy)
    notice = None
    if resolution in (2, 4, 8) and source:
        base = os.path.normpath(os.path.join(source, images, cam.image_name))
        smaller = os.path.join(source, f"{images}_{resolution}", cam.image_name)
        if os.path.normpath(cam.image_path) == base and os.path.isfile(smaller):
            w, h = image_size(smaller)
            K_file = scale_to_disk(*K_file, file_size, (w, h), f"{smaller} (vs {base})")
            path, file_size = smaller, (w, h)
            size = (w, h)
        else:
            size = training_size(cam.width, cam.height, resolution, cam.downscale)
    else:
        size = training_size(cam.width, cam.height, resolution, cam.downscale)
    if resolution in (1, 2, 4, 8) and resolution < cam.downscale and path == cam.image_path:
        notice = (
            f"[images] -r {resolution} asks for more pixels than {os.path.dirname(path)} holds "
            f"(already 1/{cam.downscale:g}); using its images as stored"
        )
    elif resolution == -1 and cam.width > MAX_WIDTH:
        notice = (
            f"[images] images wider than {MAX_WIDTH} px are shrunk to {MAX_WIDTH} px wide "
            "(3DGS -r -1); pass -r 1 to keep them"
        )
    sx, sy = size[0] / file_size[0], size[1] / file_size[1]
    fx, fy, cx, cy = K_file
    return ImagePlan(path, file_size, size, K_file, (fx * sx, fy * sy, cx * sx, cy * sy), notice)


def read_rgba(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB [H, W, 3] and alpha [H, W] (None when the file has no alpha)."""
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (
                im.mode == "P" and "transparency" in im.info
            )
            arr = np.array(im.convert("RGBA" if has_alpha else "RGB"))
    except FileNotFoundError:
        raise SceneError(f"{path}: image file not found; restore it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SceneError(
            f"{path}: cannot decode the image ({type(e).__name__}: {e}); replace the file with "
            "a valid PNG/JPEG or delete it"
        ) from None
    if has_alpha:
        return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
    return arr, None


def undistort(
    img: np.ndarray,  # [H, W] or [H, W, C] uint8
    K: tuple[float, float, float, float],
    distortion: np.ndarray,  # [4] or [5] k1, k2, p1, p2[, k3]
) -> np.ndarray:
    """Remove OpenCV lens distortion, keeping the same pinhole intrinsics."""
    fx, fy, cx, cy = K
    # OpenCV puts pixel centres at integer coordinates: shift the principal point by -0.5.
    Kcv = np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]], dtype=np.float64)
    import cv2  # only distorted cameras need it (its import costs start-up time)

    return cv2.undistort(img, Kcv, np.asarray(distortion, dtype=np.float64), None, Kcv)


def _resize(arr: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    if (arr.shape[1], arr.shape[0]) == tuple(size):
        return arr
    return np.array(Image.fromarray(arr).resize(size, resample))


def load_image(
    plan: ImagePlan, background: tuple[float, float, float], distortion: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image [3, H, W] float32 in [0, 1] at the planned size, and alpha [1, H, W] or None."""
    rgb, alpha = read_rgba(plan.path)
    if (rgb.shape[1], rgb.shape[0]) != plan.file_size:
        raise SceneError(
            f"{plan.path}: image is {rgb.shape[1]}x{rgb.shape[0]} but its header said "
            f"{plan.file_size[0]}x{plan.file_size[1]}; replace the file"
        )
    if distortion is not None:
        rgb = undistort(rgb, plan.K_file, distortion)
        alpha = None if alpha is None else undistort(alpha, plan.K_file, distortion)
    if alpha is not None:
        a = alpha[..., None].astype(np.float32) / 255.0
        bg = np.asarray(background, dtype=np.float32) * 255.0
        rgb = np.clip(np.round(rgb * a + bg * (1.0 - a)), 0, 255).astype(np.uint8)
    rgb = _resize(rgb, plan.size, Image.Resampling.BICUBIC)
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    if alpha is None:
        return image, None
    alpha = _resize(alpha, plan.size, Image.Resampling.BICUBIC)
    return image, torch.from_numpy(np.ascontiguousarray(alpha)).float()[None] / 255.0


def load_mask(path: str, size: tuple[int, int]) -> torch.Tensor:
    """Binary object mask [1, H, W] float in {0, 1}, resized with nearest neighbour."""
    try:
        with Image.open(path) as im:
            m = im.convert("L").resize(size, Image.Resampling.NEAREST)
            arr = np.asarray(m) > 127
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SceneError(
            f"{path}: cannot decode the object mask ({type(e).__name__}); replace or delete it"
        ) from None
    return torch.from_numpy(arr).float()[None]


def build_cameras(
    cams: list[CameraInfo],
    source: str,
    images: str,
    resolution: int,
    white_background: bool,
    device: torch.device | str,
    load_images: bool = True,
    workers: int | None = None,
    desc: str = "Loading images",
    printed: set[str] | None = None,
) -> list[Camera]:
    """``Camera`` objects at the training resolution, images loaded in a thread pool.

    Args:
        cams: reader cameras.
        source, images: scene folder and ``-i`` subfolder (for ``images_N/`` look-ups).
        resolution: ``-r`` value.
        white_background: composite RGBA on white (else black).
        device: where images and matrices live.
        load_images: False gives render-only cameras (no ground truth, no masks).
        workers: threads (default: up to 8).
        printed: notices already printed (shared between calls, so that each is said once).

    ``Camera.uid`` is the camera's index in the returned list (as in 3DGS's loadCam).
    """
    plans = [plan_image(c, source, images, resolution) for c in cams]
    printed = set() if printed is None else printed
    for note in dict.fromkeys(p.notice for p in plans if p.notice):
        if note not in printed:
            printed.add(note)
            print(note)
    bg = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)

    def work(i: int):
        c, p = cams[i], plans[i]
        image, alpha = load_image(p, bg, c.distortion)
        mask = load_mask(c.mask_path, p.size) if c.mask_path else None
        return image, alpha, mask

    loaded: list = [(None, None, None)] * len(cams)
    if load_images and cams:
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(work, i) for i in range(len(cams))]
            try:
                for i, fut in enumerate(tqdm(futures, desc=desc, leave=False)):
                    loaded[i] = fut.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def move(t):
        return None if t is None else t.to(device)

    out = []
    for i, (c, p) in enumerate(zip(cams, plans)):
        image, alpha, mask = loaded[i]
        out.append(
            Camera(
                uid=i,
                image_name=c.image_name,
                R=c.R,
                T=c.T,
                fx=p.K[0],
                fy=p.K[1],
                cx=p.K[2],
                cy=p.K[3],
                width=p.size[0],
                height=p.size[1],
                image=move(image),
                alpha_mask=move(alpha),
                eval_mask=move(mask),
                device=device,
            )
        )
    return out
