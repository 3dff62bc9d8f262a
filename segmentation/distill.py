"""Distil 2D feature maps into per-Gaussian features of a FROZEN RGB model.

Every Gaussian g gets a free vector f_g in R^C (zeros at the start). A view's rendered feature
image is the alpha blend of those vectors,

    F(p) = sum_g f_g alpha_g(p) T_g(p)                                        [C, H, W]

computed by ``render(..., features=f)`` in the SAME rasterization pass as RGB, for all C
channels at once (the seed project trained 3 channels per pass through the original
rasterizer, 22 phases for 64 channels). Positions, shapes, opacities and colours never move:
only ``f`` has ``requires_grad``, and Adam steps only ``f``.

Loss, per view, with the target map resized (bilinear) to the training resolution:

    L = mean_p | F(p) - A(p) * F*(p) |        (L1; ``l2`` squares instead)

where A is the rendered opacity (detached). Multiplying the target by A ("premultiplied"
target) makes the loss consistent with the blend: at a pixel half covered by Gaussians the
render can only reach half of any value, and pixels no Gaussian covers ask for nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gaussian_renderer import render_features_only


def render_features(
    camera,
    model,
    feats: torch.Tensor,  # [N, C]
    backend: str = "auto",
    channels_per_pass: int | None = None,
) -> dict:
    """Render ``feats`` for one view: ``{"features": [C, H, W], "alpha": [1, H, W]}``.

    ``channels_per_pass=None`` renders all C channels in one pass (the default and the point
    of this module). An integer renders them in groups of that many channels, one pass per
    group, and concatenates: what the 3-channel rasterizer of the original code forces
    (``3``). Both give the same values and gradients (tests/test_segment.py); only the time
    and memory differ (bench/segmentation_speed.py).
    """
    c = feats.shape[1]
    step = c if channels_per_pass is None else max(1, int(channels_per_pass))
    parts, alpha = [], None
    for s in range(0, c, step):
        out = render_features_only(camera, model, feats[:, s : s + step], backend=backend)
        parts.append(out["features"])
        alpha = out["alpha"] if alpha is None else alpha
    return {"features": torch.cat(parts, 0), "alpha": alpha}


def resize_target(fmap: np.ndarray | torch.Tensor, height: int, width: int, device) -> torch.Tensor:
    """[C, h, w] -> [C, height, width] float32 on ``device`` (bilinear, no corner alignment)."""
    t = torch.as_tensor(np.asarray(fmap, dtype=np.float32), device=device)
    if t.shape[-2:] == (height, width):
        return t
    return F.interpolate(t[None], size=(height, width), mode="bilinear", align_corners=False)[0]


@dataclass
class DistillResult:
    features: torch.Tensor  # [N, C] learned per-Gaussian features (detached)
    losses: list[float]  # loss at each logged step
    seconds: float


def freeze(model) -> None:
    """Turn off gradients of every model parameter (the RGB model stays as trained)."""
    for p in model.params.values():
        p.requires_grad_(False)


def distill(
    model,
    cameras: list,
    targets: list[torch.Tensor],  # [C, H, W] per camera, at the camera's resolution
    iterations: int = 2000,
    lr: float = 0.01,
    loss: str = "l1",
    backend: str = "auto",
    seed: int = 0,
    log_every: int = 50,
    writer=None,  # torch.utils.tensorboard SummaryWriter or None
    image_every: int = 500,
    progress: bool = True,
) -> DistillResult:
    """Train per-Gaussian features so that their renders match ``targets`` (module docstring).

    Views are visited in a random order, reshuffled every epoch (as 3DGS does with its
    cameras). TensorBoard, when ``writer`` is given: ``feature/loss`` every ``log_every``
    steps, and every ``image_every`` steps ``feature/<view>`` = the PCA picture of the target
    (left) and of the render (right) in the same colours.
    """
    from tqdm import tqdm

    from segmentation.pca import pca_rgb

    if loss not in ("l1", "l2"):
        raise ValueError(f"unknown --feature_loss {loss!r}; choose l1 or l2")
    freeze(model)
    c = targets[0].shape[0]
    feats = torch.zeros(model.num_gaussians, c, device=model.device, requires_grad=True)
    opt = torch.optim.Adam([feats], lr=lr, eps=1e-15)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses: list[float] = []
    ema = None
    t0 = time.perf_counter()
    bar = tqdm(range(1, iterations + 1), desc="Feature distillation", disable=not progress)
    for it in bar:
        if not order:
            order = list(rng.permutation(len(cameras)))
        i = order.pop()
        out = render_features(cameras[i], model, feats, backend=backend)
        target = targets[i] * out["alpha"].detach()
        diff = out["features"] - target
        value = diff.abs().mean() if loss == "l1" else (diff * diff).mean()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if it % log_every == 0 or it == iterations:
            v = float(value.detach())
            ema = v if ema is None else 0.6 * v + 0.4 * ema
            losses.append(v)
            bar.set_postfix(loss=f"{ema:.5f}")
            if writer is not None:
                writer.add_scalar("feature/loss", v, it)
        if writer is not None and (it % image_every == 0 or it == iterations):
            with torch.no_grad():
                tgt_img, basis = pca_rgb(target.detach())
                ren_img, _ = pca_rgb(out["features"].detach(), basis)
                writer.add_image(
                    f"feature/{cameras[i].image_stem}", torch.cat([tgt_img, ren_img], 2), it
                )
    bar.close()
    return DistillResult(feats.detach(), losses, time.perf_counter() - t0)
