"""Read and write COLMAP sparse models (cameras, images, points3D) in binary or text form.

The file formats are COLMAP's documented ones (``colmap/src/colmap/scene/reconstruction_io``):
little-endian binary with ``uint64`` counts, or the ``#``-commented text files. Poses are
world-to-camera: ``qvec`` (w, x, y, z) and ``tvec``. Keypoint coordinates use COLMAP's
pixel-centre convention (top-left pixel centre at (0.5, 0.5)).

Everything here is plain numpy; no pycolmap needed to read a model.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

# model_id -> (name, number of params)
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
CAMERA_MODEL_IDS = {name: (mid, n) for mid, (name, n) in CAMERA_MODELS.items()}


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # model-specific, see COLMAP's camera models

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) for the undistorted pinhole models; raises for the others."""
        p = self.params
        if self.model == "SIMPLE_PINHOLE":
            return float(p[0]), float(p[0]), float(p[1]), float(p[2])
        if self.model == "PINHOLE":
            return float(p[0]), float(p[1]), float(p[2]), float(p[3])
        raise ValueError(
            f"camera {self.id} uses the {self.model} model; only PINHOLE and SIMPLE_PINHOLE are "
            "supported. Undistort the images first (colmap_match.py does this, or "
            "colmap image_undistorter)."
        )


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] w, x, y, z; world-to-camera rotation
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [K, 2] keypoints
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [K]

    def rotmat(self) -> np.ndarray:
        return qvec_to_rotmat(self.qvec)


@dataclass
class ColmapPoint3D:
    id: int
    xyz: np.ndarray  # [3]
    rgb: np.ndarray  # [3] uint8
    error: float
    image_ids: np.ndarray  # [L] track: observing image ids
    point2D_idxs: np.ndarray  # [L] keypoint index in each image


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
            [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
            [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix."""
    Rxx, Ryx, Rzx, Rxy, Ryy, Rzy, Rxz, Ryz, Rzz = np.asarray(R, dtype=np.float64).flat
    K = (
        np.array(
            [
                [Rxx - Ryy - Rzz, 0, 0, 0],
                [Ryx + Rxy, Ryy - Rxx - Rzz, 0, 0],
                [Rzx + Rxz, Rzy + Ryz, Rzz - Rxx - Ryy, 0],
                [Ryz - Rzy, Rzx - Rxz, Rxy - Ryx, Rxx + Ryy + Rzz],
            ]
        )
        / 3.0
    )
    eigvals, eigvecs = np.linalg.eigh(K)
    q = eigvecs[[3, 0, 1, 2], np.argmax(eigvals)]
    return -q if q[0] < 0 else q


# ----------------------------------------------------------------------------- binary


def _read(f, fmt: str):
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{f.name}: file ends early (truncated or corrupt COLMAP model)")
    return struct.unpack("<" + fmt, data)


def _read_bytes(f, n: int) -> bytes:
    """Exactly ``n`` bytes; a corrupt count larger than the rest of the file fails before
    anything is allocated."""
    if n > os.fstat(f.fileno()).st_size - f.tell():
        raise ValueError(f"{f.name}: file ends early (truncated or corrupt COLMAP model)")
    return f.read(n)


def read_cameras_binary(path: str) -> dict[int, ColmapCamera]:
    cams = {}
    with open(path, "rb") as f:
        (n,) = _read(f, "Q")
        for _ in range(n):
            cam_id, model_id, w, h = _read(f, "iiQQ")
            if model_id not in CAMERA_MODELS:
                raise ValueError(f"{path}: unknown camera model id {model_id}")
            name, n_params = CAMERA_MODELS[model_id]
            params = np.array(_read(f, "d" * n_params))
            cams[cam_id] = ColmapCamera(cam_id, name, int(w), int(h), params)
    return cams


def read_images_binary(path: str) -> dict[int, ColmapImage]:
    images = {}
    with open(path, "rb") as f:
        (n,) = _read(f, "Q")
        for _ in range(n):
            props = _read(f, "idddddddi")
            image_id, qvec, tvec, cam_id = props[0], props[1:5], props[5:8], props[8]
            name = b""
            while (c := f.read(1)) != b"\x00":
                if not c:
                    raise ValueError(f"{path}: file ends inside an image name")
                name += c
            (n_pts,) = _read(f, "Q")
            raw = _read_bytes(f, 24 * n_pts)
            data = np.frombuffer(raw, dtype=np.dtype([("xy", "<f8", 2), ("id", "<i8")]))
            images[image_id] = ColmapImage(
                image_id,
                np.array(qvec),
                np.array(tvec),
                cam_id,
                name.decode("utf-8"),
                data["xy"].copy(),
                data["id"].copy(),
            )
    return images


def read_points3D_binary(path: str) -> dict[int, ColmapPoint3D]:
    points = {}
    with open(path, "rb") as f:
        (n,) = _read(f, "Q")
        for _ in range(n):
            props = _read(f, "QdddBBBd")
            (track_len,) = _read(f, "Q")
            raw = _read_bytes(f, 8 * track_len)
            track = np.frombuffer(raw, dtype="<i4").reshape(-1, 2)
            points[props[0]] = ColmapPoint3D(
                props[0],
                np.array(props[1:4]),
                np.array(props[4:7], dtype=np.uint8),
                props[7],
                track[:, 0].copy(),
                track[:, 1].copy(),
            )
    return points


def write_cameras_binary(cameras: dict[int, ColmapCamera], path: str) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(cameras)))
        for cam in cameras.values():
            model_id, n_params = CAMERA_MODEL_IDS[cam.model]
            f.write(struct.pack("<iiQQ", cam.id, model_id, cam.width, cam.height))
            f.write(struct.pack("<" + "d" * n_params, *np.asarray(cam.params, dtype=float)))


def write_images_binary(images: dict[int, ColmapImage], path: str) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for im in images.values():
            f.write(struct.pack("<i", im.id))
            f.write(struct.pack("<dddd", *np.asarray(im.qvec, dtype=float)))
            f.write(struct.pack("<ddd", *np.asarray(im.tvec, dtype=float)))
            f.write(struct.pack("<i", im.camera_id))
            f.write(im.name.encode("utf-8") + b"\x00")
            f.write(struct.pack("<Q", len(im.xys)))
            data = np.zeros(len(im.xys), dtype=np.dtype([("xy", "<f8", 2), ("id", "<i8")]))
            data["xy"] = im.xys
            data["id"] = im.point3D_ids
            f.write(data.tobytes())


def write_points3D_binary(points: dict[int, ColmapPoint3D], path: str) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(points)))
        for p in points.values():
            f.write(struct.pack("<Qddd", p.id, *np.asarray(p.xyz, dtype=float)))
            f.write(struct.pack("<BBBd", *np.asarray(p.rgb, dtype=np.uint8).tolist(), p.error))
            f.write(struct.pack("<Q", len(p.image_ids)))
            track = np.stack([p.image_ids, p.point2D_idxs], axis=1).astype("<i4")
            f.write(track.tobytes())


# ------------------------------------------------------------------------------- text


def _data_lines(path: str):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def read_cameras_text(path: str) -> dict[int, ColmapCamera]:
    cams = {}
    for line in _data_lines(path):
        el = line.split()
        if el[1] not in CAMERA_MODEL_IDS:
            raise ValueError(f"{path}: unknown camera model {el[1]}")
        cams[int(el[0])] = ColmapCamera(
            int(el[0]), el[1], int(el[2]), int(el[3]), np.array(el[4:], dtype=float)
        )
    return cams


def read_images_text(path: str) -> dict[int, ColmapImage]:
    images = {}
    lines = list(_read_image_lines(path))
    for header, points in zip(lines[0::2], lines[1::2]):
        el = header.split()
        # The name may contain spaces: everything after the camera id.
        name = header.split(maxsplit=9)[9]
        pts = np.array(points.split(), dtype=float).reshape(-1, 3)
        images[int(el[0])] = ColmapImage(
            int(el[0]),
            np.array(el[1:5], dtype=float),
            np.array(el[5:8], dtype=float),
            int(el[8]),
            name,
            pts[:, :2],
            pts[:, 2].astype(np.int64),
        )
    return images


def _read_image_lines(path: str):
    """Header and points line of every image; the points line may be empty."""
    with open(path) as f:
        body = [ln.rstrip("\n") for ln in f if not ln.startswith("#")]
    # Pairs of lines; an image without keypoints has an empty second line.
    if len(body) % 2 == 1:
        if body[-1].strip():
            body.append("")
        else:
            body.pop()
    yield from body


def read_points3D_text(path: str) -> dict[int, ColmapPoint3D]:
    points = {}
    for line in _data_lines(path):
        el = line.split()
        track = np.array(el[8:], dtype=np.int64).reshape(-1, 2)
        points[int(el[0])] = ColmapPoint3D(
            int(el[0]),
            np.array(el[1:4], dtype=float),
            np.array(el[4:7], dtype=np.uint8),
            float(el[7]),
            track[:, 0],
            track[:, 1],
        )
    return points


def write_cameras_text(cameras: dict[int, ColmapCamera], path: str) -> None:
    with open(path, "w") as f:
        f.write("# Camera list with one line of data per camera:\n")
        f.write("#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
        f.write(f"# Number of cameras: {len(cameras)}\n")
        for c in cameras.values():
            params = " ".join(repr(float(p)) for p in c.params)
            f.write(f"{c.id} {c.model} {c.width} {c.height} {params}\n")


def write_images_text(images: dict[int, ColmapImage], path: str) -> None:
    with open(path, "w") as f:
        f.write("# Image list with two lines of data per image:\n")
        f.write("#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n")
        f.write("#   POINTS2D[] as (X, Y, POINT3D_ID)\n")
        f.write(f"# Number of images: {len(images)}\n")
        for im in images.values():
            pose = " ".join(repr(float(v)) for v in (*im.qvec, *im.tvec))
            f.write(f"{im.id} {pose} {im.camera_id} {im.name}\n")
            f.write(
                " ".join(
                    f"{float(x)!r} {float(y)!r} {int(pid)}"
                    for (x, y), pid in zip(im.xys, im.point3D_ids)
                )
                + "\n"
            )


def write_points3D_text(points: dict[int, ColmapPoint3D], path: str) -> None:
    with open(path, "w") as f:
        f.write("# 3D point list with one line of data per point:\n")
        f.write("#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        f.write(f"# Number of points: {len(points)}\n")
        for p in points.values():
            xyz = " ".join(repr(float(v)) for v in p.xyz)
            rgb = " ".join(str(int(v)) for v in p.rgb)
            track = " ".join(f"{int(i)} {int(j)}" for i, j in zip(p.image_ids, p.point2D_idxs))
            f.write(f"{p.id} {xyz} {rgb} {float(p.error)!r} {track}\n")


# ------------------------------------------------------------------------------ model


def detect_model_format(path: str) -> str | None:
    """'.bin' or '.txt' when ``path`` holds a complete model in that form, else None."""
    for ext in (".bin", ".txt"):
        if all(os.path.isfile(os.path.join(path, f"{n}{ext}")) for n in ("cameras", "images")):
            return ext
    return None


def read_model(
    path: str,
) -> tuple[dict[int, ColmapCamera], dict[int, ColmapImage], dict[int, ColmapPoint3D]]:
    """Read ``cameras``, ``images`` and ``points3D`` (binary preferred, text fallback).

    A model without a points3D file reads with an empty point dict.
    """
    ext = detect_model_format(path)
    if ext is None:
        raise FileNotFoundError(
            f"{path}: no COLMAP model (cameras.bin/images.bin or cameras.txt/images.txt). "
            "Run colmap_match.py -s <scene> to reconstruct one."
        )
    reader = {
        ".bin": (read_cameras_binary, read_images_binary, read_points3D_binary),
        ".txt": (read_cameras_text, read_images_text, read_points3D_text),
    }[ext]
    cams = reader[0](os.path.join(path, "cameras" + ext))
    images = reader[1](os.path.join(path, "images" + ext))
    pts_path = os.path.join(path, "points3D" + ext)
    points = reader[2](pts_path) if os.path.isfile(pts_path) else {}
    return cams, images, points


def write_model(
    cameras: dict[int, ColmapCamera],
    images: dict[int, ColmapImage],
    points3D: dict[int, ColmapPoint3D],
    path: str,
    ext: str = ".bin",
) -> None:
    """Write a model into ``path`` (created if needed) in binary (.bin) or text (.txt) form."""
    os.makedirs(path, exist_ok=True)
    if ext == ".bin":
        write_cameras_binary(cameras, os.path.join(path, "cameras.bin"))
        write_images_binary(images, os.path.join(path, "images.bin"))
        write_points3D_binary(points3D, os.path.join(path, "points3D.bin"))
    elif ext == ".txt":
        write_cameras_text(cameras, os.path.join(path, "cameras.txt"))
        write_images_text(images, os.path.join(path, "images.txt"))
        write_points3D_text(points3D, os.path.join(path, "points3D.txt"))
    else:
        raise ValueError(f"unknown model extension {ext!r} (use '.bin' or '.txt')")
