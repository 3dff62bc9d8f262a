"""Smooth camera paths through a set of poses (for videos)."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation, Slerp


def smooth_path(
    c2w: np.ndarray,  # [K, 3, 4] camera-to-world poses in path order
    n_frames: int,
) -> np.ndarray:
    """[n_frames, 3, 4] poses passing through every key pose.

    Centres follow a cubic spline parameterised by cumulative distance, rotations are
    slerped, so the path neither jumps nor stalls between unevenly spaced views.
    """
    k = len(c2w)
    if k == 1:
        return np.repeat(c2w[:1], n_frames, axis=0)
    centres = c2w[:, :3, 3]
    seg = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    # Views that share a centre still need distinct knots.
    t = np.concatenate([[0.0], np.cumsum(np.maximum(seg, 1e-6 * max(seg.max(), 1e-9)))])
    ts = np.linspace(0.0, t[-1], n_frames)
    pos = (
        CubicSpline(t, centres, bc_type="natural")(ts)
        if k > 2
        else np.stack([np.interp(ts, t, centres[:, i]) for i in range(3)], axis=1)
    )
    rots = Slerp(t, Rotation.from_matrix(c2w[:, :3, :3]))(ts).as_matrix()
    return np.concatenate([rots, pos[:, :, None]], axis=2)
