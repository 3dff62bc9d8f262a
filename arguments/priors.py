"""Parameter groups of the prior stages (extract_mask.py, predepth.py).

Kept apart from the training groups: these scripts take a scene folder, not a model.
Defaults of the mask thresholds are RegSegField's Semantic-SAM settings (pred_iou 0.9,
stability 0.9, min area 500; seeds digest section 1.1).
"""

from __future__ import annotations

from argparse import ArgumentParser

from arguments import ParamGroup


class PriorSourceParams(ParamGroup):
    """Which scenes, on which device, with which weights."""

    _help = {
        "source_path": "scene folder (images in <scene>/<images>)",
        "dataset_root": "process every scene (folder with an images subfolder) below this one",
        "images": "image subfolder of the scene (e.g. images_4)",
        "device": "cuda or cpu (cuda falls back to cpu with a notice)",
        "precision": "auto: bf16 (SAM 2) / fp16 (Depth Pro) on CUDA, fp32 on CPU",
        "random_init_weights": "TESTING ONLY: build the model from its packaged config with "
        "random weights instead of loading a checkpoint; every output is meaningless",
    }
    _choices = {"precision": ["auto", "fp32", "fp16", "bf16"]}

    def __init__(self, parser: ArgumentParser):
        self._source_path = ""
        self.dataset_root = ""
        self._images = "images"
        self.device = "cuda"
        self.precision = "auto"
        self.random_init_weights = False
        super().__init__(parser, "Prior Source Parameters")


class MaskExtractionParams(ParamGroup):
    """extract_mask.py: multi-level masks (--mode auto) and ROI masks (--mode roi)."""

    _help = {
        "mode": "auto: multi-level masks/<stem>.npz for every image; roi: one binary "
        "pure_masks/<image name> per image from prompts",
        "backend": "auto: sam2 when a checkpoint is given or cached, classical otherwise; "
        "classical: felzenszwalb hierarchy / GrabCut, no weights",
        "sam_ckpt": "SAM 2 checkpoint (.pt); default: the cached sam2.1_hiera_<sam_model>.pt",
        "sam_config": "packaged SAM 2 config (default: from the checkpoint's file name)",
        "sam_model": "SAM 2.1 size to look up in the cache or download",
        "pred_iou": "keep masks whose predicted IoU exceeds this (SAM 2)",
        "stability": "keep masks whose stability score reaches this (SAM 2)",
        "min_area": "fill holes / drop islands and masks smaller than this many pixels",
        "points_per_side": "SAM 2 automatic masks: point grid size",
        "points_per_batch": "SAM 2 automatic masks: prompts per forward pass",
        "box_nms": "SAM 2 automatic masks: box IoU for duplicate removal within a level",
        "scales": "classical: felzenszwalb scales, coarse to fine (one level each)",
        "classical_max_side": "classical: segment a copy whose longer side is at most this",
        "prompts": "ROI prompt file (JSON, see docs/PRIORS.md); without it an OpenCV window "
        "opens on the reference images when a display exists",
        "ref_images": "images to click on in the interactive window (default: the first)",
        "save_overlays": "ROI: also write pure_masks_overlay/<stem>.jpg for inspection",
        "allow_empty": "ROI: accept views whose mask is empty instead of stopping",
        "fill_holes": "ROI: fill holes enclosed by the foreground",
        "grabcut_max_side": "classical ROI: run GrabCut on a copy at most this large",
        "offload_video": "SAM 2 ROI: keep the video frames in CPU memory",
        "train_views_of": "auto: only the training views listed in this split.json "
        "(colmap_match.py --n_views N writes <scene>/colmap_<N>views/split.json); default: "
        "every image",
    }
    _choices = {
        "mode": ["auto", "roi"],
        "backend": ["auto", "sam2", "classical"],
        "sam_model": ["tiny", "small", "base_plus", "large"],
    }

    def __init__(self, parser: ArgumentParser):
        self.mode = "auto"
        self.backend = "auto"
        self.sam_ckpt = ""
        self.sam_config = ""
        self.sam_model = "large"
        self.pred_iou = 0.9
        self.stability = 0.9
        self.min_area = 500
        self.points_per_side = 32
        self.points_per_batch = 64
        self.box_nms = 0.7
        self.scales = [3200.0, 800.0, 200.0]
        self.classical_max_side = 512
        self.prompts = ""
        self.ref_images: list[str] = []
        self.save_overlays = False
        self.allow_empty = False
        self.fill_holes = False
        self.grabcut_max_side = 640
        self.offload_video = False
        self.train_views_of = ""
        super().__init__(parser, "Mask Extraction Parameters")


class DepthPriorParams(ParamGroup):
    """predepth.py: Depth Pro metric depth for every image."""

    _help = {
        "depth_model": "Depth Pro weights: a local folder (config.json, model.safetensors) or "
        "a Hugging Face hub id, downloaded when online; with --random_init_weights, a folder "
        "holding only config.json, or the package's default config",
        "batch_size": "images per forward pass",
        "sparse": "COLMAP model (relative to the scene) whose intrinsics give the focal length",
        "ignore_colmap": "use the model's own focal-length estimate even when COLMAP "
        "intrinsics exist",
    }

    def __init__(self, parser: ArgumentParser):
        self.depth_model = "apple/DepthPro-hf"
        self.batch_size = 2
        self.sparse = "sparse/0"
        self.ignore_colmap = False
        super().__init__(parser, "Depth Prior Parameters")
