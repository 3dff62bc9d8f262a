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

The published method shifts along x only, as a stereo rig would. With ``axes="xy"`` the
shift (b_x, b_y) takes a random direction in the image plane and the sample moves to
(u - fx * b_x / z, v - fy * b_y / z): the same geometry, with vertical parallax checked
too (views above or below the training ones). The sparse-view preset uses ``xy``: it
measured slightly better on both LLFF fern and DTU scan24 (docs/RESULTS.md, "Session 16").

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

AXES = ("x", "xy")


def shifted_camera(camera, shift: float, shift_y: float = 0.0):
    """A render-only copy of ``camera`` moved by ``shift`` world units along its own x
    axis and ``shift_y`` along its y axis (the camera-to-world rotation and intrinsics
    unchanged)."""
    T = np.asarray(camera.T, dtype=np.float64) - np.array([shift, shift_y, 0.0])
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
    fy: float | None = None,
    shift_y: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The virtual render resampled into the source view, and where that is defined.

    ``shift`` / ``shift_y``: the virtual camera's move along the source camera's x / y
    axis (``shifted_camera``); ``fy`` defaults to ``fx``.

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
    if shift_y == 0.0:
        gy = (2.0 * v / max(H - 1, 1) - 1.0).expand_as(gx)
    else:
        v_virtual = v - (fx if fy is None else fy) * shift_y / z
        valid &= (v_virtual >= 0) & (v_virtual <= H - 1)
        gy = 2.0 * v_virtual / max(H - 1, 1) - 1.0
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
        axes: ``x`` (shifts along the camera's x axis, as published) or ``xy`` (a
            random direction in the image plane, the length still uniform in
            [-max_shift, max_shift]).
    """

    def __init__(self, max_shift: float, start: int = 0, seed: int = 0,
                 lambda_dssim: float = 0.2, every: int = 1,
                 axes: str = "x") -> None:  # fmt: skip
        if axes not in AXES:
            raise ValueError(f"--binocular_axes {axes!r}: choose one of {AXES}")
        self.max_shift = float(max_shift)
        self.start = int(start)
        self.every = int(every)
        self.axes = axes
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

    def draw_shift(self) -> tuple[float, float]:
        """The next virtual camera's move (x, y) in world units, along the camera's axes."""
        length = float(self._rng.uniform(-self.max_shift, self.max_shift))
        if self.axes == "x":
            return length, 0.0
        angle = float(self._rng.uniform(0.0, np.pi))
        return length * np.cos(angle), length * np.sin(angle)

    def term(self, render_pkg: dict, camera) -> torch.Tensor:
        shift, shift_y = self.draw_shift()
        virtual = self._render(shifted_camera(camera, shift, shift_y))["render"]
        depth = render_pkg["depth"]
        has_surface = render_pkg["alpha"].detach() > 0.5
        warped, valid = warp_from_shifted(virtual, depth, camera.fx, shift, camera.fy, shift_y)
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
    axes = getattr(reg, "binocular_axes", "x")
    term = BinocularConsistency(reg.binocular_shift * scale, reg.binocular_from, seed,
                                lambda_dssim, every, axes)  # fmt: skip
    print(f"Binocular consistency: weight {reg.lambda_binocular}, shifts up to "
          f"{term.max_shift:.4g} (median view depth {scale:.4g}) along {axes}, every "
          f"{every} iteration(s) from {term.start}")  # fmt: skip
    return term
