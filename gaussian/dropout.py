"""DropGaussian (Park, Ryu and Kim, CVPR 2025): random Gaussians left out of each training
render, a structural regularisation for sparse views.

At every training step each Gaussian's opacity is multiplied by a gain

    g_i = m_i / (1 - p),   m_i ~ Bernoulli(1 - p),

so that a fraction ``p`` of the Gaussians vanish from that render and the survivors are
brightened to keep the expected opacity unchanged (E[g_i] = 1, the same rescaling as
inverted dropout). With fewer Gaussians in each render the remaining ones receive larger
gradients and the set cannot fit the few training views by co-adaptation; evaluation and
rendering use the plain opacities. The published method reports +1.5 dB on LLFF 3 views
over 3DGS with the same initialisation, at no extra training cost.

The gain is drawn on the device from a rate that lives in a device scalar, so the same
code runs inside the CUDA-graph training step (gaussian_renderer/graph_step.py): each
replay of the captured graph draws a new mask (PyTorch advances the graph's Philox offset
on every replay), and a changing rate (``schedule="linear"``) is a copy into the scalar.
"""

from __future__ import annotations

import torch

SCHEDULES = ("constant", "linear")


class DropGaussian:
    """Per-step opacity gains of DropGaussian.

    Args:
        rate: drop probability p in [0, 1).
        device: where the masks are drawn.
        schedule: ``constant`` (p at every step) or ``linear`` (p * iteration / iterations:
            no dropping at the start, p at the end).
        iterations: the run's length (for ``linear``).
    """

    def __init__(self, rate: float, device: torch.device | str, schedule: str = "constant",
                 iterations: int = 1) -> None:  # fmt: skip
        check_drop_rate(rate)
        if schedule not in SCHEDULES:
            raise ValueError(f"--drop_schedule {schedule!r}: choose one of {SCHEDULES}")
        self.rate = float(rate)
        self.schedule = schedule
        self.iterations = max(int(iterations), 1)
        # The rate of the current step, read by the (possibly captured) mask kernel.
        self.current = torch.full((), self.rate, device=device)

    def rate_at(self, iteration: int) -> float:
        if self.schedule == "linear":
            return self.rate * min(iteration / self.iterations, 1.0)
        return self.rate

    def set_iteration(self, iteration: int) -> None:
        """Set the rate of this step (no host sync: a fill on the device for ``linear``)."""
        if self.schedule != "constant":
            self.current.fill_(self.rate_at(iteration))

    def gain(self, n: int) -> torch.Tensor:  # [n]
        """This step's opacity gains: 0 for dropped Gaussians, 1 / (1 - p) for the rest."""
        return drop_gain(n, self.current)


def drop_gain(n: int, rate: torch.Tensor, generator: torch.Generator | None = None):
    """[n] gains m / (1 - p) with m ~ Bernoulli(1 - p), p = ``rate`` (a 0-dim tensor on the
    device the gains are wanted on). Fixed shapes and no host reads: graph-capturable."""
    keep = torch.rand(n, device=rate.device, generator=generator) >= rate
    return keep.float() / (1.0 - rate)


def check_drop_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--drop_rate {rate}: must be in [0, 1) (e.g. 0.1; 0 turns it off)")


def build_drop(rate: float, schedule: str, iterations: int, device) -> DropGaussian | None:
    """The run's DropGaussian, or None when ``rate`` is 0 (plain 3DGS, bit for bit)."""
    check_drop_rate(rate)
    if rate == 0.0:
        return None
    return DropGaussian(rate, device, schedule, iterations)
