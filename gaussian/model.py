"""The set of 3D Gaussians: parameters and per-Gaussian side data, nothing else.

Optimizer construction lives in ``gaussian/optim.py``, every edit of the set (prune,
append, replace) in ``gaussian/ops.py``, densification policy in ``gaussian/strategy/``,
PLY files in ``gaussian/ply.py``. This class only holds tensors and their activations.

Storage (raw, pre-activation values; N Gaussians, K = (sh_degree + 1) ** 2):

====================  ==========  =========================================
key                   shape       activation
====================  ==========  =========================================
``means``             [N, 3]      none
``scales``            [N, 3]      exp
``quats``             [N, 4]      normalise (w, x, y, z)
``opacities``         [N]         sigmoid
``sh0``               [N, 1, 3]   SH DC coefficients
``shN``               [N, K-1, 3] higher SH bands
====================  ==========  =========================================

Further learnable per-Gaussian tensors (e.g. group features) can be added to ``params``
under new keys; non-learnable per-Gaussian data (ids, counters) go into ``extras``. Both
follow every prune/append automatically because ``gaussian/ops.py`` edits all tensors whose
first dimension is N.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.general_utils import inverse_sigmoid
from utils.sh_utils import RGB2SH

CORE_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


class GaussianModel:
    def __init__(self, sh_degree: int = 3):
        self.max_sh_degree = sh_degree
        self.active_sh_degree = 0
        self.params: dict[str, nn.Parameter] = {}
        self.extras: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------- creation

    @classmethod
    def from_points(
        cls,
        points: torch.Tensor,  # [N, 3]
        colors: torch.Tensor,  # [N, 3] in [0, 1]
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        scales: torch.Tensor | None = None,  # [N, 3] activated; default: kNN distances
    ) -> GaussianModel:
        """Isotropic Gaussians on the points (3DGS ``create_from_pcd``).

        The default scale of each Gaussian is the root mean squared distance to its three
        nearest neighbours, as in 3DGS.
        """
        from gaussian.knn import mean_sq_dist_to_neighbors

        n = points.shape[0]
        device = points.device
        if scales is None:
            dist2 = mean_sq_dist_to_neighbors(points, k=3).clamp_min(1e-7)
            log_scales = torch.log(torch.sqrt(dist2))[:, None].repeat(1, 3)
        else:
            log_scales = torch.log(scales)
        quats = torch.zeros(n, 4, device=device)
        quats[:, 0] = 1.0
        n_rest = (sh_degree + 1) ** 2 - 1
        model = cls(sh_degree)
        model.params = {
            "means": nn.Parameter(points.float().clone()),
            "scales": nn.Parameter(log_scales.float()),
            "quats": nn.Parameter(quats),
            "opacities": nn.Parameter(
                inverse_sigmoid(torch.full((n,), init_opacity, device=device))
            ),
            "sh0": nn.Parameter(RGB2SH(colors.float())[:, None, :].clone()),
            "shN": nn.Parameter(torch.zeros(n, n_rest, 3, device=device)),
        }
        return model

    # ---------------------------------------------------------------- activated views

    @property
    def num_gaussians(self) -> int:
        return self.params["means"].shape[0]

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def get_xyz(self) -> torch.Tensor:  # [N, 3]
        return self.params["means"]

    @property
    def get_scaling(self) -> torch.Tensor:  # [N, 3]
        return torch.exp(self.params["scales"])

    @property
    def get_rotation(self) -> torch.Tensor:  # [N, 4] unit quaternions, wxyz
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    @property
    def get_opacity(self) -> torch.Tensor:  # [N]
        return torch.sigmoid(self.params["opacities"])

    @property
    def get_features(self) -> torch.Tensor:  # [N, K, 3]
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    def oneupSHdegree(self) -> None:
        if self.active_sh_degree < self.max_sh_degree:
            self.active_sh_degree += 1

    # ---------------------------------------------------------------- checkpoints

    def capture(self) -> dict:
        """Plain dict of tensors for ``torch.save`` (optimizer state is saved separately)."""
        return {
            "max_sh_degree": self.max_sh_degree,
            "active_sh_degree": self.active_sh_degree,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "extras": {k: v.clone() for k, v in self.extras.items()},
        }

    @classmethod
    def restore(cls, state: dict, device: torch.device | str | None = None) -> GaussianModel:
        model = cls(state["max_sh_degree"])
        model.active_sh_degree = state["active_sh_degree"]
        model.params = {k: nn.Parameter(v.to(device)) for k, v in state["params"].items()}
        model.extras = {k: v.to(device) for k, v in state["extras"].items()}
        return model

    def check(self) -> None:
        """Assert that every per-Gaussian tensor has the same length (cheap sanity check)."""
        n = self.num_gaussians
        for name, t in {**self.params, **self.extras}.items():
            assert t.shape[0] == n, f"{name} has {t.shape[0]} rows, expected {n}"
