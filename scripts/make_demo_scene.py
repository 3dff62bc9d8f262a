"""Make the embedded demo scene: textured objects on a ground plane, ray cast in NumPy.

The scene is built from analytic primitives (a ground square, a sphere, a yawed box, a
capped cylinder and a cone), each with its own procedural texture (checker, stripes, helix,
value noise), lit by one directional light with an ambient term and hard shadows. Because
every surface is analytic, the generator knows the exact depth and instance label of every
pixel, which lets it write ground truth that real captures never have.

Output: one scene folder in the project's format (docs/ARCHITECTURE.md, "The scene folder"):

```
<scene>/images/view_000.png ...      RGB, names sorted = order along the camera path
<scene>/sparse/0/{cameras,images,points3D}.bin
                                     COLMAP model: every camera (train and test, one shared
                                     PINHOLE camera) + an SfM-like point cloud seen by >= 2
                                     training views, with tracks and keypoints
<scene>/split.json                   {"protocol": "custom", "n_views", "train", "test"}
<scene>/depth_gt/<image name>.npy    float32 [H, W] camera z-depth, inf where no surface
<scene>/masks_gt/<stem>.png          uint8 [H, W] instance labels: 0 ground/sky, 1..K objects
<scene>/pure_masks/<image name>      binary ROI prior, 255 on the objects, 0 elsewhere
<scene>/masks_object/<image name>    evaluation object mask (same content as pure_masks)
<scene>/scene.json                   generator parameters, objects and labels
<scene>/README.md
```

Conventions: world z is up and the ground is the plane z = 0. Cameras follow COLMAP
(x right, y down, z forward; world-to-camera ``x_cam = R x_world + t``; the centre of the
top-left pixel is (0.5, 0.5)). Colours are display values in [0, 1]; pixels that see no
surface are black, the default 3DGS background.

Usage:
    python scripts/make_demo_scene.py -o output/demo/scene
    python -c "from scripts.make_demo_scene import make_demo_scene; make_demo_scene('x')"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/make_demo_scene.py`
    sys.path.insert(0, str(REPO_ROOT))

from scene.colmap_io import (  # noqa: E402
    ColmapCamera,
    ColmapImage,
    ColmapPoint3D,
    rotmat_to_qvec,
    write_model,
)

GENERATOR = "scripts/make_demo_scene.py"
T_MIN = 1e-4  # rays start this far from their origin (no self-hits for shadow rays)
GROUND_HALF = 3.2  # the ground is the square |x|, |y| <= GROUND_HALF at z = 0
AMBIENT = 0.35
DIFFUSE = 0.75


# --------------------------------------------------------------------------- textures


class ValueNoise:
    """Smooth 3D value noise: random values on an integer lattice, smoothstep-interpolated.

    The lattice is periodic (``size`` cells) so it is a fixed-size table; ``fbm`` sums a few
    octaves. Everything is vectorised over points.
    """

    def __init__(self, rng: np.random.Generator, size: int = 32):
        self.size = size
        self.table = rng.random((size, size, size))

    def __call__(self, p: np.ndarray) -> np.ndarray:  # p [N, 3] -> [N] in [0, 1]
        pf = np.floor(p)
        i = pf.astype(np.int64) % self.size
        f = p - pf
        s = f * f * (3.0 - 2.0 * f)
        j = (i + 1) % self.size
        out = np.zeros(len(p))
        for cx in (0, 1):
            wx = s[:, 0] if cx else 1.0 - s[:, 0]
            ix = j[:, 0] if cx else i[:, 0]
            for cy in (0, 1):
                wy = s[:, 1] if cy else 1.0 - s[:, 1]
                iy = j[:, 1] if cy else i[:, 1]
                for cz in (0, 1):
                    wz = s[:, 2] if cz else 1.0 - s[:, 2]
                    iz = j[:, 2] if cz else i[:, 2]
                    out += wx * wy * wz * self.table[ix, iy, iz]
        return out

    def fbm(self, p: np.ndarray, octaves: int = 3) -> np.ndarray:  # p [N, 3] -> [N] in [0, 1]
        total, amp, norm = np.zeros(len(p)), 1.0, 0.0
        for o in range(octaves):
            total += amp * self(p * (2.0**o) + 17.0 * o)
            norm += amp
            amp *= 0.5
        return total / norm


def hsv_to_rgb(h: np.ndarray, s: float | np.ndarray, v: float | np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; h [N] in [0, 1) -> [N, 3]."""
    h = np.asarray(h, dtype=float)
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return np.asarray(v)[..., None] * (
        1.0 - np.asarray(s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    )


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-point blend of two colours a, b [3] with weights w [N] -> [N, 3]."""
    return a[None] * (1.0 - w[:, None]) + b[None] * w[:, None]


def _palette(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """n saturated colours with well-separated hues (random start, golden-ratio steps)."""
    h0 = rng.random()
    return [hsv_to_rgb(np.array([(h0 + 0.618034 * k) % 1.0]), 0.75, 0.95)[0] for k in range(n)]


# ------------------------------------------------------------------------- primitives


def _smallest_root(
    a: np.ndarray, half_b: np.ndarray, c: np.ndarray, valid_at
) -> np.ndarray:  # -> [N] t, inf where no valid root
    """Smallest root t > T_MIN of a t^2 + 2 half_b t + c = 0 with ``valid_at(t)`` true."""
    disc = half_b * half_b - a * c
    ok = (disc >= 0.0) & (np.abs(a) > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    a_safe = np.where(ok, a, 1.0)
    t = np.full(len(a), np.inf)
    for sign in (1.0, -1.0):  # try both roots, keep the nearest valid one
        r = (-half_b + sign * sq) / a_safe
        good = ok & (r > T_MIN) & valid_at(r) & (r < t)
        t = np.where(good, r, t)
    return t


@dataclass
class Ground:
    """The square |x|, |y| <= half at z = 0: noisy checker with fine grain."""

    colors: tuple[np.ndarray, np.ndarray]
    noise: ValueNoise
    half: float = GROUND_HALF
    tile: float = 0.3
    label: int = 0
    name: str = "ground"
    kind: str = "ground"

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:  # o, d [N, 3] -> t [N]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[:, 2] / d[:, 2]
        x = o[:, 0] + t * d[:, 0]
        y = o[:, 1] + t * d[:, 1]
        ok = (t > T_MIN) & (np.abs(x) <= self.half) & (np.abs(y) <= self.half)
        return np.where(ok, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.array([0.0, 0.0, 1.0]), p.shape).copy()

    def albedo(self, p: np.ndarray) -> np.ndarray:
        check = (np.floor(p[:, 0] / self.tile) + np.floor(p[:, 1] / self.tile)) % 2.0
        base = _mix(self.colors[0], self.colors[1], check)
        low = self.noise.fbm(p * 1.5, 2)  # large blotches
        grain = self.noise(p * 12.0 + 5.0)  # fine grain: a few pixels wide
        return base * (0.55 + 0.6 * low[:, None]) * (0.8 + 0.35 * grain[:, None])

    def describe(self) -> dict:
        return {"half_size": self.half, "tile": self.tile, "texture": "noisy checker"}


@dataclass
class Sphere:
    """Sphere with longitude stripes and darker latitude bands."""

    center: np.ndarray
    radius: float
    colors: tuple[np.ndarray, np.ndarray]
    label: int
    n_stripes: int = 10
    name: str = "sphere"
    kind: str = "sphere"

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - self.center
        a = (d * d).sum(1)
        half_b = (oc * d).sum(1)
        c = (oc * oc).sum(1) - self.radius**2
        return _smallest_root(a, half_b, c, lambda t: np.ones(len(t), dtype=bool))

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - self.center) / self.radius

    def albedo(self, p: np.ndarray) -> np.ndarray:
        q = (p - self.center) / self.radius
        lon = np.arctan2(q[:, 1], q[:, 0]) / (2 * np.pi) + 0.5
        lat = np.arcsin(np.clip(q[:, 2], -1.0, 1.0)) / np.pi + 0.5
        stripe = np.floor(lon * self.n_stripes) % 2.0
        band = 0.75 + 0.25 * (np.floor(lat * 6.0) % 2.0)
        return _mix(self.colors[0], self.colors[1], stripe) * band[:, None]

    def describe(self) -> dict:
        return {"center": self.center.tolist(), "radius": self.radius, "texture": "stripes"}


@dataclass
class Box:
    """Box standing on the ground, rotated by ``yaw`` about z; 3D checker with noise."""

    center: np.ndarray  # centre of the box (z = half height: it stands on the ground)
    half: np.ndarray  # [3] half extents
    yaw: float
    colors: tuple[np.ndarray, np.ndarray]
    noise: ValueNoise
    label: int
    cells: int = 4  # checker cells along the box's largest edge
    name: str = "box"
    kind: str = "box"
    _rot: np.ndarray = field(init=False, repr=False)  # local -> world rotation

    def __post_init__(self) -> None:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        self._rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def _local(self, p: np.ndarray) -> np.ndarray:
        return (p - self.center) @ self._rot  # row vectors: R^T p

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol, dl = self._local(o), d @ self._rot
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = (-self.half - ol) / dl
            t1 = (self.half - ol) / dl
        t_near = np.nanmax(np.minimum(t0, t1), axis=1)
        t_far = np.nanmin(np.maximum(t0, t1), axis=1)
        hit = (t_near <= t_far) & (t_far > T_MIN)
        t = np.where(t_near > T_MIN, t_near, t_far)
        return np.where(hit, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        q = self._local(p) / self.half
        axis = np.argmax(np.abs(q), axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), axis] = np.sign(q[np.arange(len(p)), axis])
        return n @ self._rot.T

    def albedo(self, p: np.ndarray) -> np.ndarray:
        q = self._local(p) + self.half  # [0, 2 half] on the box
        cell = 2.0 * self.half.max() / self.cells
        check = np.floor(q / cell).sum(1) % 2.0
        grain = self.noise(q * 9.0 + 31.0)
        return _mix(self.colors[0], self.colors[1], check) * (0.8 + 0.3 * grain[:, None])

    def describe(self) -> dict:
        return {
            "center": self.center.tolist(),
            "half_extents": self.half.tolist(),
            "yaw": self.yaw,
            "texture": "checker",
        }


@dataclass
class Cylinder:
    """Vertical capped cylinder standing on the ground: helix stripes over a height gradient."""

    base: np.ndarray  # [2] x, y of the axis
    radius: float
    height: float
    colors: tuple[np.ndarray, np.ndarray, np.ndarray]
    label: int
    turns: int = 7
    name: str = "cylinder"
    kind: str = "cylinder"

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ox, oy = o[:, 0] - self.base[0], o[:, 1] - self.base[1]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        half_b = ox * d[:, 0] + oy * d[:, 1]
        c = ox * ox + oy * oy - self.radius**2

        def on_side(t: np.ndarray) -> np.ndarray:
            z = o[:, 2] + t * d[:, 2]
            return (z >= 0.0) & (z <= self.height)

        t = _smallest_root(a, half_b, c, on_side)
        for z_cap in (0.0, self.height):
            with np.errstate(divide="ignore", invalid="ignore"):
                tc = (z_cap - o[:, 2]) / d[:, 2]
            rho2 = (ox + tc * d[:, 0]) ** 2 + (oy + tc * d[:, 1]) ** 2
            good = (tc > T_MIN) & (rho2 <= self.radius**2) & (tc < t)
            t = np.where(good, tc, t)
        return t

    def normal(self, p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0] - self.base[0], p[:, 1] - self.base[1]
        side = np.stack([x, y, np.zeros_like(x)], 1) / self.radius
        top = p[:, 2] >= self.height - 1e-7
        bottom = p[:, 2] <= 1e-7
        side[top] = (0.0, 0.0, 1.0)
        side[bottom] = (0.0, 0.0, -1.0)
        return side

    def albedo(self, p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0] - self.base[0], p[:, 1] - self.base[1]
        ang = np.arctan2(y, x) / (2 * np.pi)
        h = np.clip(p[:, 2] / self.height, 0.0, 1.0)
        stripe = np.floor((ang + h * 0.8) * self.turns) % 2.0
        grad = _mix(self.colors[0], self.colors[1], h)
        col = grad * (1.0 - stripe[:, None]) + self.colors[2][None] * stripe[:, None]
        top = p[:, 2] >= self.height - 1e-7  # the cap: concentric rings
        rings = np.floor(np.sqrt(x * x + y * y) / self.radius * 4.0) % 2.0
        col[top] = _mix(self.colors[0], self.colors[2], rings[top])
        return col

    def describe(self) -> dict:
        return {
            "axis_xy": self.base.tolist(),
            "radius": self.radius,
            "height": self.height,
            "texture": "helix stripes",
        }


@dataclass
class Cone:
    """Vertical cone on the ground (base radius at z = 0, apex above): smooth noise colours."""

    base: np.ndarray  # [2] x, y of the axis
    radius: float
    height: float
    noise: ValueNoise
    hue0: float
    label: int
    name: str = "cone"
    kind: str = "cone"

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        k2 = (self.radius / self.height) ** 2
        ox, oy = o[:, 0] - self.base[0], o[:, 1] - self.base[1]
        w = self.height - o[:, 2]
        a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
        half_b = ox * d[:, 0] + oy * d[:, 1] + k2 * w * d[:, 2]
        c = ox * ox + oy * oy - k2 * w * w

        def on_side(t: np.ndarray) -> np.ndarray:
            z = o[:, 2] + t * d[:, 2]
            return (z >= 0.0) & (z <= self.height)

        t = _smallest_root(a, half_b, c, on_side)
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = -o[:, 2] / d[:, 2]
        rho2 = (ox + tc * d[:, 0]) ** 2 + (oy + tc * d[:, 1]) ** 2
        good = (tc > T_MIN) & (rho2 <= self.radius**2) & (tc < t)
        return np.where(good, tc, t)

    def normal(self, p: np.ndarray) -> np.ndarray:
        k2 = (self.radius / self.height) ** 2
        x, y = p[:, 0] - self.base[0], p[:, 1] - self.base[1]
        n = np.stack([x, y, k2 * (self.height - p[:, 2])], 1)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        n[p[:, 2] <= 1e-7] = (0.0, 0.0, -1.0)
        return n

    def albedo(self, p: np.ndarray) -> np.ndarray:
        n = self.noise.fbm(p * 3.0 + 7.0, 3)
        hue = (self.hue0 + 1.5 * n) % 1.0
        val = 0.6 + 0.4 * self.noise(p * 14.0 + 3.0)
        return hsv_to_rgb(hue, 0.7, val)

    def describe(self) -> dict:
        return {
            "axis_xy": self.base.tolist(),
            "radius": self.radius,
            "height": self.height,
            "texture": "smooth noise hues",
        }


@dataclass
class DemoScene:
    """The geometry: ground first (label 0), then the objects (labels 1..K)."""

    surfaces: list  # [Ground, objects...]; surfaces[i].label == i
    light_dir: np.ndarray  # [3] unit vector towards the light
    seed: int

    @property
    def objects(self) -> list:
        return self.surfaces[1:]


def build_scene(seed: int = 0) -> DemoScene:
    """The demo geometry and textures, deterministic from ``seed``.

    Four objects sit in four slots around the centre (random rotation and jitter), far enough
    apart that they never overlap: slot radius >= 1.0, every object fits in a 0.55 disc.
    """
    rng = np.random.default_rng(seed)
    noise = ValueNoise(rng)
    pal = _palette(rng, 9)
    ground_a = hsv_to_rgb(np.array([rng.random()]), 0.35, 0.85)[0]
    ground = Ground((ground_a, ground_a * 0.45), noise)

    rot = rng.uniform(0, 2 * np.pi)
    slots = []
    for k in range(4):
        ang = rot + k * np.pi / 2 + rng.uniform(-0.25, 0.25)
        r = rng.uniform(1.0, 1.25)
        slots.append(np.array([r * np.cos(ang), r * np.sin(ang)]))
    order = rng.permutation(4)  # which slot each object kind takes

    sphere_r = rng.uniform(0.45, 0.55)
    s_xy = slots[order[0]]
    sphere = Sphere(np.array([*s_xy, sphere_r]), sphere_r, (pal[0], pal[1] * 0.4), label=1)
    half = rng.uniform(0.3, 0.38, size=3)
    half[2] = rng.uniform(0.3, 0.45)
    b_xy = slots[order[1]]
    box = Box(
        np.array([*b_xy, half[2]]),
        half,
        rng.uniform(0, np.pi / 2),
        (pal[2], pal[3]),
        noise,
        label=2,
    )
    cyl = Cylinder(
        slots[order[2]],
        rng.uniform(0.3, 0.4),
        rng.uniform(0.8, 1.1),
        (pal[4], pal[5], pal[6] * 0.5),
        label=3,
    )
    cone = Cone(
        slots[order[3]],
        rng.uniform(0.4, 0.5),
        rng.uniform(0.9, 1.2),
        noise,
        rng.random(),
        label=4,
    )
    light = np.array([0.55, -0.35, 1.0])
    return DemoScene([ground, sphere, box, cyl, cone], light / np.linalg.norm(light), seed)


# --------------------------------------------------------------------------- cameras


@dataclass
class PinholeView:
    """One camera: COLMAP world-to-camera pose and pinhole intrinsics (pixels)."""

    R: np.ndarray  # [3, 3] world-to-camera rotation
    t: np.ndarray  # [3] world-to-camera translation
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        return -self.R.T @ self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points [N, 3] -> pixel coordinates [N, 2] (COLMAP convention) and camera z [N]."""
        pc = points @ self.R.T + self.t
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * pc[:, 0] / z + self.cx, self.fy * pc[:, 1] / z + self.cy], 1)
        return uv, z

    def pixel_rays(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World rays through every pixel at sub-pixel ``offsets`` [S, 2] in [0, 1).

        Returns origins [S*H*W, 3] and directions [S*H*W, 3] (sample-major, then row-major),
        directions scaled so that the ray parameter t equals the camera z-depth.
        """
        jj, ii = np.meshgrid(np.arange(self.width), np.arange(self.height))
        u = jj.reshape(1, -1) + offsets[:, :1]  # [S, H*W]
        v = ii.reshape(1, -1) + offsets[:, 1:2]
        d_cam = np.stack(
            [(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], -1
        ).reshape(-1, 3)
        d = d_cam @ self.R  # R^T d_cam as row vectors
        return np.broadcast_to(self.center, d.shape), d


def look_at(eye: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP world-to-camera (R, t) of a camera at ``eye`` looking at ``target``, z up."""
    f = target - eye
    f = f / np.linalg.norm(f)
    r = np.cross(f, np.array([0.0, 0.0, 1.0]))
    r /= np.linalg.norm(r)
    down = np.cross(f, r)  # with r x down = f: a right-handed x-right, y-down, z-forward frame
    R = np.stack([r, down, f])
    return R, -R @ eye


def make_cameras(
    n_views: int,
    width: int,
    height: int,
    seed: int = 0,
    arc_degrees: float = 240.0,
    fov_x_degrees: float = 58.0,
) -> list[PinholeView]:
    """Cameras along an arc around the centre, looking at it, in path order.

    Azimuth steps evenly over ``arc_degrees``; elevation swings between about 18 and 42
    degrees and the distance between 3.8 and 4.4 along the path, so views differ in height as
    well as direction. The seed only rotates the arc's start.
    """
    rng = np.random.default_rng(seed + 1_000_003)
    start = rng.uniform(0, 2 * np.pi)
    fx = 0.5 * width / math.tan(math.radians(fov_x_degrees) / 2)
    target = np.array([0.0, 0.0, 0.35])
    views = []
    for k in range(n_views):
        s = k / max(n_views - 1, 1)
        az = start + math.radians(arc_degrees) * s
        elev = math.radians(30.0 + 12.0 * math.sin(2 * np.pi * 1.5 * s))
        dist = 4.1 + 0.3 * math.cos(2 * np.pi * s)
        eye = target + dist * np.array(
            [math.cos(elev) * math.cos(az), math.cos(elev) * math.sin(az), math.sin(elev)]
        )
        R, t = look_at(eye, target)
        views.append(PinholeView(R, t, fx, fx, width / 2.0, height / 2.0, width, height))
    return views


def split_views(n_train: int, n_test: int) -> tuple[list[int], list[int]]:
    """Path indices of train and test views: train spread evenly with both path ends
    (``round(linspace)``), so every test view lies between two training views."""
    n = n_train + n_test
    if n_train < 2 or n_test < 0:
        raise ValueError(f"need n_train >= 2 and n_test >= 0 (got {n_train}, {n_test})")
    train = sorted({int(round(x)) for x in np.linspace(0, n - 1, n_train)})
    test = [i for i in range(n) if i not in set(train)]
    return train, test


# --------------------------------------------------------------------------- ray casting


@dataclass
class Hits:
    t: np.ndarray  # [N] ray parameter of the nearest hit (inf: none)
    label: np.ndarray  # [N] int, surface index (-1: none)


def cast(scene: DemoScene, o: np.ndarray, d: np.ndarray) -> Hits:
    """Nearest hit of every ray (o, d [N, 3]) against all surfaces."""
    ts = np.stack([s.intersect(o, d) for s in scene.surfaces], 1)  # [N, S]
    label = np.argmin(ts, axis=1)
    t = ts[np.arange(len(ts)), label]
    return Hits(t, np.where(np.isfinite(t), label, -1))


def shade(scene: DemoScene, points: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Lambertian colour [N, 3] of surface points [N, 3] with surface indices label [N]
    (>= 0): albedo * (ambient + diffuse * max(0, n.l) * lit), hard shadows."""
    rgb = np.zeros_like(points)
    normals = np.zeros_like(points)
    for s in scene.surfaces:
        m = label == s.label
        if m.any():
            rgb[m] = s.albedo(points[m])
            normals[m] = s.normal(points[m])
    ndotl = np.clip(normals @ scene.light_dir, 0.0, None)
    lit = ndotl > 0
    if lit.any():
        o = points[lit] + 1e-4 * normals[lit]
        occluded = np.isfinite(cast(scene, o, np.broadcast_to(scene.light_dir, o.shape)).t)
        ndotl[np.flatnonzero(lit)[occluded]] = 0.0
    return np.clip(rgb * (AMBIENT + DIFFUSE * ndotl)[:, None], 0.0, 1.0)


@dataclass
class ViewRender:
    rgb: np.ndarray  # [H, W, 3] float in [0, 1], supersampled
    depth: np.ndarray  # [H, W] float32 camera z at pixel centres, inf where no surface
    labels: np.ndarray  # [H, W] uint8: 0 ground or nothing, k object k


def render_view(scene: DemoScene, view: PinholeView, supersample: int = 2) -> ViewRender:
    """Colour from ``supersample``^2 stratified samples per pixel (antialiased, like a
    photo); depth and labels from the single ray through each pixel centre."""
    H, W = view.height, view.width
    g = (np.arange(supersample) + 0.5) / supersample
    offs = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    o, d = view.pixel_rays(offs)
    hits = cast(scene, o, d)
    rgb = np.zeros((len(d), 3))
    m = hits.label >= 0
    rgb[m] = shade(scene, o[m] + hits.t[m, None] * d[m], hits.label[m])
    rgb = rgb.reshape(len(offs), H, W, 3).mean(0)

    o, d = view.pixel_rays(np.array([[0.5, 0.5]]))
    centre = cast(scene, o, d)
    depth = centre.t.reshape(H, W).astype(np.float32)  # t is z-depth (directions have z=1)
    labels = np.maximum(centre.label, 0).reshape(H, W).astype(np.uint8)
    return ViewRender(rgb, depth, labels)


# ------------------------------------------------------------------------- SfM-like points


@dataclass
class SparsePoints:
    xyz: np.ndarray  # [P, 3]
    rgb: np.ndarray  # [P, 3] uint8, the source image's pixel colour
    tracks: list[np.ndarray]  # P arrays of path indices of the training views that see it
    uv: list[np.ndarray]  # P arrays [L, 2]: the point's pixel position in those views


def sample_sparse_points(
    scene: DemoScene,
    views: list[PinholeView],
    renders: list[ViewRender],
    train: list[int],
    n_points: int,
    rng: np.random.Generator,
) -> SparsePoints:
    """An SfM-like cloud: surface points seen by >= 2 training views.

    Candidates are pixel centres drawn uniformly in each training view (n_points spread
    evenly) that see a surface; each becomes the surface point its pixel sees. A point is
    visible in a training view when it projects inside the image and the ray from that
    camera to it meets no other surface first (an exact occlusion test: the depth map at
    sub-pixel precision). Points visible in fewer than two training views are dropped, as a
    triangulation would drop them. Keypoints are the exact projections.
    """
    xyz, rgb = [], []
    per_view = int(math.ceil(n_points / len(train)))
    for vi in train:
        v, r = views[vi], renders[vi]
        finite = np.flatnonzero(np.isfinite(r.depth).ravel())
        pick = rng.choice(finite, size=min(per_view, len(finite)), replace=False)
        ii, jj = np.divmod(pick, v.width)
        # Re-cast the picked pixel-centre rays in float64: the same hits as the depth map,
        # without its float32 rounding, so the points sit exactly on the surfaces.
        o, d = v.pixel_rays(np.array([[0.5, 0.5]]))
        hit = cast(scene, o[pick], d[pick])
        xyz.append(o[pick] + hit.t[:, None] * d[pick])
        rgb.append(np.round(r.rgb[ii, jj] * 255.0).astype(np.uint8))
    xyz, rgb = np.concatenate(xyz), np.concatenate(rgb)

    seen = np.zeros((len(xyz), len(train)), dtype=bool)
    uvs = np.zeros((len(xyz), len(train), 2))
    for k, vi in enumerate(train):
        v = views[vi]
        uv, z = v.project(xyz)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < v.width)
        inside &= (uv[:, 1] >= 0) & (uv[:, 1] < v.height)
        d = xyz - v.center  # t = 1 at the point
        hit = cast(scene, np.broadcast_to(v.center, d.shape), d)
        seen[:, k] = inside & (hit.t > 1.0 - 1e-6)
        uvs[:, k] = uv
    keep = seen.sum(1) >= 2
    tracks = [np.asarray(train)[seen[p]] for p in np.flatnonzero(keep)]
    uv = [uvs[p][seen[p]] for p in np.flatnonzero(keep)]
    return SparsePoints(xyz[keep], rgb[keep], tracks, uv)


# ------------------------------------------------------------------------------ writing


def image_names(n_views: int) -> list[str]:
    digits = max(3, len(str(n_views - 1)))
    return [f"view_{k:0{digits}d}.png" for k in range(n_views)]


def colmap_model(
    views: list[PinholeView], names: list[str], pts: SparsePoints
) -> tuple[dict, dict, dict]:
    """(cameras, images, points3D) for scene.colmap_io.write_model.

    Image id = path index + 1; one shared PINHOLE camera (id 1). Point errors are 0: the
    keypoints are the exact projections of the points.
    """
    v0 = views[0]
    cams = {
        1: ColmapCamera(1, "PINHOLE", v0.width, v0.height, np.array([v0.fx, v0.fy, v0.cx, v0.cy]))
    }
    xys: dict[int, list] = {i: [] for i in range(len(views))}
    pids: dict[int, list] = {i: [] for i in range(len(views))}
    points = {}
    for p in range(len(pts.xyz)):
        pid = p + 1
        idxs = []
        for vi, uv in zip(pts.tracks[p], pts.uv[p]):
            idxs.append(len(xys[vi]))
            xys[vi].append(uv)
            pids[vi].append(pid)
        points[pid] = ColmapPoint3D(
            pid, pts.xyz[p], pts.rgb[p], 0.0, pts.tracks[p] + 1, np.array(idxs, dtype=np.int64)
        )
    images = {}
    for i, (v, name) in enumerate(zip(views, names)):
        images[i + 1] = ColmapImage(
            i + 1,
            rotmat_to_qvec(v.R),
            v.t.copy(),
            1,
            name,
            np.array(xys[i], dtype=float).reshape(-1, 2),
            np.array(pids[i], dtype=np.int64),
        )
    return cams, images, points


def _readme(info: dict) -> str:
    objs = "\n".join(f"| {o['label']} | {o['name']} | {o['texture']} |" for o in info["objects"])
    return f"""# Demo scene (synthetic, made by `{GENERATOR}`)

A few textured objects on a ground square, ray cast in NumPy with Lambertian shading, one
directional light, an ambient term and hard shadows. Pixels that see no surface are black
(the default 3DGS background). Seed {info["seed"]}, {info["width"]}x{info["height"]} pixels,
{info["n_train"]} training and {info["n_test"]} test views along a {info["arc_degrees"]:g}
degree arc; test views lie between training views.

| label | object | texture |
|---|---|---|
| 0 | ground (and empty background) | noisy checker |
{objs}

Contents:

- `images/view_XXX.png`: RGB, 2x2 supersampled; names sorted = order along the camera path.
- `sparse/0/`: COLMAP binary model with every camera (train and test, one PINHOLE camera)
  and an SfM-like point cloud: {info["n_points3D"]} surface points sampled in the
  training views, each seen by at least two training views (exact occlusion test), with
  tracks and keypoints (exact projections). Test images carry no keypoints.
- `split.json`: the train/test split (`--split_protocol custom`).
- `depth_gt/<image name>.npy`: float32 camera z-depth at pixel centres; inf where no surface.
- `masks_gt/<stem>.png`: uint8 instance labels (table above).
- `pure_masks/<image name>`: binary region-of-interest prior, 255 on the objects.
- `masks_object/<image name>`: object mask for masked metrics (255 on the objects).
- `scene.json`: the generator's parameters and the objects' geometry.

Conventions: world z is up, the ground is z = 0; COLMAP cameras (x right, y down, z forward,
world-to-camera poses, the top-left pixel centre at (0.5, 0.5)).

Remake it with `python {GENERATOR} -o <folder> --seed {info["seed"]} --width {info["width"]}
--height {info["height"]} --n_train {info["n_train"]} --n_test {info["n_test"]}`.
"""


def _save_png(path: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def make_demo_scene(
    output: str | os.PathLike,
    width: int = 160,
    height: int = 120,
    n_train: int = 8,
    n_test: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    n_points: int = 4000,
    supersample: int = 2,
    arc_degrees: float = 240.0,
    progress: bool = True,
) -> dict:
    """Generate the demo scene folder at ``output`` and return its scene.json content.

    Everything is built in a temporary sibling folder and renamed into place at the end,
    so an interrupted run leaves nothing half-written. An existing non-empty ``output`` is
    refused unless ``overwrite``.
    """
    if width < 8 or height < 8:
        raise ValueError(f"image size {width}x{height} is too small (use at least 8x8)")
    if supersample < 1:
        raise ValueError(f"--supersample must be >= 1 (got {supersample})")
    output = Path(output).resolve()
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a folder; pick another --output")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output} exists and is not empty; pass --overwrite to replace it or pick "
            "another --output"
        )
    train, test = split_views(n_train, n_test)
    t0 = time.perf_counter()
    scene = build_scene(seed)
    views = make_cameras(n_train + n_test, width, height, seed, arc_degrees)
    names = image_names(len(views))

    renders = [
        render_view(scene, v, supersample)
        for v in tqdm(views, desc="ray casting views", disable=not progress, leave=False)
    ]
    rng = np.random.default_rng(seed + 7)
    pts = sample_sparse_points(scene, views, renders, train, n_points, rng)
    cams, images, points = colmap_model(views, names, pts)

    info = {
        "generator": GENERATOR,
        "seed": seed,
        "width": width,
        "height": height,
        "n_train": len(train),
        "n_test": len(test),
        "supersample": supersample,
        "arc_degrees": arc_degrees,
        "light_dir": scene.light_dir.tolist(),
        "ambient": AMBIENT,
        "diffuse": DIFFUSE,
        "background": [0.0, 0.0, 0.0],
        "n_points3D": len(points),
        "ground": scene.surfaces[0].describe(),
        "objects": [{"label": s.label, "name": s.name, **s.describe()} for s in scene.objects],
    }

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        for sub in ("images", "depth_gt", "masks_gt", "pure_masks", "masks_object"):
            (tmp / sub).mkdir()
        for name, r in zip(names, renders):
            stem = os.path.splitext(name)[0]
            _save_png(str(tmp / "images" / name), np.round(r.rgb * 255.0).astype(np.uint8))
            np.save(tmp / "depth_gt" / f"{name}.npy", r.depth)
            _save_png(str(tmp / "masks_gt" / f"{stem}.png"), r.labels)
            obj = np.where(r.labels > 0, 255, 0).astype(np.uint8)
            _save_png(str(tmp / "pure_masks" / name), obj)
            _save_png(str(tmp / "masks_object" / name), obj)
        write_model(cams, images, points, str(tmp / "sparse" / "0"), ".bin")
        split = {
            "protocol": "custom",
            "n_views": len(train),
            "train": [names[i] for i in train],
            "test": [names[i] for i in test],
        }
        (tmp / "split.json").write_text(json.dumps(split, indent=2) + "\n")
        (tmp / "scene.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(info))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a scene folder is ordinary data
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.rename(output, old)
            os.rename(tmp, output)
            shutil.rmtree(old)
        else:
            os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info["seconds"] = time.perf_counter() - t0
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Make the synthetic demo scene (textured objects on a ground plane, "
        "ray cast in NumPy) in the project's scene-folder format."
    )
    parser.add_argument("-o", "--output", required=True, help="scene folder to create")
    parser.add_argument("--width", type=int, default=160, help="image width in pixels")
    parser.add_argument("--height", type=int, default=120, help="image height in pixels")
    parser.add_argument("--n_train", type=int, default=8, help="training views")
    parser.add_argument("--n_test", type=int, default=8, help="held-out test views")
    parser.add_argument("--seed", type=int, default=0, help="scene layout, colours, cameras")
    parser.add_argument(
        "--n_points", type=int, default=4000, help="candidate SfM points (spread over views)"
    )
    parser.add_argument("--supersample", type=int, default=2, help="colour samples per pixel side")
    parser.add_argument("--arc_degrees", type=float, default=240.0, help="span of the camera path")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output")
    args = parser.parse_args(argv)
    try:
        info = make_demo_scene(
            args.output,
            width=args.width,
            height=args.height,
            n_train=args.n_train,
            n_test=args.n_test,
            seed=args.seed,
            overwrite=args.overwrite,
            n_points=args.n_points,
            supersample=args.supersample,
            arc_degrees=args.arc_degrees,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.output}: {info['n_train']} train + {info['n_test']} test views at "
        f"{info['width']}x{info['height']}, {info['n_points3D']} SfM points "
        f"({info['seconds']:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
