"""Feature sources per Gaussian, and their weighted fusion (the SAS idea).

Sources (``--feature_sources``, in order; each yields an [N, C_s] array aligned with the PLY):

- ``distilled``: 2D maps of ``<scene>/features/`` distilled into the model (distill.py); the
  result is cached in ``<model>/segments/features_distilled.npz``.
- ``field``: the hierarchical group features of the mask-regularisation feature field (issue
  14), read from the PLY's side file ``point_cloud_extras.npz`` under ``param/features_group``
  (or ``extra/features_group``), shape [N, L, D] or [N, D]; ``--field_level`` picks the level
  (-1: all levels concatenated). Each level is L2-normalised, as train.py renders it
  (utils/feature_field.py).
- ``npz:<path>:<key>``: any [N, C] array in an ``.npz`` file (e.g. another extractor's
  distilled features).

Fusion (``--fusion``), after each source is normalised (mean squared row norm 1, see
``cluster.normalise_features``):

    w_{g,s} = softmax_s( (b_s + B[l_g, s]) / tau )

with ``b_s`` the per-source weights (``--source_weights``, default all 0: equal), ``B`` an
optional per-cluster table (``--cluster_source_weights file.npy`` [K', S]: a source known to
be better on some classes, looked up through a first clustering l_g of the fused features
with equal weights), and ``tau`` the temperature (``--fusion_temperature``; SAS uses 0.05 on
its capability scores). ``concat`` joins sqrt(w_{g,s}) f_{g,s} side by side, so a squared
distance between two Gaussians is the w-weighted sum of per-source squared distances (sources
may differ in width); ``sum`` adds w_{g,s} f_{g,s} (sources of equal width in one space, as
SAS's CLIP-aligned teachers).
"""

from __future__ import annotations

import os

import numpy as np

from segmentation.cluster import normalise_features
from segmentation.errors import SegmentationError

FIELD_KEYS = ("param/features_group", "extra/features_group")


def extras_path(ply_path: str) -> str:
    """``point_cloud.ply`` -> ``point_cloud_extras.npz`` (gaussian/ply.py's side file)."""
    return os.path.splitext(ply_path)[0] + "_extras.npz"


def field_available(ply_path: str) -> bool:
    p = extras_path(ply_path)
    if not os.path.isfile(p):
        return False
    with np.load(p) as z:
        return any(k in z.files for k in FIELD_KEYS)


def load_field_features(ply_path: str, level: int = -1) -> np.ndarray:
    """[N, D] (one level) or [N, L*D] (``level`` -1) group features of the feature field."""
    p = extras_path(ply_path)
    if not os.path.isfile(p):
        raise SegmentationError(
            f"{p} not found: the model has no feature field (train it with the mask "
            "regularisation of issue 14) - use --feature_sources distilled instead"
        )
    with np.load(p) as z:
        key = next((k for k in FIELD_KEYS if k in z.files), None)
        if key is None:
            raise SegmentationError(
                f"{p} holds no features_group (keys {z.files[:5]}); train the feature field "
                "first or use --feature_sources distilled"
            )
        f = z[key].astype(np.float32)
    if f.ndim == 2:
        return f
    if f.ndim != 3:
        raise SegmentationError(f"{p}:{key} has shape {f.shape}; expected [N, L, D] or [N, D]")
    f = f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    if level < 0:
        return f.reshape(len(f), -1)
    if level >= f.shape[1]:
        raise SegmentationError(f"--field_level {level}: the field has {f.shape[1]} levels")
    return f[:, level]


def load_npz_source(spec: str) -> np.ndarray:
    """``npz:<path>:<key>`` -> [N, C] float32."""
    _, rest = spec.split(":", 1)
    path, sep, key = rest.rpartition(":")
    if not sep or not path:
        raise SegmentationError(f"feature source {spec!r}: write it as npz:<path>:<key>")
    if not os.path.isfile(path):
        raise SegmentationError(f"feature source {spec!r}: {path} not found")
    with np.load(path) as z:
        if key not in z.files:
            raise SegmentationError(f"feature source {spec!r}: no key {key!r} (has {z.files[:6]})")
        f = z[key].astype(np.float32)
    return f.reshape(len(f), -1)


def softmax_weights(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax(logits / temperature): [N, S] (or [S]) -> same shape, rows sum to 1."""
    if temperature <= 0:
        raise SegmentationError(f"--fusion_temperature must be > 0 (got {temperature})")
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def fuse_sources(
    sources: list[np.ndarray],  # S arrays [N, C_s]
    source_weights: list[float] | None = None,  # [S] logits b_s
    temperature: float = 1.0,
    cluster_weights: np.ndarray | None = None,  # [K', S] per-cluster logits B
    cluster_labels: np.ndarray | None = None,  # [N] labels l_g in [0, K')
    mode: str = "concat",
) -> tuple[np.ndarray, np.ndarray]:
    """Fused per-Gaussian features and the weights used: ([N, C], [N, S]). See the docstring."""
    s = len(sources)
    n = len(sources[0])
    if any(len(f) != n for f in sources):
        raise SegmentationError(
            f"feature sources disagree on the number of Gaussians: {[len(f) for f in sources]}"
        )
    b = np.zeros(s) if not source_weights else np.asarray(source_weights, np.float64)
    if len(b) != s:
        raise SegmentationError(f"--source_weights has {len(b)} values for {s} feature sources")
    logits = np.broadcast_to(b, (n, s)).copy()
    if cluster_weights is not None:
        cw = np.asarray(cluster_weights, np.float64)
        if cw.ndim != 2 or cw.shape[1] != s or cluster_labels is None:
            raise SegmentationError(
                f"--cluster_source_weights must be a [K, {s}] table (got {cw.shape})"
            )
        if cluster_labels.max() >= len(cw):
            raise SegmentationError(
                f"--cluster_source_weights has {len(cw)} rows but the first clustering made "
                f"{int(cluster_labels.max()) + 1} clusters"
            )
        logits += cw[cluster_labels]
    w = softmax_weights(logits, temperature).astype(np.float32)  # [N, S]
    normed = [normalise_features(f) for f in sources]
    if mode == "concat":
        fused = np.concatenate([np.sqrt(w[:, i : i + 1]) * f for i, f in enumerate(normed)], 1)
    elif mode == "sum":
        if len({f.shape[1] for f in normed}) > 1:
            raise SegmentationError(
                "--fusion sum needs sources of one width "
                f"({[f.shape[1] for f in normed]}); use --fusion concat"
            )
        fused = sum(w[:, i : i + 1] * f for i, f in enumerate(normed))
    else:
        raise SegmentationError(f"unknown --fusion {mode!r}; choose concat or sum")
    return np.asarray(fused, np.float32), w
