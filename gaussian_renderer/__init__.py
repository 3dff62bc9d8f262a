"""``render()``: one view of the Gaussians through a chosen backend, returned as a dict.

Rendering contract (both backends, same semantics):

================== ============== ==============================================
key                shape          meaning
================== ============== ==============================================
render             [3, H, W]      RGB composited on ``bg_color``
depth              [1, H, W]      expected camera z-depth (sum w z / sum w); absent
                                  with ``depth=False``
alpha              [1, H, W]      accumulated opacity
features           [C, H, W]      extra per-Gaussian channels, when ``features`` given
viewspace_points   [..., N, 2]    projected means (pixels), gradients retained by the
                                  strategy; ``.grad`` feeds densification
visibility_filter  [N] bool       projected inside the image
radii              [N] int        screen radius in pixels (max over axes), 0 = culled
width, height      int
================== ============== ==============================================

A per-Gaussian value ``v`` passed as a feature channel renders to
``sum_g v_g alpha_g T_g``, with exact gradients: per-Gaussian blending-weight sums
(mask-visibility loss, edge-weighted importance) need no custom kernel.

``render_features_only()`` splats only the given channels (``features`` and ``alpha``
keys), for passes that need no colour: the feature field, segmentation's distillation.
"""

from __future__ import annotations

import functools

import torch

from gaussian.model import GaussianModel
from utils.graphics_utils import covariance_from_scale_rot
from utils.sh_utils import eval_sh

BACKENDS = ("auto", "gsplat", "torch")


@functools.cache
def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> gsplat on CUDA when installed, torch otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError("the gsplat backend needs CUDA tensors; use --backend torch on CPU")
        if not gsplat_available():
            raise ImportError("gsplat is not installed: pip install gsplat==1.5.3")
    return backend


def sh_colors(pc: GaussianModel, camera_center: torch.Tensor) -> torch.Tensor:
    """View-dependent RGB of every Gaussian in PyTorch, clamped at 0 like 3DGS: [N, 3] for
    one camera centre [3], [V, N, 3] for V centres [V, 3] (one broadcast evaluation)."""
    dirs = torch.nn.functional.normalize(pc.get_xyz - camera_center[..., None, :], dim=-1)
    rgb = eval_sh(pc.active_sh_degree, pc.get_features, dirs)
    # At degree 0 the directions drop out and eval_sh returns [N, 3] for any centres.
    return torch.clamp_min(rgb + 0.5, 0.0).expand(dirs.shape)


def _check_finite(pc: GaussianModel) -> None:
    for name, p in pc.params.items():
        if not torch.isfinite(p).all():
            raise FloatingPointError(f"parameter {name} holds NaN/Inf before rasterization")


def render(
    viewpoint_camera,
    pc: GaussianModel,
    pipe,
    bg_color: torch.Tensor,  # [3]
    scaling_modifier: float = 1.0,
    features: torch.Tensor | None = None,  # [N, C] extra channels to splat
    backend: str = "auto",
    override_color: torch.Tensor | None = None,  # [N, 3] colours instead of SH
    packed: bool = False,
    absgrad: bool = False,
    depth: bool = True,
    fused: bool = True,
    opacity_gain: torch.Tensor | None = None,  # [N] DropGaussian gains (training only)
) -> dict:
    """Render ``viewpoint_camera`` (a ``scene.cameras.Camera``). See the module docstring.

    ``depth=False`` leaves the expected depth out (no ``"depth"`` key): one channel less to
    rasterize and differentiate, for training runs whose losses do not read it.
    ``fused``: on gsplat, run the render as one autograd node (gaussian_renderer/
    gsplat_fused.py; same kernels and results, less host time) where it applies: not with
    packed mode, ``override_color``, antialiasing or the PyTorch SH/covariance switches.
    ``opacity_gain`` multiplies each Gaussian's opacity (DropGaussian, gaussian/dropout.py).
    """
    if getattr(pipe, "debug", False):
        _check_finite(pc)
    backend = resolve_backend(backend, pc.device)
    width, height = viewpoint_camera.image_width, viewpoint_camera.image_height
    antialiased = bool(getattr(pipe, "antialiasing", False))
    n_feat = 0 if features is None else features.shape[-1]
    if (
        backend == "gsplat"
        and fused
        and not (packed or antialiased or override_color is not None)
        and not getattr(pipe, "compute_cov3D_python", False)
        and not getattr(pipe, "convert_SHs_python", False)
    ):
        from gaussian_renderer.gsplat_fused import SplatView, render_fused

        view = SplatView(
            viewpoint_camera.viewmat, viewpoint_camera.K, viewpoint_camera.camera_center,
            width, height, bg_color, pc.active_sh_degree, scaling_modifier, depth, absgrad,
        )  # fmt: skip
        p = pc.params
        rgb, alpha, extra, means2d, radii = render_fused(
            p["means"], p["quats"], p["scales"], p["opacities"], p["sh0"], p["shN"], view,
            features, opacity_gain,
        )  # fmt: skip
        return _package(rgb, alpha, extra, n_feat, depth, means2d, radii, width, height)
    scales = pc.get_scaling if scaling_modifier == 1.0 else pc.get_scaling * scaling_modifier
    opacities = pc.get_opacity if opacity_gain is None else pc.get_opacity * opacity_gain
    covars = None
    if getattr(pipe, "compute_cov3D_python", False):
        covars = covariance_from_scale_rot(scales, pc.params["quats"])

    if backend == "torch":
        if absgrad:
            raise ValueError("absgrad is only available with the gsplat backend")
        rgb = (
            override_color
            if override_color is not None
            else sh_colors(pc, viewpoint_camera.camera_center)
        )
        colors = rgb if features is None else torch.cat([rgb, features], dim=-1)
        bg = torch.cat([bg_color, bg_color.new_zeros(n_feat)])
        from gaussian_renderer.torch_backend import rasterize

        img, alpha, meta = rasterize(
            pc.get_xyz, pc.params["quats"], scales, opacities, colors,
            viewpoint_camera.viewmat, viewpoint_camera.K, width, height, background=bg,
            render_depth=depth, antialiased=antialiased, covars=covars,
        )  # fmt: skip
        means2d, radii = meta["means2d"], meta["radii"]
    else:
        from gaussian_renderer.gsplat_backend import rasterize_gsplat

        img, alpha, means2d, radii = rasterize_gsplat(
            viewpoint_camera, pc, pipe, bg_color, scales, opacities, covars, features,
            override_color, packed=packed, absgrad=absgrad, antialiased=antialiased, depth=depth,
        )  # fmt: skip

    img = img.permute(2, 0, 1)  # [D, H, W]
    radii_max = radii.max(dim=-1).values if radii.dim() > 1 else radii
    return _package(img[:3], alpha.permute(2, 0, 1), img[3:], n_feat, depth, means2d,
                    radii_max, width, height)  # fmt: skip


def _package(rgb, alpha, extra, n_feat, depth, means2d, radii, width, height) -> dict:
    """The render dict from rgb [3, H, W], alpha [1, H, W], extra [C (+1 depth), H, W],
    means2d and radii [N]."""
    out = {
        "render": rgb,
        "alpha": alpha,
        "viewspace_points": means2d,
        "visibility_filter": radii > 0,
        "radii": radii,
        "width": width,
        "height": height,
    }
    if depth:
        out["depth"] = extra[-1:]
    if n_feat:
        out["features"] = extra[:n_feat]
    return out


def render_views(
    viewmats: torch.Tensor,  # [V, 4, 4] world-to-camera, may carry gradients
    Ks: torch.Tensor,  # [V, 3, 3]
    width: int,
    height: int,
    pc: GaussianModel,
    pipe,
    bg_color: torch.Tensor,  # [3]
    backend: str = "auto",
) -> torch.Tensor:
    """RGB [V, 3, H, W] of V cameras of one image size, composited on ``bg_color``, with
    gradients to the view matrices (test-time pose optimisation batches its views here).

    gsplat rasterizes all V views in one call; the torch path is its twin, one
    ``rasterize`` per view. Same colour rule as ``render`` (SH + 0.5 clamped at 0), no
    depth, no packed mode.

    Why the gsplat path moves the Gaussians into each camera itself: gsplat's gradient
    with respect to ``viewmats`` leaves out the covariance's dependence on the rotation (an
    approximation, gsplat issue 737), so rotation corrections would follow a wrong
    gradient. Here the means, covariances and SH view directions are transformed per view
    in PyTorch and gsplat rasterizes with identity view matrices: autograd gives the exact
    pose gradient, the same as the torch twin's.
    """
    backend = resolve_backend(backend, pc.device)
    antialiased = bool(getattr(pipe, "antialiasing", False))
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]  # [V, 3, 3], [V, 3]
    centers = -(R.transpose(1, 2) @ t[..., None])[..., 0]  # [V, 3] camera centres
    # All views in one evaluation: a loop of V would launch V times the kernels, which is
    # what a step of the pose optimisation waits on.
    colors = sh_colors(pc, centers)  # [V, N, 3]
    if backend == "torch":
        from gaussian_renderer.torch_backend import rasterize

        out = []
        for vm, K, rgb in zip(viewmats, Ks, colors):
            img, _, _ = rasterize(
                pc.get_xyz, pc.params["quats"], pc.get_scaling, pc.get_opacity, rgb, vm, K,
                width, height, background=bg_color, render_depth=False, antialiased=antialiased,
            )  # fmt: skip
            out.append(img.permute(2, 0, 1))
        return torch.stack(out)
    from gsplat import rasterization

    from gaussian_renderer.gsplat_fused import EPS2D, NEAR_PLANE, TILE_SIZE

    V, N = len(viewmats), pc.num_gaussians
    cov_world = covariance_from_scale_rot(pc.get_scaling, pc.params["quats"])  # [N, 3, 3]
    means_cam = pc.get_xyz @ R.transpose(1, 2) + t[:, None]  # [V, N, 3]
    covs_cam = R[:, None] @ cov_world @ R.transpose(1, 2)[:, None]  # [V, N, 3, 3]
    eye = torch.eye(4, device=viewmats.device, dtype=viewmats.dtype)
    img, _, _ = rasterization(
        means=means_cam,
        quats=None,
        scales=None,
        covars=covs_cam,
        opacities=pc.get_opacity.expand(V, N),
        colors=colors[:, None],  # [V, 1 camera, N, 3]
        viewmats=eye.expand(V, 1, 4, 4),
        Ks=Ks[:, None],
        width=width,
        height=height,
        backgrounds=bg_color.expand(V, 1, -1),
        packed=False,
        near_plane=NEAR_PLANE,
        eps2d=EPS2D,
        tile_size=TILE_SIZE,
        rasterize_mode="antialiased" if antialiased else "classic",
    )
    img = img[:, 0]  # [V, H, W, 3]
    return img.permute(0, 3, 1, 2)


def render_features_only(
    viewpoint_camera,
    pc: GaussianModel,
    features: torch.Tensor,  # [N, C] per-Gaussian channels
    backend: str = "auto",
) -> dict:
    """Render only ``features`` on a zero background: ``{"features": [C, H, W], "alpha":
    [1, H, W]}``, no colour and no depth, gradients to every input that asks for one.

    Why not ``render(features=...)``: that rasterizes RGB too, and gsplat's kernels run a
    fixed set of channel counts (..., 32, 33, 64, 65, 128, ...), so a 64-channel field with
    its colour runs as 128 channels, twice the work of the 64 it needs. The gsplat path is
    ``gsplat.rasterization``; the torch path is its twin in torch_backend.py.
    """
    backend = resolve_backend(backend, pc.device)
    width, height = viewpoint_camera.image_width, viewpoint_camera.image_height
    zeros = features.new_zeros(features.shape[-1])
    if backend == "torch":
        from gaussian_renderer.torch_backend import rasterize

        img, alpha, _ = rasterize(
            pc.get_xyz, pc.params["quats"], pc.get_scaling, pc.get_opacity, features,
            viewpoint_camera.viewmat, viewpoint_camera.K, width, height, background=zeros,
            render_depth=False,
        )  # fmt: skip
    else:
        from gsplat import rasterization

        from gaussian_renderer.gsplat_fused import EPS2D, NEAR_PLANE, TILE_SIZE

        img, alpha, _ = rasterization(
            means=pc.get_xyz,
            quats=pc.params["quats"],
            scales=pc.get_scaling,
            opacities=pc.get_opacity,
            colors=features,
            viewmats=viewpoint_camera.viewmat[None],
            Ks=viewpoint_camera.K[None],
            width=width,
            height=height,
            backgrounds=zeros[None],
            render_mode="RGB",
            packed=False,  # gsplat 1.5.3 asserts [channels] backgrounds when packed
            near_plane=NEAR_PLANE,
            eps2d=EPS2D,
            tile_size=TILE_SIZE,
        )
        img, alpha = img[0], alpha[0]
    return {"features": img.permute(2, 0, 1), "alpha": alpha.permute(2, 0, 1)}
