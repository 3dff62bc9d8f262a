"""Tiny synthetic scene folders for the scene/ tests, built from known cameras.

Every builder returns the ground truth it wrote: per image name the COLMAP-convention
world-to-camera rotation ``Rw`` [3, 3], translation ``t`` [3] and intrinsics at the stored
image size.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from scene.colmap_io import ColmapCamera, ColmapImage, ColmapPoint3D, rotmat_to_qvec, write_model


def look_at(center: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """World-to-camera (R, t) of a camera at ``center`` looking at ``target`` (OpenCV axes)."""
    z = np.asarray(target, float) - center
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, (0.0, 1.0, 0.0))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center


def ring_cameras(n: int, radius: float = 4.0, height: float = 1.0):
    """n cameras on a ring around the origin, looking at it."""
    out = []
    for i in range(n):
        a = 2 * np.pi * i / n
        out.append(look_at(np.array([radius * np.cos(a), radius * np.sin(a), height])))
    return out


def write_image(path: str, w: int, h: int, seed: int = 0, rgba: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 4 if rgba else 3), dtype=np.uint8)
    if rgba:
        arr[..., 3] = 0
        arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 255
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def make_colmap_scene(
    root: str,
    n: int = 10,
    w: int = 32,
    h: int = 24,
    ext: str = ".bin",
    model: str = "PINHOLE",
    n_points: int = 60,
    images_dir: str = "images",
    seed: int = 0,
) -> dict:
    """COLMAP scene: images/ (PNG), sparse/0 with one camera, points and tracks.

    Point k is observed by images (k % n) and ((k + 1) % n) (track image ids), and point
    k < 5 by every image.
    """
    rng = np.random.default_rng(seed)
    fx, fy, cx, cy = 30.0, 31.0, w / 2 + 0.3, h / 2 - 0.2
    params = {
        "PINHOLE": [fx, fy, cx, cy],
        "SIMPLE_PINHOLE": [fx, cx, cy],
        "OPENCV": [fx, fy, cx, cy, 0.01, 0.0, 0.0, 0.0],
    }[model]
    cams = {1: ColmapCamera(1, model, w, h, np.array(params, float))}
    truth, images = {}, {}
    for i, (R, t) in enumerate(ring_cameras(n)):
        name = f"img_{i:03d}.png"
        write_image(os.path.join(root, images_dir, name), w, h, seed=i)
        images[i + 1] = ColmapImage(i + 1, rotmat_to_qvec(R), t, 1, name)
        K = (fx, fx if model == "SIMPLE_PINHOLE" else fy, cx, cy)
        truth[name] = {"Rw": R, "t": t, "K": K}
    points = {}
    for k in range(n_points):
        ids = np.arange(n) if k < 5 else np.array([k % n, (k + 1) % n])
        points[k + 1] = ColmapPoint3D(
            k + 1,
            rng.uniform(-1, 1, 3),
            rng.integers(0, 256, 3).astype(np.uint8),
            0.5,
            ids + 1,
            np.zeros(len(ids), dtype=np.int64),
        )
    write_model(cams, images, points, os.path.join(root, "sparse", "0"), ext)
    return {"cameras": truth, "points": points, "names": sorted(truth)}


def gl_c2w(R: np.ndarray, t: np.ndarray) -> list:
    """OpenGL camera-to-world 4x4 (as NeRF json files store) of an OpenCV world-to-camera."""
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    c2w[:3, 1:3] *= -1
    return c2w.tolist()


def make_blender_scene(root: str, n_train: int = 8, n_test: int = 3, w: int = 20, test_file="test"):
    """Blender synthetic layout: train/, test/ RGBA PNGs, file_path without extension."""
    truth = {}
    angle = 0.69
    poses = ring_cameras(n_train + n_test)
    for split, idx in (("train", range(n_train)), (test_file, range(n_train, n_train + n_test))):
        frames = []
        for k, i in enumerate(idx):
            R, t = poses[i]
            write_image(os.path.join(root, split, f"r_{k}.png"), w, w, seed=i, rgba=True)
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": gl_c2w(R, t)})
            f = 0.5 * w / np.tan(0.5 * angle)
            truth[f"{split}/r_{k}.png"] = {"Rw": R, "t": t, "K": (f, f, w / 2, w / 2)}
        with open(os.path.join(root, f"transforms_{split}.json"), "w") as fh:
            json.dump({"camera_angle_x": angle, "frames": frames}, fh)
    return truth


def make_ngp_scene(root: str, n: int = 8, n_missing: int = 3, w: int = 24, h: int = 40):
    """instant-ngp transforms.json: top-level fl_x/fl_y/cx/cy/w/h and k1/k2/p1/p2, file_path
    with extension under images/, the last ``n_missing`` frames without an image file."""
    truth = {}
    frames = []
    for i, (R, t) in enumerate(ring_cameras(n)):
        name = f"{i:04d}.jpg"
        if i < n - n_missing:
            write_image(os.path.join(root, "images", name), w, h, seed=i)
            truth[name] = {"Rw": R, "t": t}
        frames.append({"file_path": f"images/{name}", "transform_matrix": gl_c2w(R, t)})
    meta = {
        "fl_x": 30.0,
        "fl_y": 29.0,
        "cx": 11.5,
        "cy": 20.5,
        "w": float(w),
        "h": float(h),
        "k1": 0.05,
        "k2": -0.01,
        "p1": 0.001,
        "p2": -0.002,
        "aabb_scale": 4,
        "frames": frames,
    }
    with open(os.path.join(root, "transforms.json"), "w") as fh:
        json.dump(meta, fh)
    return truth


def make_llff_scene(
    root: str, n: int = 10, folder: str = "images_8", full=(320, 240), f_full: float = 300.0
):
    """LLFF forward-facing layout: poses_bounds.npy at full resolution, images in
    ``folder`` at 1/8 (or 1/N) size. Cameras on a line looking down +z."""
    factor = int(folder.split("_")[1]) if "_" in folder else 1
    W, H = full
    w, h = W // factor, H // factor
    rows, truth = [], {}
    for i in range(n):
        center = np.array([0.2 * i - 1.0, 0.05 * i, 0.0])
        R, t = look_at(center, target=center + np.array([0.1 * np.sin(i), 0.0, 5.0]), up=(0, -1, 0))
        c2w = np.concatenate([R.T, center[:, None]], 1)  # OpenCV axes (right, down, forward)
        llff = np.concatenate([c2w[:, 1:2], c2w[:, 0:1], -c2w[:, 2:3], c2w[:, 3:4]], 1)
        hwf = np.array([[H], [W], [f_full]], float)
        rows.append(np.concatenate([np.concatenate([llff, hwf], 1).ravel(), [2.0 + i, 50.0]]))
        name = f"image{i:03d}.png"
        write_image(os.path.join(root, folder, name), w, h, seed=i)
        truth[name] = {"Rw": R, "t": t, "K": (f_full / factor, f_full / factor, w / 2, h / 2)}
    np.save(os.path.join(root, "poses_bounds.npy"), np.array(rows))
    return truth


def make_idr_scene(root: str, n: int = 6, w: int = 40, h: int = 30, folder: str = "image"):
    """IDR cameras.npz from known K, R, t (world units) and a scale matrix (scale 2,
    offset (0.5, -0.3, 0.2)): world = S @ normalised."""
    S = np.diag([2.0, 2.0, 2.0, 1.0])
    S[:3, 3] = [0.5, -0.3, 0.2]
    K = np.array([[35.0, 0.0, 19.5], [0.0, 36.0, 14.5], [0.0, 0.0, 1.0]])
    data, truth = {}, {}
    for i, (R, t) in enumerate(ring_cameras(n, radius=8.0, height=2.0)):
        t = t - R @ S[:3, 3]  # camera centres shifted by the sphere centre S[:3, 3]
        K4 = np.eye(4)
        K4[:3, :3] = K
        Rt = np.eye(4)
        Rt[:3, :3], Rt[:3, 3] = R, t
        scale = 7.0 if i % 2 else -3.0  # P is defined up to scale and sign
        data[f"world_mat_{i}"] = scale * (K4 @ Rt)
        data[f"scale_mat_{i}"] = S
        name = f"{i:06d}.png"
        write_image(os.path.join(root, folder, name), w, h, seed=i)
        # normalised frame: x_cam = R (S x_n) + t = 2 R x_n + (R o + t)  ~  R x_n + (R o + t) / 2
        truth[name] = {"Rw": R, "t": (R @ S[:3, 3] + t) / 2.0, "K": (35.0, 36.0, 20.0, 15.0)}
    np.savez(os.path.join(root, "cameras.npz"), **data)
    return truth
