"""Train-only stage: features, matches and points from the N training views alone.

The sparse-view protocols forbid test images in the training geometry. Poses of every view
come from the scene's ``sparse/0`` (a full SfM or a converted benchmark); this stage builds,
in ``colmap_<N>views/``:

    database.db        SIFT features (max_num_features 16384) of the training views and their
                       exhaustive, guided matches (max_num_matches 32768), as RegSegField;
    matches.npz        the verified inlier matches of every training-view pair, in pixels of
                       the images on disk (format: sfm.matches);
    sparse/0           the training cameras with their known poses (unchanged) and the points
                       triangulated from them, each seen by >= 2 training views, with tracks;
    split.json         the split used; summary.json the numbers printed at the end.

Image and camera ids in database.db and sparse/0 are those of the scene's sparse/0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pycolmap

from sfm import colmap_ops
from sfm.colmap_ops import ColmapSettings
from sfm.errors import SceneError, TooFewMatchesError
from sfm.images import image_sizes
from sfm.matches import TrainMatches, build_train_matches, check_match_graph, format_pair_counts
from sfm.summary import ModelSummary, pair_count_stats, pair_stats_line, summarize_model

MIN_POINTS = 10  # fewer triangulated points than this is a failed stage


@dataclass
class TrainOnlyResult:
    train: list[str]
    summary: ModelSummary
    pair_stats: dict
    pair_counts: dict[tuple[str, str], int]
    matches_total: int
    points_dropped: int  # triangulated points seen by < 2 distinct training views

    def lines(self) -> list[str]:
        return [
            f"train-only stage ({len(self.train)} training views)",
            "  " + self.summary.line(),
            "  " + pair_stats_line(self.pair_stats) + f" ({self.matches_total} in matches.npz)",
            "  weakest pairs: " + format_pair_counts(self.pair_counts, limit=5),
        ]

    def todict(self) -> dict:
        return {
            "train": self.train,
            "model": self.summary.todict(),
            "pairs": self.pair_stats,
            "pair_counts": {f"{a} {b}": c for (a, b), c in self.pair_counts.items()},
            "points_dropped_fewer_than_2_views": self.points_dropped,
        }


def load_scene_model(scene_dir: str) -> pycolmap.Reconstruction:
    """The scene's sparse/0 (every camera's pose), or SceneError saying how to make it."""
    model_dir = os.path.join(scene_dir, "sparse", "0")
    if not os.path.isdir(model_dir):
        raise SceneError(
            f"{model_dir}: no COLMAP model; run colmap_match.py -s {scene_dir} (full SfM) or a "
            "converter in scripts/ first"
        )
    try:
        return pycolmap.Reconstruction(model_dir)
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on corrupt files
        raise SceneError(f"{model_dir}: cannot read the COLMAP model ({e})") from e


def check_views_in_model(
    rec: pycolmap.Reconstruction, names: list[str], image_dir: str, role: str
) -> dict[str, tuple[int, int]]:
    """Every name must have a posed image in ``rec`` whose camera matches the file on disk.

    Returns the (width, height) of each image on disk.
    """
    model_names = {im.name: im for im in rec.images.values()}
    missing = [n for n in names if n not in model_names or not model_names[n].has_pose]
    if missing:
        raise SceneError(
            f"{role} view(s) {', '.join(missing[:5])} have no pose in sparse/0 (COLMAP could not "
            "register them); choose other views with --train_views"
        )
    sizes = image_sizes(image_dir, names)
    for n in names:
        cam = rec.cameras[model_names[n].camera_id]
        if tuple(sizes[n]) != (cam.width, cam.height):
            raise SceneError(
                f"{os.path.join(image_dir, n)}: image is {sizes[n][0]}x{sizes[n][1]} but its "
                f"camera in sparse/0 is {cam.width}x{cam.height}; use the images the model was "
                "made for (-i) or re-run the converter"
            )
    return sizes


def run_train_only(
    rec: pycolmap.Reconstruction,
    image_dir: str,
    train: list[str],
    out_dir: str,
    settings: ColmapSettings,
) -> TrainOnlyResult:
    """Build ``out_dir`` (database.db, matches.npz, sparse/0) from the training views."""
    if len(train) < 2:
        raise SceneError(f"the train-only stage needs >= 2 training views, got {len(train)}")
    sizes = check_views_in_model(rec, train, image_dir, "training")
    sub = colmap_ops.subset_reconstruction(rec, train)
    for cam in sub.cameras.values():
        cam.has_prior_focal_length = True  # known intrinsics: lets the mapper trust them
    name_to_id = {im.name: im.image_id for im in sub.images.values()}
    ids = [name_to_id[n] for n in train]
    poses_before = {i: sub.images[i].cam_from_world().matrix() for i in ids}

    os.makedirs(out_dir, exist_ok=True)
    db_path = os.path.join(out_dir, "database.db")
    colmap_ops.write_database_from_reconstruction(db_path, sub, ids)
    colmap_ops.extract_features(db_path, image_dir, train, settings, desc="SIFT (train views)")
    colmap_ops.match_features(db_path, settings, "exhaustive", guided=True)

    inliers = colmap_ops.read_inlier_matches(db_path, ids)
    keypoints = colmap_ops.read_keypoints_xy(db_path, ids)
    matches = build_train_matches(train, sizes, name_to_id, keypoints, inliers)
    matches.save(os.path.join(out_dir, "matches.npz"))
    pair_counts = matches.pair_counts()
    # Known poses: views that match only within their own group still triangulate.
    reason = check_match_graph(pair_counts, train, settings.min_pair_matches, connected=False)
    if reason:
        raise TooFewMatchesError(_too_few_message(reason, pair_counts), pair_counts)

    model_dir = os.path.join(out_dir, "sparse", "0")
    tri = colmap_ops.triangulate_known_poses(sub, db_path, image_dir, model_dir, settings)
    dropped = _drop_points_seen_by_fewer_than(tri, 2)
    if tri.num_points3D() < MIN_POINTS:
        raise TooFewMatchesError(
            _too_few_message(f"only {tri.num_points3D()} points triangulated", pair_counts),
            pair_counts,
        )
    for i in ids:  # the point triangulator must not move the known cameras
        drift = np.abs(tri.images[i].cam_from_world().matrix() - poses_before[i]).max()
        if drift > 1e-9:
            raise RuntimeError(f"triangulation moved camera {tri.images[i].name} by {drift}")
    tri.write(model_dir)

    result = TrainOnlyResult(
        train=list(train),
        summary=summarize_model(tri, f"colmap_{len(train)}views/sparse/0", len(train)),
        pair_stats=pair_count_stats(matches.counts),
        pair_counts=pair_counts,
        matches_total=int(matches.counts.sum()),
        points_dropped=dropped,
    )
    return result


def write_stage_files(out_dir: str, split: dict, summary: dict) -> None:
    with open(os.path.join(out_dir, "split.json"), "w") as f:
        json.dump(split, f, indent=2)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


def _drop_points_seen_by_fewer_than(rec: pycolmap.Reconstruction, k: int) -> int:
    weak = [
        pid for pid, p in rec.points3D.items() if len({el.image_id for el in p.track.elements}) < k
    ]
    for pid in weak:
        rec.delete_point3D(pid)
    return len(weak)


def _too_few_message(reason: str, pair_counts: dict[tuple[str, str], int]) -> str:
    return (
        f"too few matches between the training views: {reason} (inlier matches per pair: "
        f"{format_pair_counts(pair_counts)}); try more views (--n_views), a different set of "
        "training views (--train_views), or a larger --max_image_size"
    )


def load_matches(scene_dir: str, n_views: int) -> TrainMatches:
    """Read ``<scene>/colmap_<N>views/matches.npz``."""
    path = os.path.join(scene_dir, f"colmap_{n_views}views", "matches.npz")
    if not os.path.isfile(path):
        raise SceneError(f"{path}: missing; run colmap_match.py -s {scene_dir} --n_views {n_views}")
    return TrainMatches.load(path)
