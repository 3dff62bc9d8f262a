"""Dense-prior alignment (SPARS3R GFA + SOA) of the training views of a split.

    python -m alignment -s data_local/fern --n_views 3 --prior mvs
    python -m alignment -s data/fern --n_views 3 --prior depth_pro
    python -m alignment -s data/fern --n_views 3 --prior pointmap --prior_dir <mast3r pts>

Needs ``<scene>/colmap_<N>views/sparse/0`` (python colmap_match.py ... --n_views N), the
prior folder and, for the semantic step, ``masks/`` (python extract_mask.py). Writes
``<scene>/alignment/{sparse/0, points3D.ply, report.json, residuals/}`` (alignment/stage.py;
docs/ALIGNMENT.md).
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser

from alignment.dense_prior import PRIOR_KINDS
from alignment.fusion import AlignParams
from alignment.stage import AlignRequest, run_alignment
from scene.errors import SceneError
from scene.stage_inputs import add_scene_view_args, scene_view_fields


def build_parser() -> ArgumentParser:
    d = AlignParams()
    r = AlignRequest(scene_dir="")
    p = ArgumentParser(prog="python -m alignment", description=__doc__.split("\n")[0])
    add_scene_view_args(p)
    p.add_argument("--prior", default="depth_pro", choices=PRIOR_KINDS, help="dense prior kind")
    p.add_argument(
        "--prior_dir",
        default="",
        help="folder of the prior files (default: depth_pro/, depth_mvs/ or "
        "mast3r/individual_img_pts/ in the scene)",
    )
    p.add_argument("--masks_dir", default="", help="segment masks (default: <scene>/masks)")
    p.add_argument("--out_dir", default="", help="output folder (default: <scene>/alignment)")
    p.add_argument("--max_points", type=int, default=r.max_points, help="points in the model")
    p.add_argument(
        "--scene_unit",
        type=float,
        default=0.0,
        help="length of one threshold unit in scene units (default: median SfM depth / 5; "
        "1 gives SPARS3R's absolute thresholds)",
    )
    p.add_argument("--inlier_thresh", type=float, default=d.inlier_thresh, help="RANSAC inlier")
    p.add_argument("--outlier_thresh", type=float, default=d.outlier_thresh, help="GFA outlier")
    p.add_argument(
        "--align_error_thresh",
        type=float,
        default=d.align_error_thresh,
        help="SOA: reject a segment whose mean per-axis error exceeds this",
    )
    p.add_argument("--sample_size", type=int, default=d.sample_size, help="RANSAC sample")
    p.add_argument("--iterations", type=int, default=d.iterations, help="RANSAC hypotheses")
    p.add_argument("--early_stop", type=float, default=d.early_stop, help="inlier fraction")
    p.add_argument(
        "--min_correspondences",
        type=int,
        default=d.min_correspondences,
        help="views with fewer are skipped",
    )
    p.add_argument("--min_outlier_ratio", type=float, default=d.min_outlier_ratio)
    p.add_argument("--min_outliers", type=int, default=d.min_outliers)
    p.add_argument("--min_median_residual", type=float, default=d.min_median_residual)
    p.add_argument(
        "--segment_min_points", type=int, default=d.segment_min_points, help="T: outliers"
    )
    p.add_argument(
        "--segment_min_purity",
        type=float,
        default=d.segment_min_purity,
        help="share of a segment's correspondences that must be outliers",
    )
    p.add_argument("--merge_overlap", type=float, default=d.merge_overlap)
    p.add_argument(
        "--depth_fit",
        default=d.depth_fit,
        choices=["affine", "scale", "none"],
        help="per-view depth correction fitted on the SfM depths (depth priors)",
    )
    p.add_argument("--no_semantic", action="store_true", help="global alignment only")
    p.add_argument("--min_confidence", type=float, default=0.0, help="pointmap confidence")
    p.add_argument("--seed", type=int, default=0, help="RANSAC seed")
    p.add_argument("--no_png", action="store_true", help="no residual images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def request_from_args(args) -> AlignRequest:
    params = AlignParams(
        inlier_thresh=args.inlier_thresh,
        outlier_thresh=args.outlier_thresh,
        align_error_thresh=args.align_error_thresh,
        sample_size=args.sample_size,
        iterations=args.iterations,
        early_stop=args.early_stop,
        min_correspondences=args.min_correspondences,
        min_outlier_ratio=args.min_outlier_ratio,
        min_outliers=args.min_outliers,
        min_median_residual=args.min_median_residual,
        segment_min_points=args.segment_min_points,
        merge_overlap=args.merge_overlap,
        segment_min_purity=args.segment_min_purity,
        depth_fit=args.depth_fit,
        semantic=not args.no_semantic,
    )
    return AlignRequest(
        **scene_view_fields(args),
        prior=args.prior,
        prior_dir=args.prior_dir,
        masks_dir=args.masks_dir,
        out_dir=args.out_dir,
        max_points=args.max_points,
        scene_unit=args.scene_unit,
        min_confidence=args.min_confidence,
        seed=args.seed,
        write_png=not args.no_png,
        progress=not args.quiet,
        params=params,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = run_alignment(request_from_args(args))
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in result.lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
