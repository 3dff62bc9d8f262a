"""The one exception type for bad scene input.

A ``SceneError`` message is a single line that names the offending file or folder and says
how to fix it, e.g. ``"/data/fern/images_8: folder holds no images (.png/.jpg); put the
photos there or pass -i <folder>"``. Scripts catch it, print ``error: <message>`` and exit
with status 1. Everything that can raise it runs while ``Scene`` is built, before a script
creates its model folder, so a failed run leaves nothing behind.
"""

from __future__ import annotations


class SceneError(ValueError):
    """Bad or inconsistent scene input (missing, corrupt or contradictory files)."""

    def __init__(self, message: str):
        # Keep the promise of one line, whatever the caller formatted.
        super().__init__(" ".join(str(message).split()))
