"""NeRF/Blender ``transforms_*.json`` and single ``transforms.json`` (instant-ngp, nerfstudio).

Poses are OpenGL camera-to-world matrices (x right, y up, z backwards); flipping the y and z
camera axes gives the COLMAP/OpenCV convention used everywhere else. Intrinsics come from
``fl_x/fl_y/cx/cy/w/h`` (top level or per frame, per-frame wins) or from ``camera_angle_x``
(and ``camera_angle_y``) with the principal point at the image centre. instant-ngp's
``k1, k2, p1, p2`` (and ``k3``) become ``CameraInfo.distortion``; the image loader removes it
with OpenCV. Frames whose image file is missing are skipped with one warning line (the
instant-ngp fox lists 67 frames for 50 images).

``image_name`` is the path relative to ``<source>/<images>`` when the file lies there (fox:
``0001.jpg``), else relative to the scene folder (lego: ``train/r_0.png``), so that two
folders holding ``r_0.png`` stay distinct.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from scene.errors import SceneError
from scene.readers.common import TRY_EXTENSIONS, image_size, pose_from_c2w, scale_to_disk
from scene.types import BasicPointCloud, CameraInfo, SceneInfo

_INTRINSIC_KEYS = (
    "fl_x",
    "fl_y",
    "cx",
    "cy",
    "w",
    "h",
    "camera_angle_x",
    "camera_angle_y",
    "k1",
    "k2",
    "k3",
    "p1",
    "p2",
    "camera_model",
    "is_fisheye",
)


def resolve_image(json_dir: str, file_path: str) -> str | None:
    """The image file a frame's ``file_path`` names (with or without extension), or None."""
    base = os.path.normpath(os.path.join(json_dir, file_path))
    if os.path.isfile(base):
        return base
    for ext in TRY_EXTENSIONS:
        if os.path.isfile(base + ext):
            return base + ext
    return None


def _load_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SceneError(
            f"{path}: cannot parse the transforms file ({e}); fix or regenerate it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise SceneError(f"{path}: no 'frames' list; not a NeRF transforms file")
    return data


def _frame_camera(meta: dict, frame: dict, path: str, image_path: str, where: str):
    """Intrinsics, distortion of one frame, at the size of the image on disk."""
    p = {k: meta[k] for k in _INTRINSIC_KEYS if k in meta}
    p.update({k: frame[k] for k in _INTRINSIC_KEYS if k in frame})
    model = str(p.get("camera_model", "OPENCV")).upper()
    if p.get("is_fisheye") or "FISHEYE" in model or model not in ("OPENCV", "PINHOLE"):
        raise SceneError(
            f"{path}: camera model {p.get('camera_model', 'fisheye')} is not supported; "
            "undistort the images to a pinhole camera first (e.g. colmap_match.py)"
        )
    w_disk, h_disk = image_size(image_path)
    w = float(p.get("w", w_disk))
    h = float(p.get("h", h_disk))
    fx, fy, cx, cy = transforms_intrinsics(p, w, h, f"{path}: {where}")
    fx, fy, cx, cy = scale_to_disk(
        fx, fy, cx, cy, (w, h), (w_disk, h_disk), f"{image_path} ({path})"
    )
    dist = np.array([float(p.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3")])
    distortion = dist if np.any(dist != 0.0) else None
    return fx, fy, cx, cy, w_disk, h_disk, distortion


def read_transforms_file(
    path: str, source: str, images: str = "images"
) -> tuple[list[CameraInfo], list[str]]:
    """Cameras of one transforms file, and the file paths of frames without an image."""
    meta = _load_json(path)
    json_dir = os.path.dirname(path)
    images_dir = os.path.normpath(os.path.join(source, images))
    cams, missing = [], []
    for k, frame in enumerate(meta["frames"]):
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise SceneError(f"{path}: frame {k} lacks file_path or transform_matrix; fix it")
        image_path = resolve_image(json_dir, frame["file_path"])
        if image_path is None:
            missing.append(frame["file_path"])
            continue
        c2w = np.array(frame["transform_matrix"], dtype=np.float64)
        if c2w.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(c2w)):
            raise SceneError(f"{path}: frame {k} has a malformed transform_matrix; fix it")
        c2w = c2w[:3].copy()
        c2w[:3, 1:3] *= -1  # OpenGL (y up, z back) -> COLMAP (y down, z forward)
        R, T = pose_from_c2w(c2w)
        fx, fy, cx, cy, w, h, dist = _frame_camera(meta, frame, path, image_path, f"frame {k}")
        rel_root = images_dir if image_path.startswith(images_dir + os.sep) else source
        name = os.path.relpath(image_path, rel_root).replace(os.sep, "/")
        cams.append(
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
                image_path=image_path,
                image_name=name,
                distortion=dist,
            )
        )
    return cams, missing


def read_ply_points(path: str) -> BasicPointCloud:
    """x, y, z (+ red, green, blue as 0-255, + nx, ny, nz) vertices of a PLY file."""
    from plyfile import PlyData

    try:
        v = PlyData.read(path)["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    except Exception as e:  # plyfile raises several types for bad files
        raise SceneError(f"{path}: cannot read the point cloud ({e}); fix or delete it") from None
    names = v.data.dtype.names
    if all(c in names for c in ("red", "green", "blue")):
        rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.float64) / 255.0
    else:
        rgb = np.full_like(xyz, 0.5)
    if all(c in names for c in ("nx", "ny", "nz")):
        normals = np.stack([v["nx"], v["ny"], v["nz"]], axis=1).astype(np.float64)
    else:
        normals = np.zeros_like(xyz)
    return BasicPointCloud(xyz, rgb, normals)


def read_blender(source: str, images: str = "images") -> SceneInfo:
    """Blender/NeRF scene: ``transforms_train.json`` (+ test, or val as test) or one
    ``transforms.json``.

    With a train file and a test (or val) file the scene has a predefined split (their
    image names); a lone train file or a single ``transforms.json`` has none.
    """
    train_file = os.path.join(source, "transforms_train.json")
    if os.path.isfile(train_file):
        files = {"train": train_file}
        for cand in ("transforms_test.json", "transforms_val.json"):
            if os.path.isfile(os.path.join(source, cand)):
                files["test"] = os.path.join(source, cand)
                break
    else:
        files = {"all": os.path.join(source, "transforms.json")}

    cams: list[CameraInfo] = []
    lists: dict[str, list[str]] = {}
    seen: set[str] = set()
    missing_total, frames_total, first_missing = 0, 0, None
    for role, path in files.items():
        part, missing = read_transforms_file(path, source, images)
        frames_total += len(part) + len(missing)
        if missing:
            missing_total += len(missing)
            first_missing = first_missing or (path, missing[0])
        lists[role] = [c.image_name for c in part]
        for c in part:
            if c.image_name not in seen:  # the same image listed twice: keep the first pose
                seen.add(c.image_name)
                cams.append(c)
    if missing_total:
        path, fp = first_missing
        print(
            f"[blender] {missing_total} of {frames_total} frames have no image file "
            f"(first: {fp!r} in {os.path.basename(path)}); skipped"
        )
    if not cams:
        raise SceneError(
            f"{list(files.values())[0]}: none of the listed images exists; put the images "
            "next to the transforms file as its file_path entries say"
        )
    cams.sort(key=lambda c: c.image_name)
    for i, c in enumerate(cams):
        c.uid = i

    predefined = None
    if "test" in files:
        predefined = {"train": lists["train"], "test": lists["test"]}

    point_cloud = None
    ply = os.path.join(source, "points3d.ply")
    meta_ply = None
    if "all" in files:
        meta_ply = _load_json(files["all"]).get("ply_file_path")  # nerfstudio
    if meta_ply and os.path.isfile(os.path.join(source, meta_ply)):
        point_cloud = read_ply_points(os.path.join(source, meta_ply))
    elif os.path.isfile(ply):
        point_cloud = read_ply_points(ply)
    return SceneInfo(
        cameras=cams,
        point_cloud=point_cloud,
        reader="blender",
        predefined_split=predefined,
        extras={"transforms": list(files.values()), "images_dir": os.path.join(source, images)},
    )


def transforms_intrinsics(p: dict, w: float, h: float, where: str) -> tuple[float, ...]:
    """(fx, fy, cx, cy) from transforms-file keys (frame keys merged over file keys).

    ``fl_x``/``fl_y`` win over ``camera_angle_x``/``camera_angle_y``; a missing fy equals fx;
    the principal point defaults to the image centre. instant-ngp and Blender already use the
    +0.5 pixel-centre convention, so nothing is shifted.
    """
    if "fl_x" in p:
        fx = float(p["fl_x"])
    elif "camera_angle_x" in p:
        fx = 0.5 * w / math.tan(0.5 * float(p["camera_angle_x"]))
    else:
        raise SceneError(f"{where} has neither fl_x nor camera_angle_x; add one")
    if "fl_y" in p:
        fy = float(p["fl_y"])
    elif "camera_angle_y" in p and "fl_x" not in p:
        fy = 0.5 * h / math.tan(0.5 * float(p["camera_angle_y"]))
    else:
        fy = fx
    return fx, fy, float(p.get("cx", w / 2.0)), float(p.get("cy", h / 2.0))
