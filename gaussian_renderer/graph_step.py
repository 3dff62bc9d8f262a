"""The plain 3DGS training step replayed from two CUDA graphs.

At sparse-view sizes a step is bound by the host: even as one autograd node per render and
per loss (``gsplat_fused.py``), a step issues about 80 kernel launches from Python, about
2.5 ms of host time against 1 to 2.5 ms of GPU work (docs/RESULTS.md, fern profile). This
module records the launches once and replays them:

1. graph ``project``: activations, projection, spherical harmonics, colour table
   (``gsplat_fused.project``);
2. eager: gsplat's tile intersection, which reads the number of intersections ``n`` back
   to the host (the step's one synchronisation), copied into fixed-capacity buffers;
3. graph ``raster``: rasterization, L1 + D-SSIM and its gradient
   (``fused_ssim.fused_l1_dssim_with_grad``), the rasterizer's backward and the
   projection's backward, giving every parameter's gradient and the projected means'
   gradient (what densification reads);
4. eager (the caller): densification statistics and Adam, whose step sizes change every
   iteration.

Fixed capacity. gsplat's rasterization kernels take ``n`` from the length of the id buffer
(the end of the last tile's range), a value a captured kernel keeps. So the ids live in a
buffer of capacity ``C >= n`` and the tile-offset tensor gets extra "phantom" tile rows
below the image whose ranges share out the unused tail ``[n, C)`` (at most
``PAD_PER_TILE`` entries each). Every pixel of a phantom tile lies outside the image: the
forward kernel leaves such a tile at once and the backward walks its short range without
work, while the image's own tiles see exactly the ranges of an eager render. A step that
needs more than ``C`` captures the raster graph again with ``GROWTH * n``.

The graphs read the camera, target image and background from static buffers, which each
step overwrites, and the parameters themselves. They are captured again when a parameter
tensor is replaced (densification, opacity reset), the SH degree or the image size changes.

The twin is the eager step (``render(..., fused=True)``, ``utils.loss_utils.l1_dssim_loss``
and ``loss.backward()``): same kernels; tests/test_graph_step.py holds the gradients equal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from gaussian.model import CORE_KEYS, GaussianModel
from gaussian_renderer.gsplat_fused import (
    TILE_SIZE,
    Projected,
    SplatView,
    image_grads,
    image_outputs,
    intersect,
    project,
    rasterize,
    splat_backward,
    tile_grid,
)

GROWTH = 1.25  # id-buffer capacity over the intersections of the step that sized it
MIN_CAPACITY = 4096
# Most unused id slots one phantom tile walks in the backward: 16 batches of one id per
# thread of the tile.
PAD_PER_TILE = 16 * TILE_SIZE**2


@dataclass
class _ProjectGraph:
    graph: torch.cuda.CUDAGraph
    key: tuple  # (parameter tensors, SH degree, width, height)
    view: SplatView  # reads the static camera buffer
    proj: Projected
    radii: torch.Tensor  # [N]
    means2d: torch.Tensor  # [1, N, 2], .grad set by the raster graph


@dataclass
class _RasterGraph:
    graph: torch.cuda.CUDAGraph
    capacity: int
    ids: torch.Tensor  # [capacity] int32, depth-sorted ids then padding
    offsets: torch.Tensor  # [1, tiles_h + phantom rows, tiles_w] int32
    phantom_fraction: torch.Tensor  # [phantom tiles] k / tiles
    rgb: torch.Tensor  # [3, H, W]
    loss: torch.Tensor  # scalars
    l1: torch.Tensor
    dssim: torch.Tensor
    grads: dict[str, torch.Tensor]  # parameter key -> gradient, shaped as the parameter


class GraphedStep:
    """Render, photometric loss and backward of one plain 3DGS step, from CUDA graphs.

    ``step(camera)`` leaves each parameter's gradient in ``param.grad`` (static buffers:
    valid until the next step) and returns what the eager step gives the strategy: a
    render dict (``render``, ``viewspace_points`` with ``.grad`` (and ``.absgrad``),
    ``visibility_filter``, ``radii``, ``width``, ``height``), the loss and its terms.
    Plain 3DGS only: the six core parameters, L1 + D-SSIM, no depth or feature channels;
    with ``drop`` (gaussian/dropout.py), DropGaussian's opacity gains drawn in the graph.
    """

    def __init__(self, model: GaussianModel, background: torch.Tensor, lambda_dssim: float,
                 absgrad: bool = False, drop=None):  # fmt: skip
        if set(model.params) != set(CORE_KEYS):
            raise ValueError(
                f"CUDA-graph steps train exactly {CORE_KEYS}, not {list(model.params)}"
            )
        self.model = model
        self.lambda_dssim = float(lambda_dssim)
        self.absgrad = absgrad
        self.drop = drop
        device = model.device
        self._pool = torch.cuda.graph_pool_handle()  # one pool: recaptures reuse memory
        self._stream = torch.cuda.Stream(device)
        self._camera = torch.zeros(28, device=device)  # viewmat (16), K (9), centre (3)
        self._background = background.detach().clone().float()
        self._target: torch.Tensor | None = None  # [1, 3, H, W]
        self._camera_vectors: dict[int, torch.Tensor] = {}
        self._project: _ProjectGraph | None = None
        self._raster: _RasterGraph | None = None
        self.captures = {"project": 0, "raster": 0}  # for logs and tests
        self.n_isects = 0  # tile intersections of the last step
        self.capture_seconds = 0.0  # host time spent capturing

    # ---------------------------------------------------------------- capture

    def _capture(self, fn):
        start = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream), torch.no_grad():
            graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
            try:
                out = fn()
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(self._stream)
        self.capture_seconds += time.perf_counter() - start
        return graph, out

    def _key(self, camera) -> tuple:
        params = tuple(self.model.params[k] for k in CORE_KEYS)
        return params, self.model.active_sh_degree, camera.image_width, camera.image_height

    def _capture_project(self, key: tuple) -> None:
        params, sh_degree, width, height = key
        cam = self._camera
        view = SplatView(cam[:16].view(4, 4), cam[16:25].view(3, 3), cam[25:28], width, height,
                         self._background, sh_degree, 1.0, False, self.absgrad)  # fmt: skip
        self._target = torch.empty(1, 3, height, width, device=cam.device)

        p = dict(zip(CORE_KEYS, params))

        drop = self.drop

        def run():
            # DropGaussian's mask is drawn inside the graph: a new one at every replay.
            gain = None if drop is None else drop.gain(p["means"].shape[0])
            proj = project(p["means"], p["quats"], p["scales"], p["opacities"], p["sh0"],
                           p["shN"], None, view, gain)  # fmt: skip
            return proj, proj.radii[0].amax(dim=-1)

        graph, (proj, radii) = self._capture(run)
        self._raster = None  # it read the previous projection's tensors
        self._project = _ProjectGraph(graph, key, view, proj, radii, proj.means2d.detach())
        self.captures["project"] += 1

    def _capture_raster(self, n_isects: int) -> None:
        pg = self._project
        view, proj = pg.view, pg.proj
        p = dict(zip(CORE_KEYS, pg.key[0]))
        means, quats = p["means"], p["quats"]
        capacity = max(math.ceil(GROWTH * n_isects), MIN_CAPACITY)
        tiles_w, tiles_h = tile_grid(view)
        phantom_rows = math.ceil(capacity / (PAD_PER_TILE * tiles_w))
        device = means.device
        ids = torch.zeros(capacity, dtype=torch.int32, device=device)
        offsets = torch.zeros(1, tiles_h + phantom_rows, tiles_w, dtype=torch.int32,
                              device=device)  # fmt: skip
        n_phantom = phantom_rows * tiles_w
        fraction = torch.arange(n_phantom, device=device, dtype=torch.float64) / n_phantom
        target = self._target

        def run():
            image, alphas, last_ids = rasterize(proj.means2d, proj.conics, proj.colors,
                                                proj.opacities, proj.backgrounds, offsets, ids,
                                                view)  # fmt: skip
            rgb, _, _ = image_outputs(image, alphas, 3, False)
            loss, l1, dssim, v_rgb = _l1_dssim_with_grad(rgb[None], target, self.lambda_dssim)
            v_image, v_alphas = image_grads(v_rgb[0], None, None, alphas, None, 3, 3, False)
            v_params, v_means2d, v_abs, _ = splat_backward(
                means, quats, proj, offsets, ids, alphas, last_ids, v_image, v_alphas, view
            )
            v_means, v_quats, v_scales, v_logits, v_coeffs = v_params
            grads = {"means": v_means, "quats": v_quats, "scales": v_scales,
                     "opacities": v_logits, "sh0": v_coeffs[:, :1].contiguous(),
                     "shN": v_coeffs[:, 1:].contiguous()}  # fmt: skip
            return rgb, loss, l1, dssim, grads, v_means2d, v_abs

        graph, (rgb, loss, l1, dssim, grads, v_means2d, v_abs) = self._capture(run)
        pg.means2d.grad = v_means2d
        if self.absgrad:
            pg.means2d.absgrad = v_abs
        self._raster = _RasterGraph(graph, capacity, ids, offsets, fraction, rgb, loss, l1,
                                    dssim, grads)  # fmt: skip
        self.captures["raster"] += 1

    # ---------------------------------------------------------------- step

    def _camera_vector(self, camera) -> torch.Tensor:
        vec = self._camera_vectors.get(id(camera))
        if vec is None:
            parts = (camera.viewmat, camera.K, camera.camera_center)
            vec = torch.cat([p.reshape(-1).float() for p in parts]).to(self._camera.device)
            self._camera_vectors[id(camera)] = vec
        return vec

    def step(self, camera, background: torch.Tensor | None = None,
             ) -> tuple[dict, torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """One step on ``camera`` (``background`` [3]: this step's, e.g. random; default
        the one given at construction). Returns (render dict, loss, named terms)."""
        key = self._key(camera)
        pg = self._project
        if (
            pg is None
            or any(a is not b for a, b in zip(pg.key[0], key[0]))
            or pg.key[1:] != key[1:]
        ):
            self._capture_project(key)
            pg = self._project
        self._camera.copy_(self._camera_vector(camera))
        self._target.copy_(camera.original_image[None])
        if background is not None:
            self._background.copy_(background)
        pg.graph.replay()
        offsets, ids = intersect(pg.proj, pg.view)  # waits for the GPU: n to the host
        n = self.n_isects = ids.shape[0]
        if self._raster is None or n > self._raster.capacity:
            self._capture_raster(n)
        rg = self._raster
        rg.ids[:n].copy_(ids)
        tiles_h = offsets.shape[1]
        rg.offsets[:, :tiles_h].copy_(offsets)
        # Phantom tile k starts at n + k (C - n) / tiles: the tail shared out evenly.
        phantom = rg.offsets[0, tiles_h:].view(-1)
        phantom.copy_(rg.phantom_fraction.mul(rg.capacity - n).add_(n))
        rg.graph.replay()
        for k, param in zip(CORE_KEYS, key[0]):
            param.grad = rg.grads[k]
        pkg = {
            "render": rg.rgb,
            "viewspace_points": pg.means2d,
            "visibility_filter": pg.proj.visible,
            "radii": pg.radii,
            "width": key[2],
            "height": key[3],
        }
        return pkg, rg.loss, {"l1_loss": rg.l1, "ssim_loss": rg.dssim}


def _l1_dssim_with_grad(image, target, weight):
    from utils.loss_utils import import_fused_ssim

    return import_fused_ssim().fused_l1_dssim_with_grad(image, target, weight)
