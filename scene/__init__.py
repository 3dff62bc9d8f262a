"""``Scene``: one scene folder read, split, loaded at the training resolution.

Everything that can fail on bad input (missing or corrupt files, unknown camera models,
impossible splits) fails here, while the ``Scene`` is built, with a ``SceneError``; the
model folder is only touched by ``write_model_files``, which train.py calls afterwards.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import torch

from scene.cameras import Camera
from scene.colmap_io import detect_model_format, read_model
from scene.errors import SceneError
from scene.images import build_cameras
from scene.points import (
    UPSTREAM_RANDOM_POINTS,
    camera_centers,
    filter_by_tracks,
    nerfpp_radius,
    random_init,
    store_ply,
    upstream_blender_cube,
)
from scene.readers import read_scene
from scene.splits import load_split, make_split, save_split
from scene.types import BasicPointCloud, CameraInfo, SceneInfo
from utils.general_utils import pick_device

__all__ = ["Scene", "SceneError", "camera_to_json"]


def camera_to_json(idx: int, cam: CameraInfo) -> dict:
    """One cameras.json entry, exactly as 3DGS writes it (full-resolution intrinsics)."""
    w2c = np.eye(4)
    w2c[:3, :3] = cam.R.T
    w2c[:3, 3] = cam.T
    c2w = np.linalg.inv(w2c)
    return {
        "id": idx,
        "img_name": cam.image_stem,
        "width": int(cam.width),
        "height": int(cam.height),
        "position": c2w[:3, 3].tolist(),
        "rotation": [row.tolist() for row in c2w[:3, :3]],
        "fy": float(cam.fy),
        "fx": float(cam.fx),
    }


class Scene:
    """Cameras, split and initialisation points of one scene folder.

    Args:
        dataset: ``ModelParams`` values (source_path, model_path, images, resolution,
            white_background, data_device, eval).
        sparse: ``SparseViewParams`` values (n_views, split_protocol, train_views,
            random_init), or None for no sparse-view protocol.
        device: where cameras and images live; default ``dataset.data_device`` (CUDA falls
            back to the CPU with one notice).
        model_path: model folder; default ``dataset.model_path``. Only read here (for
            ``reuse_split``); ``write_model_files`` writes it.
        reuse_split: read ``<model_path>/split.json`` instead of computing the split
            (render.py, metrics.py).
        load_images: False builds render-only cameras (no ground truth, no masks).
        seed: seed of the random initialisation points.

    Attributes:
        train_cameras, test_cameras: ``Camera`` lists, each sorted by image name.
        cameras_extent: 3DGS ``getNerfppNorm`` radius of the training cameras.
        point_cloud: the initialisation points (``init_source`` says where they came from).
        split: {"protocol", "n_views", "train", "test"} (see ``scene.splits``).
        scene_info: the reader's ``SceneInfo`` (every camera of the folder).

    Initialisation points, first rule that applies:

    ``--init dense`` takes ``colmap_<N>views/dense/points3D.ply`` (python -m mvs) and nothing
    else, ``--init aligned`` ``alignment/points3D.ply`` (python -m alignment); ``--init
    random`` is rule 1 (100,000 points unless ``--random_init`` says); ``--init sfm`` skips
    rule 1. ``--init auto`` (default):

    1. ``--random_init N`` > 0: N points uniform in a volume holding the scene, random
       colours (``scene.points.random_init``: the IDR unit sphere; else the training
       cameras' frusta between known near/far bounds (LLFF) or between depths taken from
       the scene's points; else the ball the cameras look at (object-centric); else frusta
       up to 10x the camera spread);
    2. sparse-view run and ``<source>/colmap_<N>views/sparse/0`` (colmap_match.py, train
       views only) exists: its points;
    3. sparse-view run and the scene points have tracks: the points seen by >= 2 training
       views (one notice: they were triangulated with every view);
    4. the scene's points;
    5. no points: Blender scenes get 3DGS's 100,000 random points in [-1.3, 1.3]^3, the
       others 100,000 points as in rule 1 (one notice).
    """

    def __init__(
        self,
        dataset,
        sparse=None,
        device: torch.device | str | None = None,
        model_path: str | None = None,
        reuse_split: bool = False,
        load_images: bool = True,
        seed: int = 0,
    ):
        sparse = sparse or SimpleNamespace(
            n_views=0, split_protocol="llff", train_views=[], random_init=0
        )
        self.source_path = os.path.abspath(dataset.source_path)
        self.model_path = model_path or getattr(dataset, "model_path", "") or ""
        images = getattr(dataset, "images", "images") or "images"
        white = bool(getattr(dataset, "white_background", False))
        self.scene_info: SceneInfo = read_scene(self.source_path, images, white)
        by_name = {c.image_name: c for c in self.scene_info.cameras}
        names = list(by_name)

        if reuse_split:
            if not self.model_path:
                raise SceneError("reusing the split needs -m/--model_path (the trained model)")
            self.split = load_split(self.model_path)
            unknown = [n for n in self.split["train"] + self.split["test"] if n not in by_name]
            if unknown:
                raise SceneError(
                    f"{os.path.join(self.model_path, 'split.json')}: views {unknown[:3]} are "
                    f"not in {self.source_path}; pass the -s the model was trained on"
                )
        else:
            protocol = getattr(sparse, "split_protocol", "llff") or "llff"
            source_split = None
            if protocol == "custom" and not getattr(sparse, "train_views", None):
                src = os.path.join(self.source_path, "split.json")
                source_split = load_split(src) if os.path.isfile(src) else None
            self.split = make_split(
                names,
                protocol,
                int(getattr(sparse, "n_views", 0) or 0),
                list(getattr(sparse, "train_views", None) or []),
                self.scene_info.predefined_split,
                bool(getattr(dataset, "eval", False)),
                source_split=source_split,
                where=self.source_path,
            )
        self.train_infos = sorted((by_name[n] for n in self.split["train"]), key=_name)
        self.test_infos = sorted((by_name[n] for n in self.split["test"]), key=_name)

        self.cameras_extent = nerfpp_radius(self.train_infos)
        if self.cameras_extent <= 1e-9:
            print("[scene] a single training camera position: cameras_extent set to 1.0")
            self.cameras_extent = 1.0
        self.rng = np.random.default_rng(seed)
        try:
            self.point_cloud, self.init_source = self._init_points(sparse)
        except SceneError as e:
            if not reuse_split:
                raise
            # A trained model is loaded: its Gaussians stand in for the initial points, so a
            # stage output deleted since training (the stereo cloud, say) is not needed.
            empty = np.zeros((0, 3))
            self.point_cloud = BasicPointCloud(empty, empty, empty)
            self.init_source = f"not needed for a trained model ({e})"
        print(f"[scene] init points: {self.init_source} ({len(self.point_cloud.points)} points)")

        device = pick_device(getattr(dataset, "data_device", "cuda")) if device is None else device
        self.device = torch.device(device)
        resolution = int(getattr(dataset, "resolution", -1))
        common = dict(
            source=self.source_path,
            images=images,
            resolution=resolution,
            white_background=white,
            device=self.device,
            load_images=load_images,
            printed=set(),
        )
        self.train_cameras: list[Camera] = build_cameras(
            self.train_infos, desc="Loading training images", **common
        )
        self.test_cameras: list[Camera] = build_cameras(
            self.test_infos, desc="Loading test images", **common
        )

    # ------------------------------------------------------------------ 3DGS aliases
    def getTrainCameras(self, scale: float = 1.0) -> list[Camera]:
        return self.train_cameras

    def getTestCameras(self, scale: float = 1.0) -> list[Camera]:
        return self.test_cameras

    @property
    def sparse_mode(self) -> bool:
        """True when a sparse-view protocol chose the training views."""
        return self.split["protocol"] != "3dgs"

    # ------------------------------------------------------------- initial points
    def _init_points(self, sparse) -> tuple[BasicPointCloud, str]:
        info = self.scene_info
        n_random = int(getattr(sparse, "random_init", 0) or 0)
        init = getattr(sparse, "init", "auto") or "auto"
        train = self.split["train"]
        scene_pts = info.point_cloud.points if info.point_cloud is not None else None
        if init in ("dense", "aligned"):
            return self._prior_points(init, len(train))
        if init == "random":
            n_random = n_random or UPSTREAM_RANDOM_POINTS
        elif init == "sfm":
            n_random = 0
        if n_random > 0:
            pc, what = self._random(n_random, scene_pts)
            return pc, f"--random_init {n_random} in the {what}"
        if self.sparse_mode:
            folder = os.path.join(self.source_path, f"colmap_{len(train)}views", "sparse", "0")
            if detect_model_format(folder) is not None:
                pc = self._train_only_model_points(folder)
                if pc is not None:
                    return pc, f"{folder} (train-only SfM)"
            if info.point_cloud is not None and info.point_tracks is not None:
                pc = filter_by_tracks(info.point_cloud, info.point_tracks, train)
                if len(pc.points):
                    print(
                        f"[scene] notice: the scene's points were triangulated with all "
                        f"views; keeping those seen by >= 2 of the {len(train)} training views "
                        f"(run colmap_match.py -s {self.source_path} --n_views {len(train)} "
                        "for a train-only reconstruction)"
                    )
                    return pc, "scene points seen by >= 2 training views"
                print("[scene] notice: no scene point is seen by 2 training views")
                pc, what = self._random(UPSTREAM_RANDOM_POINTS, scene_pts)
                return pc, f"random points in the {what}"
        if info.point_cloud is not None and len(info.point_cloud.points):
            return info.point_cloud, f"{info.reader} scene points"
        if info.reader == "blender":
            return upstream_blender_cube(self.rng), "3DGS random cube [-1.3, 1.3]^3"
        print(
            f"[scene] notice: {self.source_path} has no points; starting from "
            f"{UPSTREAM_RANDOM_POINTS} random points"
        )
        pc, what = self._random(UPSTREAM_RANDOM_POINTS, None)
        return pc, f"random points in the {what}"

    def _prior_points(self, init: str, n_views: int) -> tuple[BasicPointCloud, str]:
        """``--init dense``: the stereo cloud of the training views (python -m mvs);
        ``--init aligned``: SfM points plus the dense prior aligned to them (python -m
        alignment). Either must have been made from this run's training views."""
        from scene.readers.blender import read_ply_points

        protocol = self.split["protocol"]
        if init == "dense":
            folder = os.path.join(self.source_path, f"colmap_{n_views}views", "dense")
            make = (f"python -m mvs -s {self.source_path} --n_views {n_views} "
                    f"--split_protocol {protocol}")  # fmt: skip
            what = "multi-view stereo of the training views"
        else:
            folder = os.path.join(self.source_path, "alignment")
            make = (f"python -m alignment -s {self.source_path} --n_views {n_views} "
                    f"--split_protocol {protocol} --prior <depth_pro|mvs|pointmap>")  # fmt: skip
            what = "SfM points and the aligned dense prior"
        path = os.path.join(folder, "points3D.ply")
        if not self.sparse_mode or not os.path.isfile(path):
            raise SceneError(f"{path}: no point cloud for --init {init}; make it with: {make}")
        report = os.path.join(folder, "report.json")
        if os.path.isfile(report):
            with open(report) as f:
                made_from = sorted(json.load(f).get("train", []))
            if made_from and made_from != sorted(self.split["train"]):
                raise SceneError(
                    f"{report}: {path} was made from views {made_from}, not this run's "
                    f"training views; remake it with: {make} --overwrite"
                )
        return read_ply_points(path), f"{path} ({what})"

    def _random(self, n: int, scene_points: np.ndarray | None):
        return random_init(
            self.train_infos,
            n,
            self.rng,
            bounds=self.scene_info.extras.get("bounds"),
            sphere=self.scene_info.extras.get("bounding_sphere"),
            points=scene_points,
        )

    def _train_only_model_points(self, folder: str) -> BasicPointCloud | None:
        """Points of colmap_match.py's train-only model, if it belongs to this split."""
        try:
            _, ims, pts = read_model(folder)
        except (ValueError, OSError) as e:
            raise SceneError(f"{e}; rerun colmap_match.py -s {self.source_path}") from None
        names = {im.name for im in ims.values()}
        if names != set(self.split["train"]):
            print(
                f"[scene] notice: {folder} was built for other training views; ignored "
                f"(rerun colmap_match.py -s {self.source_path} --n_views {len(names)})"
            )
            return None
        # Same world frame as the scene? Compare the training camera centres.
        by_name = {c.image_name: c for c in self.train_infos}
        ours = camera_centers([by_name[im.name] for im in ims.values()])
        theirs = np.stack([-im.rotmat().T @ im.tvec for im in ims.values()])
        if np.abs(ours - theirs).max() > 1e-2 * max(self.cameras_extent, 1e-6):
            print(f"[scene] notice: {folder} is not in the scene's world frame; ignored")
            return None
        if not pts:
            return None
        xyz = np.stack([p.xyz for p in pts.values()])
        rgb = np.stack([p.rgb for p in pts.values()]) / 255.0
        return BasicPointCloud(xyz, rgb, np.zeros_like(xyz))

    # ------------------------------------------------------------- model folder
    def cameras_json(self) -> list[dict]:
        """3DGS cameras.json entries: test cameras first, then train cameras."""
        cams = self.test_infos + self.train_infos
        return [camera_to_json(i, c) for i, c in enumerate(cams)]

    def write_model_files(self, model_path: str | None = None) -> None:
        """Write split.json, cameras.json and input.ply into the model folder (created if
        needed), each through a temporary name."""
        model_path = model_path or self.model_path
        if not model_path:
            raise SceneError("write_model_files needs a model folder (-m/--model_path)")
        os.makedirs(model_path, exist_ok=True)
        save_split(self.split, os.path.join(model_path, "split.json"))
        path = os.path.join(model_path, "cameras.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.cameras_json(), f)
        os.replace(path + ".tmp", path)
        store_ply(
            os.path.join(model_path, "input.ply"),
            self.point_cloud.points,
            self.point_cloud.colors,
        )


def _name(c: CameraInfo) -> str:
    return c.image_name
