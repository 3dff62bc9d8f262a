"""Similarity (Sim(3)) registration of camera sets: SPARS3R's robust train/test registration.

The sparse-view protocols forbid test images in the training geometry, so test poses come
from a second reconstruction (train + test views) that lives in its own frame. SPARS3R
(snldmt/SPARS3R, CVPR'25, ``robust_register_colmap_models_dm``) maps that "moving" frame onto
the train-only "fixed" frame with a robust similarity fitted on the cameras both hold:

- every camera becomes an *axis cloud*: its centre plus the centre moved along each of its
  three rotation axes by a length ``s`` (so a single camera pins rotation as well as
  position);
- hypotheses come from (a) every triplet of camera centres (7-DoF Procrustes on the three
  positions) and (b) every pair of cameras (Procrustes on their 2 x 4 axis-cloud points, ``s``
  = the distance between the two cameras in each frame, or the cloud radius when they
  coincide);
- a camera is an inlier of a hypothesis when ``|T(c_moving) - c_fixed|^2 / thr^2 <= 1``
  (thr = 1.0 in the fixed frame's units, hard-coded upstream);
- the hypothesis with most inliers wins; ties go to the lower mean normalised squared
  distance of the inliers (of all cameras when there are none), and remaining exact ties to
  the first hypothesis (triplets before pairs);
- after registration, cameras whose position error after a *normalised* Procrustes (both
  centre sets centred and scaled to unit Frobenius norm) exceeds 1.0 are dropped.

Everything here is numpy: arrays in, arrays out. Poses are camera-to-world matrices
``c2w`` [N, 4, 4] (or [N, 3, 4]) in the OpenCV/COLMAP camera convention; columns 0..2 of the
rotation are the camera's x, y, z axes in world coordinates.

Deviation from upstream: Procrustes here is Umeyama's closed form with the determinant
correction, so a hypothesis is always a proper rotation (upstream's scipy-style Procrustes can
return a reflection on degenerate triplets, which then simply scores badly).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sim3:
    """x -> scale * R @ x + t."""

    scale: float
    R: np.ndarray  # [3, 3] proper rotation
    t: np.ndarray  # [3]

    @staticmethod
    def identity() -> Sim3:
        return Sim3(1.0, np.eye(3), np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points [..., 3]."""
        return self.scale * points @ self.R.T + self.t

    def matrix(self) -> np.ndarray:
        """[4, 4] homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.R
        m[:3, 3] = self.t
        return m

    def inverse(self) -> Sim3:
        R_inv = self.R.T
        return Sim3(1.0 / self.scale, R_inv, -(R_inv @ self.t) / self.scale)

    def transform_c2w(self, c2w: np.ndarray) -> np.ndarray:
        """Move cameras [N, 3|4, 4] into the target frame: R' = R_sim @ R, c' = T(c).

        The result is a rigid camera-to-world [N, 4, 4]; the scale only moves the centres.
        """
        c2w = as_c2w44(c2w)
        out = np.tile(np.eye(4), (len(c2w), 1, 1))
        out[:, :3, :3] = self.R @ c2w[:, :3, :3]
        out[:, :3, 3] = self.apply(c2w[:, :3, 3])
        return out


def as_c2w44(c2w: np.ndarray) -> np.ndarray:
    """[N, 3, 4] or [N, 4, 4] -> [N, 4, 4] float64."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"expected camera-to-world matrices [N, 3|4, 4], got {c2w.shape}")
    if c2w.shape[1] == 4:
        return c2w
    out = np.tile(np.eye(4), (len(c2w), 1, 1))
    out[:, :3, :] = c2w
    return out


# ------------------------------------------------------------------------------ Umeyama


def umeyama_batched(
    src: np.ndarray,  # [B, K, 3]
    dst: np.ndarray,  # [B, K, 3]
    with_scale: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ~ s R src + t for B point sets at once (Umeyama 1991).

    Returns ``scale`` [B], ``R`` [B, 3, 3] (det +1) and ``t`` [B, 3]. A degenerate source set
    (all points equal) gets scale 1.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s = src.mean(axis=1, keepdims=True)
    mu_d = dst.mean(axis=1, keepdims=True)
    a = src - mu_s
    b = dst - mu_d
    cov = np.einsum("bki,bkj->bij", b, a) / src.shape[1]  # [B, 3, 3]
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U) * np.linalg.det(Vt))
    d = np.where(d == 0, 1.0, d)
    D = np.tile(np.eye(3), (len(src), 1, 1))
    D[:, 2, 2] = d
    R = U @ D @ Vt
    if with_scale:
        var_src = (a**2).sum(axis=(1, 2)) / src.shape[1]
        trace = S[:, 0] + S[:, 1] + d * S[:, 2]
        scale = np.where(var_src > 1e-300, trace / np.maximum(var_src, 1e-300), 1.0)
    else:
        scale = np.ones(len(src))
    t = mu_d[:, 0] - scale[:, None] * np.einsum("bij,bj->bi", R, mu_s[:, 0])
    return scale, R, t


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Sim3:
    """Least-squares similarity mapping src [K, 3] onto dst [K, 3] (K >= 3 for a unique fit)."""
    s, R, t = umeyama_batched(np.asarray(src)[None], np.asarray(dst)[None], with_scale)
    return Sim3(float(s[0]), R[0], t[0])


# --------------------------------------------------------------------------- hypotheses


def cloud_radius(points: np.ndarray) -> float:
    """Rotation-invariant size of a point set [N, 3]: sqrt(sum of per-axis variances)."""
    return float(np.sqrt(np.square(np.std(np.asarray(points, dtype=np.float64), axis=0)).sum()))


def axis_cloud(c2w: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """Four points per camera: its centre and the centre + scale * each rotation axis.

    c2w [N, 3|4, 4], scale scalar or [N] -> points [N, 4, 3].
    """
    c2w = as_c2w44(c2w)
    centre = c2w[:, :3, 3]
    axes = np.swapaxes(c2w[:, :3, :3], 1, 2)  # [N, 3 axes, 3 coords]
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(c2w),))
    return np.concatenate([centre[:, None], centre[:, None] + s[:, None, None] * axes], axis=1)


def triplet_hypotheses(
    c2w_fixed: np.ndarray, c2w_moving: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarities from every triplet of camera centres (moving -> fixed).

    Returns scale [B], R [B, 3, 3], t [B, 3] with B = C(N, 3) (empty when N < 3).
    """
    cf = as_c2w44(c2w_fixed)[:, :3, 3]
    cm = as_c2w44(c2w_moving)[:, :3, 3]
    idx = np.array(list(itertools.combinations(range(len(cf)), 3)), dtype=np.int64)
    if len(idx) == 0:
        return np.zeros(0), np.zeros((0, 3, 3)), np.zeros((0, 3))
    return umeyama_batched(cm[idx], cf[idx])


def pair_hypotheses(
    c2w_fixed: np.ndarray, c2w_moving: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarities from every camera pair's 8 axis-cloud points (moving -> fixed).

    The axis length in each frame is the distance between the pair's two centres in that
    frame, so both clouds have the same shape up to the similarity; when the two centres
    coincide (distance <= 1e-9) it falls back to each frame's cloud radius.
    Returns scale [B], R [B, 3, 3], t [B, 3] with B = C(N, 2).
    """
    cf44 = as_c2w44(c2w_fixed)
    cm44 = as_c2w44(c2w_moving)
    idx = np.array(list(itertools.combinations(range(len(cf44)), 2)), dtype=np.int64)
    if len(idx) == 0:
        return np.zeros(0), np.zeros((0, 3, 3)), np.zeros((0, 3))
    i, j = idx[:, 0], idx[:, 1]
    d_f = np.linalg.norm(cf44[i, :3, 3] - cf44[j, :3, 3], axis=1)
    d_m = np.linalg.norm(cm44[i, :3, 3] - cm44[j, :3, 3], axis=1)
    degenerate = (d_f <= 1e-9) | (d_m <= 1e-9)
    d_f = np.where(degenerate, cloud_radius(cf44[:, :3, 3]), d_f)
    d_m = np.where(degenerate, cloud_radius(cm44[:, :3, 3]), d_m)
    fixed_pts = np.concatenate([axis_cloud(cf44[i], d_f), axis_cloud(cf44[j], d_f)], axis=1)
    moving_pts = np.concatenate([axis_cloud(cm44[i], d_m), axis_cloud(cm44[j], d_m)], axis=1)
    return umeyama_batched(moving_pts, fixed_pts)


def score_hypotheses(
    scale: np.ndarray,  # [B]
    R: np.ndarray,  # [B, 3, 3]
    t: np.ndarray,  # [B, 3]
    centres_moving: np.ndarray,  # [N, 3]
    centres_fixed: np.ndarray,  # [N, 3]
    threshold: float | np.ndarray = 1.0,  # scalar or [N], in fixed-frame units
) -> tuple[np.ndarray, np.ndarray]:
    """Inlier count [B] and mean normalised squared distance [B] of each hypothesis.

    The mean runs over the inliers, or over all cameras when a hypothesis has none.
    """
    moved = scale[:, None, None] * np.einsum("bij,nj->bni", R, centres_moving) + t[:, None]
    thr2 = np.square(
        np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(centres_fixed),))
    )
    d2 = np.square(moved - centres_fixed[None]).sum(axis=2) / thr2  # [B, N]
    inl = d2 <= 1.0
    n_inl = inl.sum(axis=1)
    mean_inl = np.where(n_inl > 0, (d2 * inl).sum(axis=1) / np.maximum(n_inl, 1), d2.mean(axis=1))
    return n_inl, mean_inl


@dataclass
class RegistrationResult:
    sim3: Sim3  # moving frame -> fixed frame
    inliers: np.ndarray  # [N] bool, cameras within the threshold under sim3
    num_inliers: int
    mean_sq_dist: float  # mean normalised squared distance of the inliers
    hypothesis: str  # "triplet" or "pair" (or "refined" after refine=True)
    num_hypotheses: int


def robust_sim3(
    c2w_fixed: np.ndarray,  # [N, 3|4, 4]
    c2w_moving: np.ndarray,  # [N, 3|4, 4], same cameras in the same order
    threshold: float = 1.0,
    refine: bool = False,
) -> RegistrationResult:
    """SPARS3R's robust similarity from the moving frame onto the fixed frame.

    Needs N >= 2 shared cameras (pairs alone when N == 2). ``refine=True`` adds one
    least-squares fit on the winning inliers' axis clouds (not in SPARS3R; off by default).
    """
    cf = as_c2w44(c2w_fixed)
    cm = as_c2w44(c2w_moving)
    if len(cf) != len(cm):
        raise ValueError(f"fixed and moving hold {len(cf)} and {len(cm)} cameras")
    if len(cf) < 2:
        raise ValueError(f"robust Sim(3) registration needs >= 2 shared cameras, got {len(cf)}")
    s3, R3, t3 = triplet_hypotheses(cf, cm)
    s2, R2, t2 = pair_hypotheses(cf, cm)
    scale = np.concatenate([s3, s2])
    R = np.concatenate([R3, R2])
    t = np.concatenate([t3, t2])
    n_inl, mean_d = score_hypotheses(scale, R, t, cm[:, :3, 3], cf[:, :3, 3], threshold)
    # Most inliers, then lowest mean distance; lexsort is stable, so exact ties keep the
    # first hypothesis in upstream's order (triplets, then pairs).
    best = int(np.lexsort((mean_d, -n_inl))[0])
    sim = Sim3(float(scale[best]), R[best], t[best])
    kind = "triplet" if best < len(s3) else "pair"
    if refine:
        inl = _inlier_mask(sim, cm, cf, threshold)
        if inl.sum() >= 2:
            radius_f = cloud_radius(cf[inl, :3, 3]) or 1.0
            radius_m = cloud_radius(cm[inl, :3, 3]) or 1.0
            sim = umeyama(
                axis_cloud(cm[inl], radius_m).reshape(-1, 3),
                axis_cloud(cf[inl], radius_f).reshape(-1, 3),
            )
            kind = "refined"
    inl = _inlier_mask(sim, cm, cf, threshold)
    d2 = np.square(sim.apply(cm[:, :3, 3]) - cf[:, :3, 3]).sum(axis=1) / threshold**2
    mean_sq = float(d2[inl].mean()) if inl.any() else float(d2.mean())
    return RegistrationResult(sim, inl, int(inl.sum()), mean_sq, kind, len(scale))


def _inlier_mask(sim: Sim3, cm: np.ndarray, cf: np.ndarray, threshold: float) -> np.ndarray:
    d2 = np.square(sim.apply(cm[:, :3, 3]) - cf[:, :3, 3]).sum(axis=1)
    return d2 <= threshold**2


# ------------------------------------------------------------------------------ metrics


def normalized_procrustes_errors(
    centres_ref: np.ndarray,  # [N, 3]
    centres_est: np.ndarray,  # [N, 3]
) -> np.ndarray:
    """Per-camera position error [N] after a normalised Procrustes (SPARS3R's drop test).

    Both sets are centred and scaled to unit Frobenius norm, then the estimate is fitted onto
    the reference with a similarity; errors are in those normalised units, so > 1.0 marks a
    camera far off the rest of the trajectory.
    """
    a = _normalize_set(centres_ref)
    b = _normalize_set(centres_est)
    sim = umeyama(b, a)
    return np.linalg.norm(sim.apply(b) - a, axis=1)


def _normalize_set(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64) - np.mean(p, axis=0)
    n = np.linalg.norm(p)
    if n == 0:
        raise ValueError("camera centres coincide: need >= 2 distinct positions")
    return p / n


def rotation_error_deg(R_ref: np.ndarray, R_est: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between rotations [N, 3, 3] (= 2 acos |q_ref . q_est|)."""
    rel = np.einsum("nji,njk->nik", R_ref, R_est)  # R_ref^T R_est
    cos = (np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0
    # rel - rel^T = 2 sin(angle) [axis]_x; atan2 stays accurate near 0 where arccos is not.
    sin = np.linalg.norm(rel - np.swapaxes(rel, 1, 2), axis=(1, 2)) / (2.0 * np.sqrt(2.0))
    return np.degrees(np.arctan2(sin, cos))


def absolute_trajectory_error(c2w_ref: np.ndarray, c2w_est: np.ndarray) -> float:
    """ATE: RMSE of camera-centre differences (poses already in one frame)."""
    d = as_c2w44(c2w_ref)[:, :3, 3] - as_c2w44(c2w_est)[:, :3, 3]
    return float(np.sqrt(np.mean(np.square(d).sum(axis=1))))


def relative_pose_error(c2w_ref: np.ndarray, c2w_est: np.ndarray) -> tuple[float, float]:
    """RPE over consecutive cameras: mean translation error and mean rotation error (deg).

    For cameras i, i+1: rel = inv(P_i) P_{i+1} in each set, err = inv(rel_ref) rel_est;
    translation error = |err[:3, 3]|, rotation error = angle of err[:3, :3].
    """
    ref = as_c2w44(c2w_ref)
    est = as_c2w44(c2w_est)
    if len(ref) < 2:
        return 0.0, 0.0
    rel_ref = np.linalg.inv(ref[:-1]) @ ref[1:]
    rel_est = np.linalg.inv(est[:-1]) @ est[1:]
    err = np.linalg.inv(rel_ref) @ rel_est
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = rotation_error_deg(np.tile(np.eye(3), (len(err), 1, 1)), err[:, :3, :3])
    return float(trans.mean()), float(rot.mean())


@dataclass
class PoseComparison:
    sim3: Sim3  # estimate frame -> reference frame, fitted on the alignment cameras
    rotation_error_deg: np.ndarray  # [N]
    position_error: np.ndarray  # [N], reference units
    scene_scale: float  # cloud radius of the reference alignment cameras (for relative errors)


def compare_poses(
    c2w_ref: np.ndarray,  # [N, 3|4, 4]
    c2w_est: np.ndarray,  # [N, 3|4, 4], same cameras
    align_mask: np.ndarray | None = None,  # [N] bool: cameras used to fit the alignment
) -> PoseComparison:
    """Align the estimate onto the reference with a Sim(3), then per-camera errors.

    Only cameras in ``align_mask`` fit the alignment (e.g. the training cameras, so test
    poses are judged without having shaped the alignment). With fewer than 3 alignment
    cameras the fit uses their axis clouds, which pins rotation from 1-2 cameras too.
    """
    ref = as_c2w44(c2w_ref)
    est = as_c2w44(c2w_est)
    m = np.ones(len(ref), bool) if align_mask is None else np.asarray(align_mask, bool)
    if m.sum() >= 3:
        sim = umeyama(est[m, :3, 3], ref[m, :3, 3])
    else:
        # Too few centres for a unique similarity: use the axis clouds (rotation included).
        r_ref = max(cloud_radius(ref[m, :3, 3]), 1e-9) if m.sum() > 1 else 1.0
        r_est = max(cloud_radius(est[m, :3, 3]), 1e-9) if m.sum() > 1 else 1.0
        sim = umeyama(
            axis_cloud(est[m], r_est).reshape(-1, 3), axis_cloud(ref[m], r_ref).reshape(-1, 3)
        )
    moved = sim.transform_c2w(est)
    rot = rotation_error_deg(ref[:, :3, :3], moved[:, :3, :3])
    pos = np.linalg.norm(ref[:, :3, 3] - moved[:, :3, 3], axis=1)
    return PoseComparison(sim, rot, pos, cloud_radius(ref[m, :3, 3]))
