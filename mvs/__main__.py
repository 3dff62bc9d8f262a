"""Dense initialisation: plane-sweep MVS on the training views of a split.

    python -m mvs -s data_local/fern --n_views 3 --split_protocol llff
    python -m mvs -s data_local/dtu_scan24 --n_views 3 --split_protocol dtu --device cuda

Needs ``<scene>/colmap_<N>views/sparse/0`` (python colmap_match.py ... --n_views N). Writes
``colmap_<N>views/dense/{points3D.ply,report.json}`` and ``depth_mvs/`` (see mvs/stage.py).
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser

from mvs.stage import MVSRequest, run_mvs_stage
from scene.errors import SceneError
from scene.stage_inputs import add_scene_view_args, scene_view_fields


def build_parser() -> ArgumentParser:
    d = MVSRequest(scene_dir="")
    p = ArgumentParser(prog="python -m mvs", description=__doc__.split("\n")[0])
    add_scene_view_args(p)
    p.add_argument(
        "--num_planes", type=int, default=d.num_planes, help="depth hypotheses (at least)"
    )
    p.add_argument(
        "--plane_step_px",
        type=float,
        default=d.plane_step_px,
        help="raise the plane count (up to --max_planes) until consecutive planes move the "
        "image centre by at most this many pixels in every source (0: exactly --num_planes)",
    )
    p.add_argument("--max_planes", type=int, default=d.max_planes, help="cap of the above")
    p.add_argument(
        "--speckle_size",
        type=int,
        default=d.speckle_size,
        help="depth islands of at most this many pixels are dropped (0: off)",
    )
    p.add_argument("--window", type=int, default=d.window, help="NCC window side (odd, px)")
    p.add_argument("--top_k", type=int, default=d.top_k, help="best sources averaged per pixel")
    p.add_argument("--min_ncc", type=float, default=d.min_ncc, help="confidence threshold")
    p.add_argument(
        "--max_reproj_px", type=float, default=d.max_reproj_px, help="consistency: px error"
    )
    p.add_argument(
        "--max_rel_depth", type=float, default=d.max_rel_depth, help="consistency: depth error"
    )
    p.add_argument(
        "--min_views", type=int, default=d.min_views, help="agreeing views, reference included"
    )
    p.add_argument("--max_points", type=int, default=d.max_points, help="fused point budget")
    p.add_argument(
        "--max_sources",
        type=int,
        default=d.max_sources,
        help="source views swept per reference view (those facing most alike)",
    )
    p.add_argument(
        "--fill_segments",
        action="store_true",
        help="fill each 2D segment's holes (masks/) with the plane of its consistent pixels "
        "(mvs/segment_fill.py)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cuda or cpu")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    req = MVSRequest(
        **scene_view_fields(args),
        num_planes=args.num_planes,
        plane_step_px=args.plane_step_px,
        max_planes=args.max_planes,
        speckle_size=args.speckle_size,
        window=args.window,
        top_k=args.top_k,
        min_ncc=args.min_ncc,
        max_reproj_px=args.max_reproj_px,
        max_rel_depth=args.max_rel_depth,
        min_views=args.min_views,
        max_points=args.max_points,
        max_sources=args.max_sources,
        fill_segments=args.fill_segments,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    try:
        result = run_mvs_stage(req)
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(result.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
