"""Pure-PyTorch Gaussian rasterizer: the CPU backend and the oracle for the CUDA one.

Same semantics as gsplat 1.5's classic pinhole rasterizer (EWA projection with the
Jacobian clamped at 1.3 x the field of view, 0.3 px^2 screen-space blur, opacity-aware
bounding boxes, alpha = min(0.999, o * exp(-sigma)), Gaussians with alpha < 1/255 skipped,
a pixel stops once its transmittance would fall to 1e-4), so the two backends can be held
to each other in tests, outputs and gradients.

How it stays fast without per-pixel Python loops: instead of tiles, it lists every
(Gaussian, pixel) pair inside each Gaussian's bounding box, drops pairs whose alpha is below
1/255 (work is proportional to the pixels a Gaussian really touches), sorts the pairs by
(pixel, depth), and composites all pixels at once with a segmented cumulative sum of
log(1 - alpha): the transmittance in front of pair i of pixel p is
``T_i = exp(sum_{j < i in p} log(1 - alpha_j))``. Autograd differentiates that exactly.
Gaussians go through in depth-sorted chunks, so memory stays bounded and pixels that are
already opaque stop costing work (see ``rasterize_pixels``).
"""

from __future__ import annotations

import math

import torch

from utils.graphics_utils import covariance_from_scale_rot

ALPHA_THRESHOLD = 1.0 / 255.0
T_THRESHOLD = 1e-4
MAX_PAIRS_PER_CHUNK = 1000000


def project_gaussians(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] wxyz, unnormalised
    scales: torch.Tensor,  # [N, 3] activated
    opacities: torch.Tensor,  # [N] activated
    viewmat: torch.Tensor,  # [4, 4] world-to-camera
    K: torch.Tensor,  # [3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
    covars: torch.Tensor | None = None,  # [N, 3, 3] overrides quats/scales
) -> dict[str, torch.Tensor]:
    """EWA-project Gaussians to the image plane.

    Returns a dict with ``means2d`` [N, 2] (pixels), ``conics`` [N, 3] (a, b, c of the
    inverse 2D covariance), ``depths`` [N] (camera z), ``opacities`` [N] (with the
    anti-aliasing compensation when asked), ``radii`` [N, 2] int32 (0 = culled).
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    mean_c = means @ R.T + t
    x, y, z = mean_c.unbind(-1)
    if covars is None:
        covars = covariance_from_scale_rot(scales, quats)
    cov_c = R @ covars @ R.T

    in_depth = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(in_depth, z, torch.ones_like(z))
    # Clamp the Jacobian's lever arm as gsplat/3DGS do (1.3 x the half field of view).
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    tx = zs * torch.clamp(x / zs, -(cx / fx + 0.3 * tan_fovx), (width - cx) / fx + 0.3 * tan_fovx)
    ty = zs * torch.clamp(y / zs, -(cy / fy + 0.3 * tan_fovy), (height - cy) / fy + 0.3 * tan_fovy)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], dim=-1
    ).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    if antialiased:
        opacities = opacities * torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    with torch.no_grad():
        valid = valid & (opacities >= ALPHA_THRESHOLD)
        # Opacity-aware extent: beyond it alpha < 1/255 (capped at 3.33 sigma).
        ratio = torch.clamp(opacities / ALPHA_THRESHOLD, min=1.0)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(ratio)), max=3.33)
        rx = torch.ceil(extend * torch.sqrt(torch.clamp(a, min=0.0)))
        ry = torch.ceil(extend * torch.sqrt(torch.clamp(c, min=0.0)))
        valid = valid & ((rx > 0) | (ry > 0))
        mx, my = means2d[:, 0], means2d[:, 1]
        valid = valid & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1)
        radii = torch.where(valid[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return {
        "means2d": means2d,
        "conics": conics,
        "depths": z,
        "opacities": opacities,
        "radii": radii,
    }


def _pixel_pairs(
    means2d: torch.Tensor,  # [N, 2] (detached)
    radii: torch.Tensor,  # [N, 2]
    ids: torch.Tensor,  # [M] Gaussians to expand
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(position in ``ids``, pixel index) of every pixel centre inside each bounding box.

    Pixel (j, i) has its centre at (j + 0.5, i + 0.5); pairs come grouped by Gaussian.
    """
    xa, xb, ya, yb = _bbox(means2d[ids], radii[ids], width, height)
    w = torch.clamp(xb - xa + 1, min=0)
    counts = w * torch.clamp(yb - ya + 1, min=0)
    total = int(counts.sum())
    local_id = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), counts)
    offset = torch.arange(total, device=ids.device) - (torch.cumsum(counts, 0) - counts)[local_id]
    wl = w[local_id]
    pix = (ya[local_id] + offset // wl) * width + xa[local_id] + offset % wl
    return local_id, pix


def _bbox(means2d, radii, width, height):
    """Inclusive pixel ranges [xa, xb] x [ya, yb] whose centres lie in the boxes."""
    r = radii.to(means2d.dtype)
    xa = torch.clamp(torch.ceil(means2d[:, 0] - r[:, 0] - 0.5), min=0).long()
    xb = torch.clamp(torch.floor(means2d[:, 0] + r[:, 0] - 0.5), max=width - 1).long()
    ya = torch.clamp(torch.ceil(means2d[:, 1] - r[:, 1] - 0.5), min=0).long()
    yb = torch.clamp(torch.floor(means2d[:, 1] + r[:, 1] - 0.5), max=height - 1).long()
    return xa, xb, ya, yb


def _gauss_power(d: torch.Tensor, conic: torch.Tensor) -> torch.Tensor:
    """sigma = 0.5 (a dx^2 + c dy^2) + b dx dy for offsets d [P, 2] and conics [P, 3]."""
    dx, dy = d[:, 0], d[:, 1]
    return 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy


def _exclusive_segment_cumsum(x: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Sum of x over the earlier entries of the same pixel run (pix sorted)."""
    incl = torch.cumsum(x, 0)
    first = torch.ones_like(pix, dtype=torch.bool)
    first[1:] = pix[1:] != pix[:-1]
    idx = torch.arange(len(pix), device=pix.device)
    run_start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0)[0]
    return incl - x - (incl - x)[run_start]


def rasterize_pixels(
    means2d: torch.Tensor,  # [N, 2]
    conics: torch.Tensor,  # [N, 3]
    colors: torch.Tensor,  # [N, D]
    opacities: torch.Tensor,  # [N]
    depths: torch.Tensor,  # [N]
    radii: torch.Tensor,  # [N, 2] int, 0 = culled
    width: int,
    height: int,
    background: torch.Tensor | None = None,  # [D]
    max_pairs: int = MAX_PAIRS_PER_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing of every pixel.

    Gaussians are processed in depth-sorted chunks. Each chunk first finds, without
    gradients, the (Gaussian, pixel) pairs that really contribute (alpha >= 1/255, pixel
    not finished); only those enter the differentiable pass. Pixels whose transmittance has
    run out are finished, and Gaussians whose box holds no unfinished pixel are skipped
    (summed-area table of unfinished pixels), so deep stacks of Gaussians cost little more
    than their visible front layers.

    Returns:
        colors [H, W, D] (background blended in) and alphas [H, W, 1].
    """
    D = colors.shape[-1]
    device = means2d.device
    n_pix = width * height
    vis = torch.nonzero((radii > 0).any(dim=-1), as_tuple=False).squeeze(-1)
    vis = vis[torch.argsort(depths.detach()[vis], stable=True)]  # front to back
    m2d = means2d.detach()
    out = torch.zeros(n_pix, D, dtype=colors.dtype, device=device)
    log_T = torch.zeros(n_pix, dtype=torch.float64, device=device)
    done = torch.zeros(n_pix, dtype=torch.bool, device=device)
    log_t_min = math.log(T_THRESHOLD)

    # Chunk boundaries so that no chunk lists more than ~max_pairs bounding-box pixels.
    r = radii[vis].double()
    area = (2 * r[:, 0] + 1) * (2 * r[:, 1] + 1)
    cum = torch.cumsum(area, 0)
    n_chunks = max(1, math.ceil(float(cum[-1]) / max_pairs)) if len(vis) else 0
    edges = torch.searchsorted(cum, torch.arange(1, n_chunks, device=device) * max_pairs)
    bounds = [0, *edges.tolist(), len(vis)]

    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        ids = vis[c0:c1]
        if ids.numel() == 0:
            continue
        with torch.no_grad():
            if c0 > 0:  # skip Gaussians whose box only covers finished pixels
                open_px = (~done).view(height, width).to(torch.int32)
                sat = torch.nn.functional.pad(open_px.cumsum(0).cumsum(1), (1, 0, 1, 0))
                xa, xb, ya, yb = _bbox(m2d[ids], radii[ids], width, height)
                xa, ya = xa.clamp(max=width), ya.clamp(max=height)
                xb1, yb1 = (xb + 1).clamp(min=0), (yb + 1).clamp(min=0)
                n_open = sat[yb1, xb1] - sat[ya, xb1] - sat[yb1, xa] + sat[ya, xa]
                ids = ids[n_open > 0]
                if ids.numel() == 0:
                    continue
            local, pix = _pixel_pairs(m2d, radii, ids, width, height)
            g = ids[local]
            centres = torch.stack([pix % width, pix // width], -1).to(m2d.dtype) + 0.5
            sig = _gauss_power(centres - m2d[g], conics[g].detach())
            alpha = torch.clamp(opacities[g].detach() * torch.exp(-sig), max=0.999)
            keep = (sig >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done[pix]
            local, pix, g, alpha = local[keep], pix[keep], g[keep], alpha[keep]
            order = torch.argsort(pix * len(ids) + local)
            pix, g, alpha = pix[order], g[order], alpha[order]
            l1m = torch.log1p(-alpha).double()
            t_after = log_T.detach()[pix] + _exclusive_segment_cumsum(l1m, pix) + l1m
            included = t_after > log_t_min
            done[pix[~included]] = True
            pix, g = pix[included], g[included]
        if pix.numel() == 0:
            continue
        # Differentiable pass over the contributing pairs only.
        centres = torch.stack([pix % width, pix // width], -1).to(means2d.dtype) + 0.5
        sigma = _gauss_power(centres - means2d[g], conics[g])
        alpha = torch.clamp(opacities[g] * torch.exp(-sigma), max=0.999)
        l1m = torch.log1p(-alpha).double()
        T = torch.exp(log_T[pix] + _exclusive_segment_cumsum(l1m, pix)).to(alpha.dtype)
        out = out.index_add(0, pix, (alpha * T)[:, None] * colors[g])
        log_T = log_T.index_add(0, pix, l1m)
    T_final = torch.exp(log_T).to(colors.dtype)
    if background is not None:
        out = out + T_final[:, None] * background[None, :]
    return out.reshape(height, width, D), (1.0 - T_final).reshape(height, width, 1)


def rasterize(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, D] post-activation colours / features
    viewmat: torch.Tensor,  # [4, 4]
    K: torch.Tensor,  # [3, 3]
    width: int,
    height: int,
    background: torch.Tensor | None = None,  # [D]
    render_depth: bool = True,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    antialiased: bool = False,
    covars: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Project and rasterize in one call (the gsplat ``rasterization`` subset we use).

    Returns colors [H, W, D (+1 expected depth when ``render_depth``)], alphas [H, W, 1] and
    ``meta`` with ``means2d`` [N, 2], ``radii`` [N, 2], ``depths`` [N].
    """
    proj = project_gaussians(
        means, quats, scales, opacities, viewmat, K, width, height,
        near_plane=near_plane, eps2d=eps2d, antialiased=antialiased, covars=covars,
    )  # fmt: skip
    feats = colors
    if render_depth:
        feats = torch.cat([colors, proj["depths"][:, None]], dim=-1)
        if background is not None:
            background = torch.cat([background, background.new_zeros(1)])
    img, alpha = rasterize_pixels(
        proj["means2d"], proj["conics"], feats, proj["opacities"], proj["depths"],
        proj["radii"], width, height, background,
    )  # fmt: skip
    if render_depth:
        img = torch.cat([img[..., :-1], img[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    return img, alpha, proj
