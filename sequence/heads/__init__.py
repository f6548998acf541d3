"""Sequence heads: (B, T, D) embeddings + lengths -> {state: (B, levels) logits}.

A head is one registered class in one file of this package (imported automatically). Every head
is multi-task the same way: its own trunk turns a clip into one feature vector, and `Head` puts one
linear `levels`-way output per state on top, so the states share everything but their last layer.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from embed.errors import ConfigError
from embed.plugins import Registry

_HEADS: Registry[type[Head]] = Registry("sequence.heads", "head")
register_head = _HEADS.register
head_names = _HEADS.names
head_class = _HEADS.get


def head_defaults(name: str) -> dict[str, Any]:
    """The head's own parameters with their defaults (its constructor's keyword arguments)."""
    sig = inspect.signature(head_class(name).__init__)
    skip = {"self", "input_dim", "states", "levels"}
    # Tuples are the immutable defaults in signatures; configs and YAML want lists.
    return {
        k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in sig.parameters.items() if k not in skip
    }


def resolve_params(name: str, params: dict | None) -> dict[str, Any]:
    """The head's defaults overridden by `params`; an unknown parameter is a one-line error."""
    defaults = head_defaults(name)
    unknown = set(params or {}) - set(defaults)
    if unknown:
        raise ConfigError(f"head '{name}' has no parameter '{sorted(unknown)[0]}'; fix: use one of {', '.join(defaults)}")
    merged = {**defaults, **(params or {})}
    for k, v in merged.items():
        if isinstance(defaults[k], list) and not isinstance(v, list | tuple):
            merged[k] = [v]  # `--param hidden=8` means one layer of 8
    return merged


def build_head(name: str, input_dim: int, states: list[str], levels: int, params: dict | None = None) -> Head:
    merged = resolve_params(name, params)
    defaults = head_defaults(name)
    try:
        return head_class(name)(input_dim, states, levels, **merged)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"head '{name}': parameters {params} do not build ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); fix: check their types against {defaults}"
        ) from None


class Head(nn.Module):
    name: ClassVar[str]
    sees_order: ClassVar[bool] = True  # False for heads that pool frames without regard to order

    def __init__(self, states: list[str], levels: int, feature_dim: int):
        super().__init__()
        self.states = list(states)
        self.outputs = nn.ModuleDict({s: nn.Linear(feature_dim, levels) for s in self.states})
        # Per-dimension standardisation of the input, fitted on the training split and saved with
        # the model: backbones differ wildly in scale (Inception's L2-normalised components are
        # ~0.04, ResNet's pooled ones ~1), and predict must see exactly what training saw.
        self.register_buffer("input_mean", torch.zeros(0))
        self.register_buffer("input_std", torch.ones(0))

    def fit_input_stats(self, x: torch.Tensor, lengths: torch.Tensor, chunk: int = 256) -> None:
        """Mean and std of every valid frame of (N, T, D) x, a chunk of clips at a time: a float copy
        of DAiSEE's whole Train split would be 3.3 GB."""
        total = torch.zeros(x.shape[2], dtype=torch.float64)
        squares = torch.zeros(x.shape[2], dtype=torch.float64)
        count = 0
        for i in range(0, len(x), chunk):
            frames = x[i : i + chunk][valid_mask(lengths[i : i + chunk], x.shape[1])].double()
            total += frames.sum(0)
            squares += (frames**2).sum(0)
            count += len(frames)
        mean = total / max(count, 1)
        var = (squares / max(count, 1) - mean**2).clamp(min=0) * count / max(count - 1, 1)
        self.input_mean = mean.float()
        self.input_std = var.sqrt().float().clamp(min=1e-6)

    @abstractmethod
    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) float, (B,) int64 valid lengths -> (B, feature_dim)."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.input_mean.numel():
            x = (x - self.input_mean) / self.input_std * valid_mask(lengths, x.shape[1]).unsqueeze(-1)
        f = self.features(x, lengths)
        return {s: out(f) for s, out in self.outputs.items()}


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) bool, True on the first lengths[b] steps of each sequence."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = valid_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)


def mlp(sizes: list[int], dropout: float) -> tuple[nn.Sequential, int]:
    """Linear-ReLU-Dropout layers through sizes[1:]; returns the stack and its output width."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers), sizes[-1]


class AttentionPool(nn.Module):
    """Masked attention pooling: a learned score per frame, a softmax over the clip's valid frames,
    their weighted mean. Lets a head weigh the frames that show the state (a yawn, a frown) above
    the rest, where a plain mean dilutes them; padded steps get exactly zero weight."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(lengths, x.shape[1])
        weights = torch.softmax(self.score(x).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)
        return (weights.unsqueeze(-1) * x.masked_fill(~mask.unsqueeze(-1), 0)).sum(1)
