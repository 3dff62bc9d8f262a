"""Binocular stereo consistency (Han et al., "Binocular-Guided 3D Gaussian Splatting with
View Consistency for Sparse View Synthesis", NeurIPS 2024): self-supervision of the
rendered geometry from each training image alone, with no learned prior.

For a training camera and a small shift ``b`` along its own x axis, the Gaussians render
the shifted ("virtual") view. A pixel (u, v) of the training view whose rendered depth is
z sees the same surface point at (u - fx * b / z, v) in the virtual view, so sampling the
virtual render there must give back the training image:

    I_warp(u, v) = I_virtual(u - fx * b / z(u, v), v)
    loss         = (1 - lambda_dssim) * |I_warp - I_gt| + lambda_dssim * (1 - SSIM)

The gradient reaches the depth through the sampling position (a wrong depth samples the
wrong colour) and the colours through the virtual render, so a surface placed at the
wrong depth, or a floater that only one training view explains, costs loss even though
it reproduces the training image. Pixels that warp outside the virtual image, or have no
rendered surface, take the ground truth (no loss there).

Shifts are drawn uniformly in [-s, s] with s = ``shift`` times the median depth of the
initial points in the training views, so one value fits scenes of any scale: 0.05 (the
flag's default) moves a point at the median depth by 5% of the focal length in pixels
(about 20 px on LLFF at 504x378). The sparse-view preset uses 0.4: larger shifts measured
better up to there (docs/RESULTS.md, "Session 15").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from scene.cameras import Camera
from utils.loss_utils import fast_ssim


def shifted_camera(camera, shift: float):
    """A render-only copy of ``camera`` moved by ``shift`` world units along its own x
    axis (the camera-to-world rotation and intrinsics unchanged)."""
    T = np.asarray(camera.T, dtype=np.float64) - np.array([shift, 0.0, 0.0])
    return Camera(
        camera.uid, camera.image_name, camera.R, T, camera.fx, camera.fy, camera.cx,
        camera.cy, camera.image_width, camera.image_height, device=camera.device,
        znear=camera.znear, zfar=camera.zfar,
    )  # fmt: skip


def warp_from_shifted(
    virtual_image: torch.Tensor,  # [C, H, W] render of the camera shifted by ``shift``
    depth: torch.Tensor,  # [1, H, W] z-depth rendered in the source camera
    fx: float,
    shift: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The virtual render resampled into the source view, and where that is defined.

    Returns ``warped`` [C, H, W] (bilinear, differentiable in both inputs) and ``valid``
    [1, H, W] bool: positive depth and a sample position inside the virtual image.
    """
    _, H, W = virtual_image.shape
    z = depth.clamp_min(1e-6)
    u = torch.arange(W, device=depth.device, dtype=depth.dtype).view(1, 1, W)
    v = torch.arange(H, device=depth.device, dtype=depth.dtype).view(1, H, 1)
    u_virtual = u - fx * shift / z  # [1, H, W]
    valid = (depth > 0) & (u_virtual >= 0) & (u_virtual <= W - 1)
    # grid_sample's normalised coordinates with align_corners=True: pixel i -> 2i/(n-1) - 1
    gx = 2.0 * u_virtual / max(W - 1, 1) - 1.0
    gy = (2.0 * v / max(H - 1, 1) - 1.0).expand_as(gx)
    grid = torch.stack([gx, gy], dim=-1)  # [1, H, W, 2]
    warped = F.grid_sample(virtual_image[None], grid, mode="bilinear", padding_mode="border",
                           align_corners=True)[0]  # fmt: skip
    return warped, valid


def binocular_loss(
    warped: torch.Tensor,  # [3, H, W]
    valid: torch.Tensor,  # [1, H, W] bool
    gt: torch.Tensor,  # [3, H, W]
    lambda_dssim: float = 0.2,
) -> torch.Tensor:
    """L1 + D-SSIM between the warped virtual render and the training image, with the
    ground truth standing in where the warp is undefined (no loss there)."""
    image = torch.where(valid, warped, gt)
    l1 = (image - gt).abs().sum() / (valid.sum() * gt.shape[0]).clamp_min(1)
    return torch.lerp(l1, 1.0 - fast_ssim(image, gt), lambda_dssim)


class BinocularConsistency:
    """The ``binocular`` loss term of training (utils/extra_losses.py calls ``term``).

    Args:
        max_shift: shifts are uniform in [-max_shift, max_shift] (world units).
        start: first iteration with the term.
        every: the term acts at ``start``, ``start + every``, ... (1: at every iteration).
        seed: seeds the shift draws (host generator: the shift is a host number anyway,
            the virtual camera's matrices are built from it).
        lambda_dssim: the D-SSIM weight of the term.
    """

    def __init__(self, max_shift: float, start: int = 0, seed: int = 0,
                 lambda_dssim: float = 0.2, every: int = 1) -> None:  # fmt: skip
        self.max_shift = float(max_shift)
        self.start = int(start)
        self.every = int(every)
        self.lambda_dssim = lambda_dssim
        self._rng = np.random.default_rng(seed)
        self._render: Callable | None = None

    def bind(self, render_fn: Callable) -> None:
        """``render_fn(camera) -> render dict`` of the current Gaussians (set by train.py)."""
        self._render = render_fn

    def due(self, iteration: int) -> bool:
        """Whether the term acts at ``iteration`` (once bound to a renderer)."""
        return (
            iteration >= self.start
            and (iteration - self.start) % self.every == 0
            and self.max_shift > 0
        )

    def active(self, iteration: int) -> bool:
        return self._render is not None and self.due(iteration)

    def term(self, render_pkg: dict, camera) -> torch.Tensor:
        shift = float(self._rng.uniform(-self.max_shift, self.max_shift))
        virtual = self._render(shifted_camera(camera, shift))["render"]
        depth = render_pkg["depth"]
        has_surface = render_pkg["alpha"].detach() > 0.5
        warped, valid = warp_from_shifted(virtual, depth, camera.fx, shift)
        return binocular_loss(warped, valid & has_surface, camera.original_image,
                              self.lambda_dssim)  # fmt: skip


def median_view_depth(points: torch.Tensor, cameras) -> float:
    """Median camera-space depth of ``points`` [N, 3] in front of the ``cameras``: the
    scale the shifts are relative to (1.0 when no point is in front of any camera)."""
    depths = []
    for cam in cameras:
        _, z = cam.project(points.to(cam.viewmat.device))
        depths.append(z[z > 0])
    z = torch.cat(depths) if depths else torch.zeros(0)
    return float(z.median()) if z.numel() else 1.0


def build_binocular(reg, scene, seed: int = 0, lambda_dssim: float = 0.2):
    """The binocular term for ``--lambda_binocular`` > 0 (``reg``: the SparseRegParams
    values), None otherwise: shifts relative to the median depth of the scene's initial
    points in its training views."""
    if reg is None or getattr(reg, "lambda_binocular", 0.0) <= 0:
        return None
    points = torch.as_tensor(scene.point_cloud.points, dtype=torch.float32)
    scale = median_view_depth(points, scene.getTrainCameras())
    every = getattr(reg, "binocular_every", 1)
    term = BinocularConsistency(reg.binocular_shift * scale, reg.binocular_from, seed,
                                lambda_dssim, every)  # fmt: skip
    print(f"Binocular consistency: weight {reg.lambda_binocular}, shifts up to "
          f"{term.max_shift:.4g} (median view depth {scale:.4g}), every {every} "
          f"iteration(s) from {term.start}")  # fmt: skip
    return term
