"""Depth Pro metric depth through Hugging Face ``transformers``.

The network predicts a *canonical inverse depth* ``inv`` at its input resolution. With the
focal length ``f`` (pixels) of an image of width ``W``, metric depth is

    depth = f / (W * inv)                       (clamped to [1e-4, 1e4] m)

after ``inv`` is resized (bilinear) to the image size. This is what
``DepthProImageProcessor.post_process_depth_estimation`` does with the focal length
implied by the model's own field-of-view head, ``f = 0.5 W / tan(0.5 fov)``. When the
scene has COLMAP intrinsics, the known ``fx`` (rescaled to the image's width) replaces the
estimate, exactly as apple/ml-depth-pro's ``infer(x, f_px=...)`` does; the prediction
therefore scales with the known focal length, consistently for every view.

Preprocessing is the processor's: rescale to [0, 1], normalise with mean 0.5 and std 0.5,
then resize (bilinear, no antialiasing) to the network size. transformers 5.x implements
the processor with torchvision, which only GPU machines have here; without torchvision
the same steps run in torch (:func:`preprocess`), and a GPU test holds the two equal.

Outputs for ``images/<name>`` (sub-folders kept): ``depth_pro/<name>.npy`` float32 [H, W]
metres; ``depth_pro/<name>_meta.npz`` with ``focallength_px``, ``focal_source``
("colmap" or "model"), ``model_focallength_px`` (NaN without a FoV head) and
``image_size`` (W, H); ``depth_pro/<name>.png`` a colourised inverse-depth preview.
"""

from __future__ import annotations

import importlib.util
import json
import os
from argparse import Namespace
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from priors import PriorError
from priors.io import image_size, list_images, load_rgb, save_image, save_npy, save_npz
from scene.colmap_io import read_model

HUB_PAGE = "https://huggingface.co/{}"
DEPTH_FILES = "config.json, model.safetensors and preprocessor_config.json"


@dataclass
class DepthProRunner:
    """A loaded model with everything needed to preprocess for it."""

    model: torch.nn.Module
    size: int  # network input side (1536 for the released model)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    precision: str  # fp32, fp16 or bf16
    processor: object | None = None  # transformers DepthProImageProcessor when usable

    @property
    def has_fov(self) -> bool:
        return bool(getattr(self.model, "use_fov_model", False))


def network_size(config) -> int:
    """Input side of a DepthPro config: the patch size over the smallest image ratio."""
    return round(config.patch_size / min(config.scaled_images_ratios))


def _looks_local(src: str) -> bool:
    return os.path.exists(src) or src.startswith((".", "/", "~")) or src.count("/") > 1


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_loading_info(info: dict, src: str) -> None:
    """Stop when from_pretrained re-initialised anything (transformers only warns)."""
    bad = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys")}
    bad["mismatched_keys"] = [
        m[0] if isinstance(m, tuple) else m for m in info.get("mismatched_keys") or []
    ]
    if any(bad.values()):
        example = next(v[0] for v in bad.values() if v)
        raise PriorError(
            f"{src}: the weights do not match config.json ({len(bad['missing_keys'])} missing, "
            f"{len(bad['unexpected_keys'])} unexpected, {len(bad['mismatched_keys'])} "
            f"differently shaped, e.g. {example}); re-download {DEPTH_FILES} together from "
            f"{HUB_PAGE.format('apple/DepthPro-hf')}"
        )


def load_depth_pro(
    src: str,
    device: torch.device,
    precision: str = "auto",
    random_init: bool = False,
) -> DepthProRunner:
    """Depth Pro from a local folder or a hub id (downloaded when online).

    ``random_init`` builds the architecture of ``src``'s config.json (or the package's
    default DepthProConfig when ``src`` is not a local folder) with random weights: for
    tests only.
    """
    from transformers import DepthProConfig, DepthProForDepthEstimation

    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    local = _looks_local(src)
    if local and not os.path.isdir(os.path.expanduser(src)):
        raise PriorError(
            f"{src}: no such folder (--depth_model). Download {DEPTH_FILES} from "
            f"{HUB_PAGE.format('apple/DepthPro-hf')} into a folder and pass it"
        )
    src = os.path.expanduser(src) if local else src
    if random_init:
        if local:
            try:
                config = DepthProConfig.from_pretrained(src)
            except Exception as e:
                raise PriorError(f"{src}: cannot read config.json ({_first_line(e)})") from e
        else:
            config = DepthProConfig(use_fov_model=True)
        model = DepthProForDepthEstimation(config)
    else:
        try:
            model, info = DepthProForDepthEstimation.from_pretrained(src, output_loading_info=True)
        except Exception as e:
            if "mismatch" in str(e).lower():  # transformers refuses differently shaped weights
                raise PriorError(
                    f"{src}: the weights do not match config.json (differently shaped "
                    f"layers); re-download {DEPTH_FILES} together from "
                    f"{HUB_PAGE.format('apple/DepthPro-hf')}"
                ) from e
            hint = (
                f"check that the folder holds {DEPTH_FILES}"
                if local
                else f"without internet, download {DEPTH_FILES} from {HUB_PAGE.format(src)} "
                "on another machine into a folder and pass --depth_model <folder>"
            )
            raise PriorError(
                f"cannot load Depth Pro from '{src}' ({type(e).__name__}: {_first_line(e)}); "
                + hint
            ) from e
        _check_loading_info(info, src)
    model = model.eval().to(device)
    size = network_size(model.config)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    pp = os.path.join(src, "preprocessor_config.json") if local else None
    if pp and os.path.isfile(pp):
        with open(pp) as f:
            cfg = json.load(f)
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    processor = None
    if importlib.util.find_spec("torchvision") is not None:
        try:
            from transformers import DepthProImageProcessor

            processor = DepthProImageProcessor(
                size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std)
            )
        except Exception as e:  # a transformers build without it: the torch twin does the same
            print(
                f"[predepth] DepthProImageProcessor unavailable ({_first_line(e)}); "
                "preprocessing in torch"
            )
    return DepthProRunner(model, size, mean, std, device, precision, processor)


def preprocess(
    images: list[np.ndarray],  # B x [H, W, 3] uint8 RGB, any sizes
    size: int,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> torch.Tensor:
    """[B, 3, size, size] float32 network input, the DepthProImageProcessor steps in torch."""
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    out = []
    for im in images:
        x = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        x = (x - m) / s
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)
        out.append(x[0])
    return torch.stack(out)


@torch.inference_mode()
def predict_inverse_depth(
    runner: DepthProRunner, images: list[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Canonical inverse depth [B, h, w] (float32, CPU) and FoV in degrees [B] or None."""
    if runner.processor is not None:
        pixels = runner.processor(images=images, return_tensors="pt")["pixel_values"]
    else:
        pixels = preprocess(images, runner.size, runner.mean, runner.std)
    pixels = pixels.to(runner.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(runner.precision)
    enabled = dtype is not None and runner.device.type == "cuda"
    with torch.autocast(runner.device.type, dtype=dtype, enabled=enabled):
        out = runner.model(pixel_values=pixels)
    inv = out.predicted_depth.float().cpu()
    fov = None if out.field_of_view is None else out.field_of_view.float().cpu().reshape(-1)
    return inv, fov


def focal_from_fov(fov_deg: float, width: int) -> float:
    """Focal length in pixels of a horizontal field of view (degrees) over ``width``."""
    return 0.5 * width / float(np.tan(0.5 * np.deg2rad(fov_deg)))


def metric_depth(
    inverse_depth: torch.Tensor,  # [h, w] canonical inverse depth
    height: int,
    width: int,
    focal_px: float,
) -> np.ndarray:
    """[height, width] float32 metric depth: f / (W * inv) after a bilinear resize."""
    inv = F.interpolate(
        inverse_depth[None, None].float(),
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0, 0]
    depth = 1.0 / torch.clamp(inv * (width / focal_px), min=1e-4, max=1e4)
    return depth.numpy().astype(np.float32)


def colmap_focals(scene: str, sparse: str, sizes: dict[str, tuple[int, int]]) -> dict[str, float]:
    """fx in pixels of each image at its size on disk, from a COLMAP model (if any).

    The model may describe another resolution (e.g. full-size images while images_4 holds
    the quarter-size copies): fx is rescaled by the ratio of widths. Images are matched by
    name, then by file name without folders.
    """
    path = os.path.join(scene, sparse)
    if not os.path.isdir(path):
        return {}
    cams, ims, _ = read_model(path)
    by_name = {im.name: im for im in ims.values()}
    by_base = {os.path.basename(im.name): im for im in ims.values()}
    focals = {}
    for name, (w, _) in sizes.items():
        im = by_name.get(name) or by_base.get(os.path.basename(name))
        if im is None:
            continue
        cam = cams[im.camera_id]
        fx, _, _, _ = cam.intrinsics()
        focals[name] = fx * w / cam.width
    return focals


def colourise(depth: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 preview: inverse depth between its 2nd and 98th percentiles, turbo."""
    inv = 1.0 / np.maximum(depth, 1e-6)
    lo, hi = np.percentile(inv, [2, 98])
    t = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    return cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]


def run_predepth(scene: str, args: Namespace, runner: DepthProRunner) -> int:
    """depth_pro/ files for every image under the scene's image folder; returns the count."""
    images_dir = os.path.join(scene, args.images)
    names = list_images(images_dir)
    out_dir = os.path.join(scene, "depth_pro")
    sizes = {n: image_size(os.path.join(images_dir, n)) for n in names}
    focals = {} if args.ignore_colmap else colmap_focals(scene, args.sparse, sizes)
    missing = [n for n in names if n not in focals]
    if not runner.has_fov and missing:
        raise PriorError(
            f"no focal length for {len(missing)} image(s) (e.g. {missing[0]}): the Depth Pro "
            f"model has no field-of-view head and {os.path.join(scene, args.sparse)} gives no "
            "intrinsics for them; run colmap_match.py first or use weights with use_fov_model"
        )
    src = "COLMAP intrinsics" if focals else "the model's FoV head"
    if focals and missing:
        src = f"COLMAP intrinsics ({len(missing)} image(s) without: the model's FoV head)"
    print(f"[predepth] {scene}: {len(names)} images, focal length from {src}")
    bs = max(1, int(args.batch_size))
    for start in tqdm(range(0, len(names), bs), desc="depth pro", unit="batch"):
        batch = names[start : start + bs]
        images = [load_rgb(os.path.join(images_dir, n)) for n in batch]
        inv, fov = predict_inverse_depth(runner, images)
        for i, (name, image) in enumerate(zip(batch, images)):
            h, w = image.shape[:2]
            model_f = float("nan") if fov is None else focal_from_fov(float(fov[i]), w)
            f, source = (focals[name], "colmap") if name in focals else (model_f, "model")
            if not (np.isfinite(f) and f > 0):
                raise PriorError(
                    f"{name}: the model's field of view ({float(fov[i]):.3g} deg) gives no "
                    f"usable focal length; give COLMAP intrinsics ({args.sparse}) for it"
                )
            depth = metric_depth(inv[i], h, w, f)
            base = os.path.join(out_dir, name)
            save_npy(base + ".npy", depth)
            save_npz(
                base + "_meta.npz",
                focallength_px=np.float64(f),
                focal_source=np.array(source),
                model_focallength_px=np.float64(model_f),
                image_size=np.array([w, h], np.int64),
            )
            save_image(base + ".png", colourise(depth))
    print(f"[predepth] wrote {len(names)} depth maps to {out_dir}")
    return len(names)
