"""Inlier matches between the training views: ``colmap_<N>views/matches.npz``.

Mask matching (RegSegField) needs 2D correspondences between every pair of training views,
without going through 3D points. The file holds, for every unordered pair of training views,
the geometrically verified SIFT inliers as pixel coordinates in both images, at the full
resolution of the images on disk (whatever resolution SIFT ran at). Coordinates follow COLMAP:
the centre of the top-left pixel is (0.5, 0.5); subtract 0.5 for array indices.

File layout (all arrays; P pairs, M matches in total, V views):

| key | shape, dtype | meaning |
|---|---|---|
| ``names`` | [V] str | training image names (file names in images/) |
| ``sizes`` | [V, 2] int64 | (width, height) of each image on disk |
| ``pairs`` | [P, 2] int64 | view indices (a, b), a < b; every pair is listed, matched or not |
| ``counts`` | [P] int64 | inlier matches per pair (0 when verification failed) |
| ``offsets`` | [P + 1] int64 | matches of pair p are rows offsets[p]:offsets[p + 1] |
| ``xy_a``, ``xy_b`` | [M, 2] float32 | pixel coordinates in view a and view b |
| ``kp_a``, ``kp_b`` | [M] int32 | keypoint indices in database.db (same folder) |
| ``convention`` | str | "colmap": top-left pixel centre at (0.5, 0.5) |
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

FORMAT_CONVENTION = "colmap"


@dataclass
class TrainMatches:
    names: list[str]
    sizes: np.ndarray  # [V, 2] int64 (width, height)
    pairs: np.ndarray  # [P, 2] int64, a < b
    offsets: np.ndarray  # [P + 1] int64
    xy_a: np.ndarray  # [M, 2] float32
    xy_b: np.ndarray  # [M, 2] float32
    kp_a: np.ndarray  # [M] int32
    kp_b: np.ndarray  # [M] int32

    @property
    def counts(self) -> np.ndarray:
        """Inlier matches per pair [P]."""
        return np.diff(self.offsets)

    def pair_counts(self) -> dict[tuple[str, str], int]:
        """(name_a, name_b) -> inlier matches, for every pair."""
        return {
            (self.names[a], self.names[b]): int(c)
            for (a, b), c in zip(self.pairs.tolist(), self.counts.tolist())
        }

    def get(self, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
        """Matched pixel coordinates ([M, 2] in name_a, [M, 2] in name_b), either order."""
        ia, ib = self.names.index(name_a), self.names.index(name_b)
        lo, hi = min(ia, ib), max(ia, ib)
        hit = np.nonzero((self.pairs[:, 0] == lo) & (self.pairs[:, 1] == hi))[0]
        if len(hit) == 0:
            raise KeyError(f"no pair ({name_a}, {name_b}) in the matches")
        p = int(hit[0])
        sl = slice(int(self.offsets[p]), int(self.offsets[p + 1]))
        xa, xb = self.xy_a[sl], self.xy_b[sl]
        return (xa, xb) if ia < ib else (xb, xa)

    def save(self, path: str) -> None:
        """Write atomically (temporary file, then rename)."""
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
        os.close(fd)
        try:
            np.savez_compressed(
                tmp,
                names=np.asarray(self.names, dtype=str),
                sizes=self.sizes.astype(np.int64),
                pairs=self.pairs.astype(np.int64).reshape(-1, 2),
                counts=self.counts.astype(np.int64),
                offsets=self.offsets.astype(np.int64),
                xy_a=self.xy_a.astype(np.float32).reshape(-1, 2),
                xy_b=self.xy_b.astype(np.float32).reshape(-1, 2),
                kp_a=self.kp_a.astype(np.int32),
                kp_b=self.kp_b.astype(np.int32),
                convention=np.asarray(FORMAT_CONVENTION),
            )
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it normal rights
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @staticmethod
    def load(path: str) -> TrainMatches:
        with np.load(path, allow_pickle=False) as z:
            if str(z["convention"]) != FORMAT_CONVENTION:
                raise ValueError(f"{path}: unknown coordinate convention {z['convention']}")
            return TrainMatches(
                names=[str(n) for n in z["names"]],
                sizes=z["sizes"],
                pairs=z["pairs"],
                offsets=z["offsets"],
                xy_a=z["xy_a"],
                xy_b=z["xy_b"],
                kp_a=z["kp_a"],
                kp_b=z["kp_b"],
            )


def build_train_matches(
    names: list[str],
    sizes: dict[str, tuple[int, int]],
    name_to_id: dict[str, int],
    keypoints: dict[int, np.ndarray],  # image_id -> [K, 2]
    inliers: dict[tuple[int, int], tuple[np.ndarray, int]],  # (id_a < id_b) -> ([M, 2], cfg)
) -> TrainMatches:
    """Assemble ``TrainMatches`` over every pair of ``names`` (in that order)."""
    pairs, chunks_a, chunks_b, kps_a, kps_b, offsets = [], [], [], [], [], [0]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            id_i, id_j = name_to_id[names[i]], name_to_id[names[j]]
            key = (min(id_i, id_j), max(id_i, id_j))
            m = inliers.get(key, (np.zeros((0, 2), np.int64), 0))[0]
            if id_i > id_j:
                m = m[:, ::-1]
            pairs.append((i, j))
            kps_a.append(m[:, 0])
            kps_b.append(m[:, 1])
            chunks_a.append(keypoints[id_i][m[:, 0]])
            chunks_b.append(keypoints[id_j][m[:, 1]])
            offsets.append(offsets[-1] + len(m))

    def cat(chunks: list[np.ndarray], shape: tuple, dtype) -> np.ndarray:
        return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(shape, dtype)

    return TrainMatches(
        names=list(names),
        sizes=np.array([sizes[n] for n in names], dtype=np.int64).reshape(-1, 2),
        pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2),
        offsets=np.array(offsets, dtype=np.int64),
        xy_a=cat(chunks_a, (0, 2), np.float32),
        xy_b=cat(chunks_b, (0, 2), np.float32),
        kp_a=cat(kps_a, (0,), np.int32),
        kp_b=cat(kps_b, (0,), np.int32),
    )


def check_match_graph(
    pair_counts: dict[tuple[str, str], int],
    names: list[str],
    min_matches: int,
    connected: bool = True,
) -> str | None:
    """Why the training views cannot be triangulated together, or None when they can.

    Every view needs a pair with >= ``min_matches`` inliers; with ``connected`` those pairs
    must also join all views into one group, as SfM needs (the cameras of separate groups
    would float apart). Triangulation from known poses does not: every group's points land
    in the one world frame of the poses (e.g. 12 views around an object, whose far sides
    share no features).
    """
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (a, b), c in pair_counts.items():
        if c >= min_matches:
            parent[find(a)] = find(b)
    lonely = [
        n for n in names if all(c < min_matches for (a, b), c in pair_counts.items() if n in (a, b))
    ]
    if lonely:
        return (
            f"{', '.join(lonely)} {'has' if len(lonely) == 1 else 'have'} no pair with "
            f">= {min_matches} inlier matches"
        )
    groups = {find(n) for n in names}
    if connected and len(groups) > 1:
        return f"the views fall into {len(groups)} unconnected groups"
    return None


def format_pair_counts(pair_counts: dict[tuple[str, str], int], limit: int = 12) -> str:
    """'a-b: 312, a-c: 0, ...' sorted from weakest, cut after ``limit`` pairs."""
    items = sorted(pair_counts.items(), key=lambda kv: kv[1])
    text = ", ".join(f"{a}-{b}: {c}" for (a, b), c in items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items) - limit} stronger pairs not shown)"
    return text
