"""Full SfM over every image of a scene that has no poses yet (3DGS's convert.py, in process).

Layout, as convert.py leaves it:

    <scene>/input/        the original photos (moved here from images/ when undistortion
                          changes them; a scene that already has input/ is read from there)
    <scene>/distorted/    database.db and sparse/0: the SfM model on the original photos
    <scene>/images/       undistorted PINHOLE images of the registered photos
    <scene>/sparse/0/     the undistorted model (PINHOLE cameras, points, tracks)

When COLMAP's cameras need no undistortion (PINHOLE or SIMPLE_PINHOLE) the photos stay in
images/ and the model is written to sparse/0 directly. Everything is built under
``<scene>/distorted.tmp`` first; the folders above only move into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import pycolmap

from sfm import colmap_ops
from sfm.colmap_ops import ColmapSettings
from sfm.errors import SceneError
from sfm.images import check_single_size, image_sizes, list_images
from sfm.summary import ModelSummary, pair_count_stats, pair_stats_line, summarize_model

UNDISTORTED_MODELS = {"PINHOLE", "SIMPLE_PINHOLE"}


@dataclass
class FullSfmResult:
    sfm_summary: ModelSummary  # the model on the original photos
    final_summary: ModelSummary  # sparse/0 as written
    pair_stats: dict
    camera_model: str
    single_camera: bool
    undistorted: bool
    unregistered: list[str]

    def lines(self) -> list[str]:
        cams = "one shared camera" if self.single_camera else "one camera per image"
        out = [
            f"full SfM ({self.camera_model}, {cams}, "
            f"{'undistorted to PINHOLE' if self.undistorted else 'no undistortion needed'})",
            "  " + self.sfm_summary.line(),
            "  " + self.final_summary.line(),
            "  " + pair_stats_line(self.pair_stats),
        ]
        if self.unregistered:
            shown = ", ".join(self.unregistered[:10])
            out.append(f"  not registered ({len(self.unregistered)}): {shown}")
        return out


def resolve_cameras(
    sizes: dict[str, tuple[int, int]], settings: ColmapSettings, where: str
) -> tuple[bool, str]:
    """(single_camera, camera_model) from the settings and the image sizes.

    auto mode: one shared camera when every image has the same size (video frames, one
    capture), one camera per image otherwise (internet photos). auto model: OPENCV for a
    shared camera (as convert.py), SIMPLE_RADIAL per image (fewer parameters to fit from one
    photo's observations).
    """
    distinct = {tuple(s) for s in sizes.values()}
    if settings.camera_mode == "single":
        check_single_size(sizes, where)
        single = True
    elif settings.camera_mode == "per_image":
        single = False
    elif settings.camera_mode == "auto":
        single = len(distinct) == 1
    else:
        raise ValueError(f"unknown camera mode {settings.camera_mode!r}")
    model = settings.camera_model
    if model == "auto":
        model = "OPENCV" if single else "SIMPLE_RADIAL"
    return single, model


def run_full_sfm(
    scene_dir: str, images_subdir: str, settings: ColmapSettings, overwrite: bool = False
) -> FullSfmResult:
    """Reconstruct every image of ``scene_dir`` and write sparse/0 (see module docstring)."""
    image_dir = os.path.join(scene_dir, images_subdir)
    input_dir = os.path.join(scene_dir, "input")
    src_dir = input_dir if os.path.isdir(input_dir) else image_dir
    sparse0 = os.path.join(scene_dir, "sparse", "0")
    distorted = os.path.join(scene_dir, "distorted")
    if os.path.exists(sparse0):
        raise SceneError(f"{sparse0}: a model exists already; delete sparse/ to redo the SfM")
    if os.path.exists(distorted) and not overwrite:
        raise SceneError(f"{distorted}: exists (earlier SfM run); pass --overwrite to replace it")
    if src_dir == input_dir and os.path.exists(image_dir) and not overwrite:
        raise SceneError(
            f"{image_dir}: exists next to input/ (the photos SfM reads); pass --overwrite to "
            "replace it with the undistorted images"
        )
    names = list_images(src_dir)
    if len(names) < 2:
        raise SceneError(f"{src_dir}: SfM needs >= 2 images, found {len(names)}")
    sizes = image_sizes(src_dir, names)
    single, model = resolve_cameras(sizes, settings, src_dir)

    work = os.path.join(scene_dir, "distorted.tmp")
    shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run of ours
    os.makedirs(work)
    try:
        db_path = os.path.join(work, "database.db")
        colmap_ops.extract_features(
            db_path, src_dir, names, settings, camera_model=model, single_camera=single
        )
        colmap_ops.match_features(db_path, settings, settings.matcher, guided=False)
        counts = _pair_counts(db_path, settings.matcher)
        stats = pair_count_stats(counts)
        rec = colmap_ops.incremental_mapping(
            db_path,
            src_dir,
            os.path.join(work, "mapper"),
            settings,
            len(names),
            keep_two_view_tracks=False,
        )
        if rec is None or rec.num_reg_images() < 2:
            raise SceneError(
                f"{src_dir}: COLMAP could not reconstruct the images ({pair_stats_line(stats)}); "
                "add photos with more overlap, try --matcher exhaustive, or raise "
                "--max_image_size"
            )
        shutil.rmtree(os.path.join(work, "mapper"))
        model_dir = os.path.join(work, "sparse", "0")
        os.makedirs(model_dir)
        rec.write(model_dir)
        sfm_summary = summarize_model(rec, "SfM model (original photos)", len(names))
        registered = {im.name for im in rec.images.values() if im.has_pose}
        unregistered = [n for n in names if n not in registered]
        needs_undistort = src_dir == input_dir or any(
            c.model.name not in UNDISTORTED_MODELS for c in rec.cameras.values()
        )
        with open(os.path.join(work, "summary.json"), "w") as f:
            json.dump({"sfm": sfm_summary.todict(), "pairs": stats}, f, indent=2)

        if needs_undistort:
            und = os.path.join(work, "undistorted")
            pycolmap.undistort_images(und, model_dir, src_dir, output_type="COLMAP")
            # Everything is ready: move it into place (renames only from here on).
            if src_dir == image_dir:
                os.rename(image_dir, input_dir)
            elif os.path.exists(image_dir):  # --overwrite: stale images next to input/
                shutil.rmtree(image_dir)
            os.rename(os.path.join(und, "images"), image_dir)
            os.makedirs(os.path.join(scene_dir, "sparse"), exist_ok=True)
            os.rename(os.path.join(und, "sparse"), sparse0)
            shutil.rmtree(und)
        else:
            os.makedirs(os.path.join(scene_dir, "sparse"), exist_ok=True)
            shutil.copytree(model_dir, sparse0)
        if os.path.exists(distorted):
            shutil.rmtree(distorted)
        os.rename(work, distorted)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    final = pycolmap.Reconstruction(sparse0)
    return FullSfmResult(
        sfm_summary=sfm_summary,
        final_summary=summarize_model(final, "sparse/0", len(names)),
        pair_stats=stats,
        camera_model=model,
        single_camera=single,
        undistorted=needs_undistort,
        unregistered=unregistered,
    )


def _pair_counts(db_path: str, matcher: str) -> list[int]:
    """Inlier matches per pair: every pair for exhaustive matching (0 where none survived),
    only the pairs tried for sequential matching (which skips most on purpose)."""
    if matcher == "exhaustive":
        ids = sorted(colmap_ops.read_names(db_path))
        return [len(m) for m, _ in colmap_ops.read_inlier_matches(db_path, ids).values()]
    db = pycolmap.Database.open(db_path)
    try:
        _, geoms = db.read_two_view_geometries()
        return [len(g.inlier_matches) if g.config in colmap_ops.VALID_CONFIGS else 0 for g in geoms]
    finally:
        db.close()
