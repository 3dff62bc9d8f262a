"""The COLMAP stage as one call: what colmap_match.py runs.

1. The scene has no ``sparse/0``: full SfM over every image (sfm.full_sfm).
2. ``n_views`` (or ``train_views``) given: the train-only stage into ``colmap_<N>views/``
   (sfm.train_only), built in ``colmap_<N>views.tmp`` and renamed when complete, so a
   failed run leaves nothing behind; an existing folder is replaced only with ``overwrite``.
3. ``register="spars3r"``: the SPARS3R train/test registration inside the same folder
   (sfm.register).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from scene.splits import load_split, make_split
from sfm.colmap_ops import ColmapSettings
from sfm.errors import SceneError
from sfm.full_sfm import run_full_sfm
from sfm.images import list_images
from sfm.register import run_spars3r_registration
from sfm.summary import summarize_model
from sfm.train_only import load_scene_model, run_train_only, write_stage_files


@dataclass
class StageRequest:
    scene_dir: str
    images: str = "images"
    n_views: int = 0
    split_protocol: str = "llff"
    train_views: list[str] = field(default_factory=list)
    register: str = "none"
    register_threshold: float = 1.0
    overwrite: bool = False


def stage_dir_name(n_views: int) -> str:
    return f"colmap_{n_views}views"


def run_colmap_stage(req: StageRequest, settings: ColmapSettings) -> list[str]:
    """Run what the request asks for; returns the summary lines to print."""
    scene = os.path.abspath(req.scene_dir)
    if not os.path.isdir(scene):
        raise SceneError(f"{scene}: no such scene folder (-s)")
    if req.register != "none" and not (req.n_views or req.train_views):
        raise SceneError("--register needs the training views: give --n_views N")
    lines: list[str] = []
    image_dir = os.path.join(scene, req.images)
    if not os.path.isdir(os.path.join(scene, "sparse", "0")):
        lines += run_full_sfm(scene, req.images, settings, req.overwrite).lines()
    elif not (req.n_views or req.train_views):
        rec = load_scene_model(scene)
        lines.append(
            f"{scene}/sparse/0 exists, nothing to reconstruct (give --n_views N for the "
            "train-only stage)"
        )
        lines.append("  " + summarize_model(rec, "sparse/0").line())
        return lines
    if not (req.n_views or req.train_views):
        return lines

    rec = load_scene_model(scene)
    has_split = os.path.isfile(os.path.join(scene, "split.json"))
    split = make_split(
        list_images(image_dir),
        req.split_protocol,
        req.n_views,
        req.train_views or None,
        None,
        eval=True,
        source_split=load_split(scene) if has_split else None,
        where=scene,
    )
    n = len(split["train"])
    final = os.path.join(scene, stage_dir_name(n))
    if os.path.exists(final) and not req.overwrite:
        raise SceneError(f"{final}: exists already; pass --overwrite to rebuild it")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # an interrupted run of ours
    try:
        result = run_train_only(rec, image_dir, split["train"], tmp, settings)
        summary = {"train_only": result.todict()}
        lines += result.lines()
        if req.register == "spars3r":
            outcome = run_spars3r_registration(
                rec,
                image_dir,
                tmp,
                split["train"],
                split["test"],
                settings,
                threshold=req.register_threshold,
            )
            summary["spars3r"] = {s.label: s.todict() for s in outcome.summaries}
            lines += outcome.lines()
        write_stage_files(tmp, split, summary)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lines.append(f"wrote {final}")
    return lines
