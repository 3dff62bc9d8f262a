"""Extract 2D segment priors for a scene: multi-level masks or a binary region of interest.

    python extract_mask.py -s <scene>                      # masks/<stem>.npz + .png
    python extract_mask.py -s <scene> --mode roi --prompts prompts.json   # pure_masks/
    python extract_mask.py --dataset_root <folder>         # every scene below <folder>

Backends: SAM 2.1 (``--sam_ckpt``, or a cached/downloaded checkpoint) or the weight-free
classical fallback (felzenszwalb hierarchy, GrabCut). See docs/PRIORS.md for formats,
prompt files and weights.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser

from arguments.priors import MaskExtractionParams, PriorSourceParams
from priors import PriorError
from priors.extract import choose_backend, extract_auto, extract_roi
from priors.io import scenes_from_args
from utils.general_utils import pick_device


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    PriorSourceParams(parser)
    MaskExtractionParams(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenes = scenes_from_args(args)
        backend = choose_backend(args, pick_device(args.device))
        run = extract_roi if args.mode == "roi" else extract_auto
        for scene in scenes:
            run(scene, args, backend)
    except (PriorError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
