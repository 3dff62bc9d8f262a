"""The exception of the segmentation stage: bad input, said in one line."""

from __future__ import annotations

from scene.errors import SceneError


class SegmentationError(SceneError):
    """Bad segmentation input (no features, ``--k`` too large, a click on empty space ...).

    A ``SceneError`` (hence a ``ValueError``): segment.py prints ``error: <message>`` and exits
    with status 1. The message is one line naming what is wrong and how to fix it.
    """
