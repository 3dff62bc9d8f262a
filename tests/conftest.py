"""Shared pytest fixtures.

Real scenes live in ../shared/data next to the checkout (or wherever SEGSPLAT_DATA points).
Users and some CI machines do not have them: tests that need them skip cleanly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("SEGSPLAT_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The folder of real test scenes; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SEGSPLAT_DATA)")
    return SHARED_DATA


def require_scene(name: str) -> Path:
    """Path of one real scene under the shared data folder, or skip."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real scene {name} not found under {SHARED_DATA}")
    return path


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def step_once(model, opt) -> None:
    """One optimizer step on a loss that touches every parameter of ``model`` differently
    (so that each key's moments differ): for tests of state kept through set edits."""
    loss = sum((p**2).sum() * (i + 1) for i, p in enumerate(model.params.values()))
    loss.backward()
    opt.step()
    opt.zero_grad()


def random_gaussians(n: int, g: torch.Generator, device: str = "cuda"):
    """``n`` Gaussians with random means, colours, higher SH bands, rotations, opacities and
    anisotropic scales (so that every parameter's gradient is far from 0), drawn from
    ``g``; SH degree 3, all bands active."""
    from gaussian.model import GaussianModel

    pts = torch.randn(n, 3, generator=g) * 0.7
    model = GaussianModel.from_points(pts.to(device), torch.rand(n, 3, generator=g).to(device), 3)
    with torch.no_grad():
        model.params["shN"].copy_(0.2 * torch.randn(model.params["shN"].shape, generator=g))
        model.params["quats"].copy_(torch.randn(n, 4, generator=g))
        model.params["opacities"].copy_(torch.randn(n, generator=g))
        model.params["scales"].add_(torch.randn(n, 3, generator=g).to(device) * 0.5)
    model.active_sh_degree = 3
    return model
