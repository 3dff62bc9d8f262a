"""Thin, checked wrappers over the pycolmap 4.x pipeline calls this stage uses.

Everything runs in process through pycolmap (SIFT on CPU when no CUDA build is installed).
Signatures checked against pycolmap 4.2.1:

- ``extract_features(database_path, image_path, image_names, camera_mode, reader_options,
  extraction_options, device)``; ``extraction_options.max_image_size`` downsamples for the
  detector only: keypoints come back in pixels of the image on disk;
- ``match_exhaustive`` / ``match_sequential(database_path, matching_options,
  pairing_options, verification_options, device)``;
- ``incremental_mapping(database_path, image_path, output_path, options)`` ->
  ``dict[int, Reconstruction]``;
- ``triangulate_points(reconstruction, database_path, image_path, output_path,
  clear_points, options, refine_intrinsics)``: the database's camera and image ids must
  equal the reconstruction's, which ``write_database_from_reconstruction`` guarantees.

Keypoint coordinates follow COLMAP: the centre of the top-left pixel is (0.5, 0.5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pycolmap
from tqdm import tqdm

from sfm.errors import SceneError

# Two-view geometry configurations whose inlier matches are real correspondences.
VALID_CONFIGS = {
    pycolmap.TwoViewGeometryConfiguration.CALIBRATED,
    pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED,
    pycolmap.TwoViewGeometryConfiguration.PLANAR,
    pycolmap.TwoViewGeometryConfiguration.PANORAMIC,
    pycolmap.TwoViewGeometryConfiguration.PLANAR_OR_PANORAMIC,
}


@dataclass
class ColmapSettings:
    """Feature, matching and mapping settings of one run (defaults: RegSegField's §1.1)."""

    max_image_size: int = 3200  # longest side seen by SIFT (COLMAP's CLI default)
    max_num_features: int = 16384
    max_num_matches: int = 32768
    matcher: str = "exhaustive"  # full SfM only: "exhaustive" or "sequential"
    sequential_overlap: int = 10
    camera_model: str = "auto"  # full SfM: auto = OPENCV (one camera) / SIMPLE_RADIAL (per image)
    camera_mode: str = "auto"  # full SfM: auto = single when all images share a size
    num_threads: int = -1
    min_pair_matches: int = 15  # a train-view pair below this counts as unmatched
    seed: int = 0  # RANSAC and mapper seed, for repeatable runs


def set_colmap_log_level(verbose: bool) -> None:
    """COLMAP's INFO lines are noise for users: keep warnings and errors unless verbose."""
    pycolmap.logging.minloglevel = 0 if verbose else 1


def _extraction_options(s: ColmapSettings) -> pycolmap.FeatureExtractionOptions:
    o = pycolmap.FeatureExtractionOptions()
    o.max_image_size = int(s.max_image_size)
    o.num_threads = int(s.num_threads)
    o.sift.max_num_features = int(s.max_num_features)
    return o


def _matching_options(s: ColmapSettings, guided: bool) -> pycolmap.FeatureMatchingOptions:
    o = pycolmap.FeatureMatchingOptions()
    o.max_num_matches = int(s.max_num_matches)
    o.guided_matching = bool(guided)
    o.num_threads = int(s.num_threads)
    return o


def _verification_options(s: ColmapSettings) -> pycolmap.TwoViewGeometryOptions:
    o = pycolmap.TwoViewGeometryOptions()
    o.ransac.random_seed = int(s.seed)
    return o


# ---------------------------------------------------------------------------- database


def write_database_from_reconstruction(
    db_path: str, rec: pycolmap.Reconstruction, image_ids: list[int]
) -> None:
    """Create ``db_path`` holding the given images of ``rec`` with their own ids.

    Writes the cameras, rigs and frames those images use, with ``use_*_id=True``, so that a
    later ``triangulate_points`` on (a subset of) ``rec`` finds matching ids. Features are
    extracted afterwards by ``extract_features`` (it reuses the image rows by name).
    """
    if os.path.exists(db_path):
        raise FileExistsError(db_path)
    db = pycolmap.Database.open(db_path)
    try:
        cam_ids = sorted({rec.images[i].camera_id for i in image_ids})
        for cid in cam_ids:
            db.write_camera(rec.cameras[cid], use_camera_id=True)
        rig_ids = sorted({rec.frames[rec.images[i].frame_id].rig_id for i in image_ids})
        for rid in rig_ids:
            db.write_rig(rec.rigs[rid], use_rig_id=True)
        for i in image_ids:
            db.write_frame(rec.frames[rec.images[i].frame_id], use_frame_id=True)
        for i in image_ids:
            db.write_image(rec.images[i], use_image_id=True)
    finally:
        db.close()


def extract_features(
    db_path: str,
    image_dir: str,
    names: list[str],
    settings: ColmapSettings,
    camera_model: str | None = None,
    single_camera: bool = False,
    desc: str = "SIFT",
) -> None:
    """SIFT features for ``names`` into ``db_path``, one image at a time (for the progress bar).

    Images already in the database (``write_database_from_reconstruction``) keep their rows
    and cameras. New images get a camera of ``camera_model``: one shared camera when
    ``single_camera``, one each otherwise.
    """
    reader = pycolmap.ImageReaderOptions()
    if camera_model:
        reader.camera_model = camera_model
    opts = _extraction_options(settings)
    mode = pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.PER_IMAGE
    for name in tqdm(names, desc=desc, unit="img"):
        pycolmap.extract_features(
            db_path,
            image_dir,
            image_names=[name],
            camera_mode=mode,
            reader_options=reader,
            extraction_options=opts,
            device=pycolmap.Device.auto,
        )
        if single_camera and reader.existing_camera_id < 0:
            # Every later image joins the camera the first one created.
            db = pycolmap.Database.open(db_path)
            try:
                reader.existing_camera_id = db.read_image_with_name(name).camera_id
            finally:
                db.close()
    db = pycolmap.Database.open(db_path)
    try:
        empty = [n for n in names if db.num_keypoints_for_image(_image_id(db, n)) == 0]
    finally:
        db.close()
    if empty:
        raise SceneError(
            f"{os.path.join(image_dir, empty[0])}: SIFT found no features in "
            f"{len(empty)} image(s) ({', '.join(empty[:5])}); check that they are not blank, "
            "or raise --max_image_size"
        )


def _image_id(db: pycolmap.Database, name: str) -> int:
    image = db.read_image_with_name(name)
    if image is None:
        raise SceneError(f"{name}: not in the COLMAP database (feature extraction failed)")
    return image.image_id


def match_features(
    db_path: str,
    settings: ColmapSettings,
    matcher: str = "exhaustive",
    guided: bool = False,
    desc: str = "matching",
) -> None:
    """Match every pair (exhaustive) or neighbouring frames (sequential), then verify.

    Exhaustive matching runs as COLMAP's imported-pairs matcher over chunks of the pairs not
    matched yet, so a progress bar can follow it (CPU matching of 16k features is the slow
    step) and an extended database (train + test) only matches the new pairs.
    """
    mo = _matching_options(settings, guided)
    vo = _verification_options(settings)
    if matcher == "sequential":
        po = pycolmap.SequentialPairingOptions()
        po.overlap = int(settings.sequential_overlap)
        pycolmap.match_sequential(
            db_path, matching_options=mo, pairing_options=po, verification_options=vo
        )
        return
    if matcher != "exhaustive":
        raise ValueError(f"unknown matcher {matcher!r} (exhaustive, sequential)")
    names = read_names(db_path)
    ids = sorted(names)
    db = pycolmap.Database.open(db_path)
    try:
        todo = [
            (a, b)
            for k, a in enumerate(ids)
            for b in ids[k + 1 :]
            if not db.exists_two_view_geometry(a, b)
        ]
    finally:
        db.close()
    if not todo:
        return
    chunk = max(1, len(ids) - 1)
    list_path = db_path + ".pairs.txt"
    try:
        with tqdm(total=len(todo), desc=desc, unit="pair") as bar:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                with open(list_path, "w") as f:
                    f.writelines(f"{names[a]} {names[b]}\n" for a, b in part)
                po = pycolmap.ImportedPairingOptions()
                po.match_list_path = list_path
                pycolmap.match_image_pairs(
                    db_path, matching_options=mo, pairing_options=po, verification_options=vo
                )
                bar.update(len(part))
    finally:
        if os.path.exists(list_path):
            os.remove(list_path)


def read_names(db_path: str) -> dict[int, str]:
    """image_id -> name of every image in the database."""
    db = pycolmap.Database.open(db_path)
    try:
        return {im.image_id: im.name for im in db.read_all_images()}
    finally:
        db.close()


def read_inlier_matches(
    db_path: str, image_ids: list[int]
) -> dict[tuple[int, int], tuple[np.ndarray, int]]:
    """Verified inlier matches of every pair among ``image_ids`` (both orders normalised).

    Returns (id_a, id_b) with id_a < id_b -> (matches [M, 2] keypoint indices into a and b,
    configuration id). A pair that failed verification has M = 0.
    """
    wanted = set(image_ids)
    out: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
    db = pycolmap.Database.open(db_path)
    try:
        pair_ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(pair_ids, geoms):
            a, b = pycolmap.pair_id_to_image_pair(pid)
            if a not in wanted or b not in wanted:
                continue
            m = np.asarray(g.inlier_matches, dtype=np.int64).reshape(-1, 2)
            if g.config not in VALID_CONFIGS:
                m = m[:0]
            if a > b:
                a, b, m = b, a, m[:, ::-1]
            out[(int(a), int(b))] = (m, int(g.config))
    finally:
        db.close()
    ids = sorted(wanted)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            out.setdefault((a, b), (np.zeros((0, 2), np.int64), 0))
    return out


def read_keypoints_xy(db_path: str, image_ids: list[int]) -> dict[int, np.ndarray]:
    """Keypoint positions [K, 2] (pixels of the image on disk, COLMAP centre convention)."""
    db = pycolmap.Database.open(db_path)
    try:
        return {i: np.asarray(db.read_keypoints(i))[:, :2].astype(np.float64) for i in image_ids}
    finally:
        db.close()


# ------------------------------------------------------------------------------ mapping


def mapper_options(
    settings: ColmapSettings,
    num_images: int,
    fix_intrinsics: bool = False,
    keep_two_view_tracks: bool = True,
) -> pycolmap.IncrementalPipelineOptions:
    """Incremental-mapping options, COLMAP's defaults adapted to a handful of views.

    COLMAP's ``min_model_size`` of 10 would discard every sparse-view model; keep models of
    >= 2 images (or all images when fewer). ``keep_two_view_tracks``: with 3 views most
    points have only two observations, so the sparse-view stages keep them (COLMAP's
    default, used by the full SfM, ignores them).
    """
    o = pycolmap.IncrementalPipelineOptions()
    o.min_model_size = max(2, min(10, num_images))
    o.random_seed = int(settings.seed)
    o.num_threads = int(settings.num_threads)
    o.triangulation.ignore_two_view_tracks = not keep_two_view_tracks
    if fix_intrinsics:
        o.ba_refine_focal_length = False
        o.ba_refine_principal_point = False
        o.ba_refine_extra_params = False
    return o


def incremental_mapping(
    db_path: str,
    image_dir: str,
    out_dir: str,
    settings: ColmapSettings,
    num_images: int,
    fix_intrinsics: bool = False,
    keep_two_view_tracks: bool = True,
) -> pycolmap.Reconstruction | None:
    """Incremental SfM; the model with most registered images (None when none formed)."""
    os.makedirs(out_dir, exist_ok=True)
    opts = mapper_options(settings, num_images, fix_intrinsics, keep_two_view_tracks)
    recs = pycolmap.incremental_mapping(db_path, image_dir, out_dir, options=opts)
    if not recs:
        return None
    return max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))


def triangulate_known_poses(
    rec: pycolmap.Reconstruction,
    db_path: str,
    image_dir: str,
    out_dir: str,
    settings: ColmapSettings,
) -> pycolmap.Reconstruction:
    """Points from fixed, known poses and intrinsics (COLMAP's point_triangulator).

    Only points are estimated: the bundle adjustment inside keeps every pose and camera
    constant (``refine_intrinsics=False``).
    """
    os.makedirs(out_dir, exist_ok=True)
    opts = mapper_options(settings, rec.num_images())
    return pycolmap.triangulate_points(
        rec,
        db_path,
        image_dir,
        out_dir,
        clear_points=True,
        options=opts,
        refine_intrinsics=False,
    )


# ------------------------------------------------------------------------------ helpers


def c2w_of(rec: pycolmap.Reconstruction, image_id: int) -> np.ndarray:
    """Camera-to-world [4, 4] of a registered image."""
    m = np.eye(4)
    m[:3, :] = rec.images[image_id].cam_from_world().inverse().matrix()
    return m


def rigid_from_c2w(c2w: np.ndarray) -> pycolmap.Rigid3d:
    """pycolmap cam_from_world from a camera-to-world [4, 4] (must be rigid)."""
    R = c2w[:3, :3]
    # Re-orthonormalise: a Sim(3)-moved pose can carry rounding noise.
    U, _, Vt = np.linalg.svd(R)
    R = U @ Vt
    Rw = R.T
    return pycolmap.Rigid3d(pycolmap.Rotation3d(Rw), -Rw @ c2w[:3, 3])


def subset_reconstruction(
    rec: pycolmap.Reconstruction, names: list[str]
) -> pycolmap.Reconstruction:
    """A copy of ``rec`` with only the named images (same ids, poses, cameras; no points)."""
    out = pycolmap.Reconstruction()
    wanted = [rec.find_image_with_name(n) for n in names]
    for cid in sorted({im.camera_id for im in wanted}):
        out.add_camera_with_trivial_rig(rec.cameras[cid])
    for im in sorted(wanted, key=lambda x: x.image_id):
        new = pycolmap.Image(name=im.name, camera_id=im.camera_id, image_id=im.image_id)
        out.add_image_with_trivial_frame(new, im.cam_from_world())
    return out
