"""Error type of the COLMAP stage.

Bad input stops with one line naming the file and the fix: scripts print
``error: <message>`` and exit 1. ``TooFewMatchesError`` carries the per-pair inlier counts
so callers (and tests) can read them without parsing the message.
"""

from __future__ import annotations

try:  # the project's scene error, once scene/errors.py is on main
    from scene.errors import SceneError
except ImportError:  # pragma: no cover - temporary until the scene branch is merged

    class SceneError(ValueError):
        """Bad or inconsistent scene input (missing, corrupt or contradictory files)."""

        def __init__(self, message: str):
            super().__init__(" ".join(str(message).split()))


class TooFewMatchesError(SceneError):
    """The training views do not match well enough to triangulate from."""

    def __init__(self, message: str, pair_counts: dict[tuple[str, str], int]):
        super().__init__(message)
        self.pair_counts = pair_counts


__all__ = ["SceneError", "TooFewMatchesError"]
