"""Geometric segmentation of the Gaussians: the support plane, then the objects on it.

A scene of objects standing on a floor, a table or a turntable (a tabletop capture, an
object scan, the demo scene) separates in 3D where 2D masks fail: the classical mask
backend cuts a striped sphere into stripes, but the sphere's Gaussians are one connected
blob that touches nothing but the ground. The method is the classic point-cloud pipeline
(Rusu's Euclidean cluster extraction):

1. **support plane**: RANSAC over the Gaussian centres (opacity-weighted inlier count);
   with the camera centres given, only planes that keep at least 90% of the cameras on
   one side count (a floor is looked at from above: a plane that cuts through the camera
   ring is a slice of the object or of the background); the Gaussians within
   ``plane_threshold`` of the best plane are the background (no plane qualifies, e.g. an
   object turned over between shots: no background plane is taken out);
2. **objects**: DBSCAN (scikit-learn) over the other centres with radius ``eps`` (at least
   twice the median distance of a Gaussian to its 5th neighbour, so a sparse set, e.g.
   SfM points before densification, still forms connected objects) and opacity as the
   sample weight, so faint floaters do not bridge two objects;
3. the ``n_objects`` heaviest components (summed opacity) become labels 1..n_objects;
   the plane, DBSCAN's noise and the smaller components are label 0 (background).

All lengths are fractions of the scene scale the caller passes (segment.py: the cameras'
extent), so the defaults carry across scenes.

Why RANSAC here and not scikit-learn's RANSACRegressor: that fits a function z = f(x, y),
which cannot represent a plane seen edge-on in the scene's frame (a wall, or a floor in a
COLMAP frame whose z axis is arbitrary); a plane through 3 sampled points has no preferred
axis, and evaluating all hypotheses against a subsample at once is a few matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmentation.errors import SegmentationError

MIN_SAMPLES = 5  # DBSCAN: neighbours within the radius that make a core Gaussian


class NoSupportPlane(SegmentationError):
    """The cameras surround every candidate plane (an object turned over between shots)."""


@dataclass(frozen=True)
class Plane:
    normal: np.ndarray  # [3] unit
    offset: float  # points p on the plane: normal @ p + offset = 0

    def distance(self, xyz: np.ndarray) -> np.ndarray:  # [N]
        return np.abs(xyz @ self.normal + self.offset)


def fit_support_plane(
    xyz: np.ndarray,  # [N, 3]
    weight: np.ndarray,  # [N] >= 0 (opacity)
    threshold: float,
    hypotheses: int = 512,
    sample: int = 20_000,
    seed: int = 0,
    cameras: np.ndarray | None = None,  # [C, 3] camera centres
    one_side: float = 0.9,
) -> tuple[Plane, np.ndarray]:
    """The plane with the largest weighted inlier mass (distance < ``threshold``), refined
    by a weighted least-squares fit to its inliers; returns it and its inlier mask [N].
    With ``cameras``, planes with fewer than ``one_side`` of them on one side are skipped
    (8 chunks of ``hypotheses`` are tried; ``NoSupportPlane`` when none qualifies)."""
    n = xyz.shape[0]
    if n < 3:
        raise SegmentationError(f"a support plane needs at least 3 Gaussians, got {n}")
    rng = np.random.default_rng(seed)
    pick = rng.choice(n, size=min(n, sample), replace=False)
    pts, w = xyz[pick], weight[pick]
    best_score, best_plane = -1.0, None
    # Chunks of ``hypotheses`` planes ([sample, hypotheses] distances at a time); with
    # ``cameras`` more chunks are drawn, up to 8, while no plane has them on one side.
    for _ in range(8 if cameras is not None and len(cameras) else 1):
        tri = pts[rng.integers(0, len(pts), size=(hypotheses, 3))]  # [H, 3, 3]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(normals, axis=1)
        ok = norm > 1e-12
        normals = normals[ok] / norm[ok, None]
        offsets = -np.einsum("hd,hd->h", normals, tri[ok, 0])
        dist = np.abs(pts @ normals.T + offsets)  # [S, H]
        score = (w[:, None] * (dist < threshold)).sum(0)
        if cameras is not None and len(cameras):
            side = np.sign(cameras @ normals.T + offsets)  # [C, H]
            majority = np.maximum((side > 0).mean(0), (side < 0).mean(0))
            score = np.where(majority >= one_side, score, -1.0)
        if len(score) and score.max() > best_score:
            i = int(np.argmax(score))
            best_score, best_plane = float(score[i]), Plane(normals[i], float(offsets[i]))
        if best_score >= 0:  # a qualifying plane: this chunk's best is the answer
            break
    if best_plane is None or best_score < 0:
        if cameras is not None and len(cameras):
            raise NoSupportPlane("no plane has the cameras on one side of it")
        raise SegmentationError("the Gaussian centres are degenerate: no plane through them")
    plane = best_plane
    inliers = plane.distance(xyz) < threshold
    # Refine: the weighted principal plane of the inliers.
    p, wi = xyz[inliers], weight[inliers] + 1e-12
    centre = (wi[:, None] * p).sum(0) / wi.sum()
    cov = ((p - centre) * wi[:, None]).T @ (p - centre)
    normal = np.linalg.eigh(cov)[1][:, 0]
    plane = Plane(normal, float(-normal @ centre))
    return plane, plane.distance(xyz) < threshold


def geometric_labels(
    xyz: np.ndarray,  # [N, 3]
    opacity: np.ndarray,  # [N]
    n_objects: int,
    scene_scale: float,
    plane_threshold: float = 0.01,
    eps: float = 0.02,
    min_opacity: float = 0.05,
    seed: int = 0,
    cameras: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Labels [N] in 0..n_objects (0: support plane and everything not in an object) and a
    summary dict. ``plane_threshold`` and ``eps`` are fractions of ``scene_scale`` (``eps``
    raised to twice the median 5th-neighbour distance where the set is sparser);
    Gaussians below ``min_opacity`` take the label of their nearest labelled neighbour;
    ``cameras`` [C, 3] (camera centres) restrict the support plane to planes they look at
    from one side."""
    from scipy.spatial import cKDTree
    from sklearn.cluster import DBSCAN

    if n_objects < 1:
        raise SegmentationError(f"--k {n_objects + 1}: the geometric method needs k >= 2")
    solid = opacity >= min_opacity
    if solid.sum() < 3:
        raise SegmentationError(
            f"only {int(solid.sum())} Gaussians have opacity >= {min_opacity}: nothing to segment"
        )
    xs, ws = xyz[solid], opacity[solid]
    try:
        plane, on_plane = fit_support_plane(xs, ws, plane_threshold * scene_scale, seed=seed,
                                            cameras=cameras)  # fmt: skip
    except NoSupportPlane:
        # An object scanned from every side (turned over between shots): no floor to take
        # out; the objects are then the heaviest connected components of everything.
        plane, on_plane = None, np.zeros(len(xs), dtype=bool)
    labels_s = np.zeros(len(xs), dtype=np.int64)
    off = np.flatnonzero(~on_plane)
    sizes: list[float] = []
    radius = eps * scene_scale
    tree = cKDTree(xs)  # the solid Gaussians: their spacing, and the faint ones' neighbours
    if len(off) > MIN_SAMPLES:
        spacing, _ = tree.query(xs, k=MIN_SAMPLES + 1)
        radius = max(radius, 2.0 * float(np.median(spacing[:, -1])))
        comp = DBSCAN(eps=radius, min_samples=MIN_SAMPLES).fit(xs[off], sample_weight=ws[off])
        ids = comp.labels_
        valid = ids >= 0
        mass = np.bincount(ids[valid], weights=ws[off][valid]) if valid.any() else np.zeros(0)
        order = np.argsort(-mass)[:n_objects]
        remap = np.zeros(len(mass) + 1, dtype=np.int64)  # index -1 -> the last slot: 0
        remap[order] = np.arange(1, len(order) + 1)
        labels_s[off] = remap[ids]
        sizes = [float(mass[i]) for i in order]
    labels = np.zeros(len(xyz), dtype=np.int64)
    labels[solid] = labels_s
    if (~solid).any():  # faint Gaussians follow their nearest solid neighbour
        _, nn = tree.query(xyz[~solid], k=1)
        labels[~solid] = labels_s[nn]
    summary = {
        "plane_normal": None if plane is None else plane.normal.tolist(),
        "plane_offset": None if plane is None else plane.offset,
        "plane_fraction": float(on_plane.mean()),
        "objects_found": len(sizes),
        "object_radius": radius,
        "object_opacity_mass": sizes,
    }
    return labels, summary
