"""alignment.registration: Umeyama, SPARS3R's robust Sim(3) and the pose-error metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alignment.registration import (
    Sim3,
    absolute_trajectory_error,
    axis_cloud,
    compare_poses,
    normalized_procrustes_errors,
    pair_hypotheses,
    relative_pose_error,
    robust_sim3,
    rotation_error_deg,
    score_hypotheses,
    triplet_hypotheses,
    umeyama,
)


def random_cameras(n: int, rng: np.random.Generator, extent: float = 5.0) -> np.ndarray:
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = Rotation.random(n, random_state=int(rng.integers(1 << 30))).as_matrix()
    c2w[:, :3, 3] = rng.uniform(-extent, extent, (n, 3))
    return c2w


def random_sim3(rng: np.random.Generator) -> Sim3:
    return Sim3(
        float(rng.uniform(0.2, 5.0)),
        Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix(),
        rng.normal(size=3) * 10,
    )


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(0)
    sim = random_sim3(rng)
    src = rng.normal(size=(10, 3))
    est = umeyama(src, sim.apply(src))
    assert est.scale == pytest.approx(sim.scale, abs=1e-12)
    np.testing.assert_allclose(est.R, sim.R, atol=1e-12)
    np.testing.assert_allclose(est.t, sim.t, atol=1e-10)
    assert np.linalg.det(est.R) == pytest.approx(1.0)


def test_sim3_inverse_and_camera_transform():
    rng = np.random.default_rng(1)
    sim = random_sim3(rng)
    p = rng.normal(size=(5, 3))
    np.testing.assert_allclose(sim.inverse().apply(sim.apply(p)), p, atol=1e-10)
    c2w = random_cameras(4, rng)
    moved = sim.transform_c2w(c2w)
    np.testing.assert_allclose(moved[:, :3, 3], sim.apply(c2w[:, :3, 3]), atol=1e-10)
    # Rotations stay rotations, and a point in camera coordinates keeps its direction.
    np.testing.assert_allclose(moved[:, :3, :3] @ np.swapaxes(moved[:, :3, :3], 1, 2),
                               np.tile(np.eye(3), (4, 1, 1)), atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(moved[:, :3, :3], sim.R @ c2w[:, :3, :3], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_robust_sim3_recovers_similarity_with_30_percent_outliers(seed):
    rng = np.random.default_rng(seed)
    n = 20
    fixed = random_cameras(n, rng)
    truth = random_sim3(rng)  # moving -> fixed
    moving = truth.inverse().transform_c2w(fixed)
    outliers = rng.choice(n, int(0.3 * n), replace=False)
    # Outliers: wrong places (several threshold units away) and wrong orientations.
    moving[outliers, :3, 3] += rng.normal(size=(len(outliers), 3)) * 3.0 / truth.scale + 2.0
    moving[outliers, :3, :3] = Rotation.random(len(outliers), random_state=seed).as_matrix()
    res = robust_sim3(fixed, moving, threshold=1.0)
    assert res.sim3.scale == pytest.approx(truth.scale, rel=1e-6)
    assert np.abs(res.sim3.R - truth.R).max() < 1e-6
    assert np.abs(res.sim3.t - truth.t).max() < 1e-6
    assert set(np.nonzero(~res.inliers)[0]) == set(outliers.tolist())
    assert res.num_inliers == n - len(outliers)


def test_pair_hypothesis_alone_recovers_rotation_from_two_cameras():
    rng = np.random.default_rng(5)
    fixed = random_cameras(2, rng)
    truth = random_sim3(rng)
    moving = truth.inverse().transform_c2w(fixed)
    res = robust_sim3(fixed, moving)  # N = 2: only the pair hypothesis exists
    assert res.hypothesis == "pair" and res.num_hypotheses == 1
    np.testing.assert_allclose(res.sim3.R, truth.R, atol=1e-9)
    assert res.sim3.scale == pytest.approx(truth.scale, rel=1e-9)


def test_hypothesis_counts_and_axis_cloud():
    rng = np.random.default_rng(6)
    c = random_cameras(6, rng)
    assert len(triplet_hypotheses(c, c)[0]) == 20  # C(6, 3)
    assert len(pair_hypotheses(c, c)[0]) == 15  # C(6, 2)
    pts = axis_cloud(c[:1], 2.0)[0]
    np.testing.assert_allclose(pts[0], c[0, :3, 3])
    np.testing.assert_allclose(pts[1:] - pts[0], 2.0 * c[0, :3, :3].T)


def test_scoring_prefers_inliers_then_lower_distance():
    fixed = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    moving = fixed.copy()
    R = np.tile(np.eye(3), (3, 1, 1))
    t = np.array([[0.0, 0, 0], [0.5, 0, 0], [5.0, 0, 0]])  # exact, shifted, far
    n, d = score_hypotheses(np.ones(3), R, t, moving, fixed, 1.0)
    assert n.tolist() == [3, 3, 0]
    assert d[0] < d[1]
    assert d[2] == pytest.approx(25.0)  # no inliers: mean over all cameras


def test_normalized_procrustes_flags_gross_outlier():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(8, 3))
    est = Sim3(3.0, Rotation.random(random_state=2).as_matrix(), np.ones(3)).apply(ref)
    err = normalized_procrustes_errors(ref, est)
    assert err.max() < 1e-9
    est[3] += 2.0  # a camera off the trajectory carries the largest error
    err = normalized_procrustes_errors(ref, est)
    assert np.argmax(err) == 3 and err[3] > 2 * np.delete(err, 3).max()
    # Errors are in units of the whole normalised set: even a wild camera stays near 1, so
    # the > 1.0 drop rule only removes cameras that are off the trajectory altogether.
    est[3] += 1000.0
    assert normalized_procrustes_errors(ref, est).max() < 1.5


def test_pose_metrics():
    rng = np.random.default_rng(8)
    ref = random_cameras(5, rng)
    assert absolute_trajectory_error(ref, ref) == 0.0
    assert relative_pose_error(ref, ref) == pytest.approx((0.0, 0.0), abs=1e-6)
    est = ref.copy()
    est[:, :3, 3] += np.array([0.3, 0.4, 0.0])  # same offset everywhere: ATE 0.5
    assert absolute_trajectory_error(ref, est) == pytest.approx(0.5)
    rot = Rotation.from_euler("z", 2.0, degrees=True).as_matrix()
    est = ref.copy()
    est[:, :3, :3] = est[:, :3, :3] @ rot
    np.testing.assert_allclose(rotation_error_deg(ref[:, :3, :3], est[:, :3, :3]), 2.0)


def test_compare_poses_aligns_on_training_cameras_only():
    rng = np.random.default_rng(9)
    ref = random_cameras(10, rng)
    frame = random_sim3(rng)
    est = frame.transform_c2w(ref)
    # Perturb a "test" camera by 3 degrees; it must not shape the alignment.
    bump = Rotation.from_euler("x", 3.0, degrees=True).as_matrix()
    est[9, :3, :3] = est[9, :3, :3] @ bump
    est[9, :3, 3] += 1.0
    mask = np.arange(10) < 8
    cmp = compare_poses(ref, est, mask)
    assert cmp.rotation_error_deg[:9].max() < 1e-9
    assert cmp.rotation_error_deg[9] == pytest.approx(3.0, abs=1e-6)
    assert cmp.position_error[9] == pytest.approx(np.sqrt(3) / frame.scale, rel=1e-6)
