"""End-of-run summaries: what a reconstruction holds and how well the views matched."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pycolmap


@dataclass
class ModelSummary:
    label: str
    images_registered: int
    images_total: int
    points: int
    mean_reprojection_error_px: float
    mean_track_length: float
    observations: int

    def line(self) -> str:
        return (
            f"{self.label}: {self.images_registered}/{self.images_total} images registered, "
            f"{self.points} points, mean reprojection error "
            f"{self.mean_reprojection_error_px:.3f} px, mean track length "
            f"{self.mean_track_length:.2f}"
        )

    def todict(self) -> dict:
        return asdict(self)


def summarize_model(
    rec: pycolmap.Reconstruction, label: str, images_total: int | None = None
) -> ModelSummary:
    n_pts = rec.num_points3D()
    return ModelSummary(
        label=label,
        images_registered=int(rec.num_reg_images()),
        images_total=int(images_total if images_total is not None else rec.num_images()),
        points=int(n_pts),
        mean_reprojection_error_px=float(rec.compute_mean_reprojection_error()) if n_pts else 0.0,
        mean_track_length=float(rec.compute_mean_track_length()) if n_pts else 0.0,
        observations=int(rec.compute_num_observations()),
    )


def pair_count_stats(counts: list[int] | np.ndarray) -> dict:
    """min / median / mean / max inlier matches per pair, and how many pairs matched at all."""
    c = np.asarray(counts, dtype=np.float64)
    if len(c) == 0:
        return {"pairs": 0}
    return {
        "pairs": int(len(c)),
        "pairs_matched": int((c > 0).sum()),
        "min": int(c.min()),
        "median": float(np.median(c)),
        "mean": float(c.mean()),
        "max": int(c.max()),
    }


def pair_stats_line(stats: dict) -> str:
    if not stats.get("pairs"):
        return "inlier matches per pair: no pairs"
    return (
        f"inlier matches per pair: {stats['pairs_matched']}/{stats['pairs']} pairs matched, "
        f"min {stats['min']}, median {stats['median']:.0f}, mean {stats['mean']:.1f}, "
        f"max {stats['max']}"
    )
