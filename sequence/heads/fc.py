"""Temporal pooling then an MLP: the study's fully-connected baseline (blind to frame order).

pool: mean (the study's), meanstd (mean and spread of each dimension), or attention (a learned
weighted mean: sequence.heads.AttentionPool)."""

from __future__ import annotations

import torch

from embed.errors import ConfigError
from sequence.heads import AttentionPool, Head, masked_mean, mlp, register_head, valid_mask


@register_head
class FCHead(Head):
    name = "fc"
    sees_order = False

    def __init__(
        self,
        input_dim: int,
        states: list[str],
        levels: int,
        hidden: list[int] = (128, 64),
        dropout: float = 0.3,
        pool: str = "mean",
    ):
        if pool not in ("mean", "meanstd", "attention"):
            raise ConfigError(f"head 'fc': pool '{pool}' is not mean, meanstd or attention; fix: pick one of those")
        width_in = input_dim * (2 if pool == "meanstd" else 1)
        top, width = mlp([width_in, *hidden], dropout)
        super().__init__(states, levels, width)
        self.pool, self.top = pool, top
        self.attend = AttentionPool(input_dim) if pool == "attention" else None

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.attend is not None:
            return self.top(self.attend(x, lengths))
        mean = masked_mean(x, lengths)
        if self.pool == "mean":
            return self.top(mean)
        mask = valid_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
        var = (((x - mean[:, None]) ** 2) * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)
        return self.top(torch.cat([mean, var.clamp(min=0).sqrt()], 1))
