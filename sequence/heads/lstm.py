"""The original study's head: a stack of LSTMs, its last hidden state, FC layers, one output per state."""

from __future__ import annotations

from torch import nn

from sequence.heads import register_head
from sequence.heads._recurrent import RecurrentHead


@register_head
class LSTMHead(RecurrentHead):
    name = "lstm"
    cell = nn.LSTM

    def __init__(
        self,
        input_dim: int,
        states: list[str],
        levels: int,
        hidden: list[int] = (256, 256),
        fc: list[int] = (),
        dropout: float = 0.3,
        bidirectional: bool = False,
    ):
        super().__init__(input_dim, states, levels, list(hidden), list(fc), dropout, bidirectional)
