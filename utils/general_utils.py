"""Small helpers shared by the scripts."""

from __future__ import annotations

import random

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
