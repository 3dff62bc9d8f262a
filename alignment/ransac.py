"""Vectorised RANSAC for similarity (Sim(3)) and 1-D affine fits between point sets.

SPARS3R aligns each view's dense prior onto the SfM points with RANSAC-Procrustes: draw
``sample_size`` correspondences, fit a similarity in closed form, count the correspondences
it brings within ``inlier_thresh``, keep the best. The original runs one hypothesis at a
time in Python. Here every step is an array operation over a *chunk* of hypotheses:

1. samples: ``argpartition`` of a [H, N] matrix of uniform numbers gives H independent
   draws of ``sample_size`` distinct indices at once;
2. fits: Umeyama's closed form for all H samples with one batched SVD ([H, 3, 3]);
3. scores: the residuals of all N correspondences under all H hypotheses, [H, N], in one
   ``einsum``; inliers are counted per row.

Chunks of hypotheses run until ``iterations`` are spent or the best hypothesis explains
more than ``early_stop`` of the correspondences. The winner is then refitted on its
inliers until the inlier set stops growing (a "local optimisation" step), which makes the
estimate exact on noise-free inliers whatever the outliers are.

Umeyama (1991): for centred sets A, B (rows are points) with covariance Σ = Bᵀ A / n and
SVD Σ = U D Vᵀ, R = U S Vᵀ with S = diag(1, 1, det(U Vᵀ)) (a proper rotation), scale
s = tr(D S) / var(A), t = mean(B) - s R mean(A).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignment.registration import Sim3

# Upper bound of floats in one [hypotheses, points, 3] scoring block (about 32 MB).
_SCORE_BLOCK = 4_000_000


def umeyama_batched(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarities dst ≈ s R src + t for a batch of point sets.

    Args:
        src: [B, n, 3] source points of each problem.
        dst: [B, n, 3] target points.
        weights: [B, n] non-negative weights (None: uniform).
    Returns:
        scale [B], R [B, 3, 3] proper rotations, t [B, 3]. A degenerate problem (all source
        points equal) gets scale 0, which scores badly rather than failing.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if weights is None:
        w = np.full(src.shape[:2], 1.0 / src.shape[1])  # [B, n]
    else:
        w = np.asarray(weights, dtype=np.float64)
        w = w / np.maximum(w.sum(1, keepdims=True), 1e-300)
    mu_s = np.einsum("bn,bni->bi", w, src)  # [B, 3]
    mu_d = np.einsum("bn,bni->bi", w, dst)  # [B, 3]
    a = src - mu_s[:, None]  # [B, n, 3]
    b = dst - mu_d[:, None]  # [B, n, 3]
    var_a = np.einsum("bn,bni,bni->b", w, a, a)  # [B]
    cov = np.einsum("bn,bni,bnj->bij", w, b, a)  # [B, 3, 3] = Σ_n w b aᵀ
    U, D, Vt = np.linalg.svd(cov)  # [B,3,3], [B,3], [B,3,3]
    sign = np.sign(np.linalg.det(U @ Vt))  # [B]
    sign[sign == 0] = 1.0
    S = np.ones_like(D)  # [B, 3]
    S[:, 2] = sign
    R = U @ (S[:, :, None] * Vt)  # U diag(S) Vᵀ
    scale = (D * S).sum(1) / np.where(var_a > 1e-300, var_a, np.inf)  # [B]
    t = mu_d - scale[:, None] * np.einsum("bij,bj->bi", R, mu_s)  # [B, 3]
    return scale, R, t


def weighted_umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Sim3:
    """One weighted least-squares similarity dst ≈ s R src + t (src, dst [N, 3]; weights [N])."""
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[None]
    s, R, t = umeyama_batched(src[None], dst[None], w)
    return Sim3(float(s[0]), R[0], t[0])


def _draw_samples(rng: np.random.Generator, h: int, n: int, k: int) -> np.ndarray:
    """[h, k] int: each row ``k`` distinct indices into range(n), uniformly at random."""
    keys = rng.random((h, n), dtype=np.float32)  # [h, n]
    return np.argpartition(keys, k - 1, axis=1)[:, :k]


@dataclass
class RansacResult:
    """Outcome of ``ransac_sim3`` (``transform`` is None when no hypothesis had at least
    ``min_inliers`` inliers)."""

    transform: Sim3 | None
    inliers: np.ndarray  # [N] bool, under ``transform`` (all False when it is None)
    residuals: np.ndarray  # [N] float, |T(src) - dst| (inf when ``transform`` is None)
    hypotheses: int  # how many were scored before stopping

    @property
    def inlier_ratio(self) -> float:
        return float(self.inliers.mean()) if len(self.inliers) else 0.0


def sim3_residuals(T: Sim3, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[N] Euclidean distances |T(src) - dst| (src, dst [N, 3])."""
    return np.linalg.norm(T.apply(src) - dst, axis=1)


def ransac_sim3(
    src: np.ndarray,
    dst: np.ndarray,
    inlier_thresh: float,
    sample_size: int = 10,
    iterations: int = 3000,
    early_stop: float = 0.99,
    min_inliers: int | None = None,
    rng: np.random.Generator | None = None,
    refine_rounds: int = 5,
) -> RansacResult:
    """Robust similarity dst ≈ s R src + t by vectorised RANSAC-Procrustes.

    Args:
        src: [N, 3] points to move (the prior's points).
        dst: [N, 3] their targets (SfM points).
        inlier_thresh: a correspondence is an inlier when |T(src) - dst| < this (dst units).
        sample_size: correspondences per hypothesis (min(sample_size, N) as SPARS3R).
        iterations: hypotheses at most.
        early_stop: stop once the best hypothesis has more than this fraction of inliers.
        min_inliers: fewer inliers than this for the best hypothesis is a failure
            (default: the sample size).
        rng: random generator (default: seeded with 0, so results are reproducible).
        refine_rounds: Umeyama refits on the inlier set after the search.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    k = min(sample_size, n)
    min_inliers = k if min_inliers is None else min_inliers
    rng = rng or np.random.default_rng(0)
    fail = RansacResult(None, np.zeros(n, bool), np.full(n, np.inf), 0)
    if n < 3 or k < 3:
        return fail
    thr2 = float(inlier_thresh) ** 2
    chunk = int(max(16, min(512, _SCORE_BLOCK // (3 * n))))
    best = (-1, np.inf)  # (inlier count, mean squared inlier residual)
    best_T: tuple[float, np.ndarray, np.ndarray] | None = None
    done = 0
    while done < iterations:
        h = min(chunk, iterations - done)
        idx = _draw_samples(rng, h, n, k)  # [h, k]
        s, R, t = umeyama_batched(src[idx], dst[idx])  # [h], [h,3,3], [h,3]
        pred = s[:, None, None] * np.einsum("hij,nj->hni", R, src) + t[:, None, :]  # [h, n, 3]
        r2 = ((pred - dst[None]) ** 2).sum(-1)  # [h, n]
        inl = r2 < thr2  # [h, n]
        count = inl.sum(1)  # [h]
        mse = np.where(inl, r2, 0.0).sum(1) / np.maximum(count, 1)  # [h]
        # Best of the chunk: most inliers, then the lowest mean squared inlier residual.
        j = int(np.lexsort((mse, -count))[0])
        done += h
        if (count[j], -mse[j]) > (best[0], -best[1]):
            best = (int(count[j]), float(mse[j]))
            best_T = (float(s[j]), R[j], t[j])
        if best[0] > early_stop * n:
            break
    if best_T is None or best[0] < min_inliers:
        fail.hypotheses = done
        return fail
    T = Sim3(*best_T)
    res = sim3_residuals(T, src, dst)
    inliers = res < inlier_thresh
    for _ in range(refine_rounds):  # local optimisation on the inlier set
        if inliers.sum() < 3:
            break
        T_new = weighted_umeyama(src[inliers], dst[inliers])
        res_new = sim3_residuals(T_new, src, dst)
        inl_new = res_new < inlier_thresh
        if inl_new.sum() < inliers.sum():
            break
        same = np.array_equal(inl_new, inliers)
        T, res, inliers = T_new, res_new, inl_new
        if same:
            break
    return RansacResult(T, inliers, res, done)


def ransac_affine_1d(
    x: np.ndarray,
    y: np.ndarray,
    inlier_thresh: float,
    iterations: int = 500,
    rng: np.random.Generator | None = None,
    positive_slope: bool = True,
) -> tuple[float, float, np.ndarray] | None:
    """Robust line y ≈ a x + b (a monocular depth's scale and shift against SfM depths).

    Two-point hypotheses, all drawn and scored at once ([H, N]); the winner is refitted by
    least squares on its inliers. Returns (a, b, inliers [N] bool), or None when fewer than
    three points agree (or, with ``positive_slope``, no hypothesis has a > 0).

    Args:
        x: [N] prior depths; y: [N] SfM depths (camera z).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 3:
        return None
    rng = rng or np.random.default_rng(0)
    idx = _draw_samples(rng, iterations, n, 2)  # [H, 2]
    x0, x1 = x[idx[:, 0]], x[idx[:, 1]]  # [H]
    y0, y1 = y[idx[:, 0]], y[idx[:, 1]]
    dx = x1 - x0
    ok = np.abs(dx) > 1e-12 * (np.abs(x0) + np.abs(x1) + 1e-300)
    a = np.where(ok, (y1 - y0) / np.where(ok, dx, 1.0), 0.0)  # [H]
    b = y0 - a * x0
    valid = ok & (a > 0) if positive_slope else ok
    if not valid.any():
        return None
    r = np.abs(a[:, None] * x[None] + b[:, None] - y[None])  # [H, N]
    count = np.where(valid, (r < inlier_thresh).sum(1), -1)  # [H]
    j = int(np.argmax(count))
    inl = r[j] < inlier_thresh
    for _ in range(5):
        if inl.sum() < 3:
            return None
        A = np.stack([x[inl], np.ones(int(inl.sum()))], 1)  # [M, 2]
        (a_j, b_j), *_ = np.linalg.lstsq(A, y[inl], rcond=None)
        if positive_slope and a_j <= 0:
            return None
        new = np.abs(a_j * x + b_j - y) < inlier_thresh
        if new.sum() < inl.sum() or np.array_equal(new, inl):
            break
        inl = new
    inl = np.abs(a_j * x + b_j - y) < inlier_thresh
    return float(a_j), float(b_j), inl
