"""Inception-ResNet-V1 from facenet-pytorch (VGGFace2 or CASIA-WebFace), 160x160 -> 512-d."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from embed.backbones import Backbone, NamedRelease, register_backbone
from embed.packaged_weights import weights_dir

# facenet-pytorch's load_weights() downloads these into $TORCH_HOME/checkpoints/.
_RELEASES = {
    "vggface2": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    "casia-webface": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
}


@register_backbone
class Inception(Backbone):
    name = "inception"
    dim = 512
    input_size = 160
    # facenet's fixed_image_standardization: (x - 127.5) / 128
    mean = (127.5 / 255,) * 3
    std = (128 / 255,) * 3
    default_weights = "vggface2"

    def architecture(self) -> nn.Module:
        from facenet_pytorch import InceptionResnetV1  # imports torchvision: only when a network is built

        return InceptionResnetV1(pretrained=None, classify=False)

    def prepare_state_dict(self, state: dict) -> dict:
        # facenet's released files carry the identity classifier (logits.*), unused for embeddings.
        return {k: v for k, v in state.items() if not k.startswith("logits.")}

    def releases(self) -> dict[str, NamedRelease]:
        # facenet-pytorch's get_torch_home()/checkpoints, the same rule as weights_dir()
        return {k: NamedRelease(url, weights_dir() / Path(url).name) for k, url in _RELEASES.items()}

    def load_release(self, name: str) -> nn.Module:
        from facenet_pytorch import InceptionResnetV1

        return InceptionResnetV1(pretrained=name, classify=False)
