"""Plain records passed from the dataset readers to ``Scene``.

Readers produce these; nothing here touches torch or the disk. Conventions (same as 3DGS):

- ``R`` is the *camera-to-world* rotation, i.e. the transpose of the world-to-camera
  rotation (3DGS stores it this way because of glm), ``T`` the world-to-camera translation:
  ``x_cam = R.T @ x_world + T``.
- Intrinsics are in pixels of the image *as stored on disk* (full resolution); ``Scene``
  rescales them when it loads a downscaled copy. The principal point follows the pixel-centre
  convention of COLMAP and gsplat: the centre of the top-left pixel is (0.5, 0.5).
- ``image_name`` is the file name relative to the images folder, with extension; it is the
  key of the scene folder (split.json, masks, depth priors). ``image_stem`` is the name
  without extension, used where 3DGS writes ``img_name`` (cameras.json, TensorBoard tags).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BasicPointCloud:
    points: np.ndarray  # [N, 3] float
    colors: np.ndarray  # [N, 3] float in [0, 1]
    normals: np.ndarray | None = None  # [N, 3]


@dataclass
class CameraInfo:
    uid: int
    R: np.ndarray  # [3, 3] camera-to-world rotation (transpose of world-to-camera)
    T: np.ndarray  # [3] world-to-camera translation
    fx: float
    fy: float
    cx: float
    cy: float
    width: int  # of the image on disk
    height: int
    image_path: str  # absolute path of the full-resolution image
    image_name: str  # relative to the images folder, with extension
    mask_path: str | None = None  # object mask for evaluation (masks_object/), if any
    # OpenCV distortion (k1, k2, p1, p2[, k3]) of the image on disk, removed when the image
    # is loaded (instant-ngp/nerfstudio transforms); None for undistorted images.
    distortion: np.ndarray | None = None
    # How many times smaller the image on disk is than the capture's full resolution
    # (LLFF images_8/ read as the base folder: 8). ``-r N`` then downscales by N / downscale.
    downscale: float = 1.0

    @property
    def image_stem(self) -> str:
        return os.path.splitext(os.path.basename(self.image_name))[0]

    @property
    def FovX(self) -> float:
        return 2.0 * float(np.arctan(self.width / (2.0 * self.fx)))

    @property
    def FovY(self) -> float:
        return 2.0 * float(np.arctan(self.height / (2.0 * self.fy)))


@dataclass
class SceneInfo:
    cameras: list[CameraInfo]  # every camera of the scene, sorted by image_name
    point_cloud: BasicPointCloud | None  # the reader's points (None: no points on disk)
    reader: str  # "colmap", "blender", "llff", "idr"
    # A split the dataset itself defines (Blender train/test json files), else None.
    predefined_split: dict[str, list[str]] | None = None
    # Per-point lists of the image names that observe it (COLMAP tracks), aligned with
    # point_cloud.points; lets sparse-view runs keep points seen by >= 2 training views.
    point_tracks: list[list[str]] | None = None
    # Reader-specific facts. Keys used by Scene:
    #   "bounds": {image_name: (near, far)} positive camera depths bracketing the scene (LLFF
    #             poses_bounds, IDR unit sphere);
    #   "bounding_sphere": (center [3], radius), a sphere known to hold the scene (IDR);
    #   "images_dir": the folder image_name is relative to; "model_dir", "transforms": the
    #             pose files read.
    extras: dict = field(default_factory=dict)
