"""SPARS3R's dense-prior alignment of one view: Global Fusion Alignment (GFA) and Semantic
Outlier Alignment (SOA), as pure functions over arrays.

The SfM points a training view observes are the reference. Each observation (a keypoint
pixel with a 3D point id) pairs the SfM point X with the prior's point P at the same pixel.
For one view (``align_view``):

0. depth priors only: the view's own depth scale and shift (a, b) are fitted robustly on
   the SfM depths (z_sfm ≈ a d + b, 2-point RANSAC) and the depth is back-projected again
   with them; a monocular depth is only defined up to these two numbers, and a shift in
   depth is not a similarity of the points, so a Sim(3) alone could not undo it;
1. GFA: one similarity T_g (RANSAC-Procrustes, ``alignment.ransac``) maps P onto X;
   correspondences with |T_g(P) - X| > ``outlier_thresh`` are the outliers;
2. SOA is skipped (T_g for every pixel) when the outliers are few: ratio below
   ``min_outlier_ratio``, fewer than ``min_outliers``, or a median residual below
   ``min_median_residual`` (the digest's skip rules);
3. SOA: the outliers are grouped by the view's segments (``select_segments``); every
   segment gets its own similarity fitted on its outlier correspondences (RANSAC, weighted
   Umeyama when RANSAC finds none), rejected when the mean per-axis error of the aligned
   correspondences exceeds ``align_error_thresh`` (or when it is no better than T_g there);
4. pixels inside an accepted segment take its transform, every other valid pixel T_g.

All thresholds are multiples of ``AlignParams.unit`` (a length in scene units, see
``alignment.stage.scene_unit``), so the same numbers work at every scene scale.

Segment grouping. SPARS3R prompts SAM with one outlier pixel at a time and keeps the mask
SAM scores best; a mask prompted at an outlier region is that region's object, so it holds
mostly outliers. Here the segments are precomputed (``masks/<stem>.npz``, bool [K, H, W],
nested levels included: the coarsest can cover the whole image), so the analogue is chosen
by *purity*: the share of a segment's correspondences that are outliers. Greedily, the
purest segment (ties: more outliers) among those with at least ``segment_min_points``
unassigned outliers and a purity of at least ``segment_min_purity`` (0.5: more outliers
than inliers; a coarse segment mostly right is never chosen) takes its unassigned
outliers as a cluster; repeat until none qualifies. Clusters whose masks overlap by more
than ``merge_overlap`` of either mask are merged, then made disjoint greedily by support
(most outliers first), and those left with fewer than ``segment_min_points`` outliers are
dropped.

Deviations from SPARS3R, each to keep a precomputed segment from moving correct points:
the purity rule above; and a segment's transform must also beat the global one on the
median residual of *all* its correspondences (inliers of T_g included), else it is
rejected and its pixels keep T_g.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alignment.dense_prior import DensePrior, backproject
from alignment.ransac import ransac_affine_1d, ransac_sim3, sim3_residuals, weighted_umeyama


@dataclass
class AlignParams:
    """Settings of the alignment (thresholds in units of ``unit``; CLI flags of the same
    names)."""

    unit: float = 1.0  # scene length of one threshold unit
    inlier_thresh: float = 0.1  # RANSAC inlier: residual below this
    outlier_thresh: float = 0.3  # GFA outlier: residual above this
    align_error_thresh: float = 1.5  # SOA: reject a segment whose mean |error| exceeds this
    sample_size: int = 10
    iterations: int = 3000
    early_stop: float = 0.99
    min_correspondences: int = 20  # fewer: the view is skipped
    min_outlier_ratio: float = 0.1  # SOA skip rules
    min_outliers: int = 10
    min_median_residual: float = 0.1
    segment_min_points: int = 10  # T
    segment_min_pixels: int = 10
    segment_min_purity: float = 0.5  # a segment holds more outliers than inliers
    merge_overlap: float = 0.5
    depth_fit: str = "affine"  # affine | scale | none (depth priors)
    semantic: bool = True


@dataclass
class Correspondences:
    """SfM observations of one view paired with prior pixels (M of them)."""

    rows: np.ndarray  # [M] int pixel row at training resolution
    cols: np.ndarray  # [M] int pixel column
    sfm: np.ndarray  # [M, 3] SfM point positions
    point_ids: np.ndarray  # [M] int64 SfM point ids
    observed: int = 0  # keypoints with a 3D point before the validity filter

    def __len__(self) -> int:
        return len(self.rows)


def view_correspondences(
    xys: np.ndarray,
    point3D_ids: np.ndarray,
    points: dict[int, np.ndarray],
    model_size: tuple[int, int],
    image_size: tuple[int, int],
    valid: np.ndarray,
) -> Correspondences:
    """Pair a view's SfM observations with the prior pixels under them.

    Args:
        xys: [K, 2] keypoints in the COLMAP camera's pixels (pixel centres at +0.5).
        point3D_ids: [K] their 3D point ids (-1: none).
        points: SfM point id -> xyz [3].
        model_size: (width, height) of the COLMAP camera.
        image_size: (width, height) at training resolution.
        valid: [H, W] prior validity.
    """
    ids = np.asarray(point3D_ids, dtype=np.int64)
    keep = np.array([i >= 0 and int(i) in points for i in ids], dtype=bool)  # [K]
    xy = np.asarray(xys, dtype=np.float64)[keep]  # [K', 2]
    ids = ids[keep]
    observed = len(ids)
    (mw, mh), (w, h) = model_size, image_size
    cols = np.floor(xy[:, 0] * (w / mw)).astype(np.int64)
    rows = np.floor(xy[:, 1] * (h / mh)).astype(np.int64)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    rows, cols, ids = rows[inside], cols[inside], ids[inside]
    ok = valid[rows, cols]
    rows, cols, ids = rows[ok], cols[ok], ids[ok]
    sfm = np.stack([points[int(i)] for i in ids]) if len(ids) else np.zeros((0, 3))
    return Correspondences(rows, cols, sfm, ids, observed)


def residual_stats(res: np.ndarray, unit: float) -> dict[str, float | int | None]:
    """Summary of residuals [N] in threshold units (n, median, mean, p90, max)."""
    r = np.asarray(res, dtype=np.float64)
    r = r[np.isfinite(r)] / unit
    if not len(r):
        return {"n": 0, "median": None, "mean": None, "p90": None, "max": None}
    return {
        "n": int(len(r)),
        "median": float(np.median(r)),
        "mean": float(r.mean()),
        "p90": float(np.percentile(r, 90)),
        "max": float(r.max()),
    }


# ----------------------------------------------------------------------- segments
@dataclass
class Segment:
    """One SOA segment: its (disjoint) pixel mask and the outliers inside it."""

    mask: np.ndarray  # [H, W] bool
    members: np.ndarray  # [P] int indices into the view's correspondences (outliers)
    sources: list[int] = field(default_factory=list)  # mask indices of masks/<stem>.npz


def select_segments(
    masks: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    is_outlier: np.ndarray,
    min_points: int = 10,
    merge_overlap: float = 0.5,
    min_purity: float = 0.5,
) -> list[Segment]:
    """Group outlier correspondences by segments (see the module docstring).

    Args:
        masks: [K, H, W] bool segments of the view at training resolution.
        rows, cols: [M] pixels of the correspondences.
        is_outlier: [M] bool.
    Returns:
        Disjoint segments, most outliers first, each with >= ``min_points`` outliers.
    """
    if len(masks) == 0 or not is_outlier.any():
        return []
    inside = masks[:, rows, cols]  # [K, M] bool
    n_out = (inside & is_outlier).sum(1)  # [K]
    n_all = inside.sum(1)
    purity = n_out / np.maximum(n_all, 1)  # [K]
    remaining = is_outlier.copy()  # [M]
    count = n_out.copy()  # unassigned outliers per segment
    clusters: list[tuple[np.ndarray, list[int]]] = []  # (mask, source ids)
    while True:
        cand = np.flatnonzero((count >= min_points) & (purity >= min_purity))
        if not len(cand):
            break
        k = int(cand[np.lexsort((-count[cand], -purity[cand]))[0]])  # purest, then largest
        clusters.append((masks[k].copy(), [k]))
        remaining &= ~inside[k]
        count = (inside & remaining).sum(1)
    # Merge clusters whose masks overlap by more than merge_overlap of either mask.
    merged = True
    while merged and len(clusters) > 1:
        merged = False
        flat = np.stack([m.reshape(-1) for m, _ in clusters]).astype(np.float32)  # [C, HW]
        area = flat.sum(1)  # [C]
        inter = flat @ flat.T  # [C, C]
        frac = inter / np.maximum(np.minimum(area[:, None], area[None]), 1)  # of the smaller
        np.fill_diagonal(frac, 0)
        a, b = np.unravel_index(int(np.argmax(frac)), frac.shape)
        if frac[a, b] > merge_overlap:
            a, b = min(a, b), max(a, b)
            ma, sa = clusters[a]
            mb, sb = clusters.pop(b)
            clusters[a] = (ma | mb, sa + sb)
            merged = True
    # Disjoint assignment by support: most outliers first, each pixel to the first claimer.
    support = [int((m[rows, cols] & is_outlier).sum()) for m, _ in clusters]
    claimed = np.zeros(masks.shape[1:], dtype=bool)
    out: list[Segment] = []
    for j in np.argsort(-np.asarray(support), kind="stable"):
        m, src = clusters[j]
        m = m & ~claimed
        members = np.flatnonzero(m[rows, cols] & is_outlier)
        if len(members) < min_points:
            continue
        claimed |= m
        out.append(Segment(m, members, sorted(src)))
    return out


# ----------------------------------------------------------------------- one view
@dataclass
class ViewAlignment:
    """The aligned prior of one view and what happened to it."""

    name: str
    points: np.ndarray | None  # [H, W, 3] aligned points (None: view skipped)
    valid: np.ndarray | None  # [H, W] bool
    labels: np.ndarray | None  # [H, W] int: 0 global transform, k > 0 segment k
    corr: Correspondences
    residuals: dict[str, np.ndarray]  # stage -> [M] residuals at the correspondences
    report: dict
    skipped: str | None = None  # why, when the view contributes no points
    segments: list[Segment] = field(default_factory=list)


def _skip(name: str, corr: Correspondences, why: str, report: dict) -> ViewAlignment:
    report["skipped"] = why
    return ViewAlignment(name, None, None, None, corr, {}, report, why)


def align_view(
    name: str,
    prior: DensePrior,
    corr: Correspondences,
    K: np.ndarray,
    w2c: np.ndarray,
    masks: np.ndarray | None,
    params: AlignParams,
    rng: np.random.Generator | None = None,
) -> ViewAlignment:
    """Align one view's prior onto the SfM points (depth fit, GFA, SOA; module docstring).

    Args:
        name: image name (for messages).
        prior: the view's dense prior at training resolution.
        corr: its correspondences (``view_correspondences``).
        K: [3, 3] intrinsics and w2c: [4, 4] world-to-camera of the training camera.
        masks: [K, H, W] bool segments at training resolution, or None (no SOA).
    """
    rng = rng or np.random.default_rng(0)
    u = params.unit
    M = len(corr)
    report: dict = {"correspondences": M, "observed": corr.observed, "kind": prior.kind}
    if M < params.min_correspondences:
        return _skip(
            name,
            corr,
            f"{M} correspondences (SfM keypoints on valid prior pixels) < "
            f"{params.min_correspondences}",
            report,
        )
    r, c = corr.rows, corr.cols
    residuals: dict[str, np.ndarray] = {}
    points = prior.points
    valid = prior.valid.copy()
    residuals["raw"] = np.linalg.norm(points[r, c] - corr.sfm, axis=1)

    # 0. The depth prior's own scale and shift.
    if prior.is_depth and params.depth_fit != "none":
        d = prior.depth[r, c]  # [M]
        z = corr.sfm @ w2c[2, :3] + w2c[2, 3]  # [M] SfM camera depths
        thr = params.inlier_thresh * u
        if params.depth_fit == "affine":
            fit = ransac_affine_1d(d, z, thr, rng=rng)
        else:  # scale only: the median ratio, refined on the points it explains
            a = float(np.median(z / d))
            inl = np.abs(a * d - z) < thr
            if inl.sum() >= 3:
                a = float((d[inl] * z[inl]).sum() / (d[inl] ** 2).sum())
            fit = (a, 0.0, np.abs(a * d - z) < thr) if a > 0 else None
        if fit is None:
            return _skip(name, corr, "no positive depth scale fits the SfM depths", report)
        a, b, inl = fit
        report["depth_fit"] = {"scale": a, "shift": b, "inlier_ratio": float(inl.mean())}
        depth = np.where(valid, a * prior.depth + b, 0.0)
        valid &= depth > 0
        points = backproject(depth, K, w2c)
        residuals["depth_fit"] = np.linalg.norm(points[r, c] - corr.sfm, axis=1)

    # 1. Global fusion alignment.
    src = points[r, c]  # [M, 3]
    g = ransac_sim3(
        src,
        corr.sfm,
        params.inlier_thresh * u,
        params.sample_size,
        params.iterations,
        params.early_stop,
        rng=rng,
    )
    if g.transform is None:
        return _skip(
            name,
            corr,
            f"RANSAC found no similarity with >= {min(params.sample_size, M)} inliers "
            f"(inlier threshold {params.inlier_thresh} units)",
            report,
        )
    Tg = g.transform
    res_g = g.residuals
    residuals["global"] = res_g
    outlier = res_g > params.outlier_thresh * u  # [M]
    report["global"] = {
        "scale": Tg.scale,
        "matrix": Tg.matrix().tolist(),
        "inlier_ratio": g.inlier_ratio,
        "hypotheses": g.hypotheses,
        "outliers": int(outlier.sum()),
        "outlier_ratio": float(outlier.mean()),
    }
    aligned = Tg.apply(points)  # [H, W, 3]
    labels = np.where(valid, 0, -1)

    # 2. Skip rules.
    why = None
    med = float(np.median(res_g)) / u
    if not params.semantic:
        why = "semantic step off"
    elif masks is None:
        why = "no masks for this view"
    elif outlier.mean() < params.min_outlier_ratio:
        why = f"outlier ratio {outlier.mean():.3f} < {params.min_outlier_ratio}"
    elif outlier.sum() < params.min_outliers:
        why = f"{int(outlier.sum())} outliers < {params.min_outliers}"
    elif med < params.min_median_residual:
        why = f"median residual {med:.3f} < {params.min_median_residual} units"

    # 3. Semantic outlier alignment.
    seg_reports: list[dict] = []
    accepted: list[Segment] = []
    if why is None:
        segs = select_segments(
            masks,
            r,
            c,
            outlier,
            params.segment_min_points,
            params.merge_overlap,
            params.segment_min_purity,
        )
        for seg in segs:
            m = seg.mask & valid
            idx = seg.members
            info: dict = {
                "masks": seg.sources,
                "pixels": int(m.sum()),
                "outliers": int(len(idx)),
                "residual_global": residual_stats(res_g[idx], u),
            }
            seg_reports.append(info)
            if m.sum() < params.segment_min_pixels:
                info["rejected"] = f"{int(m.sum())} valid pixels < {params.segment_min_pixels}"
                continue
            loc = ransac_sim3(
                src[idx],
                corr.sfm[idx],
                params.inlier_thresh * u,
                params.sample_size,
                params.iterations,
                params.early_stop,
                rng=rng,
            )
            T = loc.transform
            info["fit"] = "ransac"
            if T is None:
                T = weighted_umeyama(src[idx], corr.sfm[idx], prior.confidence[r[idx], c[idx]])
                info["fit"] = "weighted_umeyama"
            res_l = sim3_residuals(T, src[idx], corr.sfm[idx])
            err = float(np.abs(T.apply(src[idx]) - corr.sfm[idx]).mean()) / u
            info["mean_axis_error"] = err
            info["residual_local"] = residual_stats(res_l, u)
            if err > params.align_error_thresh:
                info["rejected"] = f"mean per-axis error {err:.3f} > {params.align_error_thresh}"
                continue
            # Every correspondence in the segment, inliers of T_g included, moves with it:
            # the local transform must beat T_g on all of them (precomputed segments can be
            # larger than the warped region, where a SAM mask prompted at outliers is not).
            allc = np.flatnonzero(m[r, c])  # [Q] correspondences inside the segment
            med_l = float(np.median(sim3_residuals(T, src[allc], corr.sfm[allc])))
            med_g = float(np.median(res_g[allc]))
            info["median_all_in_segment"] = {"global": med_g / u, "local": med_l / u}
            if med_l >= med_g:
                info["rejected"] = "no better than the global transform on the segment"
                continue
            info["scale"] = T.scale
            accepted.append(seg)
            aligned[m] = T.apply(points[m])
            labels[m] = len(accepted)
            info["label"] = len(accepted)
        report["semantic"] = {
            "segments_found": len(segs),
            "segments_used": len(accepted),
            "segments": seg_reports,
        }
    else:
        report["semantic"] = {"skipped": why, "segments_used": 0}
    residuals["semantic"] = np.linalg.norm(aligned[r, c] - corr.sfm, axis=1)
    report["residuals"] = {k: residual_stats(v, u) for k, v in residuals.items()}
    if accepted:
        in_seg = labels[r, c] > 0
        report["residuals_in_segments"] = {
            k: residual_stats(v[in_seg], u) for k, v in residuals.items()
        }
    return ViewAlignment(name, aligned, valid, labels, corr, residuals, report, None, accepted)
