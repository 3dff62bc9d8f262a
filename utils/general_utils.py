"""Small helpers shared by the scripts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (3DGS's safe_state without touching stdout or devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1 - x))


def pick_device(requested: str = "cuda") -> torch.device:
    """``requested`` if available; CUDA falls back to CPU with one notice."""
    if requested.startswith("cuda") and not torch.cuda.is_available():
        print("[device] CUDA is not available; running on the CPU")
        return torch.device("cpu")
    return torch.device(requested)


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` split at its first ``--``: the arguments a wrapper script parses itself, and
    the ones it hands on to train.py unchanged (empty without ``--``)."""
    if "--" not in argv:
        return list(argv), []
    cut = argv.index("--")
    return list(argv[:cut]), list(argv[cut + 1 :])


def claim_output_folder(root: Path, marker: str, owner: str, error: type = ValueError) -> None:
    """Create ``root`` for a script's outputs, or reuse it if ``owner`` made it before.

    A non-empty folder without the ``marker`` file is refused (raises ``error``), so a
    mistyped output path can never get another folder's contents deleted.
    """
    if root.exists() and not root.is_dir():
        raise error(f"{root} exists and is not a folder; pick another --output")
    if root.is_dir() and any(root.iterdir()) and not (root / marker).is_file():
        raise error(
            f"{root} is not empty and was not made by {owner} (no {marker}); "
            "pick another --output or empty it"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / marker).write_text(json.dumps({"made_by": owner}) + "\n")
