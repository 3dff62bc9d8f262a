"""Adapter from ``render()`` to ``gsplat.rasterization`` (CUDA).

RGB, N-D features and expected depth come out of one rasterization pass: when there are no
extra features and SH are evaluated by gsplat, the SH coefficients go straight in
(``sh_degree`` set); otherwise colours are evaluated first (gsplat's SH kernel, or PyTorch
with ``--convert_SHs_python``) and concatenated with the features.
"""

from __future__ import annotations

import torch

from gaussian.model import GaussianModel


def rasterize_gsplat(
    camera,
    pc: GaussianModel,
    pipe,
    bg_color: torch.Tensor,  # [3]
    scales: torch.Tensor,  # [N, 3] activated, scaling modifier applied
    covars: torch.Tensor | None,  # [N, 3, 3] or None
    features: torch.Tensor | None,  # [N, C]
    override_color: torch.Tensor | None,  # [N, 3]
    packed: bool = False,
    absgrad: bool = False,
    antialiased: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns image [H, W, 3 + C + 1] (depth last), alpha [H, W, 1], means2d, radii [N, 2]."""
    from gsplat import rasterization, spherical_harmonics

    n_feat = 0 if features is None else features.shape[-1]
    sh_degree = None
    if override_color is not None:
        colors = override_color
    elif features is None and not getattr(pipe, "convert_SHs_python", False):
        colors, sh_degree = pc.get_features, pc.active_sh_degree
    elif getattr(pipe, "convert_SHs_python", False):
        from gaussian_renderer import sh_colors

        colors = sh_colors(pc, camera.camera_center)
    else:
        dirs = pc.get_xyz - camera.camera_center
        colors = torch.clamp_min(
            spherical_harmonics(pc.active_sh_degree, dirs, pc.get_features) + 0.5, 0.0
        )
    if features is not None:
        colors = torch.cat([colors, features], dim=-1)
    backgrounds = torch.cat([bg_color, bg_color.new_zeros(n_feat)])[None]
    img, alpha, meta = rasterization(
        means=pc.get_xyz,
        quats=pc.params["quats"],
        scales=scales,
        opacities=pc.get_opacity,
        colors=colors,
        viewmats=camera.viewmat[None],
        Ks=camera.K[None],
        width=camera.image_width,
        height=camera.image_height,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        packed=packed,
        absgrad=absgrad,
        rasterize_mode="antialiased" if antialiased else "classic",
        covars=covars,
    )
    radii = meta["radii"]
    if packed:
        # Scatter the visible subset back to one row per Gaussian.
        full = torch.zeros((pc.num_gaussians, 2), dtype=radii.dtype, device=radii.device)
        full[meta["gaussian_ids"]] = radii
        radii = full
    else:
        radii = radii[0]
    return img[0], alpha[0], meta["means2d"], radii
