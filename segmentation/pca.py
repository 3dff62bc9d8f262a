"""A joint PCA over the pixels of every view, and PCA pictures of feature maps.

ISRF/N3F reduce DINO features with ONE PCA fitted over all pixels of all images, so a channel
means the same thing in every view (a per-view PCA would flip signs and reorder components
between views, and the 3D features could not agree with all of them). Components come out
ordered by explained variance, so a prefix of channels is itself a valid reduction.

The fit uses at most ``max_samples`` pixels drawn evenly from the views (a covariance of C x C
needs few samples), then every full map is projected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class JointPCA:
    """``y = (x - mean) @ components.T * scale``: [C_in] -> [n] per pixel.

    ``scale`` is one number for all channels (the largest |y| seen in the fit set maps to
    about 1): it keeps the relative variances of the components, which the clustering's
    feature distances rely on.
    """

    mean: np.ndarray  # [C_in]
    components: np.ndarray  # [n, C_in] rows = principal axes, by decreasing variance
    explained: np.ndarray  # [n] fraction of variance of each component
    scale: float

    @property
    def n_components(self) -> int:
        return len(self.components)

    def transform(self, fmap: np.ndarray) -> np.ndarray:
        """[C_in, h, w] -> [n, h, w] float32."""
        c, h, w = fmap.shape
        x = fmap.reshape(c, -1).T.astype(np.float32) - self.mean[None]
        y = (x @ self.components.T.astype(np.float32)) * self.scale
        return y.T.reshape(-1, h, w).astype(np.float32)


def fit_joint_pca(
    maps: list[np.ndarray],  # each [C_in, h_i, w_i]
    n_components: int,
    max_samples: int = 200_000,
    seed: int = 0,
) -> JointPCA:
    """Fit one PCA to pixels of every map (see the module docstring).

    ``n_components`` is clipped to the input channel count.
    """
    rng = np.random.default_rng(seed)
    c_in = maps[0].shape[0]
    per_view = max(1, max_samples // len(maps))
    rows = []
    for m in maps:
        if m.shape[0] != c_in:
            raise ValueError(f"feature maps disagree on channels: {m.shape[0]} vs {c_in}")
        flat = m.reshape(c_in, -1).T
        take = rng.choice(len(flat), size=min(per_view, len(flat)), replace=False)
        rows.append(flat[take].astype(np.float64))
    x = np.concatenate(rows)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(len(xc) - 1, 1)  # [C_in, C_in]
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    n = min(n_components, c_in)
    comps = evecs[:, :n].T  # [n, C_in]
    # Deterministic signs: the largest-magnitude loading of each axis is positive.
    signs = np.sign(comps[np.arange(n), np.abs(comps).argmax(1)])
    comps *= np.where(signs == 0, 1.0, signs)[:, None]
    proj = xc @ comps.T
    scale = 1.0 / max(float(np.abs(proj).max()), 1e-12)
    explained = evals[:n] / max(float(evals.sum()), 1e-12)
    return JointPCA(mean.astype(np.float32), comps.astype(np.float32), explained, scale)


def pca_rgb(
    feat: torch.Tensor, basis: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A [C, H, W] feature map as a [3, H, W] picture in [0, 1]: its 3 main components.

    Returns (picture, basis); pass ``basis`` (axes [C, 3], centre, 1%/99% range) back in to
    draw a second map (the rendered features) in the colours of the first (the target).
    """
    c, h, w = feat.shape
    x = feat.reshape(c, -1).T.float()  # [HW, C]
    if basis is None:
        mean = x.mean(0, keepdim=True)  # [1, C]
        if c <= 3:
            axes = torch.eye(c, 3, device=x.device)
        else:
            _, _, v = torch.pca_lowrank(x - mean, q=3, center=False)
            axes = v[:, :3]  # [C, 3]
        y = (x - mean) @ axes
        basis = {"axes": axes, "mean": mean, "lo": y.quantile(0.01, 0), "hi": y.quantile(0.99, 0)}
    y = (x - basis["mean"]) @ basis["axes"]  # [HW, 3]
    y = ((y - basis["lo"]) / (basis["hi"] - basis["lo"]).clamp_min(1e-8)).clamp(0, 1)
    return y.T.reshape(3, h, w), basis
