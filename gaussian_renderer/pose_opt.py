"""Test-time pose optimisation (SPARS3R's ``splatfacto-tpo``, seeds digest §2.5).

When the test cameras are *registered* (estimated against the training views) rather than
known, a small pose error shifts every test render by a few pixels and the image metrics
then measure registration error instead of reconstruction quality. SPARS3R therefore
freezes every Gaussian and optimises, per test view, an SO(3) x R3 correction of that
view's camera against its own test image, then scores the corrected renders. This module
does that through ``gaussian_renderer.render_views`` (torch backend on the CPU, gsplat on
CUDA, where all test views of one size render in one batched call), so the gradient
reaches the pose through the same rasterizer as the renders it scores.

The correction acts on the world-to-camera matrix from the left, in the camera frame::

    viewmat' = [[exp(omega), s * tau], [0, 1]] @ viewmat

``omega`` is an axis-angle vector (radians; Rodrigues' formula gives ``exp``), ``tau`` a
translation in units of the scene scale ``s`` (``Scene.cameras_extent``), so that one
learning rate fits scenes of any size, as in nerfstudio, whose scenes are normalised to
about a unit box. Left multiplication rotates about the camera centre, which keeps
rotation and translation decoupled at the start.

Schedules (``SCHEDULES``):

- ``spars3r``: the digest's values, faithful to the paper. Adam, lr 1e-4 rising from 0 by
  a sine ramp over 1000 steps, then decaying exponentially to 5e-7 at step 30000; one
  rate for the six numbers. With the paper's 500 steps the rate never reaches 1e-4, so the
  correction can move by at most about 1.5 degrees: it is meant for already-good poses.
- ``fast``: Adam, lr 2e-3 for both groups, no warm-up, exponential decay to 1e-4 over the
  ``steps`` requested (not lower: the rotation/translation valley is flat, and a rate that
  dies too early stalls half-way along it). It recovers errors of several degrees in a
  few hundred steps (the unit test: 2 degrees and 2 % of the scene scale, 300 steps)
  and is the choice for user photos or coarse registrations.

The loss is the paper's ``0.8 * L1 + 0.2 * D-SSIM`` against the test image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from gaussian.model import GaussianModel
from utils.loss_utils import l1_dssim_loss

LAMBDA_DSSIM = 0.2  # SPARS3R Eq. 9: 0.8 L1 + 0.2 D-SSIM


@dataclass(frozen=True)
class PoseSchedule:
    """Adam learning rate of the rotation (radians) and of the translation (scene scales).

    ``lr(step)`` ramps from 0 to ``lr_init`` by ``sin(pi/2 * step / warmup_steps)`` and
    then decays exponentially to ``lr_final`` at ``decay_steps`` (``None``: at the last
    step of the run), nerfstudio's ``ExponentialDecayScheduler``.
    """

    name: str
    lr_rot: float
    lr_trans: float
    lr_final: float
    warmup_steps: int = 0
    decay_steps: int | None = None

    def factor(self, step: int, total_steps: int) -> float:
        """The multiplier of ``lr_rot`` and ``lr_trans`` at ``step`` (0-based)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return math.sin(0.5 * math.pi * step / self.warmup_steps)
        end = self.decay_steps if self.decay_steps is not None else total_steps
        span = max(end - self.warmup_steps, 1)
        t = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        lr_init = max(self.lr_rot, self.lr_trans)
        log_lr = math.log(lr_init) * (1 - t) + math.log(self.lr_final) * t
        return math.exp(log_lr) / lr_init


SCHEDULES: dict[str, PoseSchedule] = {
    "spars3r": PoseSchedule("spars3r", 1e-4, 1e-4, 5e-7, warmup_steps=1000, decay_steps=30000),
    "fast": PoseSchedule("fast", 2e-3, 2e-3, 1e-4),
}


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] of the axis-angle vectors ``omega`` [..., 3] (Rodrigues).

    ``R = I + a [w]x + b [w]x^2`` with ``a = sin(t)/t`` and ``b = (1 - cos t)/t^2``,
    ``t = |omega|``; below ``t = 1e-4`` the Taylor series is used, so the gradient at
    ``omega = 0`` (where every optimisation starts) is exact and finite.
    """
    theta2 = (omega * omega).sum(-1)[..., None, None]
    theta = torch.sqrt(theta2.clamp_min(1e-24))
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    wx = torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a * wx + b * (wx @ wx)


def pose_delta(omega: torch.Tensor, tau: torch.Tensor, scale: float) -> torch.Tensor:
    """[..., 4, 4] corrections ``[[exp(omega), scale * tau], [0, 1]]`` of ``omega``, ``tau``
    [..., 3], applied from the left to world-to-camera matrices."""
    top = torch.cat([so3_exp(omega), (scale * tau)[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


class CorrectedCamera:
    """A camera whose pose is ``base``'s corrected by (``omega``, ``scale * tau``).

    It offers what ``render()`` reads from a ``scene.cameras.Camera`` (``viewmat``, ``K``,
    ``camera_center``, image size) plus the base camera's images and names, so render.py's
    ``render_set`` writes it like any camera. ``viewmat`` and ``camera_center`` are built
    from the parameters on each access and so carry their gradients.
    """

    def __init__(self, base, scale: float):
        self.base = base
        self.scale = float(scale)
        device = base.viewmat.device
        self.omega = torch.zeros(3, device=device, requires_grad=True)
        self.tau = torch.zeros(3, device=device, requires_grad=True)
        self.K = base.K
        self.image_width, self.image_height = base.image_width, base.image_height
        self.uid, self.image_name = base.uid, base.image_name
        self.original_image = base.original_image
        self.eval_mask = getattr(base, "eval_mask", None)
        self.alpha_mask = getattr(base, "alpha_mask", None)

    def delta(self) -> torch.Tensor:
        """The [4, 4] correction applied from the left to the base world-to-camera."""
        return pose_delta(self.omega, self.tau, self.scale)

    @property
    def viewmat(self) -> torch.Tensor:  # [4, 4] world-to-camera, differentiable
        return self.delta() @ self.base.viewmat

    @property
    def camera_center(self) -> torch.Tensor:  # [3] world position, -R^T t
        vm = self.viewmat
        return -vm[:3, :3].T @ vm[:3, 3]

    def parameters(self) -> list[torch.Tensor]:
        return [self.omega, self.tau]


@dataclass
class PoseResult:
    """What the optimisation did to one view (the record written to poses.json)."""

    image_name: str
    viewmat_before: list[list[float]]
    viewmat_after: list[list[float]]
    R: list[list[float]]  # corrected camera-to-world rotation (3DGS convention)
    T: list[float]  # corrected world-to-camera translation
    rotation_change_deg: float
    translation_change: float  # camera-centre displacement, world units
    loss_before: float
    loss_after: float
    losses: list[float] = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        """A JSON-ready dict without the loss curve."""
        d = asdict(self)
        d.pop("losses")
        return d


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of the rotation matrix ``R`` in degrees (``acos((tr R - 1) / 2)``)."""
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


POSE_BATCH = 16  # views of one size optimised together (one batched render a step)


def view_losses(images: torch.Tensor, gts: torch.Tensor) -> list[float]:
    """The loss of each view of ``images`` [V, 3, H, W] against ``gts`` (one sync)."""
    per_view = [l1_dssim_loss(im, gt, LAMBDA_DSSIM)[0] for im, gt in zip(images, gts)]
    return torch.stack(per_view).tolist()


def optimize_camera_poses(
    cameras: list,
    gaussians: GaussianModel,
    pipe,
    background: torch.Tensor,
    steps: int,
    scale: float,
    schedule: PoseSchedule | str = "fast",
    backend: str = "auto",
    batch: int = POSE_BATCH,
) -> list[tuple[CorrectedCamera, PoseResult]]:
    """Optimise the pose correction of every camera against its ``original_image``.

    The Gaussians are frozen (``requires_grad`` switched off for the call and restored);
    only ``omega`` [V, 3] and ``tau`` [V, 3] are optimised, with Adam in two parameter
    groups (rotation, translation) whose rates follow ``schedule``. Up to ``batch`` views of
    one image size are optimised together: one ``render_views`` call (gsplat: one batched
    rasterization) and one Adam step per iteration for all of them, and no host sync in the
    loop. The views stay independent: each correction only moves its own render, and Adam
    is per element and blind to the loss's scale, so the mean loss of the batch gives each
    view the steps it would get alone (tests/test_pose_opt.py checks this).

    Returns (corrected camera, ``PoseResult``) per camera, in the order given; the
    record's ``losses`` is the batch's mean loss at each step.
    """
    for camera in cameras:
        if camera.original_image is None:
            raise ValueError(f"{camera.image_name}: no test image to optimise the pose against")
    sched = SCHEDULES[schedule] if isinstance(schedule, str) else schedule
    groups: dict[tuple[int, int], list[int]] = {}
    for i, camera in enumerate(cameras):
        groups.setdefault((camera.image_width, camera.image_height), []).append(i)
    chunks = [idx[k : k + max(1, batch)] for idx in groups.values()
              for k in range(0, len(idx), max(1, batch))]  # fmt: skip
    results: list = [None] * len(cameras)
    flags = {k: p.requires_grad for k, p in gaussians.params.items()}
    try:
        for p in gaussians.params.values():
            p.requires_grad_(False)
        for chunk in chunks:
            views = [cameras[i] for i in chunk]
            for i, res in zip(chunk, _optimize_batch(views, gaussians, pipe, background, steps,
                                                     scale, sched, backend)):  # fmt: skip
                results[i] = res
    finally:
        for k, p in gaussians.params.items():
            p.requires_grad_(flags[k])
    return results


def _optimize_batch(views, gaussians, pipe, background, steps, scale, sched, backend):
    """``optimize_camera_poses`` for views of one image size, all at once."""
    from gaussian_renderer import render_views

    device = views[0].viewmat.device
    base = torch.stack([v.viewmat for v in views]).detach()  # [V, 4, 4]
    Ks = torch.stack([v.K for v in views])
    width, height = views[0].image_width, views[0].image_height
    gts = torch.stack([v.original_image[0:3].to(device) for v in views])  # [V, 3, H, W]
    omega = torch.zeros(len(views), 3, device=device, requires_grad=True)
    tau = torch.zeros(len(views), 3, device=device, requires_grad=True)
    opt = torch.optim.Adam(
        [{"params": [omega], "lr": sched.lr_rot}, {"params": [tau], "lr": sched.lr_trans}],
        eps=1e-15,
    )
    base_lrs = [sched.lr_rot, sched.lr_trans]

    def draw() -> torch.Tensor:
        vms = pose_delta(omega, tau, scale) @ base
        return render_views(vms, Ks, width, height, gaussians, pipe, background, backend)

    with torch.no_grad():
        before_losses = view_losses(draw(), gts)
    losses = []
    with torch.enable_grad():  # render.py and metrics.py call this under no_grad
        for step in range(steps):
            f = sched.factor(step, steps)
            for group, lr in zip(opt.param_groups, base_lrs):
                group["lr"] = lr * f
            loss = l1_dssim_loss(draw(), gts, LAMBDA_DSSIM, fused=True)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    with torch.no_grad():
        after_losses = view_losses(draw(), gts)
    curve = torch.stack(losses).tolist() if losses else []
    out = []
    for k, view in enumerate(views):
        cam = CorrectedCamera(view, scale)
        with torch.no_grad():
            cam.omega.copy_(omega[k])
            cam.tau.copy_(tau[k])
            before = view.viewmat.detach().double().cpu().numpy()
            after = cam.viewmat.detach().double().cpu().numpy()
        c_before = -before[:3, :3].T @ before[:3, 3]
        c_after = -after[:3, :3].T @ after[:3, 3]
        record = PoseResult(
            image_name=view.image_name,
            viewmat_before=before.tolist(),
            viewmat_after=after.tolist(),
            R=after[:3, :3].T.tolist(),
            T=after[:3, 3].tolist(),
            rotation_change_deg=rotation_angle_deg(after[:3, :3] @ before[:3, :3].T),
            translation_change=float(np.linalg.norm(c_after - c_before)),
            loss_before=before_losses[k],
            loss_after=after_losses[k],
            losses=curve,
        )
        out.append((cam, record))
    return out


def optimize_camera_pose(
    camera,
    gaussians: GaussianModel,
    pipe,
    background: torch.Tensor,
    steps: int,
    scale: float,
    schedule: PoseSchedule | str = "fast",
    backend: str = "auto",
) -> tuple[CorrectedCamera, PoseResult]:
    """``optimize_camera_poses`` for one camera: (corrected camera, ``PoseResult``)."""
    return optimize_camera_poses([camera], gaussians, pipe, background, steps, scale, schedule,
                                 backend)[0]  # fmt: skip
