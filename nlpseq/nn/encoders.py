"""The one recurrent encoder family every task uses: RNN (tanh/relu), LSTM or GRU; stacked; bidirectional.

Sequences are packed by length before the RNN, so padding never changes a result and no compute is
spent on it; the cuDNN/fused kernels run over whole sequences (no Python loop over time steps).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpseq.errors import ConfigError, check_bool, check_choice, check_float, check_int

CELLS = ("rnn", "lstm", "gru")
INITS = ("default", "orthogonal", "identity")


class EncoderOutput(NamedTuple):
    states: torch.Tensor       # [B, T, output_size]; zeros at padded positions
    final: torch.Tensor        # [B, output_size]: last layer's final state (both directions concatenated)
    hidden: torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # raw h_n (and c_n for LSTM): [layers*dirs, B, H]


def _rnn_class(cell: str) -> type[nn.RNNBase]:
    return {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]


class RecurrentEncoder(nn.Module):
    def __init__(self, input_size: int, hidden_size: int = 256, cell: str = "lstm", num_layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.0, nonlinearity: str = "tanh",
                 init: str = "default"):
        super().__init__()
        check_int("input_size", input_size, minimum=1)
        check_int("hidden_size", hidden_size, minimum=1)
        check_choice("cell", cell, CELLS)
        check_int("num_layers", num_layers, minimum=1)
        check_bool("bidirectional", bidirectional)
        check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        check_choice("init", init, INITS)
        if nonlinearity != "tanh" and cell != "rnn":
            raise ConfigError("nonlinearity", f"'{nonlinearity}' applies to cell=rnn only (cell is {cell})")
        if init == "identity" and cell != "rnn":
            raise ConfigError("init", "identity recurrent weights are for cell=rnn (IRNN); use orthogonal for lstm/gru")
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.num_directions = 2 if bidirectional else 1
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        # inter-layer dropout only: nn.RNN warns (and does nothing) when num_layers == 1
        self.rnn = _rnn_class(cell)(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                                    bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0, **extra)
        self._init_weights(init)

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    def _init_weights(self, init: str) -> None:
        if init == "default":
            return
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[self.cell]
        for name, p in self.rnn.named_parameters():
            if name.startswith("weight_hh"):
                for g in range(gates):  # per gate block, so each block is orthogonal/identity
                    block = p.data[g * self.hidden_size:(g + 1) * self.hidden_size]
                    if init == "orthogonal":
                        nn.init.orthogonal_(block)
                    else:
                        block.copy_(torch.eye(self.hidden_size))
            elif name.startswith("bias"):
                p.data.zero_()
                if self.cell == "lstm":  # forget-gate bias 1: remember by default
                    p.data[self.hidden_size:2 * self.hidden_size] = 1.0

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, hidden=None) -> EncoderOutput:
        """inputs [B, T, input_size]; lengths [B] (on CPU, >= 1) -> EncoderOutput."""
        total = inputs.size(1)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden_n = self.rnn(packed, hidden)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
        h = hidden_n[0] if isinstance(hidden_n, tuple) else hidden_n
        # last layer's final state per direction: forward's at the true end, backward's at position 0
        last = h.view(self.num_layers, self.num_directions, h.size(1), self.hidden_size)[-1]
        final = last.transpose(0, 1).reshape(h.size(1), self.output_size)
        return EncoderOutput(states, final, hidden_n)

    def flops_per_token(self) -> int:
        """Forward multiply-add FLOPs per token (2 per multiply-add) of the recurrent layers."""
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[self.cell]
        total, size_in = 0, self.rnn.input_size
        for _ in range(self.num_layers):
            total += self.num_directions * 2 * gates * self.hidden_size * (size_in + self.hidden_size)
            size_in = self.output_size
        return total

    def flatten_parameters(self) -> None:
        self.rnn.flatten_parameters()
