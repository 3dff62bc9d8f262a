"""IDR / MonoSDF ``cameras.npz`` scenes (DTU, BlendedMVS as IDR ships them).

For view i the file holds ``world_mat_i`` (a 4x4 whose top 3x4 is the projection
K [R | t] in world units) and ``scale_mat_i`` (normalised -> world: the unit sphere of the
normalised frame holds the object). ``P = (world_mat_i @ scale_mat_i)[:3]`` projects
normalised coordinates; the cameras are returned in that normalised frame, so the scene lies
in the unit sphere (``extras["bounding_sphere"]``) and every camera gets near/far bounds
from it (``extras["bounds"]``).

``P`` is only defined up to scale and sign. It is normalised so that det(P[:, :3]) > 0
(points in front of the camera get positive depth), decomposed with
``cv2.decomposeProjectionMatrix`` and the RQ sign ambiguity is removed by making K's
diagonal positive. IDR's ray code puts pixel centres at integer coordinates, so the
principal point moves by +0.5 into this project's convention.

MonoSDF's DTU copy keeps the projection of the 1600x1200 DTU photos while its images are
centre-cropped to a square and resized (384x384). When the principal point falls outside
the image and matches DTU's sensor, that crop is undone here (crop the centred region of the
image's aspect ratio from 1600x1200, then scale).
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np

from scene.errors import SceneError
from scene.readers.common import image_size, list_images
from scene.types import CameraInfo, SceneInfo

DTU_SIZE = (1600, 1200)


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K [3, 3] (K[2, 2] = 1, positive diagonal), world-to-camera rotation [3, 3] and
    translation [3] of a 3x4 projection matrix ``P ~ K [R | t]``."""
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    if np.linalg.det(P[:, :3]) < 0:
        P = -P
    K, R, C = cv2.decomposeProjectionMatrix(P)[:3]
    D = np.diag(np.sign(np.diag(K)))
    K, R = K @ D, D @ R  # D @ D = I: K @ R is unchanged
    if np.linalg.det(R) < 0:
        raise ValueError("projection matrix is not a proper rotation after decomposition")
    K = K / K[2, 2]
    C = C[:3, 0] / C[3, 0]
    return K, R, -R @ C


def _index(key: str) -> int:
    return int(key.rsplit("_", 1)[1])


def read_idr(source: str, images: str = "images") -> SceneInfo:
    path = os.path.join(source, "cameras.npz")
    try:
        data = dict(np.load(path))
    except (OSError, ValueError) as e:
        raise SceneError(f"{path}: cannot read ({e}); regenerate the IDR cameras file") from None
    world_keys = sorted((k for k in data if re.fullmatch(r"world_mat_\d+", k)), key=_index)
    if not world_keys:
        raise SceneError(f"{path}: no world_mat_<i> entries; not an IDR/MonoSDF cameras file")
    folder = None
    for name in (images, "image", "rgb"):
        if os.path.isdir(os.path.join(source, name)):
            folder = os.path.join(source, name)
            break
    if folder is None:
        raise SceneError(f"{source}: no image/ or rgb/ folder next to cameras.npz; add the images")
    names = list_images(folder, "put the images matching cameras.npz there")
    if len(names) != len(world_keys):
        raise SceneError(
            f"{path}: {len(world_keys)} cameras but {folder} holds {len(names)} images; the "
            "i-th sorted image must match world_mat_i (remove extra images)"
        )
    cams, bounds = [], {}
    for name, key in zip(names, world_keys):
        i = _index(key)
        image_path = os.path.join(folder, name)
        w, h = image_size(image_path)
        scale = data.get(f"scale_mat_{i}", np.eye(4))
        P = (np.asarray(data[key], dtype=np.float64) @ scale)[:3]
        try:
            K, Rw, t = decompose_projection(P)
        except (ValueError, cv2.error, np.linalg.LinAlgError) as e:
            raise SceneError(f"{path}: {key} is not a valid projection ({e}); fix it") from None
        fx, fy = K[0, 0], K[1, 1]
        cx, cy = K[0, 2] + 0.5, K[1, 2] + 0.5
        if not (0 <= cx <= w and 0 <= cy <= h):
            W0, H0 = DTU_SIZE
            if abs(cx - W0 / 2) > 0.1 * W0 or abs(cy - H0 / 2) > 0.1 * H0:
                raise SceneError(
                    f"{path}: {key} puts the principal point at ({cx:.0f}, {cy:.0f}), outside "
                    f"the {w}x{h} image {image_path}; write cameras for the images on disk"
                )
            # MonoSDF DTU: centre crop of the image's aspect ratio, then resize.
            crop_w, crop_h = (H0 * w / h, H0) if W0 / H0 > w / h else (W0, W0 * h / w)
            s = w / crop_w
            fx, fy = fx * s, fy * s
            cx, cy = (cx - (W0 - crop_w) / 2) * s, (cy - (H0 - crop_h) / 2) * s
        cams.append(
            CameraInfo(
                uid=0,
                R=Rw.T,
                T=t,
                fx=float(fx),
                fy=float(fy),
                cx=float(cx),
                cy=float(cy),
                width=w,
                height=h,
                image_path=image_path,
                image_name=name,
            )
        )
        d = float(np.linalg.norm(t))  # distance of the camera centre from the sphere centre
        bounds[name] = (max(d - 1.0, 0.05 * d), d + 1.0)
    cams.sort(key=lambda c: c.image_name)
    for k, c in enumerate(cams):
        c.uid = k
    return SceneInfo(
        cameras=cams,
        point_cloud=None,
        reader="idr",
        extras={
            "bounds": bounds,
            "bounding_sphere": (np.zeros(3), 1.0),
            "images_dir": folder,
        },
    )
