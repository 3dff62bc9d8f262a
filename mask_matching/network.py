"""The mask descriptor network (RegSegField's ``MaskPermutation``, seeds digest 1.3).

Each view's masks are numbered by area within that view only: mask 3 of one view has
nothing to do with mask 3 of another. The network learns, per view, a map from the
multi-hot membership vector to a shared space where the same physical segment gets the
same descriptor in every view:

    input [C_v] --(per-view head: 3 x Linear + LeakyReLU(0.2), C_v -> 64 -> 64 -> 64)-->
    [64] --(shared trunk: 3 x Linear(64, 64) + LeakyReLU)--> t [64]
    level 0:     y_0 = Linear(64 -> 16)(t)
    level l > 0: y_l = Linear(16 + 64 -> 16)([y_{l-1}, t])
    output: [L, D] = [4, 16], each level L2-normalised.

The level heads start as identity maps with zero bias (weight ``eye(16, in)``): at
initialisation every level is the first 16 trunk features, normalised, and the levels
drift apart only as far as the hierarchy loss asks. Level 0 is the coarsest grouping
(pixels sharing any mask), higher levels are finer (see ``losses.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 4
DIM = 16
HIDDEN = 64
SLOPE = 0.2


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(SLOPE)]
    return nn.Sequential(*layers)


def identity_(linear: nn.Linear) -> nn.Linear:
    """Set ``linear`` to the identity on its first ``out_features`` inputs, zero bias."""
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
        linear.bias.zero_()
    return linear


class DescriptorNet(nn.Module):
    """Per-view input heads, shared trunk, ``levels`` hierarchical heads of width ``dim``.

    ``forward(view, x)``: x [N, C_view] float multi-hot -> [N, levels, dim], unit length
    along the last axis.
    """

    def __init__(
        self,
        in_dims: list[int],
        levels: int = LEVELS,
        dim: int = DIM,
        hidden: int = HIDDEN,
    ):
        super().__init__()
        if levels < 1 or dim < 1 or dim > hidden:
            raise ValueError(f"need 1 <= levels and 1 <= dim <= hidden, got {levels}, {dim}")
        self.in_dims = [int(c) for c in in_dims]
        self.levels, self.dim, self.hidden = levels, dim, hidden
        self.inputs = nn.ModuleList([_mlp([c, hidden, hidden, hidden]) for c in self.in_dims])
        self.trunk = _mlp([hidden] * 4)
        self.heads = nn.ModuleList(
            [identity_(nn.Linear(hidden if lv == 0 else dim + hidden, dim)) for lv in range(levels)]
        )

    def config(self) -> dict:
        """Constructor arguments, saved with the weights."""
        return {
            "in_dims": self.in_dims,
            "levels": self.levels,
            "dim": self.dim,
            "hidden": self.hidden,
        }

    def forward(self, view: int, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk(self.inputs[view](x))  # [N, hidden]
        outs = []
        y = self.heads[0](t)  # [N, dim]
        outs.append(y)
        for head in self.heads[1:]:
            y = head(torch.cat([y, t], dim=-1))  # [N, dim]
            outs.append(y)
        return F.normalize(torch.stack(outs, dim=1), dim=-1)  # [N, levels, dim]
