"""Discrete mask matching by union-find (RegSegField variant A, seeds digest 1.2).

The fast baseline and diagnostic beside the learned descriptors:

1. each view's label map (finest mask wins, 0 = no mask) is eroded per label with a 3x3
   minimum, so keypoints on a segment border carry no label;
2. every COLMAP match whose two pixels both carry a label links (view a, label) with
   (view b, label);
3. union-find over all (view, label) nodes merges any two nodes linked by at least
   ``min_links`` matches (1 in RegSegField) into one global segment;
4. a global segment present in one view only is "unmatched" and gets id -1.

Its weakness is the reason for the learned variant: one wrong match merges two objects,
and transitively everything they touch. ``UnionFindResult.max_labels_per_view`` shows how
much merging of different labels of one view happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = int(p[x])
        return int(x)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def erode_labels(labels: np.ndarray) -> np.ndarray:
    """[H, W] int labels -> the same with 0 wherever the 3x3 neighbourhood (edges
    replicated) holds another label: each label channel eroded by a 3x3 min-pool."""
    p = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    keep = np.ones(labels.shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            keep &= p[dy : dy + h, dx : dx + w] == labels
    return np.where(keep, labels, 0).astype(labels.dtype)


def pixel_index(xy: np.ndarray, size_hw: tuple[int, int], image_wh: tuple[int, int]) -> np.ndarray:
    """COLMAP pixel coordinates [M, 2] of an image of ``image_wh`` -> [M, 2] int (row, col)
    of a map of ``size_hw``; the top-left pixel centre is (0.5, 0.5), so a pixel holds the
    coordinates [i, i + 1); clipped to the map."""
    h, w = size_hw
    sx, sy = w / float(image_wh[0]), h / float(image_wh[1])
    col = np.clip(np.floor(xy[:, 0] * sx), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor(xy[:, 1] * sy), 0, h - 1).astype(np.int64)
    return np.stack([row, col], axis=1)


@dataclass
class UnionFindResult:
    """Global segment ids of every (view, label) node and what the matching did."""

    global_ids: list[np.ndarray]  # per view: [n_labels + 1] int64, entry 0 (no label) = -1
    n_global: int  # segments present in >= 2 views
    links: int  # matches that linked two labelled pixels
    matches: int  # matches considered
    max_labels_per_view: int  # most labels of one view inside one global segment

    def id_map(self, view: int, labels: np.ndarray) -> np.ndarray:
        """[H, W] int64 global ids of a label map of ``view`` (-1: unmatched or no label)."""
        return self.global_ids[view][labels]


def union_find_labels(
    n_labels: list[int],
    links: list[tuple[int, np.ndarray, int, np.ndarray]],
    min_links: int = 1,
) -> UnionFindResult:
    """Merge labels across views.

    Args:
        n_labels: labels per view (labels are 1..n, 0 = none).
        links: (view a, labels [M] in view a, view b, labels [M] in view b) per view pair,
            one entry per match; label 0 on either side means the match links nothing.
        min_links: merge two labels when at least this many matches link them.
    """
    base = np.concatenate([[0], np.cumsum([n + 1 for n in n_labels])])  # node offsets
    uf = UnionFind(int(base[-1]))
    n_links = n_matches = 0
    for va, la, vb, lb in links:
        la, lb = np.asarray(la, np.int64), np.asarray(lb, np.int64)
        n_matches += len(la)
        ok = (la > 0) & (lb > 0)
        n_links += int(ok.sum())
        if not ok.any():
            continue
        pairs, votes = np.unique(np.stack([la[ok], lb[ok]], 1), axis=0, return_counts=True)
        for (a, b), c in zip(pairs.tolist(), votes.tolist()):
            if c >= min_links:
                uf.union(int(base[va] + a), int(base[vb] + b))
    roots = np.array([uf.find(i) for i in range(int(base[-1]))], dtype=np.int64)
    view_of = np.repeat(np.arange(len(n_labels)), [n + 1 for n in n_labels])
    is_label = np.ones(len(roots), dtype=bool)
    is_label[base[:-1]] = False
    # A root is a global segment when its labels span >= 2 views.
    views_per_root: dict[int, set[int]] = {}
    labels_per_root_view: dict[tuple[int, int], int] = {}
    for node in np.flatnonzero(is_label).tolist():
        r, v = int(roots[node]), int(view_of[node])
        views_per_root.setdefault(r, set()).add(v)
        labels_per_root_view[(r, v)] = labels_per_root_view.get((r, v), 0) + 1
    matched = sorted(r for r, vs in views_per_root.items() if len(vs) >= 2)
    gid = {r: i for i, r in enumerate(matched)}
    global_ids = []
    for v, n in enumerate(n_labels):
        ids = np.full(n + 1, -1, dtype=np.int64)
        for lab in range(1, n + 1):
            ids[lab] = gid.get(int(roots[base[v] + lab]), -1)
        global_ids.append(ids)
    most = max((c for (r, _), c in labels_per_root_view.items() if r in gid), default=0)
    return UnionFindResult(global_ids, len(matched), n_links, n_matches, int(most))


def union_find_views(
    labels: list[np.ndarray],
    pair_matches: list[tuple[int, int, np.ndarray, np.ndarray]],
    image_sizes: list[tuple[int, int]],
    min_links: int = 1,
) -> UnionFindResult:
    """Union-find matching of label maps through pixel matches.

    Args:
        labels: per view, [H, W] int finest-mask label map (0 = no mask).
        pair_matches: (view a, view b, xy_a [M, 2], xy_b [M, 2]) in COLMAP pixel coordinates
            of the images on disk.
        image_sizes: per view, (width, height) of the image the coordinates refer to.
        min_links: see ``union_find_labels``.
    """
    eroded = [erode_labels(lab) for lab in labels]
    links = []
    for va, vb, xa, xb in pair_matches:
        pa = pixel_index(xa, eroded[va].shape, image_sizes[va])
        pb = pixel_index(xb, eroded[vb].shape, image_sizes[vb])
        links.append((va, eroded[va][pa[:, 0], pa[:, 1]], vb, eroded[vb][pb[:, 0], pb[:, 1]]))
    return union_find_labels([int(lab.max()) for lab in labels], links, min_links)
