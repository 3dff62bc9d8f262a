"""Dataset readers: one function per on-disk layout, all returning a ``SceneInfo``.

``read_scene`` detects the layout of a scene folder, in this order:

1. a COLMAP model in ``sparse/0/`` or ``sparse/`` (binary or text) -> ``read_colmap``;
2. ``transforms_train.json`` or ``transforms.json`` (NeRF/Blender, instant-ngp) ->
   ``read_blender``;
3. ``poses_bounds.npy`` (LLFF) -> ``read_llff``;
4. ``cameras.npz`` (IDR/MonoSDF) -> ``read_idr``.

An incomplete COLMAP model (e.g. images.bin missing) is skipped with a notice when another
layout is present, and is an error otherwise. Every reader returns cameras sorted by
``image_name`` with ``uid`` = position in that order; object masks for evaluation
(``masks_object/``) are attached here for all layouts.
"""

from __future__ import annotations

import os

from scene.errors import SceneError
from scene.readers.blender import read_blender
from scene.readers.colmap import find_model_dir, read_colmap
from scene.readers.common import find_eval_mask, is_image_file
from scene.readers.idr import read_idr
from scene.readers.llff import read_llff
from scene.types import SceneInfo

__all__ = ["read_scene", "read_colmap", "read_blender", "read_llff", "read_idr", "detect_layout"]


def detect_layout(source_path: str) -> str:
    """ "colmap", "blender", "llff" or "idr" for a scene folder; SceneError when none fits."""
    if not os.path.isdir(source_path):
        raise SceneError(f"{source_path}: scene folder not found; check -s/--source_path")
    model, incomplete = find_model_dir(source_path)
    if model is not None:
        return "colmap"
    others = [
        ("blender", ("transforms_train.json", "transforms.json")),
        ("llff", ("poses_bounds.npy",)),
        ("idr", ("cameras.npz",)),
    ]
    for layout, files in others:
        if any(os.path.isfile(os.path.join(source_path, f)) for f in files):
            if incomplete is not None:
                print(f"[scene] {incomplete}: incomplete COLMAP model ignored; reading {layout}")
            return layout
    if incomplete is not None:
        raise SceneError(
            f"{incomplete}: incomplete COLMAP model (needs cameras and images .bin or .txt); "
            f"run colmap_match.py -s {source_path} to rebuild it"
        )
    has_images = any(
        os.path.isdir(os.path.join(source_path, d))
        and any(is_image_file(n) for n in os.listdir(os.path.join(source_path, d)))
        for d in os.listdir(source_path)
    )
    what = "holds images but no cameras" if has_images else "has no cameras"
    raise SceneError(
        f"{source_path}: scene folder {what} (no sparse/0, transforms_train.json, "
        f"transforms.json, poses_bounds.npy or cameras.npz); compute cameras with "
        f"python colmap_match.py -s {source_path}"
    )


def read_scene(
    source_path: str, images: str = "images", white_background: bool = False
) -> SceneInfo:
    """Read the cameras (and points, if any) of a scene folder, whatever its layout.

    Args:
        source_path: the scene folder (``-s``).
        images: image subfolder (``-i``); LLFF and IDR fall back to their usual folders when
            it does not exist.
        white_background: accepted for the 3DGS signature; compositing on the background
            happens when images are loaded (``scene.images``), not here.
    """
    del white_background  # images are composited at load time
    source_path = os.path.abspath(source_path)
    layout = detect_layout(source_path)
    reader = {"colmap": read_colmap, "blender": read_blender, "llff": read_llff, "idr": read_idr}
    info = reader[layout](source_path, images)
    images_dir = info.extras.get("images_dir", os.path.join(source_path, images))
    for cam in info.cameras:
        if cam.mask_path is None:
            cam.mask_path = find_eval_mask(source_path, images_dir, cam.image_name)
    return info
