"""COLMAP stage: full SfM, train-only matches and points, SPARS3R test-camera registration.

    python colmap_match.py -s <scene>                       # full SfM when sparse/0 is missing
    python colmap_match.py -s <scene> --n_views 3 --split_protocol llff
    python colmap_match.py -s <scene> --n_views 12 --split_protocol custom --register spars3r
    python colmap_match.py -s <scene> --n_views 3 --split_protocol llff --dense   # + python -m mvs

Everything runs in process through pycolmap (CPU SIFT unless a CUDA build is installed). See
sfm/pipeline.py for what each step writes, and docs/ARCHITECTURE.md for the folder layout.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser

from arguments import ColmapParams, ModelParams, SparseViewParams
from sfm.colmap_ops import ColmapSettings, set_colmap_log_level
from sfm.errors import SceneError
from sfm.pipeline import StageRequest, run_colmap_stage


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    mp = ModelParams(parser)
    sp = SparseViewParams(parser)
    cp = ColmapParams(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    model, sparse, col = mp.extract(args), sp.extract(args), cp.extract(args)
    if not model.source_path:
        parser.error("-s/--source_path is required")
    set_colmap_log_level(col.verbose)
    settings = ColmapSettings(
        max_image_size=col.max_image_size,
        max_num_features=col.max_num_features,
        max_num_matches=col.max_num_matches,
        matcher=col.matcher,
        camera_model=col.camera_model,
        camera_mode=col.camera_mode,
        num_threads=col.num_threads,
        min_pair_matches=col.min_pair_matches,
        seed=col.seed,
    )
    req = StageRequest(
        scene_dir=model.source_path,
        images=model.images,
        n_views=sparse.n_views,
        split_protocol=sparse.split_protocol,
        train_views=list(sparse.train_views),
        register=col.register,
        register_threshold=col.register_threshold,
        overwrite=col.overwrite,
    )
    try:
        lines = run_colmap_stage(req, settings)
        if col.dense:
            if not (sparse.n_views or sparse.train_views):
                raise SceneError("--dense needs the training views: give --n_views N")
            print("\n".join(lines))
            from mvs.stage import MVSRequest, run_mvs_stage

            dense = MVSRequest(
                scene_dir=model.source_path,
                n_views=sparse.n_views,
                split_protocol=sparse.split_protocol,
                train_views=list(sparse.train_views),
                images=model.images,
                resolution=model.resolution,
                overwrite=col.overwrite,
            )
            lines = run_mvs_stage(dense).lines
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
