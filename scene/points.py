"""Initialisation points: random volumes, track filtering, and 3DGS's ``input.ply``.

Pure numpy; ``Scene`` decides which source to use.
"""

from __future__ import annotations

import os

import numpy as np

from scene.types import BasicPointCloud, CameraInfo

UPSTREAM_RANDOM_POINTS = 100_000
SH_C0 = 0.28209479177387814


def upstream_blender_cube(rng: np.random.Generator, n: int = UPSTREAM_RANDOM_POINTS):
    """3DGS's Blender initialisation: ``n`` points uniform in [-1.3, 1.3]^3, colours
    ``SH2RGB(u / 255)`` (grey), zero normals."""
    xyz = rng.random((n, 3)) * 2.6 - 1.3
    shs = rng.random((n, 3)) / 255.0
    return BasicPointCloud(xyz, shs * SH_C0 + 0.5, np.zeros((n, 3)))


def camera_centers(cams: list[CameraInfo]) -> np.ndarray:
    """[N, 3] camera centres in world coordinates."""
    return np.stack([-c.R @ c.T for c in cams]) if cams else np.zeros((0, 3))


def nerfpp_radius(cams: list[CameraInfo]) -> float:
    """3DGS ``getNerfppNorm`` radius: 1.1 x the largest distance of a camera centre from
    the centres' mean."""
    C = camera_centers(cams)
    if len(C) == 0:
        return 0.0
    return 1.1 * float(np.linalg.norm(C - C.mean(0), axis=1).max())


def _project(c: CameraInfo, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates [M, 2] and depths [M] of world points X [M, 3] in camera c."""
    Xc = X @ c.R + c.T  # R is camera-to-world: x_cam = R.T @ x + T
    z = Xc[:, 2]
    zs = np.where(np.abs(z) < 1e-12, 1e-12, z)
    return Xc[:, :2] / zs[:, None] * (c.fx, c.fy) + (c.cx, c.cy), z


def _visible(c: CameraInfo, X: np.ndarray, near: float, far: float) -> np.ndarray:
    """[M] bool: X inside camera c's frustum between depths near and far."""
    uv, z = _project(c, X)
    return (
        (z >= near)
        & (z <= far)
        & (uv[:, 0] >= 0)
        & (uv[:, 0] <= c.width)
        & (uv[:, 1] >= 0)
        & (uv[:, 1] <= c.height)
    )


def _inside(cams: list[CameraInfo], X: np.ndarray, near: np.ndarray, far: np.ndarray):
    """[M] bool: X inside at least one camera's frustum between its near and far depth.

    One camera at a time, so memory stays O(M) for any number of cameras."""
    ok = np.zeros(len(X), dtype=bool)
    for c, a, b in zip(cams, near, far):
        ok |= _visible(c, X, a, b)
    return ok


def frustum_corners(c: CameraInfo, near: float, far: float) -> np.ndarray:
    """[8, 3] world corners of a camera frustum between depths near and far."""
    px = np.array([[0, 0], [c.width, 0], [0, c.height], [c.width, c.height]], dtype=float)
    rays = np.stack([(px[:, 0] - c.cx) / c.fx, (px[:, 1] - c.cy) / c.fy, np.ones(4)], 1)
    pts_cam = np.concatenate([rays * near, rays * far])
    return (pts_cam - c.T) @ c.R.T  # x_world = R @ (x_cam - T)


def depth_bounds_from_points(
    cams: list[CameraInfo], points: np.ndarray, lo: float = 1.0, hi: float = 99.0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-camera (near, far) from the depths of the points each camera sees: the ``lo``
    and ``hi`` percentiles, widened by 10 %. None when no camera sees 10 points."""
    if points is None or len(points) == 0:
        return None
    sub = points if len(points) <= 200_000 else points[:: len(points) // 200_000 + 1]
    depths = []
    for c in cams:
        _, z = _project(c, sub)
        depths.append(z[_visible(c, sub, 1e-9, np.inf)])
    counts = np.array([len(d) for d in depths])
    if not (counts >= 10).any():
        return None
    everyone = np.concatenate(depths)
    near, far = np.zeros(len(cams)), np.zeros(len(cams))
    for k, d in enumerate(depths):
        d = d if counts[k] >= 10 else everyone  # too few points: all cameras' depths
        near[k], far[k] = np.percentile(d, lo) * 0.9, np.percentile(d, hi) * 1.1
    return near, far


def focus_sphere(cams: list[CameraInfo]) -> tuple[np.ndarray, float] | None:
    """Sphere around the point the cameras look at, when they look at one (object-centric).

    The centre is the least-squares point nearest to all optical axes; it must lie in front
    of every camera. The radius is the largest that every view sees whole:
    min over cameras of distance x sin(half the smaller field of view). None for a single
    camera or (nearly) parallel axes (forward-facing captures).
    """
    if len(cams) < 2:
        return None
    C = camera_centers(cams)
    D = np.stack([c.R[:, 2] for c in cams])  # viewing directions
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c, d in zip(C, D):
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c
    if np.linalg.cond(A) > 1e6:
        return None
    p = np.linalg.solve(A, b)
    depth = np.einsum("ij,ij->i", p - C, D)
    dist = np.linalg.norm(p - C, axis=1)
    if np.any(depth <= 0) or np.any(depth < 0.5 * dist):  # behind or far off-axis
        return None
    half_fov = np.array(
        [min(np.arctan(c.width / (2 * c.fx)), np.arctan(c.height / (2 * c.fy))) for c in cams]
    )
    return p, float(np.min(dist * np.sin(half_fov)))


def uniform_in_ball(rng: np.random.Generator, n: int, center: np.ndarray, radius: float):
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return center + v * radius * rng.random((n, 1)) ** (1.0 / 3.0)


def uniform_in_frusta(
    rng: np.random.Generator,
    n: int,
    cams: list[CameraInfo],
    near: np.ndarray,  # [K]
    far: np.ndarray,  # [K]
    max_rounds: int = 200,
) -> np.ndarray:
    """``n`` points uniform in the union of the cameras' frusta between near and far
    (rejection sampling in the box around the frusta)."""
    corners = np.concatenate([frustum_corners(c, a, b) for c, a, b in zip(cams, near, far)])
    lo, hi = corners.min(0), corners.max(0)
    out, count = [], 0
    batch = max(4 * n, 10_000)
    for _ in range(max_rounds):
        X = lo + rng.random((batch, 3)) * (hi - lo)
        X = X[_inside(cams, X, near, far)]
        out.append(X)
        count += len(X)
        if count >= n:
            break
    return np.concatenate(out)[:n]


def random_init(
    cams: list[CameraInfo],
    n: int,
    rng: np.random.Generator,
    bounds: dict[str, tuple[float, float]] | None = None,
    sphere: tuple[np.ndarray, float] | None = None,
    points: np.ndarray | None = None,
) -> tuple[BasicPointCloud, str]:
    """``n`` points uniform in a volume holding the scene, with random colours.

    The volume, first that applies:

    1. ``sphere`` known to hold the scene (IDR: the unit sphere) -> that ball;
    2. per-camera near/far depth ``bounds`` (LLFF poses_bounds) -> the union of the given
       cameras' frusta between near and far;
    3. scene ``points`` -> the same frusta, with near/far from the 1st/99th percentile of
       the depths of the points each camera sees (widened 10 %);
    4. the cameras look at a common point (object-centric) -> the largest ball around it
       that every view sees whole (``focus_sphere``);
    5. otherwise (forward-facing, nothing known) -> frusta from 0.01 L to 10 L, with L the
       largest distance between two camera centres (1 if there is a single camera).

    Returns the cloud and a few words naming the volume.
    """
    if sphere is not None:
        X, what = uniform_in_ball(rng, n, np.asarray(sphere[0], float), sphere[1]), "sphere"
    else:
        nf = None
        what = ""
        if bounds is not None and all(c.image_name in bounds for c in cams):
            nf = (
                np.array([bounds[c.image_name][0] for c in cams]),
                np.array([bounds[c.image_name][1] for c in cams]),
            )
            what = "camera frusta within the near/far bounds"
        elif points is not None and len(points):
            nf = depth_bounds_from_points(cams, points)
            what = "camera frusta within the depths of the scene points"
        if nf is None and (fs := focus_sphere(cams)) is not None:
            X, what = uniform_in_ball(rng, n, fs[0], fs[1]), "sphere the cameras look at"
        else:
            if nf is None:
                C = camera_centers(cams)
                L = float(np.max(np.linalg.norm(C[:, None] - C[None], axis=-1))) or 1.0
                nf = (np.full(len(cams), 0.01 * L), np.full(len(cams), 10.0 * L))
                what = "camera frusta up to 10x the camera spread"
            X = uniform_in_frusta(rng, n, cams, nf[0], nf[1])
    colors = rng.random((len(X), 3))
    return BasicPointCloud(X, colors, np.zeros_like(X)), what


def filter_by_tracks(
    pc: BasicPointCloud, tracks: list[list[str]], train: list[str], min_views: int = 2
) -> BasicPointCloud:
    """Points observed by at least ``min_views`` of the ``train`` images."""
    keep_set = set(train)
    keep = np.array([sum(n in keep_set for n in t) >= min_views for t in tracks], dtype=bool)
    normals = None if pc.normals is None else pc.normals[keep]
    return BasicPointCloud(pc.points[keep], pc.colors[keep], normals)


def store_ply(path: str, points: np.ndarray, colors: np.ndarray,
              normals: np.ndarray | None = None) -> None:  # fmt: skip
    """3DGS ``storePly``: x y z nx ny nz (float; zero normals unless given), red green blue
    (uchar), binary little endian; written to a temporary name, then renamed.

    Args:
        points: [N, 3] positions.
        colors: [N, 3] colours in [0, 1].
        normals: [N, 3] or None (zeros).
    """
    from plyfile import PlyData, PlyElement

    dtype = [
        ("x", "f4"),
        ("y", "f4"),
        ("z", "f4"),
        ("nx", "f4"),
        ("ny", "f4"),
        ("nz", "f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
    ]
    el = np.empty(len(points), dtype=dtype)
    el["x"], el["y"], el["z"] = np.asarray(points, dtype=np.float32).T
    if normals is None:
        el["nx"] = el["ny"] = el["nz"] = 0.0
    else:
        el["nx"], el["ny"], el["nz"] = np.asarray(normals, dtype=np.float32).T
    rgb = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(np.uint8)
    el["red"], el["green"], el["blue"] = rgb.T
    tmp = path + ".tmp"
    PlyData([PlyElement.describe(el, "vertex")], byte_order="<").write(tmp)
    os.replace(tmp, path)
