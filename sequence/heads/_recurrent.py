"""Shared body of the recurrent heads (lstm, gru): stacked layers of any sizes, then an MLP."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from sequence.heads import Head, mlp


class RecurrentHead(Head):
    cell: ClassVar[type[nn.RNNBase]]

    def __init__(
        self,
        input_dim: int,
        states: list[str],
        levels: int,
        hidden: list[int],
        fc: list[int],
        dropout: float,
        bidirectional: bool,
    ):
        dirs = 2 if bidirectional else 1
        top, width = mlp([hidden[-1] * dirs, *fc], dropout)
        super().__init__(states, levels, width)
        # One single-layer RNN per level of the stack: nn.LSTM(num_layers=k) forces equal sizes,
        # and the original study stacked 512 -> 1024.
        sizes = [input_dim, *(h * dirs for h in hidden[:-1])]
        self.layers = nn.ModuleList(
            self.cell(i, h, batch_first=True, bidirectional=bidirectional) for i, h in zip(sizes, hidden, strict=True)
        )
        self.drop = nn.Dropout(dropout)
        self.top = top

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        seq: PackedSequence = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        for i, layer in enumerate(self.layers):
            if i:
                seq = seq._replace(data=self.drop(seq.data))
            seq, h = layer(seq)
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h_n, c_n)
        # h: (directions, B, H), already in the batch's original order; the last valid step of each
        # sequence forwards (and the first, backwards).
        last = torch.cat(list(h), dim=1)
        return self.top(self.drop(last))
