"""COLMAP sparse models (``sparse/0`` or ``sparse/``), binary or text.

Only the undistorted pinhole models (PINHOLE, SIMPLE_PINHOLE) are accepted, as in 3DGS:
distorted captures must be undistorted first (colmap_match.py does it, or
``colmap image_undistorter``). Images may be stored smaller than the model's cameras
(``-i images_4``): intrinsics are rescaled to the files on disk.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from scene.colmap_io import detect_model_format, read_model
from scene.errors import SceneError
from scene.readers.common import image_size, list_images, pose_from_c2w, scale_to_disk
from scene.types import BasicPointCloud, CameraInfo, SceneInfo


def find_model_dir(source: str) -> tuple[str | None, str | None]:
    """(complete model folder, incomplete model folder) among sparse/0 and sparse/."""
    incomplete = None
    for cand in (os.path.join(source, "sparse", "0"), os.path.join(source, "sparse")):
        if not os.path.isdir(cand):
            continue
        if detect_model_format(cand) is not None:
            return cand, None
        has_any = any(
            os.path.isfile(os.path.join(cand, f"{n}{e}"))
            for n in ("cameras", "images", "points3D")
            for e in (".bin", ".txt")
        )
        if has_any and incomplete is None:
            incomplete = cand
    return None, incomplete


def read_colmap(source: str, images: str = "images", model_dir: str | None = None) -> SceneInfo:
    """Cameras, points and tracks of a COLMAP scene folder.

    Args:
        source: scene folder.
        images: image subfolder (``-i``), relative to ``source``.
        model_dir: the model folder; default: ``sparse/0`` or ``sparse/``.
    """
    if model_dir is None:
        model_dir, incomplete = find_model_dir(source)
        if model_dir is None:
            where = incomplete or os.path.join(source, "sparse", "0")
            raise SceneError(
                f"{where}: incomplete COLMAP model (needs cameras and images .bin or .txt); "
                f"run colmap_match.py -s {source} to rebuild it"
            )
    ext = detect_model_format(model_dir)
    try:
        cams, ims, pts = read_model(model_dir)
    except (ValueError, OSError, IndexError, struct.error, UnicodeDecodeError) as e:
        what = str(e) if model_dir in str(e) else f"{model_dir}: unreadable model ({e})"
        raise SceneError(f"{what}; rebuild the model with colmap_match.py -s {source}") from None
    images_dir = os.path.join(source, images)
    list_images(images_dir, f"put the photos of the COLMAP model {model_dir} there")
    if not ims:
        raise SceneError(f"{model_dir}: the COLMAP model has no registered images; rerun SfM")

    cam_file = os.path.join(model_dir, "cameras" + ext)
    img_file = os.path.join(model_dir, "images" + ext)
    sizes_per_camera: dict[int, dict[tuple[int, int], str]] = {}
    infos = []
    scaled_note = None
    for im in ims.values():
        if im.camera_id not in cams:
            raise SceneError(
                f"{img_file}: image {im.name} refers to camera {im.camera_id}, which "
                f"{cam_file} lacks; rebuild the model"
            )
        cam = cams[im.camera_id]
        if cam.model not in ("PINHOLE", "SIMPLE_PINHOLE"):
            raise SceneError(
                f"{cam_file}: camera {cam.id} (image {im.name}) uses the {cam.model} model; "
                "only PINHOLE and SIMPLE_PINHOLE are supported; undistort the images first "
                f"(python colmap_match.py -s {source}, or colmap image_undistorter)"
            )
        path = os.path.join(images_dir, im.name)
        if not os.path.isfile(path):
            raise SceneError(
                f"{path}: image listed in {img_file} is missing; restore it, or pass -i with "
                "the folder that holds the model's images"
            )
        w, h = image_size(path)
        seen = sizes_per_camera.setdefault(cam.id, {})
        seen.setdefault((w, h), path)
        if len(seen) > 1:
            (a, pa), (b, pb) = list(seen.items())[:2]
            raise SceneError(
                f"{pb}: image is {b[0]}x{b[1]} but {pa} of the same camera {cam.id} in "
                f"{cam_file} is {a[0]}x{a[1]}; give each image size its own camera or resize "
                "the images to one size"
            )
        fx, fy, cx, cy = cam.intrinsics()
        fx, fy, cx, cy = scale_to_disk(
            fx, fy, cx, cy, (cam.width, cam.height), (w, h), f"{path} ({cam_file})"
        )
        if (w, h) != (cam.width, cam.height) and scaled_note is None:
            scaled_note = (
                f"[colmap] {images_dir}: images are {w}x{h}, the model's camera "
                f"{cam.width}x{cam.height}; intrinsics rescaled to the files"
            )
        w2c = np.eye(4)
        w2c[:3, :3] = im.rotmat()
        w2c[:3, 3] = im.tvec
        R, T = pose_from_c2w(np.linalg.inv(w2c))
        infos.append(
            CameraInfo(
                uid=0,
                R=R,
                T=T,
                fx=fx,
                fy=fy,
                cx=cx,
                cy=cy,
                width=w,
                height=h,
                image_path=path,
                image_name=im.name,
            )
        )
    if scaled_note:
        print(scaled_note)
    on_disk = set(list_images(images_dir, ""))
    extra = on_disk - {im.name for im in ims.values()}
    if extra:
        print(
            f"[colmap] {len(extra)} image(s) in {images_dir} are not in the model "
            f"(e.g. {sorted(extra)[0]}); they are not used"
        )
    infos.sort(key=lambda c: c.image_name)
    for i, c in enumerate(infos):
        c.uid = i

    point_cloud, tracks = None, None
    if pts:
        order = sorted(pts)
        xyz = np.stack([pts[i].xyz for i in order]).astype(np.float64)
        rgb = np.stack([pts[i].rgb for i in order]).astype(np.float64) / 255.0
        point_cloud = BasicPointCloud(xyz, rgb, np.zeros_like(xyz))
        id_to_name = {im.id: im.name for im in ims.values()}
        tracks = [
            sorted({id_to_name[int(j)] for j in pts[i].image_ids if int(j) in id_to_name})
            for i in order
        ]
    return SceneInfo(
        cameras=infos,
        point_cloud=point_cloud,
        reader="colmap",
        point_tracks=tracks,
        extras={"model_dir": model_dir, "images_dir": images_dir},
    )
