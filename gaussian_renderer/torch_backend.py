"""Pure-PyTorch Gaussian rasterizer: the CPU backend and the oracle for the CUDA one.

Same semantics as gsplat 1.5's classic pinhole rasterizer (EWA projection with the
Jacobian clamped at 1.3 x the field of view, 0.3 px^2 screen-space blur, opacity-aware
bounding boxes, alpha = min(0.999, o * exp(-sigma)), Gaussians with alpha < 1/255 skipped,
a pixel stops once its transmittance would fall to 1e-4), so the two backends can be held
to each other in tests, outputs and gradients.

How it stays fast without per-pixel Python loops: like the CUDA rasterizers it bins
Gaussians into small screen tiles (4 x 4 pixels), drops the (tile, Gaussian) pairs whose
alpha is below 1/255 at every pixel of the tile, and sorts each tile's list by depth; then
it evaluates many tiles at once as dense [tiles, list entries, pixels] tensors. log alpha
is a quadratic in tile-local pixel coordinates, so all pairs' alphas are one matrix
product of per-pair coefficients with the pixels' monomials; transmittance is a cumulative
product along the list, colour accumulation a batched matrix product. The backward pass is
written out (closed-form compositing gradient, then one matrix product back to the
coefficients and a hand-written chain rule to the Gaussians), and every step of the hot
loop is an in-place float operation: boolean masks with where/masked_fill run many times
slower on CPU. Profile and timings: docs/RESULTS.md ("Demo on the CPU: the torch backend").
"""

from __future__ import annotations

import math

import torch

from utils.graphics_utils import quat_to_rotmat

ALPHA_THRESHOLD = 1.0 / 255.0
T_THRESHOLD = 1e-4
MAX_ELEMS_PER_BATCH = 2**19


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

    in_depth = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(in_depth, z, torch.ones_like(z))
    # Clamp the Jacobian's lever arm as gsplat/3DGS do (1.3 x the half field of view).
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    tx = zs * torch.clamp(x / zs, -(cx / fx + 0.3 * tan_fovx), (width - cx) / fx + 0.3 * tan_fovx)
    ty = zs * torch.clamp(y / zs, -(cy / fy + 0.3 * tan_fovy), (height - cy) / fy + 0.3 * tan_fovy)
    # Sigma2d = J R Sigma R^T J^T with J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]],
    # written per Gaussian with [N, 3] rows (batched 3x3 matrix products are slow on CPU).
    inv_z = 1.0 / zs
    jw0 = (fx * inv_z)[:, None] * R[0] - (fx * tx * inv_z * inv_z)[:, None] * R[2]
    jw1 = (fy * inv_z)[:, None] * R[1] - (fy * ty * inv_z * inv_z)[:, None] * R[2]
    if covars is None:
        # Sigma = (Q S)(Q S)^T, so Sigma2d = T T^T with the rows T_i = (JW_i Q) S.
        Q = quat_to_rotmat(quats)
        t0 = (jw0[:, 0:1] * Q[:, 0] + jw0[:, 1:2] * Q[:, 1] + jw0[:, 2:3] * Q[:, 2]) * scales
        t1 = (jw1[:, 0:1] * Q[:, 0] + jw1[:, 1:2] * Q[:, 1] + jw1[:, 2:3] * Q[:, 2]) * scales
        a, b, c = (t0 * t0).sum(-1), (t0 * t1).sum(-1), (t1 * t1).sum(-1)
    else:
        s0 = (jw0[:, :, None] * covars).sum(1)  # JW_0 Sigma
        s1 = (jw1[:, :, None] * covars).sum(1)
        a, b, c = (s0 * jw0).sum(-1), (s0 * jw1).sum(-1), (s1 * jw1).sum(-1)
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


def _tile_entries(means2d, radii, depths, width, height, tile):
    """(tile, Gaussian) pairs of every tile touched by a bounding box.

    Returns tile column [M], tile row [M] and Gaussian id [M], the Gaussians front to back.
    """
    vis = torch.nonzero((radii > 0).any(dim=-1), as_tuple=False).squeeze(-1)
    vis = vis.index_select(0, torch.argsort(depths.index_select(0, vis), stable=True))
    xa, xb, ya, yb = _bbox(means2d.index_select(0, vis), radii.index_select(0, vis), width, height)
    tx0, ty0 = xa // tile, ya // tile
    w = torch.clamp(xb // tile - tx0 + 1, min=0)
    counts = w * torch.clamp(yb // tile - ty0 + 1, min=0)
    M = int(counts.sum())
    g = torch.repeat_interleave(torch.arange(len(vis), device=vis.device), counts, output_size=M)
    off = torch.arange(M, device=vis.device) - (torch.cumsum(counts, 0) - counts).index_select(0, g)
    wg = w.index_select(0, g)
    dy = torch.div(off, wg, rounding_mode="floor")
    tx = tx0.index_select(0, g) + off - dy * wg
    return tx, ty0.index_select(0, g) + dy, vis.index_select(0, g)


def _log_alpha_coefficients(a, b, c, opacities, p, q, out=None):
    """log(o) - sigma of list entries as a quadratic in tile-local pixel coordinates.

    With (p, q) = mean - tile centre, (u, v) = pixel centre - tile centre and the conic
    (a, b, c), sigma = a/2 (u - p)^2 + b (u - p)(v - q) + c/2 (v - q)^2, so log(o exp(-sigma))
    is coefficients [M, 6] times the monomials (1, u, v, u^2, u v, v^2) of
    ``_local_monomials``. Local coordinates keep the terms small (|u|, |v| < tile / 2),
    hence float32-accurate. With ``out`` [M, 8], the coefficients go to its first six
    columns and p, q to the last two; the coefficients' view is returned.
    """
    lin_u = a * p + b * q
    lin_v = b * p + c * q
    const = torch.log(opacities) - 0.5 * (lin_u * p + lin_v * q)
    cols = [const, lin_u, lin_v, -0.5 * a, -b, -0.5 * c]
    if out is None:
        return torch.stack(cols, dim=-1)
    torch.stack(cols + [p, q], dim=-1, out=out)
    return out[:, :6]


def _coefficients_backward(d_coef, a, b, c, opacities, p, q):
    """Gradients of (p, q, a, b, c, opacity) [M, 6] from those of the coefficients [M, 6]."""
    g0, g1, g2, g3, g4, g5 = d_coef.unbind(-1)
    lin_u = a * p + b * q
    lin_v = b * p + c * q
    d_p = g1 * a + g2 * b - g0 * lin_u
    d_q = g1 * b + g2 * c - g0 * lin_v
    d_a = p * (g1 - 0.5 * g0 * p) - 0.5 * g3
    d_b = q * g1 + p * (g2 - g0 * q) - g4
    d_c = q * (g2 - 0.5 * g0 * q) - 0.5 * g5
    return torch.stack([d_p, d_q, d_a, d_b, d_c, g0 / opacities], dim=-1)


# Cull a (tile, Gaussian) pair when log alpha < log(1/255) - 1e-3 at every pixel centre.
_LOG_ALPHA_KEEP = math.log(ALPHA_THRESHOLD) - 1e-3


def _tile_blocks(means2d, conics, opacities, radii, depths, width, height, tile, chunk, mono):
    """The tiles' depth-sorted lists, culled, laid out in blocks of ``chunk`` entries.

    A pair is dropped when the Gaussian's alpha stays below 1/255 at every pixel centre of
    the tile (it would be skipped at each of them; a small margin keeps borderline pairs),
    so bounding-box corners an ellipse does not reach cost nothing. Every list is then
    padded to a whole number of blocks, so that entries ``j * chunk`` to
    ``(j + 1) * chunk - 1`` of a tile are one contiguous block.

    Returns tile index [T], first block [T] and block count [T], tiles ordered by decreasing
    list length, and per entry [E = blocks * chunk]: Gaussian id, offset (p, q) of the mean
    from the tile centre [E, 2], log-alpha coefficients [E, 6]. Padding entries repeat a
    listed Gaussian's id with (p, q) = 0 and a constant coefficient of -1e30 (alpha 0).
    """
    ntx = -(-width // tile)
    tx, ty, gid = _tile_entries(means2d, radii, depths, width, height, tile)
    half = 0.5 * tile
    mx, my = means2d.index_select(0, gid).unbind(-1)
    p = mx - (tx.to(mx.dtype) * tile + half)
    q = my - (ty.to(my.dtype) * tile + half)
    a, b, c = conics.index_select(0, gid).unbind(-1)
    # Rows (coefficients, p, q) of every pair and a last one for padding entries.
    rows = torch.empty(len(gid) + 1, 8, dtype=p.dtype, device=p.device)
    coef = _log_alpha_coefficients(a, b, c, opacities.index_select(0, gid), p, q, out=rows[:-1])
    rows[-1] = 0.0
    rows[-1, 0] = -1e30
    keep = torch.mm(mono.t(), coef.t()).amax(dim=0) >= _LOG_ALPHA_KEEP
    idx = torch.nonzero(keep, as_tuple=False).squeeze(-1)
    # Stable sort by tile keeps each tile's list front to back (int32 keys sort faster).
    key = (ty * ntx + tx).index_select(0, idx)
    key, order = torch.sort(key.int() if len(tx) < 2**31 else key, stable=True)
    idx = idx.index_select(0, order)
    tiles, lengths = torch.unique_consecutive(key, return_counts=True)
    M, dev = len(idx), idx.device
    by_len = torch.argsort(lengths, descending=True, stable=True)
    nblk = (lengths.index_select(0, by_len) + chunk - 1) // chunk
    first = torch.cumsum(nblk, 0) - nblk
    first_of_tile = torch.empty_like(first)
    first_of_tile[by_len] = first
    E = (int(nblk.sum()) + 1) * chunk if M else 0  # and a block of padding only (``_steps``)
    # Entry k of the list of a tile goes to position first * chunk + k; padding positions
    # read one extra row: a listed Gaussian, (p, q) = 0, constant coefficient -1e30.
    tile_rank = torch.repeat_interleave(
        torch.arange(len(tiles), device=dev), lengths, output_size=M
    )
    dst = (first_of_tile * chunk - (torch.cumsum(lengths, 0) - lengths)).index_select(0, tile_rank)
    dst += torch.arange(M, device=dev)
    src = torch.full((E,), len(tx), dtype=idx.dtype, device=dev).index_copy_(0, dst, idx)
    rows = rows.index_select(0, src)
    gid_pad = torch.cat([gid, gid.index_select(0, idx[:1])]).index_select(0, src)
    tiles = tiles.long().index_select(0, by_len)
    return tiles, first, nblk, gid_pad, rows[:, 6:], rows[:, :6].contiguous()


def _local_monomials(tile, dtype, device):
    """[6, P] rows (1, u, v, u^2, u v, v^2) of a tile's pixel centres, relative to its centre."""
    local = torch.arange(tile * tile, device=device)
    u = (local % tile).to(dtype) + (0.5 - 0.5 * tile)
    v = (local // tile).to(dtype) + (0.5 - 0.5 * tile)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v])


def _next_float(x: float, dtype: torch.dtype, toward: float) -> float:
    return float(torch.nextafter(torch.tensor(x, dtype=dtype), torch.tensor(toward, dtype=dtype)))


# The comparisons of the hot loop as in-place thresholds (x > t: keep, else a value), which
# run many times faster on CPU than boolean masks with where/masked_fill:
# alpha >= 1/255 is alpha > the next float below 1/255; raw alpha <= 0.999 is
# -raw > -(the next float above 0.999).
_BELOW_ALPHA = {dt: _next_float(ALPHA_THRESHOLD, dt, 0.0) for dt in (torch.float32, torch.float64)}
_ABOVE_CLAMP = {dt: _next_float(0.999, dt, 1.0) for dt in (torch.float32, torch.float64)}


def _chunk_weights(coef, mono, T_eff, keep_raw):
    """Alphas and transmittance of one chunk: ``coef`` [R, C, 6] against the tile pixels.

    ``T_eff`` [R, P] is the incoming transmittance, 0 for finished pixels (so nothing more
    contributes to them). Returns raw alpha o exp(-sigma) [R, C, P] (None unless
    ``keep_raw``), the contributing alphas (0 where a pair does not contribute), 1 - alpha
    of every valid pair, and the transmittance after each pair. A pair contributes when
    alpha >= 1/255 and the transmittance after it stays above 1e-4; the first pair that
    would cross stops the pixel. Every [R, C, P] step is one pass, in place where it can be.
    """
    R, C, _ = coef.shape
    raw = torch.mm(coef.reshape(R * C, -1), mono).view(R, C, -1).exp_()
    a = raw.clamp(max=0.999) if keep_raw else raw.clamp_(max=0.999)
    a = torch.threshold_(a, _BELOW_ALPHA[a.dtype], 0.0)
    om = torch.rsub(a, 1.0)  # >= 0.001: divisions by it are safe
    T_incl = torch.cumprod(om, dim=1).mul_(T_eff[:, None])
    # T_incl > 1e-4 (a prefix of the list, per pixel) as 1.0 / 0.0
    a.mul_(torch.threshold(T_incl, T_THRESHOLD, 0.0).sign_())
    return (raw if keep_raw else None), a, om, T_incl


# Tiles whose lists have at least this fraction of the longest one's blocks are walked together.
GROUP_RATIO = 0.7


def _steps(nblk, first, done, block_elems, max_elems, empty):
    """The composite's walk: (tile rows [R], blocks [R, k]) per step, front to back per tile.

    Tiles (sorted by decreasing list length) go in groups of similar length; a group is
    walked ``k`` blocks at a time for all its live tiles (those with blocks left and
    pixels still running, read from ``done`` when the step is drawn), ``k`` as large as
    ``max_elems`` elements allow, so that long lists take few steps. A tile with fewer
    blocks than a step covers reads the ``empty`` block (padding only) for the rest.
    """
    counts = nblk.tolist()
    dev = nblk.device
    g0 = 0
    while g0 < len(counts):
        g1 = g0 + 1
        while g1 < len(counts) and counts[g1] >= GROUP_RATIO * counts[g0]:
            g1 += 1
        j = 0
        while j < counts[g0]:
            grp = slice(g0, g1)
            live = torch.nonzero((nblk[grp] > j) & ~done[grp].all(dim=1), as_tuple=False)
            live = live.squeeze(-1) + g0
            if not len(live):
                break
            k = max(1, min(counts[g0] - j, max_elems // (len(live) * block_elems)))
            ks = torch.arange(j, j + k, device=dev)
            rows_per_batch = max(1, max_elems // (k * block_elems))
            for r0 in range(0, len(live), rows_per_batch):
                rows = live[r0 : r0 + rows_per_batch]
                blocks = torch.where(ks < nblk.index_select(0, rows)[:, None],
                                     first.index_select(0, rows)[:, None] + ks, empty)  # fmt: skip
                yield rows, blocks
            j += k
        g0 = g1


class _TileComposite(torch.autograd.Function):
    """Composite every listed tile, front to back, one block of ``chunk`` entries at a time.

    ``packed`` [N, 6 + D] holds each Gaussian's (mean x, mean y, conic a, b, c, opacity,
    colour...); the tiling (``_tile_blocks``) gives per list entry its Gaussian id, the
    mean's offset from the tile centre and the log-alpha coefficients. Outputs are the
    accumulated colours [T, D, P] and the final transmittance [T, P] of the listed tiles.
    Forward keeps only the tile rows, blocks and incoming/outgoing transmittance of each
    chunk; backward walks the chunks in reverse, recomputes alphas and applies the
    closed-form gradient of alpha compositing (the one the CUDA kernels use): with
    w_k = a_k T_k, dL/da_k = T_k v_k - (sum_{j>k} w_j v_j + T_out dL/dT_out) / (1 - a_k),
    v_k = c_k . dL/dC. The coefficients' gradient is one matrix product with the pixel
    monomials per chunk, and is taken back to the Gaussians once, for all entries.
    """

    @staticmethod
    def forward(ctx, packed, gid, pq, coef, first, nblk, mono, chunk, max_elems):
        T_all, P = len(first), mono.shape[1]
        col = packed[:, 6:].index_select(0, gid)
        D = col.shape[1]
        dev, dt = col.device, col.dtype
        coef_b, col_b = coef.view(-1, chunk, coef.shape[1]), col.view(-1, chunk, D)
        T_run = torch.ones(T_all, P, dtype=dt, device=dev)
        done = torch.zeros(T_all, P, dtype=torch.bool, device=dev)
        acc = torch.zeros(T_all, D, P, dtype=dt, device=dev)
        records = []
        for rows, blocks in _steps(nblk, first, done, chunk * P, max_elems, len(coef_b) - 1):
            R = len(rows)
            T_in, d_in = T_run.index_select(0, rows), done.index_select(0, rows)
            T_eff = T_in.masked_fill(d_in, 0.0)
            _, a, om, T_incl = _chunk_weights(
                coef_b.index_select(0, blocks.view(-1)).view(R, -1, coef.shape[1]),
                mono,
                T_eff,
                keep_raw=False,
            )
            # Transmittance after the chunk: after its last pair, or where a pixel
            # stops, after its last contributing pair (T_incl falls along the list).
            T_last = T_incl[:, -1]
            stop = (T_last <= T_THRESHOLD) & ~d_in
            sr = torch.nonzero(stop.any(dim=1), as_tuple=False).squeeze(-1)
            if len(sr):  # where a pixel stops: the smallest T_incl above 1e-4, else T_eff
                T_sr = torch.threshold(T_incl.index_select(0, sr), T_THRESHOLD, torch.inf)
                kept = torch.minimum(T_sr.amin(dim=1), T_eff.index_select(0, sr))
                T_last = T_last.index_copy(0, sr, kept)
            T_out = torch.where(d_in, T_in, T_last)
            w = T_incl.div_(om).mul_(a)  # a_k T_k, T_k in front of pair k
            col_t = col_b.index_select(0, blocks.view(-1)).view(R, -1, D).transpose(1, 2)
            acc.index_add_(0, rows, torch.bmm(col_t, w))
            T_run.index_copy_(0, rows, T_out)
            done.index_copy_(0, rows, d_in | stop)
            records.append((rows, blocks, T_in, d_in, T_out))
        ctx.records = records
        ctx.chunk, ctx.n_tiles = chunk, T_all
        ctx.save_for_backward(packed, gid, pq, coef, col, mono)
        return acc, T_run

    @staticmethod
    def backward(ctx, g_acc, g_T):
        packed, gid, pq, coef, col, mono = ctx.saved_tensors
        chunk, D, P = ctx.chunk, col.shape[1], mono.shape[1]
        coef_b, col_b = coef.view(-1, chunk, coef.shape[1]), col.view(-1, chunk, D)
        d_coef, d_col = torch.zeros_like(coef_b), torch.zeros_like(col_b)
        opts = {"dtype": col.dtype, "device": col.device}
        g_T = torch.zeros(ctx.n_tiles, P, **opts) if g_T is None else g_T
        g_acc = torch.zeros(ctx.n_tiles, D, P, **opts) if g_acc is None else g_acc
        gT = g_T.clone()
        mono_t = mono.t()
        for rows, blocks, T_in, d_in, T_out in reversed(ctx.records):
            T_eff = T_in.masked_fill(d_in, 0.0)
            R, flat = len(rows), blocks.view(-1)
            raw, a, om, T_excl = _chunk_weights(
                coef_b.index_select(0, flat).view(R, -1, coef.shape[1]), mono, T_eff, keep_raw=True
            )
            T_excl.div_(om)  # transmittance in front of each pair
            w = a * T_excl
            g_c, g_t = g_acc.index_select(0, rows), gT.index_select(0, rows)  # [R, D, P]
            d_col.index_copy_(
                0, flat, torch.bmm(g_c, w.transpose(1, 2)).transpose(1, 2).reshape(-1, chunk, D)
            )
            v = torch.bmm(col_b.index_select(0, flat).view(R, -1, D), g_c)  # [R, C, P]
            cs = torch.cumsum(w.mul_(v), dim=1)
            tot = cs[:, -1] + g_t * T_out  # sum_k w_k v_k + T_out dL/dT_out
            # dL/da_k = T_k v_k - (tot - cs_k) / (1 - a_k)
            d_a = cs.sub_(tot[:, None]).div_(om).add_(T_excl.mul_(v))
            # d alpha / d log(raw alpha) = alpha where it contributes unclamped, else 0;
            # negated: max(-alpha, -raw where raw <= 0.999 else 0).
            unclamped = torch.threshold_(raw.neg_(), -_ABOVE_CLAMP[raw.dtype], 0.0)
            slope = torch.maximum(a.neg_(), unclamped, out=a)
            d_log = d_a.mul_(slope).view(-1, P)  # negated
            d_coef.index_copy_(
                0, flat, torch.mm(d_log, mono_t).neg_().view(-1, chunk, coef.shape[1])
            )
            gT.index_copy_(0, rows, torch.where(d_in, g_t, tot / T_in))
        att = packed.index_select(0, gid)
        d_att = torch.cat(
            [_coefficients_backward(d_coef.view_as(coef), att[:, 2], att[:, 3], att[:, 4],
                                    att[:, 5], pq[:, 0], pq[:, 1]),
             d_col.view_as(col)], dim=1,
        )  # fmt: skip
        d_packed = torch.zeros_like(packed).index_add_(0, gid, d_att)
        return d_packed, None, None, None, None, None, None, None, None


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

    Each tile gets the depth-sorted list of Gaussians whose box touches it, without the
    pairs that stay under alpha 1/255 on all its pixels, padded to blocks of ``chunk``
    entries. Tiles of similar list length are walked together, as many blocks per step as
    ``max_elems`` elements of the dense [tiles, entries, pixels] tensors allow (``_steps``):
    log alphas as one matrix product of per-entry coefficients with the pixels' monomials,
    transmittance by a cumulative product along the list, colours by a batched matrix
    product. Tiles whose pixels have all finished drop out of later steps (the CUDA
    kernels' early exit, per tile). The backward pass is written out (``_TileComposite``)
    rather than traced, which keeps it lean.

    Returns:
        colors [H, W, D] (background blended in) and alphas [H, W, 1].
    """
    D = colors.shape[-1]
    device, dtype = means2d.device, means2d.dtype
    ntx, nty = -(-width // tile), -(-height // tile)
    P = tile * tile
    mono = _local_monomials(tile, dtype, device)
    with torch.no_grad():
        tiles, first, nblk, gid, pq, coef = _tile_blocks(
            means2d, conics, opacities, radii, depths, width, height, tile, chunk, mono
        )
    packed = torch.cat([means2d, conics, opacities[:, None], colors], dim=1)
    acc, T_run = _TileComposite.apply(packed, gid, pq, coef, first, nblk, mono, chunk, max_elems)
    out = torch.zeros(ntx * nty, D, P, dtype=dtype, device=device).index_copy(0, tiles, acc)
    T_final = torch.ones(ntx * nty, P, dtype=dtype, device=device).index_copy(0, tiles, T_run)
    if background is not None:
        out = out + T_final[:, None, :] * background[:, None]
    # [tiles_y, tiles_x, D, ty, tx] -> image, cropped to the real size.
    img = (
        out.reshape(nty, ntx, D, tile, tile)
        .permute(0, 3, 1, 4, 2)
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
