"""torchvision ResNet18 (ImageNet), global-average-pooled 512-d features, 224x224 input."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from embed.backbones import Backbone, NamedRelease, register_backbone

# torchvision's ResNet18_Weights.IMAGENET1K_V1.url, named here so that listing releases and keying
# stores need not import torchvision (seconds of start-up); tests hold it equal to torchvision's.
IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@register_backbone
class ResNet18(Backbone):
    name = "resnet18"
    dim = 512
    input_size = 224
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    default_weights = "imagenet"

    def architecture(self) -> nn.Module:
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        net.fc = nn.Identity()
        return net

    def releases(self) -> dict[str, NamedRelease]:
        # torch.hub's load_state_dict_from_url caches under <hub dir>/checkpoints.
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_URL)
        return {"imagenet": NamedRelease(IMAGENET_URL, cached)}

    def load_release(self, name: str) -> nn.Module:
        from torchvision.models import ResNet18_Weights, resnet18

        net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        net.fc = nn.Identity()
        return net
