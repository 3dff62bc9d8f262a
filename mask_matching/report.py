"""What the matching found, in numbers and in pictures.

- **Match agreement per level**: the fraction of COLMAP inlier matches whose two
  descriptors agree (``mean_D (f - g)^2 < tol``) at each level, and at the best level.
  Next to it, the same fraction for random pixel pairs of the same view pairs (pixels drawn
  uniformly): the chance rate. Matching works when the first is high and the second low.
- **Global segments per level**: the distinct codes of all views are grouped by greedy
  leader clustering at that level (codes by decreasing pixel count; a code joins the first
  leader within ``tol``, else leads a new group). A group present in >= 2 views is a
  matched global segment; the share of pixels that fall into matched segments is given.
- **Union-find baseline**: global segments of the discrete matching (``union_find.py``).
- **Preview** ``preview/<stem>.png`` per view, a 2 x 4 grid at the masks' resolution:
  image with its matches (green: descriptors agree at the best level, red: not), the
  finest-mask labels, the union-find segments, a text panel; then levels 0-3 coloured by
  matched global segment. A segment has the same colour in every view; dark grey is a
  segment seen in one view only. ``preview/overview.png`` puts the union-find and level
  panels of every view in one picture, a row per view.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from mask_matching.data import MatchingInput
from mask_matching.losses import AGREE_TOL, level_distance
from mask_matching.union_find import UnionFindResult, pixel_index

UNMATCHED = np.array([60, 60, 60], dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """[n, 3] uint8 distinct colours (golden-ratio hues, alternating brightness)."""
    if n <= 0:
        return np.zeros((0, 3), np.uint8)
    i = np.arange(n)
    hsv = np.stack(
        [(i * 0.618033988749895 % 1.0) * 179, np.full(n, 210), 170 + 85 * (i % 2)], axis=1
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def match_agreement(
    tables: list[torch.Tensor], data: MatchingInput, tol: float = AGREE_TOL, seed: int = 0
) -> dict:
    """Per level and at the best level: agreeing fraction of matches and of random pairs.

    ``tables`` per view [U, L, D] (detached). Returns plain floats and lists (JSON-ready).
    """
    gen = np.random.default_rng(seed)
    dists, chance, per_pair = [], [], []
    for p in data.pairs:
        ta, tb = tables[p.a], tables[p.b]
        d = level_distance(ta[torch.from_numpy(p.code_a)], tb[torch.from_numpy(p.code_b)])
        dists.append(d)  # [M, L]
        n = 20000
        ia = data.views[p.a].code_index.ravel()[gen.integers(0, data.views[p.a].code_index.size, n)]
        ib = data.views[p.b].code_index.ravel()[gen.integers(0, data.views[p.b].code_index.size, n)]
        chance.append(
            level_distance(ta[torch.from_numpy(ia).long()], tb[torch.from_numpy(ib).long()])
        )
        per_pair.append(
            {
                "pair": [data.train[p.a], data.train[p.b]],
                "matches": len(p.code_a),
                "agree_best": float((d.amin(dim=1) < tol).float().mean()),
            }
        )
    d = torch.cat(dists)  # [M, L]
    c = torch.cat(chance)  # [R, L]
    return {
        "tolerance": tol,
        "matches": int(d.shape[0]),
        "agree_per_level": [float(x) for x in (d < tol).float().mean(0)],
        "agree_best": float((d.amin(1) < tol).float().mean()),
        "agree_all": float((d.amax(1) < tol).float().mean()),
        "chance_per_level": [float(x) for x in (c < tol).float().mean(0)],
        "chance_best": float((c.amin(1) < tol).float().mean()),
        "chance_all": float((c.amax(1) < tol).float().mean()),
        "per_pair": per_pair,
    }


def cluster_codes(
    tables: list[torch.Tensor], counts: list[np.ndarray], level: int, tol: float = AGREE_TOL
) -> tuple[list[np.ndarray], int, int]:
    """Greedy leader clustering of every view's codes at one level.

    Returns per view [U_v] int64 global segment ids (-1: the group is seen in one view
    only), the number of matched segments (>= 2 views) and the number of groups.
    """
    feats = torch.cat([t[:, level] for t in tables])  # [sum U, D]
    view_of = np.concatenate([np.full(len(t), v) for v, t in enumerate(tables)])
    weight = np.concatenate(counts)
    order = np.argsort(-weight, kind="stable")
    group = np.full(len(feats), -1, dtype=np.int64)
    leaders: list[torch.Tensor] = []
    lead = feats.new_zeros((0, feats.shape[1]))
    for i in order.tolist():
        if len(leaders):
            d = (lead - feats[i]).square().mean(dim=1)  # [G]
            j = int(torch.argmin(d))
            if float(d[j]) < tol:
                group[i] = j
                continue
        group[i] = len(leaders)
        leaders.append(feats[i])
        lead = torch.stack(leaders)
    n_groups = len(leaders)
    views_in = [set() for _ in range(n_groups)]
    for g, v in zip(group.tolist(), view_of.tolist()):
        views_in[g].add(v)
    matched = [g for g in range(n_groups) if len(views_in[g]) >= 2]
    gid = np.full(n_groups, -1, dtype=np.int64)
    gid[matched] = np.arange(len(matched))
    out, start = [], 0
    for t in tables:
        out.append(gid[group[start : start + len(t)]])
        start += len(t)
    return out, len(matched), n_groups


def segment_summary(
    tables: list[torch.Tensor], data: MatchingInput, tol: float = AGREE_TOL
) -> tuple[dict, list[list[np.ndarray]]]:
    """Matched global segments per level; also the per-view code ids of every level."""
    counts = [v.counts for v in data.views]
    total = float(sum(c.sum() for c in counts))
    per_level, ids = [], []
    for lv in range(tables[0].shape[1]):
        gids, n_matched, n_groups = cluster_codes(tables, counts, lv, tol)
        covered = sum(float(c[g >= 0].sum()) for c, g in zip(counts, gids))
        per_level.append(
            {
                "level": lv,
                "matched_segments": n_matched,
                "groups": n_groups,
                "matched_pixel_fraction": covered / total,
            }
        )
        ids.append(gids)
    return {"levels": per_level}, ids


def union_find_summary(uf: UnionFindResult, data: MatchingInput) -> dict:
    covered = total = 0.0
    for v, view in enumerate(data.views):
        g = uf.id_map(v, view.labels)
        covered += float((g >= 0).sum())
        total += g.size
    return {
        "global_segments": uf.n_global,
        "linking_matches": uf.links,
        "matches": uf.matches,
        "matched_pixel_fraction": covered / max(total, 1.0),
        "max_labels_of_one_view_in_a_segment": uf.max_labels_per_view,
    }


# ----------------------------------------------------------------------------- pictures


def _colour(ids: np.ndarray, pal: np.ndarray) -> np.ndarray:
    """[H, W] ids (-1 unmatched) -> [H, W, 3] uint8."""
    out = np.empty((*ids.shape, 3), np.uint8)
    out[:] = UNMATCHED
    ok = ids >= 0
    out[ok] = pal[ids[ok] % len(pal)] if len(pal) else UNMATCHED
    return out


def _blend(colour: np.ndarray, image: np.ndarray) -> np.ndarray:
    """70% ``colour`` over 30% of the image's grey (OpenCV: uint8 throughout, fast)."""
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(colour.astype(np.uint8), 0.7, grey, 0.3, 0.0)


def _title(panel: np.ndarray, lines: list[str]) -> np.ndarray:
    panel = panel.copy()
    scale = max(0.4, panel.shape[1] / 900)
    for i, text in enumerate(lines):
        y = int((i + 1) * 22 * scale)
        cv2.putText(panel, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(
            panel, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    return panel


def preview(
    v: int,
    image: np.ndarray,
    data: MatchingInput,
    tables: list[torch.Tensor],
    level_ids: list[list[np.ndarray]],
    uf: UnionFindResult,
    seg: dict,
    tol: float = AGREE_TOL,
) -> np.ndarray:
    """[2H, 4W, 3] uint8 picture of view ``v`` (layout in the module docstring)."""
    view = data.views[v]
    h, w = view.size
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    n_max = max([seg_l["matched_segments"] for seg_l in seg["levels"]] + [uf.n_global, 1])
    pal = palette(n_max)
    # 1. image with its matches, coloured by agreement at the best level
    pts = image.copy()
    for p in data.pairs:
        if v not in (p.a, p.b):
            continue
        mine, xy = (p.code_a, p.xy_a) if v == p.a else (p.code_b, p.xy_b)
        other = p.code_b if v == p.a else p.code_a
        o = p.b if v == p.a else p.a
        d = level_distance(tables[v][torch.from_numpy(mine)], tables[o][torch.from_numpy(other)])
        ok = (d.amin(dim=1) < tol).numpy()
        rc = pixel_index(xy, (h, w), data.image_sizes[v])
        for (r, c), good in zip(rc.tolist(), ok.tolist()):
            cv2.circle(pts, (c, r), 2, (40, 220, 40) if good else (230, 30, 30), -1)
    n_pts = sum(len(p.code_a) for p in data.pairs if v in (p.a, p.b))
    panels = [_title(pts, [f"{view.name}: {n_pts} matches", "green: agree at best level"])]
    # 2. finest-mask labels
    lab_pal = palette(max(int(view.labels.max()), 1))
    lab = np.where(view.labels[..., None] > 0, lab_pal[np.maximum(view.labels - 1, 0)], 0)
    panels.append(_title(_blend(lab, image), [f"masks: {view.n_masks} ({view.backend})"]))
    # 3. union-find
    ufc = _colour(uf.id_map(v, view.labels), pal)
    panels.append(_title(_blend(ufc, image), [f"union-find: {uf.n_global} global segments"]))
    # 4. text
    text = np.full((h, w, 3), 30, np.uint8)
    lines = [f"codes: {len(view.codes)}", f"channels: {view.channels}"]
    for s in seg["levels"]:
        lines.append(
            f"L{s['level']}: {s['matched_segments']} matched / {s['groups']} groups, "
            f"{100 * s['matched_pixel_fraction']:.0f}% px"
        )
    panels.append(_title(text, lines))
    # 5-8. levels
    for lv, ids in enumerate(level_ids):
        c = _colour(ids[v][view.code_index], pal)
        s = seg["levels"][lv]
        panels.append(_title(_blend(c, image), [f"level {lv}: {s['matched_segments']} segments"]))
    while len(panels) < 8:
        panels.append(np.zeros_like(panels[0]))
    return np.concatenate(
        [np.concatenate(panels[:4], axis=1), np.concatenate(panels[4:8], axis=1)], axis=0
    )


def downsized(picture: np.ndarray, max_width: int = 2048) -> np.ndarray:
    """``picture`` halved (area average) until at most ``max_width`` wide: a preview is
    for looking at, and PNG encoding costs in proportion to its pixels."""
    while picture.shape[1] > max_width:
        h, w = picture.shape[:2]
        picture = cv2.resize(picture, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return picture


def overview(pictures: list[np.ndarray]) -> np.ndarray:
    """Every view in one picture at half size: a row per view with the union-find panel
    and the four level panels of its ``preview`` (same colours across rows)."""
    rows = []
    for pic in pictures:
        h, w = pic.shape[0] // 2, pic.shape[1] // 4
        cells = [pic[:h, 2 * w : 3 * w]] + [pic[h:, i * w : (i + 1) * w] for i in range(4)]
        row = np.concatenate(cells, axis=1)
        rows.append(cv2.resize(row, (row.shape[1] // 2, h // 2), interpolation=cv2.INTER_AREA))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def markdown(report: dict) -> str:
    """Human-readable report.md from the report dict."""
    a, s, u = report["agreement"], report["segments"], report["union_find"]
    lv = range(len(a["agree_per_level"]))
    out = [
        f"# Mask matching: {report['scene']}",
        "",
        f"- training views ({report['n_views']}): {', '.join(report['train'])}",
        f"- masks: backend **{report['mask_backend']}**, per view "
        + ", ".join(f"{n} ({k} masks, {c} codes)" for n, k, c in report["views"]),
        f"- matches: {a['matches']} over {len(a['per_pair'])} pairs with matches",
        f"- training: {report['epochs']} epochs on {report['device']}, "
        f"{report['fit_seconds']:.1f} s"
        f" (final loss {report['final_loss']['total']:.4f}: match "
        f"{report['final_loss']['match']:.4f}, pull {report['final_loss']['pull']:.4f}, push "
        f"{report['final_loss']['push']:.4f})",
        "",
        f"| level | matches agreeing (< {a['tolerance']}) | random pairs agreeing | "
        "matched global segments | groups | pixels in matched segments |",
        "|---|---|---|---|---|---|",
    ]
    for i in lv:
        sl = s["levels"][i]
        out.append(
            f"| {i} | {100 * a['agree_per_level'][i]:.1f} % | "
            f"{100 * a['chance_per_level'][i]:.1f} % | {sl['matched_segments']} | {sl['groups']} | "
            f"{100 * sl['matched_pixel_fraction']:.1f} % |"
        )
    out += [
        f"| best | {100 * a['agree_best']:.1f} % | {100 * a['chance_best']:.1f} % | | | |",
        f"| all | {100 * a['agree_all']:.1f} % | {100 * a['chance_all']:.1f} % | | | |",
        "",
        f"Union-find baseline: {u['global_segments']} global segments, "
        f"{u['linking_matches']}/{u['matches']} matches link two labelled pixels, "
        f"{100 * u['matched_pixel_fraction']:.1f} % of pixels in a matched segment, up to "
        f"{u['max_labels_of_one_view_in_a_segment']} labels of one view merged into one "
        f"segment ({report['union_find_seconds']:.2f} s).",
        "",
        "Per pair (best level): "
        + ", ".join(
            f"{p['pair'][0]}-{p['pair'][1]}: {100 * p['agree_best']:.1f} % of {p['matches']}"
            for p in a["per_pair"]
        ),
    ]
    if report.get("warnings"):
        out += ["", "Warnings:", *[f"- {w}" for w in report["warnings"]]]
    return "\n".join(out) + "\n"
