"""Aligning cameras and point clouds between coordinate frames (SPARS3R's alignment stage).

``alignment.registration`` holds the pure-numpy similarity tools: Umeyama/Procrustes, the
robust train/test camera registration (triplet and pair hypotheses) and pose-error metrics.
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
