"""Benchmark layouts -> ordinary COLMAP scene folders (images/, sparse/0, split.json).

The converters in scripts/ (prepare_llff.py, prepare_dtu.py, prepare_blender.py) are thin
CLIs over these functions. Pose conventions handled here:

- COLMAP stores world-to-camera ``R, t`` with OpenCV camera axes (x right, y down, z forward)
  and pixel centres at +0.5 (top-left pixel centre = (0.5, 0.5));
- LLFF ``poses_bounds.npy``: per image a camera-to-world 3x5 ``[down, right, backwards, t,
  (H, W, f)]`` at full capture resolution, then near/far depth bounds;
- NeRF/Blender/instant-ngp ``transforms*.json``: OpenGL camera-to-world (x right, y up,
  z backwards), intrinsics from ``camera_angle_x`` or ``fl_x/fl_y/cx/cy`` (COLMAP pixel
  convention, as instant-ngp's colmap2nerf copies them), OpenCV distortion ``k1 k2 p1 p2``;
- IDR/MonoSDF ``cameras.npz`` and DTU ``Calibration/cal18/pos_XXX.txt``: 3x4 projection
  matrices ``K [R | t]`` whose pixel coordinates put pixel centres on integers (OpenCV), so
  0.5 is added to the principal point.

Every converter builds ``<out>.tmp`` and renames it to ``<out>`` when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from PIL import Image
from tqdm import tqdm

from scene.colmap_io import ColmapCamera, ColmapImage, rotmat_to_qvec, write_model
from sfm.errors import SceneError


@dataclass
class ViewRecord:
    """One converted view: its file name in images/, pose and intrinsics."""

    name: str
    R: np.ndarray  # [3, 3] world-to-camera rotation
    t: np.ndarray  # [3] world-to-camera translation
    width: int
    height: int
    fx: float
    fy: float
    cx: float  # COLMAP convention (top-left pixel centre at 0.5)
    cy: float
    # Distortion parameters of ``distortion_model`` after fx, fy, cx, cy (empty: none):
    # OPENCV k1 k2 p1 p2, FULL_OPENCV k1 k2 p1 p2 k3 k4 k5 k6, OPENCV_FISHEYE k1 k2 k3 k4.
    distortion: tuple[float, ...] = ()
    distortion_model: str = "OPENCV"


# ---------------------------------------------------------------------- pose conventions


def llff_to_views(
    poses_bounds: np.ndarray,  # [N, 17]
    names: list[str],
    width: int,
    height: int,
) -> tuple[list[ViewRecord], np.ndarray]:
    """LLFF poses at the size of the images used -> views, and near/far bounds [N, 2].

    The focal length is stored for the full capture (H, W in the 3x5 matrix): it is scaled by
    the actual image size, so any images_N/ folder (or a resize) gets the right intrinsics.
    The principal point is the image centre, as LLFF assumes.
    """
    pb = np.asarray(poses_bounds, dtype=np.float64)
    if pb.ndim != 2 or pb.shape[1] != 17:
        raise ValueError(f"poses_bounds must be [N, 17], got {pb.shape}")
    if len(pb) != len(names):
        raise ValueError(f"poses_bounds has {len(pb)} poses but there are {len(names)} images")
    poses = pb[:, :15].reshape(-1, 3, 5)
    views = []
    for name, p in zip(names, poses):
        H, W, f = p[:, 4]
        # LLFF columns: down, right, backwards -> OpenCV: right, down, forward.
        R_c2w = np.stack([p[:, 1], p[:, 0], -p[:, 2]], axis=1)
        R = R_c2w.T
        views.append(
            ViewRecord(
                name,
                R,
                -R @ p[:, 3],
                width,
                height,
                fx=f * width / W,
                fy=f * height / H,
                cx=width / 2.0,
                cy=height / 2.0,
            )
        )
    return views, pb[:, 15:17].copy()


def opengl_c2w_to_w2c(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NeRF/Blender camera-to-world (OpenGL axes) -> COLMAP world-to-camera (R, t)."""
    m = np.asarray(c2w, dtype=np.float64)[:4, :4].copy()
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    m[:3, 1:3] *= -1  # y up -> down, z backwards -> forward
    R_c2w = m[:3, :3]
    U, _, Vt = np.linalg.svd(R_c2w)  # transforms.json often carries scaled/rounded rotations
    R = (U @ Vt).T
    return R, -R @ m[:3, 3]


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3x4 projection ``K [R | t]`` -> K [3, 3] (K[2,2] = 1, positive focals), R, t."""
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    M = P[:, :3]
    if np.linalg.det(M) < 0:
        P = -P
        M = P[:, :3]
    K, R = scipy.linalg.rq(M)
    S = np.diag(np.sign(np.diag(K)))  # make the focals positive; S @ S = I
    K, R = K @ S, S @ R
    t = np.linalg.solve(K, P[:, 3])
    return K / K[2, 2], R, t


def projection_views(
    projections: list[np.ndarray],
    names: list[str],
    sizes: list[tuple[int, int]],
    calib_size: tuple[int, int] | None = None,
) -> list[ViewRecord]:
    """Views from OpenCV-convention projection matrices (principal point + 0.5).

    ``calib_size``: the (width, height) the matrices were calibrated for, when the images are
    a centred crop of that size resized to ``sizes`` (MonoSDF's DTU: 1600x1200 cropped to
    1200x1200, resized to 384x384). The crop and scale are applied exactly in COLMAP's
    edge-origin pixel coordinates.
    """
    views = []
    for P, name, (w, h) in zip(projections, names, sizes):
        K, R, t = decompose_projection(P)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5
        if calib_size is not None and tuple(calib_size) != (w, h):
            off_x, off_y, s = centre_crop_transform(calib_size, (w, h))
            fx, fy, cx, cy = fx * s, fy * s, (cx - off_x) * s, (cy - off_y) * s
        views.append(ViewRecord(name, R, t, w, h, fx, fy, cx, cy))
    return views


def centre_crop_transform(
    src_size: tuple[int, int], dst_size: tuple[int, int]
) -> tuple[float, float, float]:
    """(offset_x, offset_y, scale) of the largest centred crop of src with dst's aspect,
    resized to dst: x_dst = (x_src - offset) * scale (edge-origin pixel coordinates)."""
    W, H = src_size
    w, h = dst_size
    if W / H > w / h:  # source wider: crop the width
        crop_w, crop_h = H * w / h, H
    else:
        crop_w, crop_h = W, W * h / w
    return (W - crop_w) / 2.0, (H - crop_h) / 2.0, w / crop_w


# ------------------------------------------------------------------------ scene writing


@contextlib.contextmanager
def staged_output(out_dir: str, overwrite: bool) -> Iterator[str]:
    """Yield ``<out>.tmp`` to fill; renamed to ``<out>`` on success, removed on failure."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise SceneError(f"{out_dir}: exists already; pass --overwrite to replace it")
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_views_model(views: list[ViewRecord], model_dir: str) -> None:
    """sparse/0 with PINHOLE cameras, or the distortion model where a view has distortion
    (cameras shared when intrinsics are equal), and no points.

    Image ids follow the order of ``views`` (1-based), so sorted names get sorted ids.
    """
    cams: dict[int, ColmapCamera] = {}
    cam_ids: dict[tuple, int] = {}
    imgs: dict[int, ColmapImage] = {}
    for k, v in enumerate(views, start=1):
        if v.distortion and any(abs(d) > 0 for d in v.distortion):
            model, params = v.distortion_model, [v.fx, v.fy, v.cx, v.cy, *v.distortion]
        else:
            model, params = "PINHOLE", [v.fx, v.fy, v.cx, v.cy]
        key = (model, v.width, v.height, tuple(np.round(params, 9)))
        if key not in cam_ids:
            cid = len(cams) + 1
            cams[cid] = ColmapCamera(cid, model, v.width, v.height, np.asarray(params, float))
            cam_ids[key] = cid
        imgs[k] = ColmapImage(k, rotmat_to_qvec(v.R), np.asarray(v.t, float), cam_ids[key], v.name)
    write_model(cams, imgs, {}, model_dir)


def write_split(scene_dir: str, split: dict) -> None:
    with open(os.path.join(scene_dir, "split.json"), "w") as f:
        json.dump(split, f, indent=2)


def save_image(src: str, dst: str, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Copy (or resize with Lanczos to ``size``) an image; returns its (width, height).

    Same-size copies keep the file's bytes; other writes follow ``dst``'s extension.
    """
    try:
        with Image.open(src) as im:
            im.load()
            if size is None or tuple(size) == im.size:
                if os.path.splitext(src)[1].lower() == os.path.splitext(dst)[1].lower():
                    shutil.copyfile(src, dst)
                else:
                    im.save(dst)
                return im.size
            im.resize(tuple(size), Image.LANCZOS).save(dst)
            return tuple(size)
    except (OSError, SyntaxError, ValueError) as e:
        raise SceneError(f"{src}: unreadable image ({e}); replace or delete the file") from e


def copy_images(
    pairs: list[tuple[str, str]], size: tuple[int, int] | None = None, desc: str = "images"
) -> list[tuple[int, int]]:
    """save_image over (src, dst) pairs with a progress bar."""
    return [save_image(s, d, size) for s, d in tqdm(pairs, desc=desc, unit="img")]


def unique_names(paths: list[str]) -> list[str]:
    """File names for images/: the base name, prefixed by parent folders where needed."""
    base = [os.path.basename(p) for p in paths]
    if len(set(base)) == len(base):
        return base
    parts = [os.path.normpath(p).split(os.sep) for p in paths]
    for depth in range(2, max(len(p) for p in parts) + 1):
        names = ["_".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise SceneError("image paths collide even with their folders; rename the files")


def alternate_split(names: list[str], n_train: int) -> dict:
    """SPARS3R/InstantSplat split: 2N frames sampled uniformly, alternating train/test."""
    names = sorted(names)
    k = min(2 * n_train, len(names))
    if k < 2 * n_train:
        raise SceneError(
            f"the alternate split of {n_train} training views needs {2 * n_train} frames, "
            f"found {len(names)}"
        )
    idx = np.round(np.linspace(0, len(names) - 1, k)).astype(int)
    picked = [names[i] for i in idx]
    return {"protocol": "custom", "n_views": n_train, "train": picked[0::2], "test": picked[1::2]}


def undistort_scene(scene_tmp: str, image_dir: str, model_dir: str) -> None:
    """Replace distorted images and OPENCV cameras by COLMAP-undistorted PINHOLE ones.

    Runs pycolmap.undistort_images (COLMAP's image_undistorter, in process) over the model in
    ``model_dir`` and the images in ``image_dir``, then swaps both in place.
    """
    import pycolmap

    und = os.path.join(scene_tmp, "_undistort")
    pycolmap.undistort_images(und, model_dir, image_dir, output_type="COLMAP")
    shutil.rmtree(image_dir)
    shutil.rmtree(model_dir)
    os.rename(os.path.join(und, "images"), image_dir)
    os.rename(os.path.join(und, "sparse"), model_dir)
    shutil.rmtree(und)
