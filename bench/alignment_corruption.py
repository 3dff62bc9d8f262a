"""Dense-prior alignment on corrupted depth maps: how much injected error GFA and SOA remove.

    python bench/alignment_corruption.py -s data_local/fern --n_views 3
    python bench/alignment_corruption.py -s data/fern --n_views 3 --depth_dir <rendered depth>

A stand-in for a monocular prior whose ground truth is known: clean depth maps of the
training views (``--depth_dir``: depth rendered from a model trained on every view, or the
scene's ``depth_mvs/`` maps as a CPU stand-in; z-depth float [H, W] per
``<image name>.npy`` or ``<stem>.npy``, 0 = none) are corrupted, per view and seeded, by

- a depth scale s (log-uniform in ``--scale_range``) and shift b (uniform in
  +-``--shift_frac`` of the view's median depth);
- a smooth warp inside ``--segments`` segments of ``masks/<stem>.npz`` (each with 1-12 %
  of the image and at least ``--min_sfm`` SfM keypoints on valid depth; disjoint; together
  at most ``--max_share`` of the pixels and of the keypoints): depth
  multiplied by 1 + a + g * ramp, a = +-``--warp_range``, g = +-``--warp_ramp``, the ramp a
  unit linear gradient across the segment in a random direction (so a single similarity
  cannot undo it exactly);

and written as ``<out>/prior/<image name>.npy`` (the layout ``python -m alignment --prior
depth_pro --prior_dir <out>/prior`` reads) with ``<out>/corruption.json`` (parameters) and
``<out>/warped.npz`` (bool [H, W] warped pixels per view). With ``--run`` (default) the
alignment then runs three times in process (clean maps: the floor set by the clean maps'
own disagreement with SfM; corrupted maps, global step only; corrupted maps, full) and the
aligned points are compared with the clean maps' points, over all pixels and inside the
warped segments; the table and ``<out>/bench.json`` give errors as % of the scene scale
(median SfM depth) and the fraction of the injected error removed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import alignment.stage  # noqa: E402
from alignment.dense_prior import backproject, find_prior_file, load_depth  # noqa: E402
from alignment.fusion import AlignParams, view_correspondences  # noqa: E402
from alignment.stage import (  # noqa: E402
    AlignRequest,
    load_masks,
    load_scene,
    model_dir_of,
    require_model,
    run_alignment,
    scene_scale,
)
from priors.io import save_npy, save_npz  # noqa: E402
from scene.colmap_io import read_model  # noqa: E402
from scene.errors import SceneError  # noqa: E402


def pick_segments(
    masks: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    n: int,
    min_sfm: int,
    max_share: float,
    rng: np.random.Generator,
) -> list[int]:
    """Up to ``n`` disjoint segments (indices into masks [K, H, W]), each with 1-12 % of the
    pixels and >= ``min_sfm`` of the keypoints (rows, cols [M]), together at most
    ``max_share`` of the pixels and of the keypoints (a prior mostly right, as a
    monocular depth map is), in random order."""
    hw = masks.shape[1] * masks.shape[2]
    area = masks.reshape(len(masks), -1).sum(1) / hw  # [K]
    inside = masks[:, rows, cols]  # [K, M]
    support = inside.sum(1)  # [K]
    ok = np.flatnonzero((area > 0.01) & (area < 0.12) & (support >= min_sfm))
    taken = np.zeros(masks.shape[1:], bool)
    kp = np.zeros(len(rows), bool)
    out: list[int] = []
    for k in rng.permutation(ok):
        if len(out) == n:
            break
        if (masks[k] & taken).any():
            continue
        if (taken | masks[k]).mean() > max_share or (kp | inside[k]).mean() > max_share:
            continue
        out.append(int(k))
        taken |= masks[k]
        kp |= inside[k]
    return out


def corrupt_view(depth, valid, masks, picked, args, rng) -> tuple[np.ndarray, np.ndarray, dict]:
    """Corrupted depth [H, W] (0 where invalid), warped pixels [H, W] and the parameters."""
    H, W = depth.shape
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    factor = np.ones((H, W))
    warped = np.zeros((H, W), bool)
    segs = []
    for k in picked:
        m = masks[k]
        a = rng.uniform(*args.warp_range) * rng.choice([-1.0, 1.0])
        g = rng.uniform(-args.warp_ramp, args.warp_ramp)
        th = rng.uniform(0, 2 * np.pi)
        proj = (u - u[m].mean()) * np.cos(th) + (v - v[m].mean()) * np.sin(th)  # [H, W] px
        ext = max(float(np.abs(proj[m]).max()), 1.0)
        factor[m] = 1.0 + a + g * proj[m] / ext
        warped |= m
        segs.append({"mask": k, "a": a, "g": g, "theta": th, "pixels": int(m.sum())})
    s = float(np.exp(rng.uniform(np.log(args.scale_range[0]), np.log(args.scale_range[1]))))
    med = float(np.median(depth[valid]))
    b = float(rng.uniform(-args.shift_frac, args.shift_frac) * med)
    warped_d = depth * factor
    b = max(b, -0.5 * s * float(warped_d[valid].min()))  # keep every depth positive
    out = np.where(valid, s * warped_d + b, 0.0).astype(np.float32)
    return out, warped & valid, {"scale": s, "shift": b, "segments": segs}


def evaluate(result, clean: dict, warped: dict, unit_scale: float) -> dict:
    """Errors of the aligned points against the clean points, % of the scene scale."""
    allv, segv = [], []
    for name, v in result.views.items():
        if v.skipped:
            continue
        ok = v.valid & clean[name]["valid"]
        e = np.linalg.norm(v.points - clean[name]["points"], axis=-1) / unit_scale * 100
        allv.append(e[ok])
        segv.append(e[ok & warped[name]])
    a, s = np.concatenate(allv), np.concatenate(segv)
    return {
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "seg_mean": float(s.mean()) if len(s) else None,
        "seg_median": float(np.median(s)) if len(s) else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-s", "--source_path", required=True)
    p.add_argument("--n_views", type=int, default=3)
    p.add_argument("--split_protocol", default="llff")
    p.add_argument("--depth_dir", default="", help="clean depth maps (default: depth_mvs/)")
    p.add_argument("--out", default="", help="default: <scene>/alignment_bench")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segments", type=int, default=3, help="warped segments per view")
    p.add_argument("--min_sfm", type=int, default=20, help="SfM keypoints a warped segment holds")
    p.add_argument(
        "--max_share", type=float, default=0.3, help="warped pixels and keypoints, at most"
    )
    p.add_argument("--scale_range", type=float, nargs=2, default=[0.5, 2.0])
    p.add_argument("--shift_frac", type=float, default=0.2)
    p.add_argument("--warp_range", type=float, nargs=2, default=[0.1, 0.3])
    p.add_argument("--warp_ramp", type=float, default=0.05)
    p.add_argument(
        "--unit_divisor",
        type=float,
        default=0.0,
        help="threshold unit = scene scale / this (default: alignment.stage.UNIT_DIVISOR)",
    )
    p.add_argument("--no_run", action="store_true", help="only write the corrupted prior")
    args = p.parse_args(argv)
    if args.unit_divisor > 0:
        alignment.stage.UNIT_DIVISOR = args.unit_divisor
    scene_dir = os.path.abspath(args.source_path)
    depth_dir = args.depth_dir or os.path.join(scene_dir, "depth_mvs")
    out = args.out or os.path.join(scene_dir, "alignment_bench")
    masks_dir = os.path.join(scene_dir, "masks")
    try:
        if not os.path.isdir(depth_dir):
            raise SceneError(
                f"{depth_dir}: no clean depth maps; make them with: python -m mvs -s "
                f"{args.source_path} --n_views {args.n_views} --split_protocol "
                f"{args.split_protocol} (or pass --depth_dir)"
            )
        if not os.path.isdir(masks_dir):
            raise SceneError(
                f"{masks_dir}: no segments to warp; make them with: python extract_mask.py "
                f"-s {args.source_path} --mode auto"
            )
        base = AlignRequest(
            scene_dir, n_views=args.n_views, split_protocol=args.split_protocol, progress=False
        )
        require_model(base, args.n_views)
        scene = load_scene(base)
        model = read_model(model_dir_of(scene_dir, len(scene.train_cameras)))
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cams, ims, pts = model
    by_name = {im.name: im for im in ims.values()}
    xyz = {pid: q.xyz for pid, q in pts.items()}
    rng = np.random.default_rng(args.seed)
    clean, warped, params = {}, {}, {}
    for cam in scene.train_cameras:
        name, H, W = cam.image_name, cam.image_height, cam.image_width
        K = cam.K.double().numpy()
        w2c = cam.viewmat.double().numpy()
        path = find_prior_file(depth_dir, "mvs", name)  # <image name>.npy or <stem>.npy
        if path is None:
            print(f"error: {depth_dir}: no depth map for {name}", file=sys.stderr)
            return 1
        depth, valid, _ = load_depth(path, H, W)
        masks = load_masks(masks_dir, name, H, W)
        if masks is None:
            print(f"error: {masks_dir}: no masks for {name}", file=sys.stderr)
            return 1
        im = by_name[name]
        mc = cams[im.camera_id]
        corr = view_correspondences(
            im.xys, im.point3D_ids, xyz, (mc.width, mc.height), (W, H), valid
        )
        picked = pick_segments(
            masks & valid, corr.rows, corr.cols, args.segments, args.min_sfm, args.max_share, rng
        )
        d_bad, w_mask, info = corrupt_view(depth, valid, masks, picked, args, rng)
        save_npy(os.path.join(out, "prior", name + ".npy"), d_bad)
        clean[name] = {"points": backproject(depth, K, w2c), "valid": valid}
        warped[name] = w_mask
        params[name] = info
        print(
            f"{name}: scale {info['scale']:.3f}, shift {info['shift']:.3f}, "
            f"{len(picked)} warped segments ({100 * w_mask.mean():.1f}% of the pixels)"
        )
    save_npz(
        os.path.join(out, "warped.npz"), **{os.path.splitext(k)[0]: v for k, v in warped.items()}
    )
    with open(os.path.join(out, "corruption.json"), "w") as f:
        json.dump(
            {"seed": args.seed, "depth_dir": depth_dir, "views": params, "args": vars(args)},
            f,
            indent=1,
        )
    print(f"wrote {out}/prior (python -m alignment --prior depth_pro --prior_dir {out}/prior)")
    if args.no_run:
        return 0

    # The injected error: the corrupted maps' points against the clean ones.
    w2cs = {c.image_name: c.viewmat.double().numpy() for c in scene.train_cameras}
    D = scene_scale(model, w2cs)
    allv, segv = [], []
    for cam in scene.train_cameras:
        name = cam.image_name
        d_bad, valid, _ = load_depth(
            os.path.join(out, "prior", name + ".npy"), cam.image_height, cam.image_width
        )
        P = backproject(d_bad, cam.K.double().numpy(), w2cs[name])  # [H, W, 3]
        ok = valid & clean[name]["valid"]
        e = np.linalg.norm(P - clean[name]["points"], axis=-1) / D * 100
        allv.append(e[ok])
        segv.append(e[ok & warped[name]])
    a, sg = np.concatenate(allv), np.concatenate(segv)
    injected = {
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "seg_mean": float(sg.mean()) if len(sg) else None,
        "seg_median": float(np.median(sg)) if len(sg) else None,
    }

    runs = {
        "clean maps (floor)": (depth_dir, True),
        "global only": (os.path.join(out, "prior"), False),
        "global + semantic": (os.path.join(out, "prior"), True),
    }
    results: dict = {"injected": injected, "scene_scale": D}
    rows = []
    for i, (label, (prior_dir, semantic)) in enumerate(runs.items()):
        req = AlignRequest(
            scene_dir,
            n_views=args.n_views,
            split_protocol=args.split_protocol,
            prior="depth_pro",
            prior_dir=prior_dir,
            out_dir=os.path.join(out, f"alignment_{i}"),
            progress=False,
            write_png=semantic,
            seed=args.seed,
            params=AlignParams(semantic=semantic),
        )
        t = time.perf_counter()
        res = run_alignment(req, scene)
        secs = time.perf_counter() - t
        ev = evaluate(res, clean, warped, D)
        results[label] = {
            "error": ev,
            "residuals": res.report["residuals"],
            "seconds": secs,
            "out_dir": req.out_dir,
        }
        rows.append((label, ev, res.report["residuals"], secs))

    def f(x):
        return "-" if x is None else f"{x:.2f}"

    print()
    print(
        f"scene {scene_dir}, {args.n_views} views, seed {args.seed}; errors vs the clean maps' "
        "points in % of the scene scale (median SfM depth); residuals at the SfM keypoints "
        f"in units (scene scale / {alignment.stage.UNIT_DIVISOR:g})"
    )
    print()
    print(
        "| prior / step | mean err % | median err % | warped segs: mean % | median % | "
        "removed (all) | removed (segs) | SfM residual median | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| corrupted, before alignment | {f(injected['mean'])} | {f(injected['median'])} | "
        f"{f(injected['seg_mean'])} | {f(injected['seg_median'])} | - | - | - | - |"
    )
    for label, ev, resid, secs in rows:
        rem = 1 - ev["mean"] / injected["mean"]
        rem_s = None
        if ev["seg_mean"] is not None and injected["seg_mean"]:
            rem_s = 1 - ev["seg_mean"] / injected["seg_mean"]
        last = resid.get("semantic", resid.get("global"))
        print(
            f"| {label} | {f(ev['mean'])} | {f(ev['median'])} | {f(ev['seg_mean'])} | "
            f"{f(ev['seg_median'])} | {100 * rem:.1f}% | "
            f"{'-' if rem_s is None else f'{100 * rem_s:.1f}%'} | {last['median']:.3f} | "
            f"{secs:.1f} |"
        )
        results[label]["removed_all"] = rem
        results[label]["removed_segments"] = rem_s
    full = results["global + semantic"]["residuals"]
    print()
    print(
        "SfM-keypoint residual median/mean (units) per step, full run: "
        + ", ".join(f"{k} {v['median']:.3f}/{v['mean']:.3f}" for k, v in full.items())
    )
    with open(os.path.join(out, "bench.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {os.path.join(out, 'bench.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
