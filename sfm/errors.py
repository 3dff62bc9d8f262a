"""Error types of the COLMAP stage.

Bad input stops with one line naming the file and the fix (``scene.errors.SceneError``):
scripts print ``error: <message>`` and exit 1. ``TooFewMatchesError`` also carries the
per-pair inlier counts, so callers (and tests) can read them without parsing the message.
"""

from __future__ import annotations

from scene.errors import SceneError


class TooFewMatchesError(SceneError):
    """The training views do not match well enough to triangulate from."""

    def __init__(self, message: str, pair_counts: dict[tuple[str, str], int]):
        super().__init__(message)
        self.pair_counts = pair_counts


__all__ = ["SceneError", "TooFewMatchesError"]
