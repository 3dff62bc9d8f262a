"""view.py: the pure functions of viewer.core (model folder, splat arrays, cameras, segment
labels, cluster export, picking), the viser scene without a browser, and the page in a real
headless Chromium (skipped when no chromium binary is found, unless $CI is set)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussian.model import GaussianModel
from gaussian.ply import load_ply, save_ply
from scene.errors import SceneError
from utils.graphics_utils import quat_to_rotmat
from utils.sh_utils import SH2RGB
from viewer import core
from viewer.screenshot import (
    WEBGL_RENDERER,
    HeadlessChromium,
    find_chromium,
    looks_rendered,
    scene_stats,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
N_GAUSSIANS = 3000
N_CLUSTERS = 6


def make_model(model_dir: Path, n: int = N_GAUSSIANS, iteration: int = 10, seed: int = 0):
    """A model folder without training: ``n`` opaque Gaussians on a unit sphere coloured by
    their normal (SH degree 1, an extra per-Gaussian tensor), 6 cameras on a ring looking
    at it (4 train, 2 test), and segment labels by longitude sector."""
    g = np.random.default_rng(seed)
    v = g.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    model = GaussianModel.from_points(
        torch.tensor(v, dtype=torch.float32),
        torch.tensor(0.5 + 0.5 * v, dtype=torch.float32),
        sh_degree=1,
        init_opacity=0.9,
    )
    model.extras["ids"] = torch.arange(n)
    save_ply(model, str(model_dir / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply"))
    cams, names = [], []
    for i in range(6):
        a = 2 * math.pi * i / 6
        pos = np.array([4 * math.cos(a), 4 * math.sin(a), 1.5])
        fwd = -pos / np.linalg.norm(pos)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        R = np.stack([right, np.cross(fwd, right), fwd], 1)  # columns: x right, y down, z fwd
        name = f"view_{i:02d}"
        cams.append({"id": i, "img_name": name, "width": 160, "height": 120,
                     "position": pos.tolist(), "rotation": R.tolist(), "fy": 150.0,
                     "fx": 150.0})  # fmt: skip
        names.append(name + ".png")
    (model_dir / "cameras.json").write_text(json.dumps(cams))
    split = {"protocol": "custom", "n_views": 4, "train": names[:4], "test": names[4:]}
    (model_dir / "split.json").write_text(json.dumps(split))
    labels = ((np.arctan2(v[:, 1], v[:, 0]) + math.pi) / (2 * math.pi) * N_CLUSTERS).astype(int)
    labels = np.minimum(labels, N_CLUSTERS - 1)
    labels[:50] = -1  # a few unlabelled Gaussians
    (model_dir / "segments").mkdir()
    np.save(model_dir / "segments" / "labels.npy", labels)
    return model, labels


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    make_model(path)
    return path


# ------------------------------------------------------------------ pure functions


def test_find_point_cloud_latest_given_and_errors(model_dir, tmp_path):
    make_model(model_dir.parent / "two", n=10, iteration=7)
    make_model(model_dir.parent / "two_b", n=10, iteration=30)
    two = model_dir.parent / "two"
    os.rename(model_dir.parent / "two_b" / "point_cloud" / "iteration_30",
              two / "point_cloud" / "iteration_30")  # fmt: skip
    assert core.find_point_cloud(str(two)) == (
        30,
        str(two / "point_cloud/iteration_30/point_cloud.ply"),
    )
    assert core.find_point_cloud(str(two), 7)[0] == 7
    with pytest.raises(SceneError, match="iterations saved here: 7, 30"):
        core.find_point_cloud(str(two), 8)
    with pytest.raises(SceneError, match="not a trained model"):
        core.find_point_cloud(str(tmp_path))
    with pytest.raises(SceneError, match="no such folder"):
        core.find_point_cloud(str(tmp_path / "missing"))
    bad = tmp_path / "bad" / "point_cloud" / "iteration_1"
    bad.mkdir(parents=True)
    (bad / "point_cloud.ply").write_bytes(b"not a ply")
    with pytest.raises(SceneError, match="not a readable Gaussian PLY"):
        core.load_model(core.find_point_cloud(str(tmp_path / "bad"))[1])


def test_splats_from_model_activations():
    g = torch.Generator().manual_seed(0)
    model = GaussianModel.from_points(torch.randn(50, 3, generator=g),
                                      torch.rand(50, 3, generator=g), 2)  # fmt: skip
    with torch.no_grad():
        model.params["quats"].copy_(torch.randn(50, 4, generator=g))
        model.params["scales"].copy_(torch.randn(50, 3, generator=g) - 2)
        model.params["opacities"].copy_(torch.randn(50, generator=g))
        model.params["sh0"].mul_(3.0)  # some colours out of [0, 1]: clipped
    s = core.splats_from_model(model)
    assert len(s) == 50 and s.covariances.shape == (50, 3, 3) and s.opacities.shape == (50, 1)
    assert all(a.dtype == np.float32 for a in (s.centers, s.covariances, s.rgbs, s.opacities))
    R = quat_to_rotmat(model.params["quats"].detach()).numpy()
    S = np.exp(model.params["scales"].detach().numpy())
    expected = np.einsum("nij,nj,nkj->nik", R, S**2, R)
    np.testing.assert_allclose(s.covariances, expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(
        s.rgbs, SH2RGB(model.params["sh0"][:, 0].detach()).clamp(0, 1).numpy()
    )
    assert s.rgbs.min() == 0.0 and s.rgbs.max() == 1.0
    np.testing.assert_allclose(
        s.opacities[:, 0], torch.sigmoid(model.params["opacities"]).detach().numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(core.radii(s), S.max(1), rtol=1e-3)


def test_rotmat_to_wxyz_round_trip():
    q = torch.nn.functional.normalize(
        torch.randn(200, 4, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    q = torch.cat([q, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0, 0, 0]])])
    R = quat_to_rotmat(q).numpy().astype(np.float64)
    for Ri in R:
        back = quat_to_rotmat(torch.tensor(core.rotmat_to_wxyz(Ri))[None].float())[0].numpy()
        np.testing.assert_allclose(back, Ri, atol=1e-5)


def test_load_cameras_and_framing(model_dir):
    cams = core.load_cameras(str(model_dir))
    assert [c.split for c in cams] == ["train"] * 4 + ["test"] * 2
    assert cams[0].name == "view_00" and cams[0].aspect == pytest.approx(160 / 120)
    assert cams[0].fov_y == pytest.approx(2 * math.atan(60 / 150))
    splats = core.splats_from_model(load_ply(core.find_point_cloud(str(model_dir))[1]))
    f = core.scene_framing(splats, cams)
    np.testing.assert_allclose(f.up, [0, 0, 1], atol=1e-6)  # mean camera up of the ring
    # Looks at the sphere's centre from behind the first training camera.
    np.testing.assert_allclose(f.look_at, [0, 0, 0], atol=0.1)
    assert np.linalg.norm(f.position) > np.linalg.norm(cams[0].position)
    os.remove(model_dir / "split.json")
    assert {c.split for c in core.load_cameras(str(model_dir))} == {"camera"}
    (model_dir / "cameras.json").write_text("[{}]")
    with pytest.raises(SceneError, match="cameras.json"):
        core.load_cameras(str(model_dir))
    assert core.load_cameras(str(model_dir / "segments")) == []
    assert core.scene_framing(splats, []).up.tolist() == [0, 0, 1]


def test_labels_visibility_and_cluster_export(model_dir, tmp_path):
    model = load_ply(core.find_point_cloud(str(model_dir))[1])
    labels = core.load_labels(str(model_dir), N_GAUSSIANS)
    sizes = core.cluster_sizes(labels)
    assert list(sizes) == list(range(N_CLUSTERS)) and sum(sizes.values()) == N_GAUSSIANS - 50
    assert core.visible_mask(labels, set()).all()
    assert core.visible_mask(labels, {-1}).sum() == N_GAUSSIANS - 50
    assert (core.visible_mask(labels, {0, 1}) == ~np.isin(labels, [0, 1])).all()
    assert (core.visible_mask(labels, set(), 2) == (labels == 2)).all()
    colours = core.cluster_colours(labels)
    assert colours.shape == (N_GAUSSIANS, 3)
    assert len({tuple(c) for c in colours[labels >= 0]}) == N_CLUSTERS
    np.testing.assert_allclose(
        colours[labels < 0], np.tile(core.UNLABELLED_RGB, (50, 1)), rtol=1e-6
    )

    out = tmp_path / "export" / "cluster_2.ply"
    assert core.export_cluster(model, labels, 2, str(out)) == sizes[2]
    sub = load_ply(str(out))  # a valid Inria PLY (and its extras side file)
    keep = np.flatnonzero(labels == 2)
    for key, value in model.params.items():
        np.testing.assert_array_equal(
            sub.params[key].detach().numpy(), value.detach().numpy()[keep]
        )
    assert sub.extras["ids"].tolist() == keep.tolist()
    assert sub.max_sh_degree == 1
    with pytest.raises(SceneError, match="no Gaussians"):
        core.export_cluster(model, labels, 99, str(tmp_path / "none.ply"))

    # No segments/ -> None; broken or misaligned labels -> one-line errors.
    assert core.load_labels(str(tmp_path), 10) is None
    with pytest.raises(SceneError, match="3000 labels for 10 Gaussians"):
        core.load_labels(str(model_dir), 10)
    np.save(model_dir / "segments" / "labels.npy", np.zeros(N_GAUSSIANS, np.float32))
    with pytest.raises(SceneError, match="integer"):
        core.load_labels(str(model_dir), N_GAUSSIANS)
    os.remove(model_dir / "segments" / "labels.npy")
    with pytest.raises(SceneError, match="missing"):
        core.load_labels(str(model_dir), N_GAUSSIANS)


def test_pick_gaussian_along_a_ray():
    centers = np.array([[0, 0, 5], [0, 0, 2], [3, 0, 4], [0, 0, -3]], np.float32)
    cov = np.tile(np.eye(3, dtype=np.float32) * 0.01, (4, 1, 1))
    s = core.SplatArrays(
        centers, cov, np.zeros((4, 3), np.float32), np.full((4, 1), 0.9, np.float32)
    )
    o, d = (0, 0, 0), (0, 0, 1)
    assert core.pick_gaussian(s, o, d) == 1  # the nearest hit, not the one behind it
    assert core.pick_gaussian(s, o, d, mask=np.array([1, 0, 1, 1], bool)) == 0
    s.opacities[1] = 0.01
    assert core.pick_gaussian(s, o, d) == 0  # nearly transparent ones are not picked
    assert core.pick_gaussian(s, o, (0.7, 0, 1)) == 2  # no hit: the closest in angle
    assert core.pick_gaussian(s, (0, 0, 10), (0, 0, 1)) is None  # nothing in front


# ------------------------------------------------------------------ CLI and viser scene


def test_view_cli_one_line_errors(tmp_path, capsys):
    import view

    for folder, needle in (
        (tmp_path, "not a trained model"),
        (tmp_path / "nope", "no such folder"),
    ):
        assert view.main(["-m", str(folder), "--port", "0"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err


def test_viewer_app_scene_without_browser(model_dir):
    viser = pytest.importorskip("viser")
    from viewer.app import ViewerApp

    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    logs = []
    try:
        app = ViewerApp(server, str(model_dir), log=logs.append)
        assert app.iteration == 10 and len(app.splats) == N_GAUSSIANS
        assert f"{N_GAUSSIANS} Gaussians, 4 training and 2 test cameras, 6 segments" in logs[-1]
        assert [len(app.frustums[s]) for s in ("train", "test")] == [4, 2]
        app.hidden = {0, 1}
        app.colour_clusters = True
        app.refresh()
        app.isolated = 3
        app.refresh()
        (model_dir / "segments" / "labels.npy").unlink()
        (model_dir / "segments" / "labels.npy").mkdir()  # unreadable: viewer still starts
        app2 = ViewerApp(server, str(model_dir), log=logs.append)
        assert app2.labels is None and logs[-2].startswith("warning: ")
    finally:
        server.stop()


# ------------------------------------------------------------------ headless Chromium

CHROMIUM = find_chromium()


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="no chromium binary (apt-get install chromium; .ci/run installs it)",
)
def test_viewer_page_in_headless_chromium(model_dir, tmp_path):
    """view.py in a subprocess on a free port; the page in headless Chromium (SwiftShader
    WebGL) must show the splats: enough non-background, many-coloured canvas pixels."""
    assert CHROMIUM is not None, "CI: chromium must be installed (.ci/run installs it)"
    log_path = tmp_path / "view.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "view.py", "-m", str(model_dir), "--port", "0"],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 40
        while url is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"view.py exited: {log_path.read_text()[-2000:]}"
            found = re.search(r"viewer: (http://\S+)", log_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.2)
        assert url, f"view.py printed no URL in 40 s: {log_path.read_text()[-2000:]}"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()

        with HeadlessChromium(CHROMIUM, width=800, height=600) as browser:
            assert browser.evaluate(WEBGL_RENDERER), "no WebGL 2 in headless Chromium"
            shot = browser.capture(url, timeout=30)
        shot.save(os.environ.get("VIEWER_SCREENSHOT", str(tmp_path / "viewer.png")))
        stats = scene_stats(shot.canvas())
        assert shot.canvas_box is not None, "the page has no canvas"
        assert "Colour by cluster" in shot.page_text  # the segments panel
        assert f"{N_GAUSSIANS} Gaussians" in shot.page_text
        assert looks_rendered(shot), f"canvas shows no scene after {shot.seconds:.0f} s: {stats}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
