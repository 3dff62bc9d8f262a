"""Pure-PyTorch Gaussian rasterizer: the CPU backend and the oracle for the CUDA one.

Same semantics as gsplat 1.5's classic pinhole rasterizer (EWA projection with the
Jacobian clamped at 1.3 x the field of view, 0.3 px^2 screen-space blur, opacity-aware
bounding boxes, alpha = min(0.999, o * exp(-sigma)), Gaussians with alpha < 1/255 skipped,
a pixel stops once its transmittance would fall to 1e-4), so the two backends can be held
to each other in tests, outputs and gradients.

How it stays fast without per-pixel Python loops: like the CUDA rasterizers it bins
Gaussians into screen tiles and sorts each tile's list by depth, but then evaluates many
tiles at once as dense tensors (tiles x pixels x list entries): transmittance is a
cumulative product along the list and colour accumulation a batched matrix product, both
differentiated exactly by autograd (see ``rasterize_pixels``).
"""

from __future__ import annotations

import torch

from utils.graphics_utils import covariance_from_scale_rot

ALPHA_THRESHOLD = 1.0 / 255.0
T_THRESHOLD = 1e-4
MAX_ELEMS_PER_BATCH = 4_000_000


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


def _bbox(means2d, radii, width, height):
    """Inclusive pixel ranges [xa, xb] x [ya, yb] whose centres lie in the boxes."""
    r = radii.to(means2d.dtype)
    xa = torch.clamp(torch.ceil(means2d[:, 0] - r[:, 0] - 0.5), min=0).long()
    xb = torch.clamp(torch.floor(means2d[:, 0] + r[:, 0] - 0.5), max=width - 1).long()
    ya = torch.clamp(torch.ceil(means2d[:, 1] - r[:, 1] - 0.5), min=0).long()
    yb = torch.clamp(torch.floor(means2d[:, 1] + r[:, 1] - 0.5), max=height - 1).long()
    return xa, xb, ya, yb


def _tile_lists(means2d, radii, depths, width, height, tile):
    """Depth-sorted Gaussian list of every tile touched by a bounding box.

    Returns (tile index [T], list start [T], list length [T], Gaussian ids [M]) with tiles
    ordered by decreasing list length and each list front to back.
    """
    vis = torch.nonzero((radii > 0).any(dim=-1), as_tuple=False).squeeze(-1)
    xa, xb, ya, yb = _bbox(means2d[vis], radii[vis], width, height)
    tx0, tx1, ty0, ty1 = xa // tile, xb // tile, ya // tile, yb // tile
    ntx = -(-width // tile)
    w = torch.clamp(tx1 - tx0 + 1, min=0)
    counts = w * torch.clamp(ty1 - ty0 + 1, min=0)
    g = torch.repeat_interleave(torch.arange(len(vis), device=vis.device), counts)
    off = torch.arange(len(g), device=vis.device) - (torch.cumsum(counts, 0) - counts)[g]
    tile_of = (ty0[g] + off // w[g]) * ntx + tx0[g] + off % w[g]
    rank = torch.empty_like(vis)
    rank[torch.argsort(depths[vis], stable=True)] = torch.arange(len(vis), device=vis.device)
    order = torch.argsort(tile_of * max(len(vis), 1) + rank[g])
    tile_of, gid = tile_of[order], vis[g[order]]
    tiles, lengths = torch.unique_consecutive(tile_of, return_counts=True)
    starts = torch.cumsum(lengths, 0) - lengths
    by_len = torch.argsort(lengths, descending=True, stable=True)
    return tiles[by_len], starts[by_len], lengths[by_len], gid


def _chunk_alpha(attr, px, py):
    """Offsets, Gaussian power and raw alpha of [R, P] pixels against [R, C] listed Gaussians.

    ``attr`` rows are (mean x, mean y, a/2, b, c/2, opacity, colour...): the conic halves are
    pre-scaled so that sigma = (a/2 dx + b dy) dx + c/2 dy^2.
    """
    dx = px[:, :, None] - attr[:, None, :, 0]  # [R, P, C]
    dy = py[:, :, None] - attr[:, None, :, 1]
    sigma = (attr[:, None, :, 2] * dx + attr[:, None, :, 3] * dy) * dx + attr[:, None, :, 4] * (
        dy * dy
    )
    e = torch.exp(-sigma)
    return dx, dy, sigma, e, attr[:, None, :, 5] * e


class _TileComposite(torch.autograd.Function):
    """Composite every listed tile, front to back, ``chunk`` list entries at a time.

    Forward keeps only the tile rows, list offset and incoming transmittance of each chunk;
    backward walks the chunks in reverse, recomputes alphas and applies the closed-form
    gradient of alpha compositing (the one the CUDA kernels use): with w_k = a_k T_k,
    dL/da_k = T_k v_k - (sum_{j>k} w_j v_j + T_out dL/dT_out) / (1 - a_k), v_k = c_k . dL/dC.
    """

    @staticmethod
    def forward(ctx, packed, starts, lengths, gid, px, py, chunk, max_elems):
        R_all, P = px.shape
        D = packed.shape[1] - 6
        dev, dt = packed.device, packed.dtype
        T_run = torch.ones(R_all, P, dtype=dt, device=dev)
        done = torch.zeros(R_all, P, dtype=torch.bool, device=dev)
        acc = torch.zeros(R_all, P, D, dtype=dt, device=dev)
        records = []
        rows_per_batch = max(1, max_elems // (P * chunk))
        slot0 = torch.arange(chunk, device=dev)
        for k0 in range(0, int(lengths[0]) if R_all else 0, chunk):
            live = torch.nonzero((lengths > k0) & ~done.all(dim=1), as_tuple=False).squeeze(-1)
            for r0 in range(0, len(live), rows_per_batch):
                rows = live[r0 : r0 + rows_per_batch]
                attr, used = _gather_chunk(packed, starts, lengths, gid, rows, k0, slot0)
                T_in = T_run.index_select(0, rows)
                d_rows = done.index_select(0, rows)
                pxr, pyr = px.index_select(0, rows), py.index_select(0, rows)
                a, inc, stopped, cpe, om = _alphas(attr, used, pxr, pyr, d_rows, T_in)
                w = a * (T_in[:, :, None] * cpe / om)
                acc.index_add_(0, rows, torch.bmm(w, attr[:, :, 6:]))
                T_run.index_copy_(0, rows, T_in * cpe[:, :, -1])
                done.index_copy_(0, rows, d_rows | stopped)
                records.append((rows, k0, T_in, d_rows))
        ctx.records = records
        ctx.chunk = chunk
        ctx.save_for_backward(packed, starts, lengths, gid, px, py)
        ctx.mark_non_differentiable(done)
        return acc, T_run, done

    @staticmethod
    def backward(ctx, g_acc, g_T, _g_done):
        packed, starts, lengths, gid, px, py = ctx.saved_tensors
        d_packed = torch.zeros_like(packed)
        gT = g_T.clone() if g_T is not None else torch.zeros(px.shape, dtype=packed.dtype,
                                                               device=packed.device)  # fmt: skip
        if g_acc is None:
            g_acc = torch.zeros(*px.shape, packed.shape[1] - 6, dtype=packed.dtype,
                                device=packed.device)  # fmt: skip
        slot0 = torch.arange(ctx.chunk, device=packed.device)
        for rows, k0, T_in, d_rows in reversed(ctx.records):
            attr, used = _gather_chunk(packed, starts, lengths, gid, rows, k0, slot0)
            pxr, pyr = px.index_select(0, rows), py.index_select(0, rows)
            dx, dy, _sigma, e, alpha_raw = _chunk_alpha(attr, pxr, pyr)
            a, inc, _stopped, cpe, om = _alphas(attr, used, pxr, pyr, d_rows, T_in)
            T_excl = T_in[:, :, None] * cpe / om
            w = a * T_excl
            T_out = T_in * cpe[:, :, -1]
            g_c, g_t = g_acc.index_select(0, rows), gT.index_select(0, rows)
            col = attr[:, :, 6:]
            d_col = torch.bmm(w.transpose(1, 2), g_c)  # [R, C, D]
            v = torch.bmm(g_c, col.transpose(1, 2))  # [R, P, C]
            wv = w * v
            cs = torch.cumsum(wv, dim=-1)
            tail = (cs[:, :, -1:] - cs) + (g_t * T_out)[:, :, None]  # sum_{j>k} + T_out term
            d_a = T_excl * v - tail / om
            gT.index_copy_(0, rows, (cs[:, :, -1] + g_t * T_out) / T_in)
            # Through the clamp at 0.999 (no gradient where it clipped) and exp.
            d_raw = torch.where(inc & (alpha_raw <= 0.999), d_a, 0.0)
            d_op = (d_raw * e).sum(1)
            d_sigma = -d_raw * alpha_raw
            A, B, Cc = attr[:, None, :, 2], attr[:, None, :, 3], attr[:, None, :, 4]
            d_A = (d_sigma * dx * dx).sum(1)
            d_B = (d_sigma * dx * dy).sum(1)
            d_C = (d_sigma * dy * dy).sum(1)
            d_mx = -(d_sigma * (2 * A * dx + B * dy)).sum(1)
            d_my = -(d_sigma * (B * dx + 2 * Cc * dy)).sum(1)
            d_attr = torch.cat(
                [torch.stack([d_mx, d_my, d_A, d_B, d_C, d_op], dim=-1), d_col], dim=-1
            )
            d_attr = torch.where(used[:, :, None], d_attr, 0.0)
            idx = torch.where(used, starts.index_select(0, rows)[:, None] + k0 + slot0[None], 0)
            g = gid.index_select(0, idx.reshape(-1))
            d_packed.index_add_(0, g, d_attr.reshape(-1, d_attr.shape[-1]))
        return d_packed, None, None, None, None, None, None, None


def _gather_chunk(packed, starts, lengths, gid, rows, k0, slot0):
    """Attributes [R, C, F] of list entries k0..k0+C-1 of the given tiles, and which exist."""
    slot = k0 + slot0
    used = slot[None] < lengths.index_select(0, rows)[:, None]  # [R, C]
    idx = torch.where(used, starts.index_select(0, rows)[:, None] + slot[None], 0)
    attr = packed.index_select(0, gid.index_select(0, idx.reshape(-1)))
    return attr.reshape(len(rows), len(slot0), -1), used


def _alphas(attr, used, px, py, done, T_in):
    """Effective alphas of one chunk and what they do to transmittance.

    Returns a [R, P, C] (0 where a pair does not contribute), the contributing mask, the
    pixels that stop in this chunk, the running product of (1 - a) and (1 - a) itself.
    A pair contributes when alpha >= 1/255, sigma >= 0, its pixel is still running and the
    transmittance after it stays above 1e-4; the first pair that would cross stops the pixel.
    """
    _, _, sigma, _, alpha_raw = _chunk_alpha(attr, px, py)
    alpha = torch.clamp(alpha_raw, max=0.999)
    valid = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & used[:, None, :] & ~done[:, :, None]
    a = torch.where(valid, alpha, 0.0)
    T_incl = torch.cumprod(1.0 - a, dim=-1) * T_in[:, :, None]
    inc = valid & (T_incl > T_THRESHOLD)  # a prefix of the valid pairs, per pixel
    stopped = (valid & ~inc).any(dim=-1)
    a = torch.where(inc, a, 0.0)
    om = 1.0 - a  # >= 0.001: divisions by it are safe
    return a, inc, stopped, torch.cumprod(om, dim=-1), om


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
    tile: int = 4,
    chunk: int = 16,
    max_elems: int = MAX_ELEMS_PER_BATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing of every pixel, a batch of tiles at a time.

    Each tile gets the depth-sorted list of Gaussians whose box touches it. Lists are walked
    ``chunk`` entries at a time for all tiles at once as dense [tiles, pixels, chunk]
    tensors: alphas, transmittance by a cumulative product along the list, colours by a
    batched matrix product. Tiles whose list is exhausted or whose pixels are all finished
    drop out of later chunks (the CUDA kernels' early exit, per tile). The backward pass is
    written out (``_TileComposite``) rather than traced, which keeps it lean.

    Returns:
        colors [H, W, D] (background blended in) and alphas [H, W, 1].
    """
    D = colors.shape[-1]
    device, dtype = means2d.device, means2d.dtype
    ntx, nty = -(-width // tile), -(-height // tile)
    P = tile * tile
    tiles, starts, lengths, gid = _tile_lists(
        means2d.detach(), radii, depths.detach(), width, height, tile
    )
    local = torch.arange(P, device=device)
    ox, oy = (tiles % ntx) * tile, (tiles // ntx) * tile
    px = (ox[:, None] + (local % tile)[None]).to(dtype) + 0.5
    py = (oy[:, None] + (local // tile)[None]).to(dtype) + 0.5
    # One packed row per Gaussian: (mean, a/2, b, c/2, opacity, colour).
    packed = torch.cat(
        [means2d, 0.5 * conics[:, :1], conics[:, 1:2], 0.5 * conics[:, 2:], opacities[:, None],
         colors], dim=1,
    )  # fmt: skip
    acc, T_run, _ = _TileComposite.apply(packed, starts, lengths, gid, px, py, chunk, max_elems)
    out = torch.zeros(ntx * nty, P, D, dtype=dtype, device=device).index_copy(0, tiles, acc)
    T_final = torch.ones(ntx * nty, P, dtype=dtype, device=device).index_copy(0, tiles, T_run)
    if background is not None:
        out = out + T_final[:, :, None] * background
    # [tiles_y, tiles_x, ty, tx, D] -> image, cropped to the real size.
    img = (
        out.reshape(nty, ntx, tile, tile, D)
        .permute(0, 2, 1, 3, 4)
        .reshape(nty * tile, ntx * tile, D)[:height, :width]
    )
    alpha_img = (
        (1.0 - T_final)
        .reshape(nty, ntx, tile, tile)
        .permute(0, 2, 1, 3)
        .reshape(nty * tile, ntx * tile, 1)[:height, :width]
    )
    return img, alpha_img


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
