"""COLMAP model I/O: binary/text round trips, odd names, truncated files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scene.colmap_io import (
    ColmapCamera,
    ColmapImage,
    ColmapPoint3D,
    qvec_to_rotmat,
    read_model,
    rotmat_to_qvec,
    write_model,
)


def _model():
    cams = {
        1: ColmapCamera(1, "PINHOLE", 64, 48, np.array([50.0, 51.0, 32.5, 24.25])),
        2: ColmapCamera(2, "SIMPLE_PINHOLE", 30, 20, np.array([25.0, 15.0, 10.0])),
    }
    rng = np.random.default_rng(0)
    images = {}
    for i, name in enumerate(["a.png", "dir/with space.jpg", "c.png"]):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        xys = rng.uniform(0, 30, (i * 2, 2))  # image 0 has no keypoints
        images[i + 1] = ColmapImage(
            i + 1, q, rng.normal(size=3), 1 + i % 2, name, xys, np.arange(i * 2) - 1
        )
    points = {
        7: ColmapPoint3D(
            7,
            np.array([0.1, 0.2, 0.3]),
            np.array([1, 2, 255], np.uint8),
            0.7,
            np.array([2, 3]),
            np.array([0, 1]),
        ),
        9: ColmapPoint3D(
            9,
            np.array([-1.0, 2.0, 5.0]),
            np.array([0, 0, 0], np.uint8),
            0.0,
            np.array([3]),
            np.array([1]),
        ),
    }
    return cams, images, points


@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_round_trip(tmp_path, ext):
    cams, images, points = _model()
    write_model(cams, images, points, str(tmp_path), ext)
    c2, i2, p2 = read_model(str(tmp_path))
    assert c2.keys() == cams.keys()
    for k in cams:
        assert c2[k].model == cams[k].model and (c2[k].width, c2[k].height) == (
            cams[k].width,
            cams[k].height,
        )
        np.testing.assert_allclose(c2[k].params, cams[k].params)
    for k in images:
        a, b = images[k], i2[k]
        assert (a.name, a.camera_id) == (b.name, b.camera_id)
        np.testing.assert_allclose(b.qvec, a.qvec)
        np.testing.assert_allclose(b.tvec, a.tvec)
        np.testing.assert_allclose(b.xys.reshape(-1, 2), a.xys)
        np.testing.assert_array_equal(b.point3D_ids, a.point3D_ids)
    for k in points:
        a, b = points[k], p2[k]
        np.testing.assert_allclose(b.xyz, a.xyz)
        np.testing.assert_array_equal(b.rgb, a.rgb)
        np.testing.assert_array_equal(b.image_ids, a.image_ids)
        np.testing.assert_array_equal(b.point2D_idxs, a.point2D_idxs)


def test_quaternion_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        R = qvec_to_rotmat(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(rotmat_to_qvec(R), q, atol=1e-9)


def test_model_without_points_file(tmp_path):
    cams, images, points = _model()
    write_model(cams, images, points, str(tmp_path), ".bin")
    os.remove(tmp_path / "points3D.bin")
    _, _, p = read_model(str(tmp_path))
    assert p == {}


@pytest.mark.parametrize("fname", ["images.bin", "points3D.bin", "cameras.bin"])
def test_truncated_binary_names_the_file(tmp_path, fname):
    cams, images, points = _model()
    write_model(cams, images, points, str(tmp_path), ".bin")
    path = tmp_path / fname
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])
    with pytest.raises(ValueError, match=fname):
        read_model(str(tmp_path))


def test_corrupt_count_does_not_allocate(tmp_path):
    cams, images, points = _model()
    write_model(cams, images, points, str(tmp_path), ".bin")
    # Overwrite the keypoint count of the first image with a huge number.
    path = tmp_path / "images.bin"
    data = bytearray(path.read_bytes())
    pos = 8 + 4 + 8 * 7 + 4 + len(b"a.png\x00")
    data[pos : pos + 8] = (2**60).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="images.bin"):
        read_model(str(tmp_path))


def test_missing_model_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="colmap_match.py"):
        read_model(str(tmp_path))
