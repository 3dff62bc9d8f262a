"""The segmented object as one piece: the 3D connected component it lies in.

A cluster of similar features also holds stray Gaussians far from the object: background
blobs whose colour and mask descriptors resemble the object's. In a sparse-view model they
are common (floaters fitted to a few views), and rendered alone they cover pixels around
the object in novel views. SAGA cleans its 3D segments with a point-cloud filter for the same
reason; here the filter is topological: two Gaussians of the segment are linked when their
centres are closer than ``radius_factor`` times the segment's median spacing (the median
distance to its 8th nearest neighbour), and the segment keeps one connected component, the
one holding an anchor Gaussian (a click) or else the one with the most opacity.

scipy does the work (``cKDTree.query_pairs`` on every core, ``csgraph.connected_components``):
the graph is built once per call on the segment only, O(M log M) for M selected Gaussians.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

SPACING_NEIGHBOUR = 8  # the spacing unit: median distance to the 8th nearest neighbour


def component_labels(xyz: np.ndarray, radius_factor: float) -> tuple[np.ndarray, float]:
    """(component id [M] int, link radius) of points ``xyz`` [M, 3] (see the module docstring)."""
    m = len(xyz)
    if m < 2:
        return np.zeros(m, np.int64), 0.0
    tree = cKDTree(xyz)
    k = min(SPACING_NEIGHBOUR, m - 1)
    dist, _ = tree.query(xyz, k=k + 1, workers=-1)
    radius = radius_factor * float(np.median(dist[:, k]))
    pairs = tree.query_pairs(radius, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    return labels, radius


def main_component(
    xyz: np.ndarray,  # [N, 3]
    keep: np.ndarray,  # [N] bool: the segment
    weight: np.ndarray,  # [N] (opacity): picks the component without an anchor
    radius_factor: float = 2.0,
    anchor: int | None = None,
) -> np.ndarray:  # [N] bool
    """``keep`` reduced to one 3D connected component: the one holding Gaussian ``anchor``
    when it is in the segment, else the one with the largest total ``weight``.
    ``radius_factor <= 0`` returns ``keep`` unchanged."""
    keep = np.asarray(keep, bool)
    ids = np.flatnonzero(keep)
    if radius_factor <= 0 or len(ids) < 2:
        return keep.copy()
    labels, _ = component_labels(np.asarray(xyz, np.float64)[ids], radius_factor)
    if anchor is not None and keep[anchor]:
        chosen = labels[np.searchsorted(ids, anchor)]
    else:
        chosen = int(np.argmax(np.bincount(labels, weights=np.asarray(weight)[ids])))
    out = np.zeros_like(keep)
    out[ids[labels == chosen]] = True
    return out
