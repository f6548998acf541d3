"""Temporal convolutional network: dilated residual 1-D convolutions, then masked mean+max pooling.

The strongest family on DAiSEE engagement (ResNet+TCN); sees motion at several time scales at once
and trains in parallel over time, unlike the recurrent heads.
"""

from __future__ import annotations

import torch
from torch import nn

from sequence.heads import Head, masked_mean, mlp, register_head, valid_mask


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over (B, C, T) whose training statistics come from valid steps only.

    nn.BatchNorm1d averages over every step, padding included, so in training a clip's features
    would depend on how much shorter its batch-mates are; torch has no masked variant, hence this.
    Eval uses the running statistics exactly as nn.BatchNorm1d does (and they were gathered from
    valid steps only)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # mask: (B, 1, T)
        if not self.training or mask is None:
            return super().forward(x)
        m = mask.to(x.dtype)
        n = m.sum().clamp_min(1.0)
        mean = (x * m).sum((0, 2)) / n
        var = (((x - mean[None, :, None]) * m) ** 2).sum((0, 2)) / n
        with torch.no_grad():
            self.num_batches_tracked += 1
            k = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            unbiased = var * n / (n - 1).clamp_min(1.0)
            self.running_mean.mul_(1 - k).add_(k * mean)
            self.running_var.mul_(1 - k).add_(k * unbiased)
        y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return y * self.weight[None, :, None] + self.bias[None, :, None] if self.affine else y


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, dilation=dilation)
        self.bn1, self.bn2 = MaskedBatchNorm1d(c_out), MaskedBatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Every conv reads zeros past a clip's end, exactly as at the end of the array (x arrives
        # masked; the inner activation is masked here), and batch statistics count valid steps only,
        # so padding never leaks into valid steps, in training or in eval.
        h = self.drop(torch.relu(self.bn1(self.conv1(x), mask)) * mask)
        return torch.relu(self.bn2(self.conv2(h), mask) + self.skip(x)) * mask


@register_head
class TCNHead(Head):
    name = "tcn"

    def __init__(
        self,
        input_dim: int,
        states: list[str],
        levels: int,
        channels: list[int] = (128, 128, 128),
        kernel: int = 3,
        fc: list[int] = (64,),
        dropout: float = 0.2,
    ):
        channels = list(channels)
        top, width = mlp([2 * channels[-1], *fc], dropout)
        super().__init__(states, levels, width)
        ins = [input_dim, *channels[:-1]]
        self.blocks = nn.ModuleList(
            _Block(i, o, kernel, dilation=2**k, dropout=dropout) for k, (i, o) in enumerate(zip(ins, channels, strict=True))
        )
        self.top = top

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(lengths, x.shape[1])
        m = mask[:, None, :].to(x.dtype)
        h = x.transpose(1, 2) * m
        for block in self.blocks:
            h = block(h, m)
        h = h.transpose(1, 2)
        peak = h.masked_fill(~mask[..., None], float("-inf")).amax(1)
        return self.top(torch.cat([masked_mean(h, lengths), peak], 1))
