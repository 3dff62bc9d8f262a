"""What every per-scene stage after the COLMAP stage shares (``python -m mvs``, ``python -m
alignment``, ``python -m mask_matching``): the flags that name the scene and its training
views, the train-only SfM model they read, and the ``Scene`` of that split.

The flags mean what they mean in train.py and colmap_match.py, so one command line's split
is the same split in every stage.
"""

from __future__ import annotations

import os
from argparse import ArgumentParser, Namespace
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from scene.colmap_io import detect_model_format
from scene.errors import SceneError

PROTOCOLS = ["llff", "dtu", "mip360", "custom"]


@dataclass
class SceneViews:
    """The scene and its training views, as a stage request holds them (the fields of
    ``scene_view_fields``; each stage's request adds its own settings)."""

    scene_dir: str
    n_views: int = 0
    split_protocol: str = "llff"
    train_views: list[str] = field(default_factory=list)
    images: str = "images"
    resolution: int = -1


def add_scene_view_args(parser: ArgumentParser, resolution: bool = True) -> None:
    """-s, --n_views, --split_protocol, --train_views, -i (and -r) on ``parser``."""
    parser.add_argument("-s", "--source_path", required=True, help="scene folder")
    parser.add_argument("--n_views", type=int, default=0, help="number of training views")
    parser.add_argument("--split_protocol", default="llff", choices=PROTOCOLS,
                        help="how the training views are chosen (as train.py and "
                        "colmap_match.py)")  # fmt: skip
    parser.add_argument("--train_views", nargs="+", default=[],
                        help="explicit training image names")  # fmt: skip
    if resolution:
        parser.add_argument("-r", "--resolution", type=int, default=-1,
                            help="training resolution (-r)")  # fmt: skip
    parser.add_argument("-i", "--images", default="images", help="images folder")


def scene_view_fields(args: Namespace, resolution: bool = True) -> dict:
    """The request fields of the flags of ``add_scene_view_args`` (scene_dir, n_views,
    split_protocol, train_views, images, and resolution)."""
    fields = {
        "scene_dir": args.source_path,
        "n_views": args.n_views,
        "split_protocol": args.split_protocol,
        "train_views": list(args.train_views),
        "images": args.images,
    }
    if resolution:
        fields["resolution"] = args.resolution
    return fields


def colmap_command(req: SceneViews, n_train: int) -> str:
    """The colmap_match.py command that makes ``colmap_<n_train>views`` for ``req``."""
    if req.train_views:
        return (
            f"python colmap_match.py -s {req.scene_dir} --train_views {' '.join(req.train_views)}"
        )
    return (
        f"python colmap_match.py -s {req.scene_dir} --n_views {n_train} "
        f"--split_protocol {req.split_protocol}"
    )


def train_only_model_dir(scene_dir: str, n_train: int) -> str:
    """``<scene>/colmap_<n_train>views/sparse/0``: the train-only SfM model."""
    return os.path.join(os.path.abspath(scene_dir), f"colmap_{n_train}views", "sparse", "0")


def require_train_only_model(req: SceneViews, n_train: int, role: str) -> str:
    """The train-only SfM model of ``req``'s split, or a ``SceneError`` naming the command
    that makes it (``role``: what the stage uses it for, for the message)."""
    path = train_only_model_dir(req.scene_dir, n_train)
    if detect_model_format(path) is None:
        raise SceneError(f"{path}: missing ({role}); make it with: {colmap_command(req, n_train)}")
    return path


def load_training_scene(req: SceneViews, device: torch.device | str = "cpu"):
    """The project's ``Scene`` for ``req``'s split at the training resolution."""
    from scene import Scene  # heavy import, kept local

    dataset = SimpleNamespace(
        source_path=req.scene_dir,
        model_path="",
        images=req.images,
        resolution=req.resolution,
        white_background=False,
        data_device=str(device),
        eval=True,
    )
    sparse = SimpleNamespace(
        n_views=req.n_views,
        split_protocol="custom" if req.train_views else req.split_protocol,
        train_views=list(req.train_views),
        random_init=0,
    )
    return Scene(dataset, sparse, device=device)
