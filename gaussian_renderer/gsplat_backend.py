"""Adapter from ``render()`` to gsplat (CUDA).

RGB, N-D features and expected depth come out of one rasterization pass: colours
(gsplat's SH kernel, PyTorch SH with ``--convert_SHs_python``, or ``override_color``),
the extra feature channels and the camera depth are concatenated into one colour tensor.

Training renders normally take gaussian_renderer/gsplat_fused.py (the whole render as one
autograd node). This module is the staged path: ``render(..., fused=False)``
(``--autograd_nodes stages``) and the cases the fused node does not cover (packed mode,
``override_color``, antialiasing, the PyTorch SH/covariance switches). It calls gsplat's
four stages directly (projection, tile intersection, offsets, rasterization), each its
autograd function, instead of ``gsplat.rasterization``. Same kernels, same results,
but less host work per call, and no ``torch.inverse`` of the view matrix: that call
checks its result on the host, a GPU synchronisation on every iteration (the tile
intersection already needs one). Packed mode and explicit covariances go through
``gsplat.rasterization``.
"""

from __future__ import annotations

import math

import torch

from gaussian.model import GaussianModel
from gaussian_renderer.gsplat_fused import TILE_SIZE


def load_gsplat_extension() -> None:
    """Load (on a fresh machine: compile, about 80 s) gsplat's CUDA extension now, so the
    first render does not pay for it inside the timed training loop."""
    from gsplat.cuda._backend import _C

    if _C is None:
        raise ImportError("gsplat's CUDA extension is unavailable (no CUDA toolkit to build it?)")


def _colors(camera, pc: GaussianModel, pipe, override_color, visible) -> torch.Tensor:
    """Per-Gaussian RGB [N, 3]: override, PyTorch SH, or gsplat's SH kernel."""
    if override_color is not None:
        return override_color
    if getattr(pipe, "convert_SHs_python", False):
        from gaussian_renderer import sh_colors

        return sh_colors(pc, camera.camera_center)
    from gsplat.cuda._wrapper import spherical_harmonics

    dirs = pc.get_xyz - camera.camera_center
    rgb = spherical_harmonics(pc.active_sh_degree, dirs, pc.get_features, masks=visible)
    return torch.clamp_min(rgb + 0.5, 0.0)


def rasterize_gsplat(
    camera,
    pc: GaussianModel,
    pipe,
    bg_color: torch.Tensor,  # [3]
    scales: torch.Tensor,  # [N, 3] activated, scaling modifier applied
    opacities: torch.Tensor,  # [N] activated (DropGaussian gains applied)
    covars: torch.Tensor | None,  # [N, 3, 3] or None
    features: torch.Tensor | None,  # [N, C]
    override_color: torch.Tensor | None,  # [N, 3]
    packed: bool = False,
    absgrad: bool = False,
    antialiased: bool = False,
    depth: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns image [H, W, 3 + C (+ 1 depth, last, when ``depth``)], alpha [H, W, 1],
    means2d [1, N, 2] (or [nnz, 2] packed), radii [N, 2]."""
    if packed or covars is not None:
        return _rasterize_api(camera, pc, pipe, bg_color, scales, opacities, covars, features,
                              override_color, packed, absgrad, antialiased, depth)  # fmt: skip
    from gsplat.cuda._wrapper import (
        fully_fused_projection,
        isect_offset_encode,
        isect_tiles,
        rasterize_to_pixels,
    )

    width, height = camera.image_width, camera.image_height
    # radii [1, N, 2] int, means2d [1, N, 2], depths [1, N], conics [1, N, 3]
    radii, means2d, depths, conics, comp = fully_fused_projection(
        pc.get_xyz, None, pc.params["quats"], scales, camera.viewmat[None], camera.K[None],
        width, height, calc_compensations=antialiased, opacities=opacities,
    )  # fmt: skip
    opacities = opacities[None] if comp is None else opacities[None] * comp
    visible = (radii[0] > 0).all(dim=-1)
    parts = [_colors(camera, pc, pipe, override_color, visible)]
    if features is not None:
        parts.append(features)
    if depth:
        parts.append(depths[0, :, None])
    colors = (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])[None]  # [1, N, D]
    n_extra = colors.shape[-1] - 3  # features and depth have a zero background
    backgrounds = (torch.cat([bg_color, bg_color.new_zeros(n_extra)]) if n_extra else bg_color)[
        None
    ]
    tiles_w, tiles_h = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, TILE_SIZE, tiles_w, tiles_h)
    offsets = isect_offset_encode(isect_ids, 1, tiles_w, tiles_h)
    img, alpha = rasterize_to_pixels(
        means2d, conics, colors, opacities, width, height, TILE_SIZE, offsets, flatten_ids,
        backgrounds=backgrounds, absgrad=absgrad,
    )  # fmt: skip
    if depth:  # expected depth: the alpha-weighted depth sum over the accumulated alpha
        img = torch.cat([img[..., :-1], img[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    return img[0], alpha[0], means2d, radii[0]


def _rasterize_api(camera, pc, pipe, bg_color, scales, opacities, covars, features,
                   override_color, packed, absgrad, antialiased, depth=True):  # fmt: skip
    """The same render through ``gsplat.rasterization`` (packed mode, explicit covariances)."""
    from gsplat import rasterization

    n_feat = 0 if features is None else features.shape[-1]
    colors = _colors(camera, pc, pipe, override_color, None)
    if features is not None:
        colors = torch.cat([colors, features], dim=-1)
    backgrounds = torch.cat([bg_color, bg_color.new_zeros(n_feat)])[None]
    img, alpha, meta = rasterization(
        means=pc.get_xyz,
        quats=pc.params["quats"],
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=camera.viewmat[None],
        Ks=camera.K[None],
        width=camera.image_width,
        height=camera.image_height,
        backgrounds=backgrounds,
        render_mode="RGB+ED" if depth else "RGB",
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
