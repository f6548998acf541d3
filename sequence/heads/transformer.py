"""A small pre-norm transformer encoder over the frames, pooled by masked attention.

Sized for cached embeddings (about 0.7 M parameters with the defaults on 512-d inputs with deltas):
the input is projected to `d_model`, sinusoidal positions are added (any clip length; a window of
a long video sees the same positions as a training clip of that length), `layers` pre-norm encoder
layers attend across frames with padded steps masked out of every attention, and AttentionPool
makes one vector per clip. torch's own encoder layers (nn.TransformerEncoderLayer), not hand-written ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sequence.heads import AttentionPool, Head, register_head, valid_mask


def sinusoidal(steps: int, dim: int, device: torch.device) -> torch.Tensor:
    """(steps, dim) positions of "Attention is all you need", computed for any length."""
    pos = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(steps, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


@register_head
class TransformerHead(Head):
    name = "transformer"

    def __init__(
        self,
        input_dim: int,
        states: list[str],
        levels: int,
        d_model: int = 128,
        layers: int = 3,
        heads: int = 4,
        ff: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__(states, levels, d_model)
        self.project = nn.Linear(input_dim, d_model)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, activation="gelu", batch_first=True, norm_first=True)
        # Nested tensors are not used with pre-norm layers anyway; saying so keeps torch from warning.
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.pool = AttentionPool(d_model)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.project(x) + sinusoidal(x.shape[1], self.project.out_features, x.device)
        h = self.encoder(self.drop(h), src_key_padding_mask=~valid_mask(lengths, x.shape[1]))
        return self.pool(h, lengths)
