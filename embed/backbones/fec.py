"""FEC-style expression embedding net (Schoneveld et al., 2021), 140x140 -> 128-d.

Inception-ResNet-V1 trunk (facenet-pytorch) cut after mixed_7a, a 1x1 conv to 512 channels, a
5-layer dense block (growth 64), a 1x1 conv to 128 and global average pooling. There is no public
release: weights come from a file trained with `python -m embed fec-train`, or `random` for tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from embed.backbones import Backbone, register_backbone

if TYPE_CHECKING:
    from facenet_pytorch import InceptionResnetV1

_TRUNK_LAYERS = (
    "conv2d_1a",
    "conv2d_2a",
    "conv2d_2b",
    "maxpool_3a",
    "conv2d_3b",
    "conv2d_4a",
    "conv2d_4b",
    "repeat_1",
    "mixed_6a",
    "repeat_2",
    "mixed_7a",
)
TRUNK_CHANNELS = 1792  # mixed_7a's output


class DenseBlock(nn.Module):
    def __init__(self, channels: int, layers: int = 5, growth: int = 64):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(channels + i * growth),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels + i * growth, growth, 3, padding=1, bias=False),
            )
            for i in range(layers)
        )
        self.out_channels = channels + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class FECNet(nn.Module):
    def __init__(self, trunk: InceptionResnetV1 | None = None, dim: int = 128):
        super().__init__()
        if trunk is None:
            from facenet_pytorch import InceptionResnetV1  # imports torchvision: only when a network is built

            trunk = InceptionResnetV1(pretrained=None, classify=False)
        self.trunk = nn.Sequential(*(getattr(trunk, name) for name in _TRUNK_LAYERS))
        dense = DenseBlock(512)
        self.head = nn.Sequential(
            nn.Conv2d(TRUNK_CHANNELS, 512, 1),
            dense,
            nn.Conv2d(dense.out_channels, dim, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


@register_backbone
class FEC(Backbone):
    name = "fec"
    dim = 128
    input_size = 140
    mean = (127.5 / 255,) * 3  # the trunk's facenet standardisation
    std = (128 / 255,) * 3
    default_weights = None

    def architecture(self) -> nn.Module:
        return FECNet()
