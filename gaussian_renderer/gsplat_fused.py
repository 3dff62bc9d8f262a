"""A gsplat render as ONE autograd node, for training loops bound by host time.

The staged path (``gsplat_backend.rasterize_gsplat``) chains gsplat's autograd functions
(projection, spherical harmonics, rasterization) with PyTorch activations (exp of the
scales, sigmoid of the opacities, the SH concatenation, the colour clamp): about fifteen
autograd nodes, each costing host time in the forward and again in the backward. At
sparse-view sizes the loop is bound by that host time (docs/RESULTS.md, fern profile), so
this module calls the same gsplat kernels from one ``torch.autograd.Function`` whose
backward chains their backward kernels and the activation derivatives by hand:

    scales = exp(s) * modifier        dL/ds = dL/dscales * scales
    opacity = sigmoid(o)              dL/do = dL/dopacity * opacity * (1 - opacity)
    rgb = max(SH(coeffs, dirs) + 0.5, 0)   dL/dSH = dL/drgb where SH + 0.5 >= 0
    dirs = means - camera centre       dL/dmeans += dL/ddirs
    depth = sum(w z) / max(alpha, 1e-10)

The twin is the staged path: same kernels, gsplat's own autograd functions.
tests/test_gsplat_fused.py holds outputs and gradients of the two equal.

The projected means' gradient (what 3DGS densification reads) reaches the caller as in
the original 3DGS code's screen-space points: gsplat's projected means come out as a leaf
tensor whose ``.grad`` the backward fills (no copy, no autograd edge).

The stage functions (``project``, ``intersect``, ``rasterize``, ``image_outputs`` and their
backward counterparts) are plain functions of tensors, so other step drivers (a CUDA-graph
replay of the fixed-shape stages, say) can reuse them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# 8x8 tiles, not gsplat's default 16: the same image (a Gaussian reaches only pixels inside
# its screen bounding box, whatever the tiling), about 25% less rasterizer time at
# sparse-view sizes (fern 3-view late in training, H100: forward 0.51 -> 0.39 ms, backward
# 1.02 -> 0.75 ms; docs/RESULTS.md).
TILE_SIZE = 8
EPS2D = 0.3  # gsplat's defaults, as the staged path uses them
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
# Channel counts gsplat's rasterizer is compiled for; others are zero-padded up.
RASTER_CHANNELS = (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512, 513)


def padded_channels(channels: int) -> int:
    """The channel count the rasterizer runs for ``channels`` (gsplat pads the same way)."""
    if channels in RASTER_CHANNELS:
        return channels
    if not 0 < channels <= 513:
        raise ValueError(f"gsplat rasterizes 1 to 513 channels, got {channels}")
    return 1 << (channels - 1).bit_length()


@dataclass(frozen=True)
class SplatView:
    """Everything about one render that is not a per-Gaussian tensor."""

    viewmat: torch.Tensor  # [4, 4] world-to-camera
    K: torch.Tensor  # [3, 3]
    campos: torch.Tensor  # [3] camera centre (SH view directions)
    width: int
    height: int
    background: torch.Tensor  # [3]
    sh_degree: int
    scale_modifier: float = 1.0
    depth: bool = True  # render the expected depth as the last extra channel
    absgrad: bool = False  # also give means2d.absgrad (gsplat's absolute gradient)


def _ext():
    from gsplat.cuda._backend import _C

    return _C


@dataclass
class Projected:
    """The per-Gaussian results of ``project`` ([N, ...]; gsplat's [1, N, ...] where
    gsplat wants a camera axis), kept for the rasterizer and the backward pass."""

    scales: torch.Tensor  # [N, 3] activated (modifier applied)
    opacities: torch.Tensor  # [N]
    coeffs: torch.Tensor  # [N, K, 3] SH coefficients
    dirs: torch.Tensor  # [N, 3] camera centre -> mean
    sh_rgb: torch.Tensor  # [N, 3] SH colour + 0.5, before the clamp at 0
    colors: torch.Tensor  # [N, padded] clamped RGB, features, depth, zero padding
    means2d: torch.Tensor  # [1, N, 2]
    depths: torch.Tensor  # [1, N]
    conics: torch.Tensor  # [1, N, 3]
    radii: torch.Tensor  # [1, N, 2] int
    visible: torch.Tensor  # [N] bool
    backgrounds: torch.Tensor  # [padded]
    channels: int  # 3 + features + depth, before padding
    # DropGaussian: per-Gaussian opacity gains [N] (``opacities`` = sigmoid x gain) and the
    # plain sigmoid the backward needs; None without dropping.
    gain: torch.Tensor | None = None
    sigmoid: torch.Tensor | None = None


def project(means, quats, log_scales, opacity_logits, sh0, shN, features, view: SplatView,
            opacity_gain: torch.Tensor | None = None) -> Projected:  # fmt: skip
    """Activations, projection, spherical harmonics and the colour table: every
    per-Gaussian step before the tile intersection (fixed shapes: CUDA-graph friendly).
    ``opacity_gain`` [N] multiplies the opacities (DropGaussian, gaussian/dropout.py); a
    Gaussian with gain 0 gets no screen radius, so it is culled like a transparent one."""
    C = _ext()
    n_feat = 0 if features is None else features.shape[-1]
    channels = 3 + n_feat + int(view.depth)
    padded = padded_channels(channels)
    scales = torch.exp(log_scales)
    if view.scale_modifier != 1.0:
        scales.mul_(view.scale_modifier)
    sigmoid = torch.sigmoid(opacity_logits)
    opacities = sigmoid if opacity_gain is None else sigmoid * opacity_gain
    # radii [1, N, 2] int, means2d [1, N, 2], depths [1, N], conics [1, N, 3]
    radii, means2d, depths, conics, _ = C.projection_ewa_3dgs_fused_fwd(
        means, None, quats, scales, opacities, view.viewmat[None], view.K[None], view.width,
        view.height, EPS2D, NEAR_PLANE, FAR_PLANE, 0.0, False, C.CameraModelType.PINHOLE,
    )  # fmt: skip
    visible = (radii[0] > 0).all(dim=-1)
    # Two copies into one buffer: about 20% less GPU time than torch.cat here.
    coeffs = sh0.new_empty(sh0.shape[0], 1 + shN.shape[1], 3)
    coeffs[:, :1] = sh0
    coeffs[:, 1:] = shN
    dirs = means - view.campos
    sh_rgb = C.spherical_harmonics_fwd(view.sh_degree, dirs, coeffs, visible).add_(0.5)
    parts = [torch.clamp_min(sh_rgb, 0.0)]
    if n_feat:
        parts.append(features)
    if view.depth:
        parts.append(depths[0, :, None])
    if padded > channels:
        parts.append(sh_rgb.new_zeros(sh_rgb.shape[0], padded - channels))
    colors = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
    backgrounds = view.background
    if padded > 3:
        backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(padded - 3)])
    return Projected(scales, opacities, coeffs, dirs, sh_rgb, colors, means2d, depths, conics,
                     radii, visible, backgrounds, channels, opacity_gain, sigmoid)  # fmt: skip


def tile_grid(view: SplatView) -> tuple[int, int]:
    return math.ceil(view.width / TILE_SIZE), math.ceil(view.height / TILE_SIZE)


def intersect(proj: Projected, view: SplatView) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile offsets [1, tiles_h, tiles_w] and depth-sorted Gaussian ids [n_isects]. gsplat
    reads the number of intersections back to the host here: the step's one sync."""
    C = _ext()
    tiles_w, tiles_h = tile_grid(view)
    _, isect_ids, flatten_ids = C.intersect_tile(
        proj.means2d, proj.radii, proj.depths, None, None, 1, TILE_SIZE, tiles_w, tiles_h,
        True, False,
    )  # fmt: skip
    return C.intersect_offset(isect_ids, 1, tiles_w, tiles_h), flatten_ids


def rasterize(means2d, conics, colors, opacities, backgrounds, offsets, flatten_ids,
              view: SplatView) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """image [1, H, W, padded], alphas [1, H, W, 1], last_ids [1, H, W] (means2d [1, M, 2],
    conics [1, M, 3], colors [M, padded], opacities [M]; M >= every id in flatten_ids)."""
    return _ext().rasterize_to_pixels_3dgs_fwd(
        means2d, conics, colors[None], opacities[None], backgrounds[None], None, view.width,
        view.height, TILE_SIZE, offsets, flatten_ids,
    )  # fmt: skip


def image_outputs(image, alphas, channels: int, depth: bool) -> tuple[torch.Tensor, ...]:
    """rgb [3, H, W], alpha [1, H, W] and extra [channels - 3, H, W] (the expected depth
    normalised by alpha) from the rasterizer's [1, H, W, padded] image."""
    H, W = alphas.shape[1:3]
    rgb = image[0, :, :, :3].permute(2, 0, 1).contiguous()
    extra = image[0, :, :, 3:channels].permute(2, 0, 1).contiguous()
    if depth:  # expected depth: alpha-weighted depth sum over the accumulated alpha
        extra[-1].div_(alphas[0, :, :, 0].clamp_min(1e-10))
    return rgb, alphas[0].view(1, H, W), extra


def image_grads(v_rgb, v_alpha, v_extra, alphas, extra, channels: int, padded: int,
                depth: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The rasterizer's output gradients [1, H, W, padded] and [1, H, W, 1] from those of
    ``image_outputs`` (None: no gradient), the depth normalisation's share included."""
    H, W = alphas.shape[1:3]
    v_alphas = alphas.new_zeros(alphas.shape) if v_alpha is None else v_alpha.reshape(
        alphas.shape).contiguous()  # fmt: skip
    if padded == 3 and v_rgb is not None:  # plain RGB: one transposing copy
        return v_rgb.permute(1, 2, 0).contiguous()[None], v_alphas
    v_image = alphas.new_zeros(1, H, W, padded)
    if v_rgb is not None:
        v_image[0, :, :, :3] = v_rgb.permute(1, 2, 0)
    if v_extra is not None:
        if depth:
            alpha_c = alphas[0, :, :, 0].clamp_min(1e-10)
            v_depth = v_extra[-1] / alpha_c
            v_alphas[0, :, :, 0] -= (v_depth * extra[-1]).masked_fill_(
                alphas[0, :, :, 0] < 1e-10, 0.0)  # fmt: skip
            v_extra = torch.cat([v_extra[:-1], v_depth[None]])
        v_image[0, :, :, 3:channels] = v_extra.permute(1, 2, 0)
    return v_image, v_alphas


def rasterize_backward(means2d, conics, colors, opacities, backgrounds, offsets, flatten_ids,
                       alphas, last_ids, v_image, v_alphas, view: SplatView):  # fmt: skip
    """(v_means2d_abs, v_means2d, v_conics, v_colors [1, M, padded], v_opacities [1, M])."""
    return _ext().rasterize_to_pixels_3dgs_bwd(
        means2d, conics, colors[None], opacities[None], backgrounds[None], None, view.width,
        view.height, TILE_SIZE, offsets, flatten_ids, alphas, last_ids, v_image, v_alphas,
        view.absgrad,
    )  # fmt: skip


def project_backward(means, quats, proj: Projected, v_means2d, v_conics, v_colors,
                     v_opacities, view: SplatView) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Gradients of (means, quats, log_scales, opacity_logits, coeffs [N, K, 3], colors
    [N, padded]) from the rasterizer's (v_means2d [1, N, 2], v_conics [1, N, 3], v_colors
    [N, padded], v_opacities [N])."""
    C = _ext()
    v_sh = torch.where(proj.sh_rgb >= 0.0, v_colors[:, :3], 0.0)  # the clamp's derivative
    v_coeffs, v_dirs = C.spherical_harmonics_bwd(
        proj.coeffs.shape[1], view.sh_degree, proj.dirs, proj.coeffs, proj.visible, v_sh, True
    )
    if view.depth:
        v_depths = v_colors[None, :, proj.channels - 1].contiguous()  # [1, N]
    else:
        v_depths = v_colors.new_zeros(1, v_colors.shape[0])
    v_means, _, v_quats, v_scales, _ = C.projection_ewa_3dgs_fused_bwd(
        means, None, quats, proj.scales, view.viewmat[None], view.K[None], view.width,
        view.height, EPS2D, C.CameraModelType.PINHOLE, proj.radii, proj.conics, None,
        v_means2d, v_depths, v_conics, None, False,
    )  # fmt: skip
    v_means = v_means.add_(v_dirs)
    v_log_scales = v_scales.mul_(proj.scales)  # d exp(s) m / ds = exp(s) m
    if proj.gain is None:
        v_logits = torch.ops.aten.sigmoid_backward(v_opacities, proj.opacities)
    else:  # opacity = sigmoid(logit) * gain
        v_logits = torch.ops.aten.sigmoid_backward(v_opacities * proj.gain, proj.sigmoid)
    return v_means, v_quats, v_log_scales, v_logits, v_coeffs


def splat_backward(means, quats, proj: Projected, offsets, flatten_ids, alphas, last_ids,
                   v_image, v_alphas, view: SplatView):  # fmt: skip
    """The rasterizer's backward, then the projection's: ((v_means, v_quats, v_log_scales,
    v_logits, v_coeffs [N, K, 3]), v_means2d [1, N, 2], v_means2d_abs, v_colors [N, padded])
    from the gradients of the rasterizer's outputs (``image_grads``)."""
    v_abs, v_means2d, v_conics, v_colors, v_opacities = rasterize_backward(
        proj.means2d, proj.conics, proj.colors, proj.opacities, proj.backgrounds, offsets,
        flatten_ids, alphas, last_ids, v_image, v_alphas, view,
    )  # fmt: skip
    v_params = project_backward(
        means, quats, proj, v_means2d, v_conics, v_colors[0], v_opacities[0], view
    )
    return v_params, v_means2d, v_abs, v_colors[0]


class _FusedSplat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, log_scales, opacity_logits, sh0, shN, features,
                view: SplatView, means2d_out: list, opacity_gain):  # fmt: skip
        proj = project(means, quats, log_scales, opacity_logits, sh0, shN, features, view,
                       opacity_gain)  # fmt: skip
        offsets, flatten_ids = intersect(proj, view)
        image, alphas, last_ids = rasterize(proj.means2d, proj.conics, proj.colors,
                                            proj.opacities, proj.backgrounds, offsets,
                                            flatten_ids, view)  # fmt: skip
        rgb, alpha, extra = image_outputs(image, alphas, proj.channels, view.depth)
        radii = proj.radii[0].amax(dim=-1)  # [N]
        # gsplat's projected means, handed out (through ``means2d_out``) as a tensor whose
        # .grad the backward fills, as the original 3DGS code's screen-space points.
        means2d = proj.means2d.detach()
        means2d_out.append(means2d)
        ctx.mark_non_differentiable(radii)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(means, quats, offsets, flatten_ids, alphas, last_ids, extra)
        ctx.proj, ctx.view, ctx.means2d = proj, view, means2d
        ctx.n_feat = 0 if features is None else features.shape[-1]
        return rgb, alpha, extra, radii

    @staticmethod
    def backward(ctx, v_rgb, v_alpha, v_extra, _v_radii):
        means, quats, offsets, flatten_ids, alphas, last_ids, extra = ctx.saved_tensors
        proj, view, n_feat = ctx.proj, ctx.view, ctx.n_feat
        v_image, v_alphas = image_grads(
            v_rgb, v_alpha, v_extra, alphas, extra, proj.channels, proj.colors.shape[-1],
            view.depth,
        )  # fmt: skip
        v_params, v_means2d, v_abs, v_colors = splat_backward(
            means, quats, proj, offsets, flatten_ids, alphas, last_ids, v_image, v_alphas, view
        )
        v_means, v_quats, v_log_scales, v_logits, v_coeffs = v_params
        ctx.means2d.grad = v_means2d
        if view.absgrad:
            ctx.means2d.absgrad = v_abs
        v_features = None
        if n_feat and ctx.needs_input_grad[6]:
            v_features = v_colors[:, 3 : 3 + n_feat]
        return (v_means, v_quats, v_log_scales, v_logits, v_coeffs[:, :1], v_coeffs[:, 1:],
                v_features, None, None, None)  # fmt: skip


def render_fused(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] not necessarily normalised
    log_scales: torch.Tensor,  # [N, 3] raw (exp gives the scales)
    opacity_logits: torch.Tensor,  # [N] raw (sigmoid gives the opacities)
    sh0: torch.Tensor,  # [N, 1, 3]
    shN: torch.Tensor,  # [N, K - 1, 3]
    view: SplatView,
    features: torch.Tensor | None = None,  # [N, C] extra channels
    opacity_gain: torch.Tensor | None = None,  # [N] DropGaussian gains (constant)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns rgb [3, H, W] on the background, alpha [1, H, W], extra [C (+1 depth), H, W]
    (features, then the expected depth when ``view.depth``), means2d [1, N, 2] (with
    gradients enabled: a leaf whose ``.grad`` gets the projected means' gradient) and the
    screen radii [N] (0: culled). gsplat must be installed and the tensors on CUDA."""
    out: list[torch.Tensor] = []
    rgb, alpha, extra, radii = _FusedSplat.apply(
        means, quats, log_scales, opacity_logits, sh0, shN, features, view, out, opacity_gain
    )
    means2d = out[0]
    if rgb.requires_grad:  # a graph was recorded: the backward will fill means2d.grad
        means2d.requires_grad_()
    return rgb, alpha, extra, means2d, radii
