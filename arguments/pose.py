"""Test-time pose optimisation flags, shared by render.py and metrics.py.

Kept apart from ``arguments/__init__.py``: no training flag depends on them. What the
schedules mean is in ``gaussian_renderer/pose_opt.py``.
"""

from __future__ import annotations

from argparse import ArgumentParser

from arguments import ParamGroup


class PoseOptParams(ParamGroup):
    """``--test_pose_opt STEPS`` (0 = off) and ``--test_pose_schedule``."""

    _help = {
        "test_pose_opt": "SPARS3R test-time pose optimisation: Gaussians frozen, an SO(3)xR3 "
        "correction per test camera fitted for STEPS Adam steps with 0.8 L1 + 0.2 D-SSIM; "
        "writes <model>/test/ours_<N>_pose_opt/ (renders, gt, poses.json) beside ours_<N> "
        "(the paper uses 500); 0 = off",
        "test_pose_schedule": "spars3r: the paper's Adam schedule (lr 1e-4, 1000-step sine "
        "warm-up, decay to 5e-7 at 30k; moves at most ~1.5 deg in 500 steps); fast: lr 2e-3 "
        "decaying to 1e-4 over STEPS (recovers errors of several degrees)",
    }
    _choices = {"test_pose_schedule": ["spars3r", "fast"]}

    def __init__(self, parser: ArgumentParser):
        self.test_pose_opt = 0
        self.test_pose_schedule = "spars3r"
        super().__init__(parser, "Test-time Pose Optimisation")
