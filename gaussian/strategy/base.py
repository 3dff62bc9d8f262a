"""The interface every densification strategy implements.

A strategy holds only hyper-parameters. Its running statistics live in a plain ``state``
dict (created by ``initialize_state``) that the training loop passes back in; per-Gaussian
tensors in that dict follow prune/append automatically (``gaussian/ops.py``).

The training loop calls, each iteration::

    strategy.step_pre_backward(render_pkg, state, step)      # e.g. keep 2D-mean gradients
    loss.backward()
    strategy.step_post_backward(model, optimizer, state, step, render_pkg, camera)
"""

from __future__ import annotations

from typing import Any

import torch

from gaussian.model import GaussianModel


class Strategy:
    def initialize_state(self, model: GaussianModel) -> dict[str, Any]:
        return {}

    def step_pre_backward(self, render_pkg: dict, state: dict, step: int) -> None:
        """Runs after rendering, before ``backward()``."""

    def step_post_backward(
        self,
        model: GaussianModel,
        optimizer: torch.optim.Optimizer,
        state: dict,
        step: int,
        render_pkg: dict,
        camera,
    ) -> dict[str, int]:
        """Runs after ``backward()``, before the optimizer step. Returns counts to log."""
        return {}
