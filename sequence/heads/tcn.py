"""Temporal convolutional network: dilated residual 1-D convolutions, then masked mean+max pooling.

The strongest family on DAiSEE engagement (ResNet+TCN); sees motion at several time scales at once
and trains in parallel over time, unlike the recurrent heads.
"""

from __future__ import annotations

import torch
from torch import nn

from sequence.heads import Head, masked_mean, mlp, register_head, valid_mask


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, dilation=dilation)
        self.bn1, self.bn2 = nn.BatchNorm1d(c_out), nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Every conv reads zeros past a clip's end, exactly as at the end of the array, so padding
        # never leaks into valid steps (x arrives masked; the inner activation is masked here).
        h = self.drop(torch.relu(self.bn1(self.conv1(x))) * mask)
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x)) * mask


@register_head
class TCNHead(Head):
    name = "tcn"

    def __init__(self, input_dim: int, states: list[str], levels: int, channels: list[int] = (128, 128, 128),
                 kernel: int = 3, fc: list[int] = (64,), dropout: float = 0.2):
        channels = list(channels)
        top, width = mlp([2 * channels[-1], *fc], dropout)
        super().__init__(states, levels, width)
        ins = [input_dim, *channels[:-1]]
        self.blocks = nn.ModuleList(_Block(i, o, kernel, 2 ** k, dropout)
                                    for k, (i, o) in enumerate(zip(ins, channels, strict=True)))
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
