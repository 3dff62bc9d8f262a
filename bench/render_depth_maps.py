"""Depth maps of one split's training views rendered from another model: the stand-in
for a learned depth prior in the alignment acceptance (bench/alignment_corruption.py
``--depth_dir``), e.g. depth from a model trained on every view of the scene, rendered
for the 3 training views of the 3-view split.

    python bench/render_depth_maps.py -m output/fern_all -s data_local/fern \\
        --n_views 3 --split_protocol llff -o output/fern_all_depth

Writes ``<out>/<image name>.npy`` (float32 [H, W] expected z-depth, 0 where the rendered
alpha is below 0.5) for each training view of the split the flags name.
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentParser

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import ModelParams, PipelineParams, SparseViewParams  # noqa: E402
from gaussian_renderer import render, resolve_backend  # noqa: E402
from priors.io import save_npy  # noqa: E402
from render import load_model  # noqa: E402
from scene import Scene  # noqa: E402
from scene.errors import SceneError  # noqa: E402
from utils.general_utils import pick_device  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    model = ModelParams(parser)
    pipeline = PipelineParams(parser)
    sparse = SparseViewParams(parser)
    parser.add_argument("-o", "--out", required=True, help="folder for <image name>.npy")
    parser.add_argument("--iteration", type=int, default=-1)
    args = parser.parse_args(argv)
    device = pick_device("cuda")
    backend = resolve_backend("auto", device)
    try:
        gaussians, iteration = load_model(args.model_path, args.iteration, device)
        scene = Scene(model.extract(args), sparse.extract(args), device=device)
    except SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pipe, bg = pipeline.extract(args), torch.zeros(3, device=device)
    os.makedirs(args.out, exist_ok=True)
    with torch.no_grad():
        for cam in scene.getTrainCameras():
            pkg = render(cam, gaussians, pipe, bg, backend=backend, depth=True)
            depth = torch.where(pkg["alpha"] > 0.5, pkg["depth"], 0.0)[0]
            save_npy(os.path.join(args.out, f"{cam.image_name}.npy"),
                     depth.cpu().numpy().astype(np.float32))  # fmt: skip
            print(f"{cam.image_name}: depth of iteration {iteration}, "
                  f"{float((depth > 0).float().mean()):.1%} of the pixels")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
