"""Aligning cameras and point clouds between coordinate frames (SPARS3R's alignment stage).

``alignment.registration`` holds the pure-numpy similarity tools: Umeyama/Procrustes, the
robust train/test camera registration (triplet and pair hypotheses) and pose-error metrics.

The dense-prior alignment (SPARS3R's GFA + SOA, ``python -m alignment``; docs/ALIGNMENT.md):
``ransac`` (vectorised RANSAC-Procrustes Sim(3), batched Umeyama, 1-D affine RANSAC),
``dense_prior`` (depth maps and pointmaps -> [H, W, 3] point maps), ``fusion`` (per-view
depth fit, global and semantic alignment), ``stage`` (scene folder in, alignment/ out).
They are imported from their modules (``stage`` pulls in the scene loader and torch).
"""

from alignment.registration import (
    PoseComparison,
    RegistrationResult,
    Sim3,
    absolute_trajectory_error,
    compare_poses,
    normalized_procrustes_errors,
    relative_pose_error,
    robust_sim3,
    rotation_error_deg,
    umeyama,
)

__all__ = [
    "PoseComparison",
    "RegistrationResult",
    "Sim3",
    "absolute_trajectory_error",
    "compare_poses",
    "normalized_procrustes_errors",
    "relative_pose_error",
    "robust_sim3",
    "rotation_error_deg",
    "umeyama",
]
