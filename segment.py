"""Segment a trained Gaussian model in 3D: per-Gaussian features, KMeans, region growing.

    python -m segmentation.features -s <scene>          # 2D features from extract_mask.py masks
    python segment.py -m <model> --k 5 [--eval]        # distil, cluster, render, (score)
    python segment.py -m <model> --click view_003.png 80 60 --eval   # grow from one click

The model stays frozen (docs/SEGMENTATION.md). Steps:

1. per-Gaussian features from ``--feature_sources`` (distilled 2D maps through the N-D
   rasterizer in one pass, the issue-14 feature field, or an npz), fused with softmax
   weights when there are several (segmentation/sources.py);
2. opacity-weighted KMeans on [w_x xyz / scene_scale, w_f f] (segmentation/cluster.py);
3. with ``--click`` / ``--seed_point`` / ``--seed_cluster``: ISRF region growing over a kNN
   graph of the Gaussians (segmentation/region_grow.py);
4. ``<model>/segments/``: labels.npy, cluster_<i>.ply, label maps and overlays of the train
   and test views, selected.ply and its renders (segmentation/outputs.py);
5. ``--eval``: mIoU/mAcc from one confusion matrix over the test views against ground-truth
   label maps (Hungarian matching), foreground IoU against the binary object masks;
   ``segments/segmentation.json`` and a printed table (segmentation/metrics.py).
"""

from __future__ import annotations

import os
import sys
import time
from argparse import ArgumentParser

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from arguments import (
    BackendParams,
    ModelParams,
    PipelineParams,
    SparseViewParams,
    get_combined_args,
)
from gaussian.ply import save_ply
from gaussian_renderer import resolve_backend
from priors.io import save_json
from scene import Scene
from scene.errors import SceneError
from segmentation import cluster as clu
from segmentation.errors import SegmentationError
from segmentation.params import add_segmentation_args
from utils.general_utils import pick_device

SEG_DIR = "segments"


# ---------------------------------------------------------------------------- features


def distilled_features(args, model, scene, pipe, bg, backend, out_dir, iteration) -> np.ndarray:
    """[N, C] distilled features: from the cache when it matches, else distil now."""
    from segmentation.distill import distill, resize_target
    from segmentation.features import load_feature_maps
    from segmentation.pca import fit_joint_pca

    cache = os.path.join(out_dir, "features_distilled.npz")
    n = model.num_gaussians
    if os.path.isfile(cache) and not args.redistill:
        with np.load(cache) as z:
            if (
                int(z["n_gaussians"]) == n
                and int(z["iteration"]) == iteration
                and int(z["iters"]) == args.feature_iters
                and z["features"].shape[1] == min(args.feature_dim, int(z["c_in"]))
            ):
                print(f"[segment] distilled features from {cache}")
                return z["features"]
    cams = scene.getTrainCameras()
    maps = load_feature_maps(scene.source_path, [c.image_name for c in cams])
    if not 1 <= args.feature_dim:
        raise SegmentationError(f"--feature_dim must be >= 1 (got {args.feature_dim})")
    pca = fit_joint_pca(maps, args.feature_dim)
    print(
        f"[segment] joint PCA {maps[0].shape[0]} -> {pca.n_components} channels over "
        f"{len(maps)} views ({100 * pca.explained.sum():.1f}% of the variance)"
    )
    targets = [
        resize_target(pca.transform(m), c.image_height, c.image_width, model.device)
        for m, c in zip(maps, cams)
    ]
    writer = None
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(out_dir, "tb"))
    except ImportError:
        print("[segment] tensorboard not installed: no feature images logged")
    res = distill(model, cams, targets, iterations=args.feature_iters,
                  lr=args.feature_lr, loss=args.feature_loss, backend=backend,
                  writer=writer)  # fmt: skip
    if writer is not None:
        writer.close()
    feats = res.features.cpu().numpy().astype(np.float32)
    print(f"[segment] distilled {feats.shape[1]} channels in {res.seconds:.1f} s "
          f"(final loss {res.losses[-1]:.5f})")  # fmt: skip
    np.savez(cache, features=feats, n_gaussians=n, iteration=iteration, iters=args.feature_iters,
             c_in=maps[0].shape[0], pca_mean=pca.mean, pca_components=pca.components,
             pca_scale=pca.scale, seconds=res.seconds)  # fmt: skip
    return feats


def gather_features(args, model, scene, pipe, bg, backend, ply_path, out_dir, iteration):
    """(fused [N, C], names of the sources, fusion weights [N, S])."""
    from segmentation import sources as src

    names = list(args.feature_sources)
    if names == ["auto"]:
        have_maps = os.path.isdir(os.path.join(scene.source_path, "features"))
        have_cache = os.path.isfile(os.path.join(out_dir, "features_distilled.npz"))
        if have_maps or have_cache:
            names = ["distilled"]
        elif src.field_available(ply_path):
            names = ["field"]
        else:
            raise SegmentationError(
                f"no features: {scene.source_path}/features/ is missing and the model has no "
                f"feature field; make 2D features with python extract_mask.py -s "
                f"{scene.source_path} then python -m segmentation.features -s "
                f"{scene.source_path} (or pass --feature_sources npz:<file>:<key>)"
            )
    feats = []
    for name in names:
        if name == "distilled":
            feats.append(distilled_features(args, model, scene, pipe, bg, backend, out_dir,
                                            iteration))  # fmt: skip
        elif name == "field":
            feats.append(src.load_field_features(ply_path, args.field_level))
        elif name.startswith("npz:"):
            feats.append(src.load_npz_source(name))
        else:
            raise SegmentationError(
                f"unknown feature source {name!r}; use distilled, field or npz:<path>:<key>"
            )
    cw, first = None, None
    if args.cluster_source_weights:
        cw = np.load(args.cluster_source_weights)
        eq, _ = src.fuse_sources(feats, None, 1.0, mode=args.fusion)
        first, _ = clu.kmeans_labels(eq, len(cw), seed=args.cluster_seed,
                                     minibatch_above=args.minibatch_above)  # fmt: skip
    fused, w = src.fuse_sources(feats, args.source_weights, args.fusion_temperature, cw, first,
                                args.fusion)  # fmt: skip
    return fused, names, w


# ---------------------------------------------------------------------------- seeds


def find_camera(scene: Scene, view: str):
    """A camera by image name, stem, or index into sorted train + test cameras."""
    cams = scene.getTrainCameras() + scene.getTestCameras()
    for c in cams:
        if view in (c.image_name, c.image_stem):
            return c
    if view.isdigit() and int(view) < len(cams):
        return cams[int(view)]
    raise SegmentationError(
        f"--click view {view!r} is not a view of this model (e.g. {cams[0].image_name}); give "
        f"an image name, a stem or an index below {len(cams)}"
    )


def seed_gaussians(
    args, model, scene, pipe, bg, backend, labels
) -> tuple[torch.Tensor, dict] | None:
    """Seed ids [S] for region growing, and a description; None when no seed flag is given."""
    from segmentation.region_grow import pick_gaussian

    if args.click:
        view, x, y = args.click
        try:
            xf, yf = float(x), float(y)
        except ValueError:
            raise SegmentationError(f"--click {view} {x} {y}: X and Y must be numbers") from None
        cam = find_camera(scene, view)
        g = pick_gaussian(cam, model, pipe, bg, xf, yf, backend, args.min_alpha)
        info = {"click": [cam.image_name, xf, yf], "gaussian": g, "click_seed": args.click_seed}
        if args.click_seed == "gaussian":
            return torch.tensor([g]), info
        # ISRF seeds a stroke with every voxel whose feature resembles the stroke's; here the
        # Gaussians of the clicked one's cluster, in its 3D connected piece (cleanup.py).
        from segmentation.cleanup import main_component

        xyz = model.get_xyz.detach().cpu().numpy()
        seeds = main_component(xyz, labels == labels[g], np.ones(len(xyz)),
                               args.keep_component, anchor=g)  # fmt: skip
        return torch.from_numpy(np.flatnonzero(seeds)), {**info, "n_seeds": int(seeds.sum())}
    if args.seed_point:
        p = torch.tensor(args.seed_point, dtype=torch.float32, device=model.device)
        g = int((model.get_xyz - p).norm(dim=1).argmin())
        return torch.tensor([g]), {"seed_point": list(args.seed_point), "gaussian": g}
    if args.seed_cluster >= 0:
        if args.seed_cluster >= args.k:
            raise SegmentationError(
                f"--seed_cluster {args.seed_cluster}: there are {args.k} clusters"
            )
        ids = torch.from_numpy(np.flatnonzero(labels == args.seed_cluster))
        return ids, {"seed_cluster": args.seed_cluster, "n_seeds": len(ids)}
    return None


# ---------------------------------------------------------------------------- evaluation


def load_gt_label_map(folder: str, cam) -> np.ndarray | None:
    """[H, W] int ground-truth labels of ``cam`` at its resolution (nearest resize, with a
    warning, when the file has another size); None when the folder has no file for it."""
    for name in (cam.image_stem + ".png", cam.image_name, cam.image_name + ".png"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            break
    else:
        return None
    im = Image.open(p)
    size = (cam.image_width, cam.image_height)
    if im.size != size:
        print(f"[segment] warning: {p} is {im.size[0]}x{im.size[1]}, the view "
              f"{size[0]}x{size[1]}: resized (nearest)")  # fmt: skip
        im = im.resize(size, Image.NEAREST)
    arr = np.asarray(im)
    return (arr[..., 0] if arr.ndim == 3 else arr).astype(np.int64)


def selection_masks(
    model, cams, pipe, bg, backend, sel: torch.Tensor, min_alpha: float
) -> list[np.ndarray]:
    """Per view, [H, W] bool: pixels where the selected Gaussians carry most of the opacity."""
    from segmentation.outputs import render_label_map

    lab = sel.long().to(model.device)  # 1 = selected, 0 = rest
    return [render_label_map(c, model, pipe, bg, lab, 2, backend, min_alpha)[0] == 1 for c in cams]


def evaluate(
    args, scene, test_maps, k, sel_masks, labels=None, extract=None, sel_alone=None
) -> dict:
    """Scores on the test views (module docstring of segmentation/metrics.py).

    Foreground IoU comes two ways: from the label maps (``fg_iou_clusters``, and
    ``fg_iou_selected`` for the selected segment: the object's pixels are those where its
    Gaussians carry most of the opacity, so floaters in front of it take pixels away), and
    from the extracted object rendered alone (``*_extracted``: alpha >= ``--min_alpha``; its
    stray Gaussians add pixels). ``extract(clusters)`` renders those masks for the
    foreground clusters (each reduced to its main piece by ``--keep_component``);
    ``sel_alone`` holds them for the selected segment."""
    from segmentation import metrics as met

    cams = scene.getTestCameras()
    out: dict = {"n_views": len(cams)}
    gt_dir = args.gt_labels or os.path.join(scene.source_path, "masks_gt")
    if os.path.isdir(gt_dir):
        gts, preds = [], []
        for cam, pred in zip(cams, test_maps):
            g = load_gt_label_map(gt_dir, cam)
            if g is None:
                continue
            p = pred.copy()
            p[p < 0] = k  # void pixels: one more predicted class, mapped to --void_label
            gts.append(g)
            preds.append(p)
        if gts:
            n_gt = int(max(int(g.max()) for g in gts)) + 1
            if args.void_label >= 0:
                n_gt = max(n_gt, args.void_label + 1)
            conf = sum(met.confusion_matrix(g, p, n_gt, k + 1) for g, p in zip(gts, preds))
            if args.void_label >= 0:
                mapping = np.append(met.match_clusters(conf[:, :k], args.match), args.void_label)
            else:
                mapping = met.match_clusters(conf, args.match)
            sc = met.scores_from_confusion(conf, mapping)
            sc.update(matching=args.match, gt_labels=gt_dir, views_scored=len(gts),
                      void_label=args.void_label, confusion=conf.tolist())  # fmt: skip
            out["labels"] = sc
        else:
            print(f"[segment] {gt_dir}: no label map for any test view; mIoU skipped")
    else:
        print(f"[segment] no ground-truth label maps ({gt_dir}); mIoU/mAcc skipped")
    fg_gt = [c.eval_mask[0].cpu().numpy() > 0.5 if c.eval_mask is not None else None for c in cams]
    if any(m is not None for m in fg_gt):
        pairs = [(g, i) for i, g in enumerate(fg_gt) if g is not None]
        gts = [g for g, _ in pairs]
        if sel_masks is not None:
            out["fg_iou_selected"] = met.foreground_iou(gts, [sel_masks[i] for _, i in pairs])
        preds = [np.where(test_maps[i] < 0, k, test_maps[i]) for _, i in pairs]
        fg_cl = met.foreground_clusters(gts, preds, k + 1)[:k]
        pred_fg = [np.isin(test_maps[i], np.flatnonzero(fg_cl)) for _, i in pairs]
        out["fg_iou_clusters"] = met.foreground_iou(gts, pred_fg)
        out["fg_clusters"] = np.flatnonzero(fg_cl).tolist()
        if extract is not None and labels is not None:
            alone = extract(out["fg_clusters"])
            out["fg_iou_clusters_extracted"] = met.foreground_iou(gts, [alone[i] for _, i in pairs])
        if sel_alone is not None:
            out["fg_iou_selected_extracted"] = met.foreground_iou(
                gts, [sel_alone[i] for _, i in pairs]
            )
    return out


def format_table(scores: dict) -> str:
    """The printed summary: one row per score."""
    rows = []
    lab = scores.get("labels")
    if lab:
        rows.append((f"mIoU ({lab['matching']}, {lab['views_scored']} views)", lab["mIoU"]))
        rows.append(("mAcc", lab["mAcc"]))
        rows.append(("pixel accuracy", lab["pixel_acc"]))
        for c, v in lab["per_label_iou"].items():
            rows.append((f"  IoU label {c}", v))
    if "fg_iou_clusters" in scores:
        rows.append(
            (f"foreground IoU (clusters {scores['fg_clusters']})", scores["fg_iou_clusters"])
        )
    if "fg_iou_clusters_extracted" in scores:
        rows.append(
            ("  the same, extracted and rendered alone", scores["fg_iou_clusters_extracted"])
        )
    if "fg_iou_selected" in scores:
        rows.append(("foreground IoU (selected segment)", scores["fg_iou_selected"]))
    if "fg_iou_selected_extracted" in scores:
        rows.append(
            ("  the same, extracted and rendered alone", scores["fg_iou_selected_extracted"])
        )
    if not rows:
        return "(no ground truth: nothing scored)"
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{w}}  {v:.4f}" for name, v in rows)


# ---------------------------------------------------------------------------- main


def run(args, want_eval: bool) -> dict:
    from render import load_model
    from segmentation.cleanup import main_component
    from segmentation.outputs import (
        alpha_mask,
        overlay,
        palette,
        render_label_map,
        render_segment,
        save_label_png,
        subset_model,
        write_cluster_plys,
    )

    t_start = time.perf_counter()
    device = pick_device("cuda")
    backend = resolve_backend(getattr(args, "backend", None) or "auto", device)
    with torch.no_grad():
        model, iteration = load_model(args.model_path, args.iteration, device)
    ply_path = os.path.join(
        args.model_path, "point_cloud", f"iteration_{iteration}", "point_cloud.ply"
    )
    n = model.num_gaussians
    if args.k < 1 or args.k > n:
        raise SegmentationError(f"--k {args.k} is out of range: the model has {n} Gaussians")
    scene = Scene(args.dataset, args.sparse, device=device, model_path=args.model_path,
                  reuse_split=True)  # fmt: skip
    bg = torch.tensor([1.0, 1.0, 1.0] if args.dataset.white_background else [0.0, 0.0, 0.0],
                      device=device)  # fmt: skip
    pipe = args.pipe
    if args.click:  # check the click before any long step
        cam = find_camera(scene, args.click[0])
        try:
            cx, cy = float(args.click[1]), float(args.click[2])
        except ValueError:
            raise SegmentationError(
                f"--click {' '.join(args.click)}: X and Y must be numbers"
            ) from None
        if not (0 <= cx < cam.image_width and 0 <= cy < cam.image_height):
            raise SegmentationError(
                f"--click {cam.image_name} {cx:g} {cy:g} is outside the {cam.image_width}x"
                f"{cam.image_height} image (pixels at training resolution)"
            )
    out_dir = os.path.join(args.model_path, SEG_DIR)
    os.makedirs(out_dir, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    grows = bool(args.click or args.seed_point or args.seed_cluster >= 0)
    if args.cluster == "kmeans" or grows:
        feats, source_names, weights = gather_features(args, model, scene, pipe, bg, backend,
                                                       ply_path, out_dir, iteration)  # fmt: skip
    else:  # the geometric method reads no features
        feats, source_names, weights = np.zeros((n, 0), np.float32), [], np.zeros((n, 0))
    timings["features_s"] = time.perf_counter() - t

    xyz = model.get_xyz.detach().cpu().numpy()
    opacity = model.get_opacity.detach().cpu().numpy()
    t = time.perf_counter()
    geometry = None
    if args.cluster == "geometric":
        from segmentation.geometric import geometric_labels

        centres = np.stack([c.camera_center.cpu().numpy() for c in scene.getTrainCameras()])
        labels, geometry = geometric_labels(
            xyz, opacity, args.k - 1, scene.cameras_extent, args.plane_threshold,
            args.object_eps, seed=args.cluster_seed, cameras=centres,
        )  # fmt: skip
        floor = "support plane" if geometry["plane_normal"] is not None else "no support plane"
        what = f"{floor} + {geometry['objects_found']} objects"
    else:
        emb = clu.joint_embedding(xyz, feats, args.w_xyz, args.w_feat, scene.cameras_extent)
        labels, _ = clu.kmeans_labels(emb, args.k, opacity, seed=args.cluster_seed,
                                      minibatch_above=args.minibatch_above)  # fmt: skip
        labels = clu.relabel_by_size(labels, args.k, opacity)
        what = f"KMeans k={args.k} ({emb.shape[1]} dims)"
    timings["cluster_s"] = time.perf_counter() - t
    np.save(os.path.join(out_dir, "labels.npy"), labels.astype(np.int32))
    plys = write_cluster_plys(model, labels, args.k, out_dir)
    print(
        f"[segment] {what} on {n} Gaussians: {timings['cluster_s']:.1f} s; wrote labels.npy "
        f"and {len(plys)} cluster PLYs"
    )

    # Region growing (a seed flag) or a chosen cluster gives the selected segment.
    selection = None
    info: dict = {}
    seeds = seed_gaussians(args, model, scene, pipe, bg, backend, labels)
    if seeds is not None:
        from segmentation.region_grow import bilateral_weights, grow_region, knn_graph

        ids, info = seeds
        t = time.perf_counter()
        xyz_t = model.get_xyz.detach()
        f_t = torch.from_numpy(clu.normalise_features(feats)).to(device)
        idx, _ = knn_graph(xyz_t, args.knn)
        w = bilateral_weights(xyz_t, f_t, idx, args.sigma_f, args.sigma_d)
        allowed = model.get_opacity.detach() >= args.grow_min_opacity
        selection = grow_region(ids, idx, w, args.grow_threshold, allowed, progress=True)
        timings["region_growing_s"] = time.perf_counter() - t
        print(f"[segment] region growing from {info}: {int(selection.sum())} of {n} Gaussians "
              f"({timings['region_growing_s']:.2f} s)")  # fmt: skip
    elif args.select >= 0:
        if args.select >= args.k:
            raise SegmentationError(f"--select {args.select}: there are {args.k} clusters")
        selection = torch.from_numpy(labels == args.select).to(device)
        info = {"select_cluster": args.select}
    if selection is not None and args.keep_component > 0:
        n_before = int(selection.sum())
        keep = main_component(xyz, selection.cpu().numpy(), opacity.reshape(-1),
                              args.keep_component, anchor=info.get("gaussian"))  # fmt: skip
        selection = torch.from_numpy(keep).to(device)
        info["n_before_keep_component"] = n_before

    colors = palette(args.k)
    splits = [("test", scene.getTestCameras())]
    if not args.skip_train_renders:
        splits.insert(0, ("train", scene.getTrainCameras()))
    lab_t = torch.from_numpy(labels).long().to(device)
    test_maps: list[np.ndarray] = []
    sub = None
    if selection is not None:
        selection = selection.to(device)
        sub = subset_model(model, selection)
        save_ply(sub, os.path.join(out_dir, "selected.ply"))
        np.save(os.path.join(out_dir, "selected.npy"), selection.cpu().numpy())
    for split, cams in splits:
        for cam in tqdm(cams, desc=f"label renders ({split})", leave=False):
            lmap, rgb = render_label_map(
                cam, model, pipe, bg, lab_t, args.k, backend, args.min_alpha
            )
            save_label_png(os.path.join(out_dir, split, "labels", cam.image_stem + ".png"), lmap)
            ov_path = os.path.join(out_dir, split, "overlay", cam.image_stem + ".png")
            os.makedirs(os.path.dirname(ov_path), exist_ok=True)
            Image.fromarray(overlay(rgb, lmap, colors)).save(ov_path)
            if split == "test":
                test_maps.append(lmap)
            if sub is not None:
                p = os.path.join(out_dir, "selected", split, cam.image_stem + ".png")
                os.makedirs(os.path.dirname(p), exist_ok=True)
                Image.fromarray(render_segment(cam, sub, pipe, bg, backend)).save(p)

    result = {
        "model": args.model_path,
        "iteration": iteration,
        "n_gaussians": n,
        "k": args.k,
        "feature_sources": source_names,
        "feature_channels": int(feats.shape[1]),
        "mean_source_weights": weights.mean(0).tolist(),
        "cluster": args.cluster,
        "geometry": geometry,
        "w_xyz": args.w_xyz,
        "w_feat": args.w_feat,
        "selection": {**info, "n_selected": int(selection.sum())}
        if selection is not None
        else None,
        "timings": timings,
    }
    if want_eval:
        if not scene.getTestCameras():
            raise SegmentationError(f"{args.model_path}: the split has no test views to score")
        test_cams = scene.getTestCameras()
        sel_masks = sel_alone = None
        if selection is not None:
            sel_masks = selection_masks(model, test_cams, pipe, bg, backend, selection,
                                        args.min_alpha)  # fmt: skip
            sel_alone = [alpha_mask(c, sub, pipe, bg, backend, args.min_alpha) for c in test_cams]

        def extract(clusters: list[int]) -> list[np.ndarray]:
            keep = np.zeros(n, bool)  # each cluster its own main piece (one object each)
            for c in clusters:
                keep |= main_component(xyz, labels == c, opacity.reshape(-1), args.keep_component)
            part = subset_model(model, keep)
            return [alpha_mask(c, part, pipe, bg, backend, args.min_alpha) for c in test_cams]

        scores = evaluate(args, scene, test_maps, args.k, sel_masks, labels, extract, sel_alone)
        result["scores"] = scores
        print(format_table(scores))
    result["seconds"] = time.perf_counter() - t_start
    save_json(os.path.join(out_dir, "segmentation.json"), result)
    print(f"[segment] wrote {out_dir} ({result['seconds']:.1f} s)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="3D segmentation of a trained Gaussian model")
    model = ModelParams(parser, sentinel=True)
    pipeline = PipelineParams(parser)
    sparse = SparseViewParams(parser, sentinel=True)
    BackendParams(parser, sentinel=True)
    parser.add_argument("--iteration", default=-1, type=int, help="model iteration (-1: last)")
    add_segmentation_args(parser)
    argv = sys.argv[1:] if argv is None else argv
    cmdline = parser.parse_args(argv)
    want_eval = bool(cmdline.eval)  # --eval here means "score", not the training split
    args = get_combined_args(parser, argv)
    for key, value in vars(cmdline).items():  # defaults of None are not merged: add them
        if not hasattr(args, key):
            setattr(args, key, value)
    try:
        if not args.model_path:
            raise SegmentationError("pass the trained model folder with -m/--model_path")
        args.dataset, args.sparse, args.pipe = (
            model.extract(args),
            sparse.extract(args),
            pipeline.extract(args),
        )
        run(args, want_eval)
    except (SceneError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
