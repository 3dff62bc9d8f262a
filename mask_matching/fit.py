"""Training the descriptor network on a scene's training views (full batch, every epoch).

One epoch = one forward pass over every view's distinct codes, the match loss over every
matched pair, the hierarchy loss of every view, one Adam step (lr 1e-3) and one step of
``ExponentialLR(0.995)``; 500 epochs by default (RegSegField's settings). Because the
network is a per-pixel function of the membership vector, running it on the U distinct
codes of a view and gathering is the same as running it on every pixel, only a few hundred
times cheaper: an epoch costs milliseconds, also on a CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from mask_matching.data import MatchingInput
from mask_matching.inputs import ViewMasks
from mask_matching.losses import PULL_WEIGHT, PUSH_WEIGHT, hierarchy_terms, match_loss
from mask_matching.network import DIM, LEVELS, DescriptorNet


@dataclass
class FitSettings:
    epochs: int = 500
    lr: float = 1e-3
    gamma: float = 0.995
    levels: int = LEVELS
    dim: int = DIM
    match_weight: float = 1.0
    pull_weight: float = PULL_WEIGHT
    push_weight: float = PUSH_WEIGHT
    seed: int = 0


@dataclass
class FitResult:
    net: DescriptorNet
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # every 10th epoch + last


def descriptor_tables(
    net: DescriptorNet, views: list[ViewMasks], device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """Per view, the descriptors of its distinct codes: [U_v, L, D] (differentiable)."""
    return [net(v, view.codes_tensor(device)) for v, view in enumerate(views)]


def epoch_losses(
    net: DescriptorNet,
    data: MatchingInput,
    tensors: dict,
    settings: FitSettings,
) -> dict[str, torch.Tensor]:
    """The loss terms of one full-batch epoch (``tensors`` from ``_device_tensors``)."""
    tables = [net(v, x) for v, x in enumerate(tensors["codes"])]
    m_terms = [
        match_loss(tables[p.a][ca], tables[p.b][cb])
        for p, (ca, cb) in zip(data.pairs, tensors["pair_codes"])
    ]
    match = torch.stack(m_terms).mean()
    pull = push = tables[0].new_zeros(())
    for v in range(data.n_views):
        pl, ps = hierarchy_terms(tables[v], tensors["codes"][v], tensors["counts"][v])
        pull, push = pull + pl, push + ps
    total = (
        settings.match_weight * match + settings.pull_weight * pull + settings.push_weight * push
    )
    return {"total": total, "match": match, "pull": pull, "push": push}


def _device_tensors(data: MatchingInput, device: torch.device) -> dict:
    return {
        "codes": [v.codes_tensor(device) for v in data.views],
        "counts": [torch.from_numpy(v.counts).to(device) for v in data.views],
        "pair_codes": [
            (torch.from_numpy(p.code_a).to(device), torch.from_numpy(p.code_b).to(device))
            for p in data.pairs
        ],
    }


def fit(
    data: MatchingInput,
    settings: FitSettings | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FitResult:
    """Train a fresh ``DescriptorNet`` on ``data``; returns it in eval mode on ``device``."""
    settings = settings or FitSettings()
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    net = DescriptorNet([v.channels for v in data.views], settings.levels, settings.dim)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=settings.gamma)
    tensors = _device_tensors(data, device)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc="mask matching", unit="epoch", disable=not progress)
    for epoch in bar:
        losses = epoch_losses(net, data, tensors, settings)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        sched.step()
        if epoch % 10 == 0 or epoch == settings.epochs - 1:
            row = {k: float(v.detach()) for k, v in losses.items()}  # one sync per 10 epochs
            history.append({"epoch": epoch, **row})
            bar.set_postfix(loss=f"{row['total']:.4f}", match=f"{row['match']:.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    net.eval()
    return FitResult(net, time.perf_counter() - t0, history)
