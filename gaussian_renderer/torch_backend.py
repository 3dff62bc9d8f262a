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
    drop out of later chunks (the CUDA kernels' early exit, per tile).

    Returns:
        colors [H, W, D] (background blended in) and alphas [H, W, 1].
    """
    D = colors.shape[-1]
    device, dtype = means2d.device, means2d.dtype
    ntx, nty = -(-width // tile), -(-height // tile)
    P = tile * tile
    out = torch.zeros(ntx * nty, P, D, dtype=dtype, device=device)
    T_final = torch.ones(ntx * nty, P, dtype=dtype, device=device)
    tiles, starts, lengths, gid = _tile_lists(
        means2d.detach(), radii, depths.detach(), width, height, tile
    )
    if len(tiles):
        # Pixel centres of every listed tile: [T, P, 2].
        local = torch.arange(P, device=device)
        ly, lx = local // tile, local % tile
        ox, oy = (tiles % ntx) * tile, (tiles // ntx) * tile
        px = (ox[:, None] + lx[None]).to(dtype) + 0.5
        py = (oy[:, None] + ly[None]).to(dtype) + 0.5
        T_run = torch.ones(len(tiles), P, dtype=dtype, device=device)
        done = torch.zeros(len(tiles), P, dtype=torch.bool, device=device)
        contrib_rows, contribs = [], []  # summed once at the end (one scatter, not one a chunk)
        # One packed row per Gaussian: a single gather (and scatter in backward) per batch.
        packed = torch.cat(
            [means2d, 0.5 * conics[:, :1], conics[:, 1:2], 0.5 * conics[:, 2:], opacities[:, None],
             colors], dim=1,
        )  # fmt: skip
        rows_per_batch = max(1, max_elems // (P * chunk))
        for k0 in range(0, int(lengths[0]), chunk):
            live = torch.nonzero((lengths > k0) & ~done.all(dim=1), as_tuple=False).squeeze(-1)
            for r0 in range(0, len(live), rows_per_batch):
                rows = live[r0 : r0 + rows_per_batch]
                R = len(rows)
                slot = k0 + torch.arange(chunk, device=device)
                used = slot[None] < lengths.index_select(0, rows)[:, None]  # [R, C]
                idx = starts.index_select(0, rows)[:, None] + slot[None]
                g = gid.index_select(0, torch.where(used, idx, 0).reshape(-1))
                attr = packed.index_select(0, g).reshape(R, chunk, -1)  # [R, C, F]
                # [R, P, C] offsets from each pixel centre to each listed Gaussian.
                dx = px.index_select(0, rows)[:, :, None] - attr[:, None, :, 0]
                dy = py.index_select(0, rows)[:, :, None] - attr[:, None, :, 1]
                sigma = (attr[:, None, :, 2] * dx + attr[:, None, :, 3] * dy) * dx + attr[
                    :, None, :, 4
                ] * (dy * dy)
                alpha = torch.clamp(attr[:, None, :, 5] * torch.exp(-sigma), max=0.999)
                d_rows = done.index_select(0, rows)
                with torch.no_grad():
                    valid = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
                    valid &= used[:, None, :] & ~d_rows[:, :, None]
                a = torch.where(valid, alpha, 0.0)
                one_minus = 1.0 - a  # >= 0.001, so the division below is safe
                T_in = T_run.index_select(0, rows)
                T_incl = torch.cumprod(one_minus, dim=-1) * T_in[:, :, None]
                with torch.no_grad():
                    included = T_incl > T_THRESHOLD
                    stopped = (valid & ~included).any(dim=-1)
                w = torch.where(included, a * (T_incl / one_minus), 0.0)
                contrib_rows.append(rows)
                contribs.append(torch.bmm(w, attr[:, :, 6:]))
                kept = torch.where(included, one_minus, 1.0)
                T_run = T_run.index_copy(0, rows, T_in * torch.prod(kept, dim=-1))
                done = done.index_copy(0, rows, d_rows | stopped)
        acc = torch.zeros(len(tiles), P, D, dtype=dtype, device=device)
        acc = acc.index_add(0, torch.cat(contrib_rows), torch.cat(contribs))
        out = out.index_copy(0, tiles, acc)
        T_final = T_final.index_copy(0, tiles, T_run)
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
