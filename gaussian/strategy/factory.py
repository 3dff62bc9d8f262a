"""Builds the densification strategy that the command-line flags ask for.

With ``--densify_strategy default`` and no ``--use_mask`` this is exactly
``DefaultStrategy.from_opt`` (3DGS); ``--use_mask`` adds an ``ROIGate`` to it;
``--densify_strategy improved`` gives the Improved-GS strategy (with the gate when asked).
"""

from __future__ import annotations

import dataclasses

from gaussian.strategy.base import Strategy
from gaussian.strategy.default import DefaultStrategy
from gaussian.strategy.improved import EdgeImportance, ImprovedStrategy, RenderFn
from gaussian.strategy.roi import ROIGate


def build_strategy(
    opt,
    cameras_extent: float,
    white_background: bool,
    densify=None,
    roi_gate: ROIGate | None = None,
    train_cameras: list | None = None,
    render_fn: RenderFn | None = None,
) -> Strategy:
    """The strategy for OptimizationParams ``opt`` and DensifyParams ``densify`` (None:
    3DGS). The improved strategy needs ``train_cameras`` and ``render_fn`` for its
    edge-aware importance."""
    name = getattr(densify, "densify_strategy", "default") if densify is not None else "default"
    if name == "default":
        strategy = DefaultStrategy.from_opt(opt, cameras_extent, white_background)
        return strategy if roi_gate is None else dataclasses.replace(strategy, roi=roi_gate)
    if name != "improved":
        raise ValueError(f"unknown densification strategy {name!r} (default or improved)")
    if not train_cameras or render_fn is None:
        raise ValueError("the improved strategy needs the training cameras and a render function")
    importance = EdgeImportance(
        train_cameras,
        render_fn,
        cams=densify.cams,
        all_views_every=densify.edge_all_views_every,
        all_views_offset=densify.edge_all_views_offset,
        all_views_until=densify.edge_all_views_until,
    )
    return ImprovedStrategy.from_args(opt, densify, cameras_extent, importance, roi_gate)
