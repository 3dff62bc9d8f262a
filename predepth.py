"""Monocular metric depth priors with Depth Pro (transformers) for every image of a scene.

    python predepth.py -s <scene>                               # weights from the hub
    python predepth.py -s <scene> --depth_model /path/DepthPro-hf   # a local folder

Writes depth_pro/<image name>.npy (float32 metres, image resolution), <image name>_meta.npz
(focal length and where it came from) and a colourised <image name>.png. With COLMAP
intrinsics in <scene>/sparse/0 the known focal length sets the metric scale. See
docs/PRIORS.md.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser

from arguments.priors import DepthPriorParams, PriorSourceParams
from priors import PriorError
from priors.depth_pro import load_depth_pro, run_predepth
from priors.extract import RANDOM_WEIGHTS_BANNER
from priors.io import scenes_from_args
from utils.general_utils import pick_device


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    PriorSourceParams(parser)
    DepthPriorParams(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenes = scenes_from_args(args)
        device = pick_device(args.device)
        if args.random_init_weights:
            print(RANDOM_WEIGHTS_BANNER)
        runner = load_depth_pro(args.depth_model, device, args.precision, args.random_init_weights)
        print(
            f"[predepth] Depth Pro from {args.depth_model}"
            + (" (RANDOM WEIGHTS)" if args.random_init_weights else "")
            + f" on {device}, {runner.precision}, input {runner.size}px, "
            + ("torchvision processor" if runner.processor is not None else "torch preprocessing")
        )
        for scene in scenes:
            run_predepth(scene, args, runner)
    except (PriorError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
