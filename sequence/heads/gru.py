"""Bidirectional GRU stack: reads each clip both ways, fewer parameters than the LSTM."""

from __future__ import annotations

from torch import nn

from sequence.heads import register_head
from sequence.heads._recurrent import RecurrentHead


@register_head
class GRUHead(RecurrentHead):
    name = "gru"
    cell = nn.GRU

    def __init__(
        self,
        input_dim: int,
        states: list[str],
        levels: int,
        hidden: list[int] = (128,),
        fc: list[int] = (64,),
        dropout: float = 0.3,
        bidirectional: bool = True,
    ):
        super().__init__(input_dim, states, levels, list(hidden), list(fc), dropout, bidirectional)
