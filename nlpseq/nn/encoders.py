"""The one recurrent encoder family every task uses: RNN (tanh/relu), LSTM or GRU; stacked; bidirectional.

Padding never changes a result, and the fused kernels run over whole sequences (no Python loop over
time steps). On GPUs (and for GRU/RNN) sequences are packed by length. A CPU LSTM instead runs on the
padded batch, which lets torch use its oneDNN kernel (1.3-1.5x faster than the packed CPU kernel
for training, measured at 32 x 14 x 128): each direction runs separately, the backward one over every
row reversed within its true length, so padding only ever comes after a row's real steps and never
reaches a real position. Padded positions cost compute (a few % with length-bucketed batches).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpseq.errors import ConfigError, check_bool, check_choice, check_float, check_int
from nlpseq.nn.dropout import dropout

CELLS = ("rnn", "lstm", "gru")
INITS = ("default", "orthogonal", "identity")


class EncoderOutput(NamedTuple):
    states: torch.Tensor       # [B, T, output_size]; zeros at padded positions
    final: torch.Tensor        # [B, output_size]: last layer's final state (both directions concatenated)
    # raw h_n (and c_n for LSTM): [layers*dirs, B, H]; None unless asked for (`return_hidden`)
    hidden: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None


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

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, hidden=None,
                return_hidden: bool = False) -> EncoderOutput:
        """inputs [B, T, input_size]; lengths [B] (on CPU, >= 1) -> EncoderOutput.

        `hidden`: initial states as nn.LSTM/GRU/RNN take them; `return_hidden`: fill EncoderOutput.hidden.
        Either takes the packed path (the CPU LSTM path has no exact c_n for padded rows).
        """
        if hidden is None and not return_hidden and self.cell == "lstm" and inputs.device.type == "cpu":
            return self._forward_cpu_lstm(inputs, lengths.cpu())
        total = inputs.size(1)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden_n = self.rnn(packed, hidden)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
        h = hidden_n[0] if isinstance(hidden_n, tuple) else hidden_n
        # last layer's final state per direction: forward's at the true end, backward's at position 0
        last = h.view(self.num_layers, self.num_directions, h.size(1), self.hidden_size)[-1]
        final = last.transpose(0, 1).reshape(h.size(1), self.output_size)
        return EncoderOutput(states, final, hidden_n if return_hidden else None)

    def _forward_cpu_lstm(self, x: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Unpacked LSTM (the oneDNN kernel): equal lengths in one call, else per layer and direction."""
        batch, total = x.shape[:2]
        rnn = self.rnn
        ends = (lengths - 1).clamp(min=0).to(x.device)
        if bool((lengths == total).all()):  # nothing to mask: the module's own call is exact and fastest
            states = rnn(x)[0]
        else:
            steps = torch.arange(total)
            valid = steps < lengths.unsqueeze(1)                                        # [B, T]
            # reversing each row within its length is its own inverse; padded steps stay in place
            rev = torch.where(valid, lengths.unsqueeze(1) - 1 - steps, steps).to(x.device)
            zeros = x.new_zeros(1, batch, self.hidden_size)
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh")
            states = x
            for k in range(self.num_layers):
                if k > 0 and self.training and rnn.dropout > 0:  # nn.LSTM's inter-layer dropout
                    states = dropout(states, rnn.dropout, True)
                outs = []
                for d in range(self.num_directions):
                    suffix = "_reverse" if d else ""
                    weights = [getattr(rnn, f"{name}_l{k}{suffix}") for name in names]
                    inp = _gather_time(states, rev) if d else states
                    out = torch.lstm(inp, (zeros, zeros), weights, rnn.bias, 1, 0.0, self.training, False, True)[0]
                    outs.append(_gather_time(out, rev) if d else out)
                states = torch.cat(outs, 2) if len(outs) > 1 else outs[0]
            states = states * valid.to(x.device).unsqueeze(2).to(states.dtype)
        # forward direction's state at the true end; backward's at position 0
        last = states.gather(1, ends.view(batch, 1, 1).expand(-1, 1, states.size(2))).squeeze(1)
        final = last if self.num_directions == 1 else torch.cat([last[:, :self.hidden_size],
                                                                  states[:, 0, self.hidden_size:]], 1)
        return EncoderOutput(states, final)

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


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, T, D] with its time steps taken per row from index [B, T]."""
    return x.gather(1, index.unsqueeze(2).expand(-1, -1, x.size(2)))
