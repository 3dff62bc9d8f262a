"""LPIPS with the project's own VGG16 / AlexNet trunks (no torchvision needed).

``load_lpips(net, weights_dir)`` gives a ready metric or raises ``LPIPSWeightsMissing``;
never fall back to random weights for a reported number.
"""

from utils.lpips.networks import (
    LPIPS,
    TAP_CHANNELS,
    AlexNetFeatures,
    LinearHeads,
    VGG16Features,
    make_backbone,
    unit_normalize,
)
from utils.lpips.weights import (
    BACKBONE_FILES,
    HEAD_FILES,
    LPIPSWeightsError,
    LPIPSWeightsMissing,
    default_cache_dir,
    load_backbone_weights,
    load_head_weights,
    load_lpips,
    resolve_weight_files,
    search_dirs,
)

__all__ = [
    "BACKBONE_FILES",
    "HEAD_FILES",
    "LPIPS",
    "TAP_CHANNELS",
    "AlexNetFeatures",
    "LPIPSWeightsError",
    "LPIPSWeightsMissing",
    "LinearHeads",
    "VGG16Features",
    "default_cache_dir",
    "load_backbone_weights",
    "load_head_weights",
    "load_lpips",
    "make_backbone",
    "resolve_weight_files",
    "search_dirs",
    "unit_normalize",
]
