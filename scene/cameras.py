"""The training/evaluation camera: pose, intrinsics at the training resolution, images.

A ``Camera`` is what ``render()`` and the losses consume. Matrices follow two conventions
side by side, both precomputed on the camera's device:

- ``viewmat`` [4, 4] world-to-camera and ``K`` [3, 3] intrinsics, column-vector convention
  (what gsplat takes);
- ``world_view_transform``, ``projection_matrix`` and ``full_proj_transform``, the
  transposed (row-vector) matrices of 3DGS, so that ``p_clip = [x, 1] @ full_proj_transform``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def world_to_camera(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """[4, 4] world-to-camera from 3DGS's (R = camera-to-world rotation, T)."""
    Rt = np.eye(4)
    Rt[:3, :3] = R.T
    Rt[:3, 3] = T
    return Rt


def projection_matrix(
    znear: float, zfar: float, fx: float, fy: float, cx: float, cy: float, width: int, height: int
) -> np.ndarray:
    """OpenGL-style perspective matrix (column convention) for a pinhole with principal point.

    Maps camera z in [znear, zfar] to NDC z in [0, 1] as 3DGS does, and pixel coordinates
    (pixel centres at +0.5) to NDC x, y in [-1, 1].
    """
    left = -cx / fx * znear
    right = (width - cx) / fx * znear
    top = -cy / fy * znear
    bottom = (height - cy) / fy * znear
    P = np.zeros((4, 4))
    P[0, 0] = 2.0 * znear / (right - left)
    P[1, 1] = 2.0 * znear / (bottom - top)
    P[0, 2] = (right + left) / (right - left)
    P[1, 2] = (bottom + top) / (bottom - top)
    P[3, 2] = 1.0
    P[2, 2] = zfar / (zfar - znear)
    P[2, 3] = -(zfar * znear) / (zfar - znear)
    return P


class Camera:
    """One view at training resolution.

    Args:
        uid: index of the camera in its list.
        image_name: file name relative to the images folder (the scene-folder key).
        R: [3, 3] camera-to-world rotation (3DGS convention).
        T: [3] world-to-camera translation.
        fx, fy, cx, cy: intrinsics in pixels at this camera's ``width`` x ``height``.
        image: [3, H, W] float in [0, 1] ground truth, or None for a render-only camera.
        alpha_mask: [1, H, W] float, the image's own alpha when it had one (RGBA input).
        eval_mask: [1, H, W] float in {0, 1}, object mask for masked metrics, or None.
        device: where the matrices and images live.
    """

    def __init__(
        self,
        uid: int,
        image_name: str,
        R: np.ndarray,
        T: np.ndarray,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        width: int,
        height: int,
        image: torch.Tensor | None = None,
        alpha_mask: torch.Tensor | None = None,
        eval_mask: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        znear: float = 0.01,
        zfar: float = 100.0,
    ):
        self.uid = uid
        self.image_name = image_name
        self.R = np.asarray(R, dtype=np.float64)
        self.T = np.asarray(T, dtype=np.float64)
        self.fx, self.fy, self.cx, self.cy = float(fx), float(fy), float(cx), float(cy)
        self.image_width, self.image_height = int(width), int(height)
        self.znear, self.zfar = znear, zfar
        self.device = torch.device(device)
        if image is not None and tuple(image.shape[-2:]) != (self.image_height, self.image_width):
            raise ValueError(
                f"{image_name}: image is {tuple(image.shape[-2:])} but the camera is "
                f"{self.image_height}x{self.image_width}"
            )
        self.original_image = image
        self.alpha_mask = alpha_mask
        self.eval_mask = eval_mask
        # Per-view 2D priors (masks, depth, ROI ...) attached by the prior loader.
        self.priors: dict[str, torch.Tensor] = {}

        w2c = world_to_camera(self.R, self.T)
        self.viewmat = torch.tensor(w2c, dtype=torch.float32, device=self.device)
        K = np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
        self.K = torch.tensor(K, dtype=torch.float32, device=self.device)
        P = projection_matrix(znear, zfar, self.fx, self.fy, self.cx, self.cy, width, height)
        self.world_view_transform = self.viewmat.T.contiguous()
        self.projection_matrix = torch.tensor(P.T, dtype=torch.float32, device=self.device)
        self.full_proj_transform = self.world_view_transform @ self.projection_matrix
        c2w = np.linalg.inv(w2c)
        self.camera_center = torch.tensor(c2w[:3, 3], dtype=torch.float32, device=self.device)

    @property
    def image_stem(self) -> str:
        name = self.image_name.rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name

    @property
    def FoVx(self) -> float:
        return 2.0 * math.atan(self.image_width / (2.0 * self.fx))

    @property
    def FoVy(self) -> float:
        return 2.0 * math.atan(self.image_height / (2.0 * self.fy))

    def to(self, device: torch.device | str) -> Camera:
        """Move images and priors to ``device`` (matrices are rebuilt there)."""
        device = torch.device(device)

        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        cam = Camera(
            self.uid,
            self.image_name,
            self.R,
            self.T,
            self.fx,
            self.fy,
            self.cx,
            self.cy,
            self.image_width,
            self.image_height,
            move(self.original_image),
            move(self.alpha_mask),
            move(self.eval_mask),
            device,
            self.znear,
            self.zfar,
        )
        cam.priors = {k: move(v) for k, v in self.priors.items()}
        return cam

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates and camera depth of world points.

        Args:
            points: [N, 3] world coordinates.
        Returns:
            uv [N, 2] (pixel centres at +0.5) and z [N] camera-space depth.
        """
        p_cam = points @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        z = p_cam[:, 2]
        zs = z.clamp_min(1e-8)
        u = self.fx * p_cam[:, 0] / zs + self.cx
        v = self.fy * p_cam[:, 1] / zs + self.cy
        return torch.stack([u, v], dim=-1), z

    def sees(self, points: torch.Tensor) -> torch.Tensor:
        """[N] bool: world points [N, 3] that project inside the image, in front of znear."""
        uv, z = self.project(points)
        return (
            (uv[:, 0] >= 0) & (uv[:, 0] < self.image_width)
            & (uv[:, 1] >= 0) & (uv[:, 1] < self.image_height) & (z > self.znear)
        )  # fmt: skip

    def ndc_depth(self, z: torch.Tensor) -> torch.Tensor:
        """NDC z in [0, 1] of camera depths ``z`` [N], as 3DGS's projection matrix gives."""
        zf, zn = self.zfar, self.znear
        return (zf / (zf - zn)) - (zf * zn) / ((zf - zn) * z.clamp_min(1e-8))
