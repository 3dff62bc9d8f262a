"""Match the segments of the training views across views (RegSegField's mask matching).

    python -m mask_matching -s data_local/fern --n_views 3 --split_protocol llff
    python -m mask_matching -s data_local/dtu_scan24 --n_views 3 --split_protocol dtu \
        --epochs 500 --device auto --overwrite

Needs ``<scene>/masks/`` (python extract_mask.py -s <scene> --mode auto) and
``<scene>/colmap_<N>views/matches.npz`` (python colmap_match.py -s <scene> --n_views N).
Writes ``<scene>/mask_matching/`` (files in mask_matching/maps.py; docs/MASK_MATCHING.md).
"""

from __future__ import annotations

import sys
import warnings
from argparse import ArgumentParser

from mask_matching.fit import FitSettings
from mask_matching.stage import MatchRequest, run_mask_matching, summary_lines
from scene.errors import SceneError
from scene.stage_inputs import add_scene_view_args, scene_view_fields


def build_parser() -> ArgumentParser:
    d = FitSettings()
    p = ArgumentParser(prog="python -m mask_matching", description=__doc__.split("\n")[0])
    add_scene_view_args(p, resolution=False)
    p.add_argument("--epochs", type=int, default=d.epochs, help="full-batch epochs")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--gamma", type=float, default=d.gamma, help="ExponentialLR decay per epoch")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the network's weights")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="descriptors agree at a level when mean_D (f - g)^2 is below this (report)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cuda or cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch on the CPU (0: torch's default); 1 is fastest here",
    )
    p.add_argument("--no_previews", action="store_true", help="skip the preview PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace <scene>/mask_matching")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.epochs < 1:
        print(f"error: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 1
    req = MatchRequest(
        **scene_view_fields(args, resolution=False),
        device=args.device,
        threads=args.threads,
        tolerance=args.tolerance,
        overwrite=args.overwrite,
        previews=not args.no_previews,
        progress=not args.quiet,
        fit=FitSettings(epochs=args.epochs, lr=args.lr, gamma=args.gamma, seed=args.seed),
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ours are printed as one line each
            report = run_mask_matching(req)
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
