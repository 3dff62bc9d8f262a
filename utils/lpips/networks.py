"""LPIPS networks: ImageNet feature stacks (VGG16, AlexNet), linear heads, the metric.

LPIPS (Zhang et al., CVPR 2018, version 0.1) compares two images through a frozen
ImageNet classifier. Each image is shifted and scaled per channel, run through the
convolutional trunk, and five intermediate ReLU activations ("taps") are kept. At every
tap the features are unit-normalised across channels, the squared difference between the
two images is weighted per channel by a learnt non-negative 1x1 convolution (the linear
head), averaged over space, and the five layer scores are summed.

The module layouts mirror the standard ImageNet checkpoints key for key
(``features.<index>.weight``), so those files load without renaming; the heads mirror
the LPIPS project's files (``lin<k>.model.1.weight``, index 0 being a parameter-free
dropout). Loading the weights is ``utils.lpips.weights``' job: a network built here
starts from random weights and is only good for tests.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# Channel counts of the five taps; the heads and the tests rely on them.
TAP_CHANNELS: dict[str, tuple[int, ...]] = {
    "vgg": (64, 128, 256, 512, 512),
    "alex": (64, 192, 384, 256, 256),
}

# LPIPS v0.1 input normalisation, applied to images in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class FeatureStack(nn.Module):
    """A ``features`` Sequential plus the indices whose outputs are returned."""

    def __init__(self, layers: list[nn.Module], taps: tuple[int, ...]):
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.taps = taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x: [B, 3, H, W]
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
                if len(outs) == len(self.taps):
                    break  # layers after the last tap do not matter here
        return outs


class VGG16Features(FeatureStack):
    """VGG16's convolutional trunk (no batch norm), tapped at relu1_2 ... relu5_3.

    Indices follow the usual ``features`` numbering (conv, ReLU, ..., max-pool), so
    ``vgg16-397923af.pth`` loads by key. The final max-pool (index 30) is omitted: it has
    no weights and LPIPS stops at relu5_3 (index 29).
    """

    _CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        c_in = 3
        for v in self._CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU()]
                c_in = v
        super().__init__(layers, taps=(3, 8, 15, 22, 29))


class AlexNetFeatures(FeatureStack):
    """AlexNet's convolutional trunk ("one weird trick" variant), tapped at relu1 ... relu5.

    Same ``features`` numbering as ``alexnet-owt-7be5be79.pth``; the trailing max-pool
    (index 12) is omitted as LPIPS stops at relu5 (index 11).
    """

    def __init__(self) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        ]
        super().__init__(layers, taps=(1, 4, 7, 9, 11))


def make_backbone(net: str) -> FeatureStack:
    """``"vgg"`` or ``"alex"`` feature stack with random weights."""
    if net == "vgg":
        return VGG16Features()
    if net == "alex":
        return AlexNetFeatures()
    raise ValueError(f"unknown LPIPS network {net!r}: use 'vgg' or 'alex'")


class _LinearHead(nn.Module):
    """One 1x1 convolution C -> 1 without bias; ``model.0`` is the (inactive) dropout."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LinearHeads(nn.Module):
    """Heads ``lin0`` ... ``lin4``: per-channel weights of the squared feature differences."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        for k, c in enumerate(channels):
            self.add_module(f"lin{k}", _LinearHead(c))
        self.n = len(channels)

    def __getitem__(self, k: int) -> _LinearHead:
        return getattr(self, f"lin{k}")


def unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide every feature vector (along channels, dim 1) by its L2 norm."""
    return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """The LPIPS distance; parameters are frozen, gradients still reach the inputs.

    ``LPIPS(net)`` has random weights: load real ones with
    ``utils.lpips.weights.load_lpips`` (or ``load_weights`` on an instance).
    """

    def __init__(self, net: str = "vgg"):
        super().__init__()
        self.net = net
        self.backbone = make_backbone(net)
        self.heads = LinearHeads(TAP_CHANNELS[net])
        # Not persistent: the checkpoints do not hold them, they are fixed constants.
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(
        self,
        x: torch.Tensor,  # [B, 3, H, W] or [3, H, W]
        y: torch.Tensor,  # same shape
        normalize: bool = True,
    ) -> torch.Tensor:  # [B], or [] for single images
        """Distance between ``x`` and ``y``.

        ``normalize=True`` (default) takes images in [0, 1] and maps them to [-1, 1], the
        range LPIPS was trained on. ``normalize=False`` feeds the tensors as they are: give
        it [-1, 1] images, or [0, 1] images to reproduce the original 3DGS metrics.py,
        which did exactly that (its LPIPS numbers are therefore not standard LPIPS).
        """
        single = x.dim() == 3
        if single:
            x, y = x[None], y[None]
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        feats_x = self.backbone((x - self.shift) / self.scale)
        feats_y = self.backbone((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for k, (fx, fy) in enumerate(zip(feats_x, feats_y)):
            diff = (unit_normalize(fx) - unit_normalize(fy)) ** 2
            total = total + self.heads[k](diff).mean(dim=(1, 2, 3))  # head output has 1 channel
        return total[0] if single else total
