"""The COLMAP stage on real photos (LLFF fern at 504x378); skipped without ../shared/data.

Kept small for the 2-core CI: two views for features and matches, four views for the full
SfM path, SIFT capped at 2048 features.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")  # absent on the GPU machine

import sfm  # noqa: F401  (imports zlib before pycolmap; see sfm/__init__.py)
from scripts.prepare_llff import prepare_llff  # noqa: E402
from sfm.colmap_ops import ColmapSettings  # noqa: E402
from sfm.full_sfm import run_full_sfm  # noqa: E402
from sfm.matches import TrainMatches  # noqa: E402
from sfm.train_only import run_train_only  # noqa: E402
from tests.conftest import require_scene  # noqa: E402

FAST = ColmapSettings(max_num_features=2048)


@pytest.fixture(autouse=True)
def quiet_colmap():
    pycolmap.logging.minloglevel = 2
    yield
    pycolmap.logging.minloglevel = 0


@pytest.fixture(scope="module")
def fern_scene(tmp_path_factory) -> str:
    src = require_scene("llff_fern")
    out = str(tmp_path_factory.mktemp("fern") / "fern")
    prepare_llff(str(src), out, factor=8, n_views=3, overwrite=False)
    return out


def test_features_and_matches_on_two_fern_views(fern_scene, tmp_path):
    rec = pycolmap.Reconstruction(os.path.join(fern_scene, "sparse", "0"))
    names = ["image001.png", "image004.png"]
    out = str(tmp_path / "colmap_2views")
    res = run_train_only(rec, os.path.join(fern_scene, "images"), names, out, FAST)
    tm = TrainMatches.load(os.path.join(out, "matches.npz"))
    assert tm.names == names
    n = int(tm.counts[0])
    assert n >= 100  # measured ~600 on these two views
    xa, xb = tm.get(*names)
    assert xa.shape == xb.shape == (n, 2)
    assert (xa >= 0).all() and (xa[:, 0] <= 504).all() and (xa[:, 1] <= 378).all()
    # The matches agree with the known poses: small symmetric epipolar distance.
    K = rec.cameras[1].calibration_matrix()
    P = [rec.find_image_with_name(x).cam_from_world().matrix() for x in names]
    R = P[1][:, :3] @ P[0][:, :3].T
    t = P[1][:, 3] - R @ P[0][:, 3]
    E = np.cross(np.eye(3), t) @ R  # [t]_x R
    Fm = np.linalg.inv(K).T @ E @ np.linalg.inv(K)
    ha = np.c_[xa, np.ones(n)]
    hb = np.c_[xb, np.ones(n)]
    la, lb = ha @ Fm.T, hb @ Fm
    d = np.abs((hb * la).sum(1)) * (1 / np.linalg.norm(la[:, :2], axis=1) +
                                    1 / np.linalg.norm(lb[:, :2], axis=1)) / 2  # fmt: skip
    assert np.median(d) < 1.0
    assert res.summary.points >= 50 and res.summary.mean_reprojection_error_px < 1.5
    model = pycolmap.Reconstruction(os.path.join(out, "sparse", "0"))
    assert sorted(im.name for im in model.images.values()) == names
    assert all(len({el.image_id for el in p.track.elements}) >= 2 for p in model.points3D.values())


def test_full_sfm_on_four_fern_views(fern_scene, tmp_path):
    scene = tmp_path / "scene"
    os.makedirs(scene / "images")
    for n in ("image001.png", "image002.png", "image003.png", "image004.png"):
        shutil.copy(os.path.join(fern_scene, "images", n), scene / "images" / n)
    res = run_full_sfm(str(scene), "images", FAST)
    assert res.single_camera and res.camera_model == "OPENCV" and res.undistorted
    assert res.final_summary.images_registered == 4
    assert res.final_summary.mean_reprojection_error_px < 1.5
    # convert.py's layout: originals in input/, undistorted PINHOLE images and model.
    assert sorted(os.listdir(scene)) == ["distorted", "images", "input", "sparse"]
    assert len(os.listdir(scene / "input")) == 4
    model = pycolmap.Reconstruction(str(scene / "sparse" / "0"))
    assert all(c.model.name == "PINHOLE" for c in model.cameras.values())
    summary = json.loads((scene / "distorted" / "summary.json").read_text())
    assert summary["sfm"]["images_registered"] == 4
