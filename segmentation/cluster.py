"""KMeans over Gaussians in a joint space of position and feature.

Each Gaussian g becomes the vector

    x_g = [ w_x * (xyz_g - centre) / scene_scale ,  w_f * f_g / rms(f) ]      [3 + C]

``scene_scale`` makes positions unit-free (the 3DGS camera extent, or the spread of the
Gaussians); ``rms(f)`` (the root mean square of the feature norms) does the same for the
features, so ``w_x`` and ``w_f`` alone set the balance. A large ``w_x`` favours compact
clusters (the course project's "physical distance" advice); a large ``w_f`` follows the 2D
features across space. Gaussians are weighted by their opacity (``sample_weight``): a
transparent floater barely pulls a centroid.

scikit-learn's ``KMeans`` (Lloyd, k-means++ seeding) runs up to ``minibatch_above``
Gaussians; above that ``MiniBatchKMeans`` (batches of 4096 points, a few passes) keeps 1M
Gaussians with 32 channels within seconds on two cores. Every Gaussian is then assigned to its
nearest centroid, so labels cover the whole model.
"""

from __future__ import annotations

import numpy as np

from segmentation.errors import SegmentationError


def scene_scale_of(xyz: np.ndarray) -> float:
    """A robust size of a point set: the 90th percentile of distances to the median point."""
    d = np.linalg.norm(xyz - np.median(xyz, axis=0), axis=1)
    return float(max(np.percentile(d, 90), 1e-6))


def normalise_features(f: np.ndarray) -> np.ndarray:
    """[N, C] -> [N, C] divided by the root mean square of the row norms (mean |f|^2 = 1)."""
    rms = float(np.sqrt(np.mean(np.sum(f.astype(np.float64) ** 2, axis=1))))
    return (f / max(rms, 1e-12)).astype(np.float32)


def joint_embedding(
    xyz: np.ndarray,  # [N, 3]
    feats: np.ndarray,  # [N, C]
    w_xyz: float = 1.0,
    w_feat: float = 1.0,
    scene_scale: float | None = None,
) -> np.ndarray:  # [N, 3 + C] float32
    """[w_x * xyz / scene_scale, w_f * normalised f] (see the module docstring)."""
    if len(xyz) != len(feats):
        raise SegmentationError(
            f"{len(xyz)} Gaussians but {len(feats)} feature rows; features must align with "
            "the PLY (re-run the distillation on this model)"
        )
    scale = scene_scale if scene_scale and scene_scale > 0 else scene_scale_of(xyz)
    pos = (xyz - np.median(xyz, axis=0)) / scale
    return np.concatenate([w_xyz * pos, w_feat * normalise_features(feats)], 1).astype(np.float32)


def kmeans_labels(
    x: np.ndarray,  # [N, D]
    k: int,
    sample_weight: np.ndarray | None = None,  # [N] (opacity)
    seed: int = 0,
    minibatch_above: int = 200_000,
    n_init: int = 3,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``x`` into ``k`` groups: (labels [N] int32, centres [k, D] float32).

    ``KMeans`` up to ``minibatch_above`` rows, ``MiniBatchKMeans`` above (the module
    docstring). Raises ``SegmentationError`` when ``k`` is not in [1, N].
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(x)
    if k < 1 or k > n:
        raise SegmentationError(f"--k {k} is out of range: the model has {n} Gaussians")
    w = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    if w is not None and not np.any(w > 0):
        w = None  # every Gaussian transparent: cluster them unweighted
    if n > minibatch_above:
        km = MiniBatchKMeans(
            n_clusters=k,
            batch_size=4096,
            n_init=n_init,
            max_iter=max_iter,
            random_state=seed,
            max_no_improvement=10,
            reassignment_ratio=0.001,
        )
    else:
        km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed)
    km.fit(x, sample_weight=w)
    centres = km.cluster_centers_.astype(np.float32)
    return assign_nearest(x, centres), centres


def assign_nearest(x: np.ndarray, centres: np.ndarray, chunk: int = 262_144) -> np.ndarray:
    """Index of the nearest centre for every row: [N] int32 (chunks keep memory flat)."""
    out = np.empty(len(x), dtype=np.int32)
    c2 = (centres.astype(np.float32) ** 2).sum(1)
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk].astype(np.float32)
        d = c2[None, :] - 2.0 * xs @ centres.T  # |x|^2 is the same for every centre
        out[s : s + chunk] = d.argmin(1)
    return out


def relabel_by_size(labels: np.ndarray, k: int, weight: np.ndarray | None = None) -> np.ndarray:
    """Renumber clusters so that 0 is the largest (by summed ``weight``, else count)."""
    mass = np.bincount(labels, weights=weight, minlength=k)
    order = np.argsort(-mass, kind="stable")
    remap = np.empty(k, dtype=np.int32)
    remap[order] = np.arange(k, dtype=np.int32)
    return remap[labels]
