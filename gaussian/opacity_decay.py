"""Opacity decay (Han et al., Binocular3DGS, NeurIPS 2024): after every optimizer step
while densification runs, each Gaussian's opacity is multiplied by a factor just below 1,

    alpha <- lambda * alpha,   lambda = 0.995 (say),

applied to the logit parameter as logit(lambda * sigmoid(x)). Gaussians on a surface that
the training images see get photometric gradients that restore their opacity; floaters and
redundant Gaussians, which no image needs, fade below the pruning threshold and are removed
at the next densification step. At 3 views this is a cheap regulariser against the
co-adapted floaters that fit the training views but not new ones.

The update is in place on the parameter's storage, so it runs beside the CUDA-graph step.
"""

from __future__ import annotations

import torch

from gaussian.model import GaussianModel


@torch.no_grad()
def decay_opacity_(model: GaussianModel, factor: float) -> None:
    """Multiply every opacity of ``model`` by ``factor`` (in (0, 1]), in place."""
    logits = model.params["opacities"]  # [N] pre-sigmoid
    decayed = torch.sigmoid(logits).mul_(factor).clamp_(1e-6, 1.0 - 1e-6)
    logits.copy_(torch.logit(decayed))
