"""A recurrent decoder for translation (with attention over encoder states) and language modelling (without).

Two ways to run it, which agree: `forward` teacher-forces a whole target sequence, `step` advances one
token (for search). Its state is a `DecoderState` whose tensors all have batch as dim 0, so search code
can reorder or expand any state with one `index_select(0, ...)` per tensor (see nlpseq.nn.search.select_state).

Where the recurrence allows it, `forward` makes one fused (cuDNN) RNN call over the whole sequence:
no attention, or Luong attention without input feeding (the RNN does not see the context, so all T
steps attend in one batched matmul afterwards). Bahdanau attention and input feeding feed each step's
context back into the RNN, so they loop over time steps.

Single steps (`step`, and the time loop of `forward`) run the RNN's own weights layer by layer through
the fused cell functions (`rnn_step`): on the CPU a one-token nn.LSTM call costs ~5x more
(1.17 vs 0.23 ms at 2 layers x 256), most of the time of a decoding step.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpseq.errors import ConfigError, check_bool, check_choice, check_float, check_int
from nlpseq.nn.attention import ATTENTIONS, build_attention
from nlpseq.nn.dropout import Dropout, dropout

CELLS = ("lstm", "gru", "rnn")
BRIDGES = ("none", "linear", "zero")

# the RNN's own recurrent state, layer-first as nn.LSTM/GRU/RNN want it
Hx = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
# per-layer states for `rnn_step`: hidden [B, H] per layer, and cell [B, H] per layer (LSTM) or None
Layers = tuple[list[torch.Tensor], list[torch.Tensor] | None]


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh; without autograd on the CPU as 2 sigmoid(2x) - 1 (equal to ~1e-7): torch's CPU tanh is ~6x slower
    than its sigmoid (213 vs 34 us for a 320 x 256 decoding step's activations here). With autograd the
    rewrite's longer backward eats the gain (measured), so torch's tanh stays."""
    if x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
        return torch.tanh(x)
    return torch.sigmoid(2.0 * x).mul_(2.0).sub_(1.0)


def cell_from_gates(mode: str, input_gates: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor | None,
                    w_hh: torch.Tensor, b_hh: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of an nn.RNNBase cell (`mode` as nn.RNNBase.mode) whose input part of the gates,
    W_ih x + b_ih [B, gates * H], is already computed: the math of torch's lstm_cell / gru_cell / rnn_*_cell.
    Returns (new hidden, new cell or None)."""
    hidden_gates = F.linear(hidden, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (input_gates + hidden_gates).chunk(4, dim=1)
        new_cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * tanh(g)
        return torch.sigmoid(o) * tanh(new_cell), new_cell
    if mode == "GRU":
        H = hidden.size(-1)
        r, z = torch.sigmoid(input_gates[:, :2 * H] + hidden_gates[:, :2 * H]).chunk(2, dim=1)
        n = tanh(input_gates[:, 2 * H:] + r * hidden_gates[:, 2 * H:])
        return n + z * (hidden - n), None
    pre = input_gates + hidden_gates
    return (tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


def rnn_step(rnn: nn.RNNBase, inputs: torch.Tensor | None, hidden: Sequence[torch.Tensor],
             cell: Sequence[torch.Tensor] | None = None, first_gates: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor] | None]:
    """One time step of a (unidirectional, batch-first) nn.LSTM/GRU/RNN on its own weights, layer by layer.

    inputs [B, input_size]; hidden (and, for an LSTM, cell) one [B, H] tensor per layer. Returns the top
    layer's output [B, H] and the new per-layer states. The same function as calling `rnn` on a one-token
    sequence (tests check it), including inter-layer dropout in training mode (same distribution; the
    random draws differ), but through torch's fused cell kernels, which skip nn.RNNBase's per-call work.
    `first_gates` [B, gates * H], if given, replaces the first layer's W_ih inputs + b_ih (inputs unused).
    """
    mode = rnn.mode
    if mode == "LSTM":
        fn = torch.lstm_cell
    elif mode == "GRU":
        fn = torch.gru_cell
    else:
        fn = torch.rnn_tanh_cell if mode == "RNN_TANH" else torch.rnn_relu_cell
    new_hidden, new_cell, x = [], [] if cell is not None else None, inputs
    for k in range(rnn.num_layers):
        if k > 0 and rnn.dropout > 0 and rnn.training:
            x = dropout(x, rnn.dropout, True)
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
        b_ih, b_hh = (getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")) if rnn.bias else (None, None)
        if k == 0 and first_gates is not None:
            x, c = cell_from_gates(mode, first_gates, hidden[0], None if cell is None else cell[0], w_hh, b_hh)
            if new_cell is not None:
                new_cell.append(c)
        elif new_cell is not None:
            x, c = fn(x, (hidden[k], cell[k]), w_ih, w_hh, b_ih, b_hh)
            new_cell.append(c)
        else:
            x = fn(x, hidden[k], w_ih, w_hh, b_ih, b_hh)
        new_hidden.append(x)
    return x, new_hidden, new_cell


class DecoderState(NamedTuple):
    """Everything the decoder carries between steps; every tensor is batch-first (dim 0 = batch)."""

    hidden: torch.Tensor                        # [B, layers, H]
    cell: torch.Tensor | None = None            # [B, layers, H]; LSTM only
    memory: torch.Tensor | None = None          # [B, S, M] encoder states; attention only
    memory_mask: torch.Tensor | None = None     # [B, S] bool, True = real source position
    projected_keys: torch.Tensor | None = None  # [B, S, *] memory projected for the attention, once per batch
    feed: torch.Tensor | None = None            # [B, H] previous attentional vector; input feeding only
    # from `prepare_search`: the memory through the context's columns of a weight, [B, S, *]
    memory_gates: torch.Tensor | None = None    # first RNN layer's input weights (Bahdanau attention only)
    memory_combine: torch.Tensor | None = None  # the attentional layer `combine`


class RecurrentDecoder(nn.Module):
    """Stacked LSTM/GRU/RNN decoder, optionally attending over a memory; emits [*, output_size] vectors.

    The model owns embeddings and the vocabulary projection (so it can tie them). With attention the
    emitted vector is the attentional vector tanh(W_c [context; h]) (Luong et al. 2015); without, the
    top layer's hidden state. Bahdanau attention (Bahdanau et al. 2015) queries with the previous top
    hidden state and feeds the context into the RNN input; Luong attention queries with the new one.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, cell: str = "lstm",
                 dropout: float = 0.0, attention: str | None = None, memory_size: int | None = None,
                 input_feeding: bool = False, bridge: str = "linear", encoder_final_size: int | None = None,
                 attention_hidden_size: int | None = None):
        super().__init__()
        check_int("input_size", input_size, minimum=1)
        check_int("hidden_size", hidden_size, minimum=1)
        check_int("num_layers", num_layers, minimum=1)
        check_choice("cell", cell, CELLS)
        check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        attention = "none" if attention is None else attention
        check_choice("attention", attention, ATTENTIONS)
        check_bool("input_feeding", input_feeding)
        check_choice("bridge", bridge, BRIDGES)
        if attention != "none":
            if memory_size is None:
                raise ConfigError("memory_size", f"required with attention={attention} (the encoder's output size)")
            check_int("memory_size", memory_size, minimum=1)
            if attention == "luong_dot" and memory_size != hidden_size:
                raise ConfigError("attention", f"luong_dot needs memory_size == hidden_size (got {memory_size} "
                                               f"and {hidden_size}); use luong_general")
        if input_feeding and attention == "none":
            raise ConfigError("input_feeding", "feeds the previous attentional vector, so it needs attention")
        if encoder_final_size is not None:
            check_int("encoder_final_size", encoder_final_size, minimum=1)
            if bridge == "none" and encoder_final_size != hidden_size:
                raise ConfigError("bridge", f"'none' uses the encoder's final state as is, but its size "
                                            f"{encoder_final_size} != hidden_size {hidden_size}; use 'linear'")
        if attention_hidden_size is not None:
            check_int("attention_hidden_size", attention_hidden_size, minimum=1)

        self.hidden_size, self.num_layers, self.cell = hidden_size, num_layers, cell
        self.input_size, self.memory_size = input_size, memory_size
        self.attention_kind, self.input_feeding, self.bridge = attention, input_feeding, bridge
        self.output_size = hidden_size
        # only Luong without input feeding lets the RNN run ahead of the attention over the whole sequence
        self._parallel = attention in ("none", "luong_dot", "luong_general") and not input_feeding

        rnn_input = input_size + (memory_size if attention == "bahdanau" else 0) + (hidden_size if input_feeding else 0)
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        # nn.RNN warns (and does nothing) for dropout with a single layer
        self.rnn = rnn_class(rnn_input, hidden_size, num_layers=num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.attention = build_attention(attention, hidden_size, memory_size or 0, attention_hidden_size or hidden_size)
        self.combine = nn.Linear(memory_size + hidden_size, hidden_size, bias=False) if self.attention else None
        # without an encoder summary (language model) the bridge has nothing to map and the state starts at zero
        self.bridge_layer = None
        if bridge == "linear" and encoder_final_size is not None:
            per_layer = 2 if cell == "lstm" else 1  # hidden and cell
            self.bridge_layer = nn.Linear(encoder_final_size, per_layer * num_layers * hidden_size)
        self.dropout = Dropout(dropout)

    # ---- state ----

    def init_state(self, batch_size: int, encoder_final: torch.Tensor | None = None,
                   memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None) -> DecoderState:
        """encoder_final [B, encoder_final_size] (optional); memory [B, S, M] and memory_mask [B, S] with attention.

        The bridge turns encoder_final into every layer's first hidden (and cell) state; without an
        encoder_final_size (a language model) the state starts at zero. memory_mask defaults to all real.
        """
        hidden, cell = self._bridge(batch_size, encoder_final)
        if self.attention is None:
            if memory is not None:
                raise ValueError("this decoder has no attention, so it cannot use a memory")
            return DecoderState(hidden, cell)
        if memory is None:
            raise ValueError(f"attention={self.attention_kind} needs the encoder states as memory")
        if memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        feed = hidden.new_zeros(batch_size, self.hidden_size) if self.input_feeding else None
        return DecoderState(hidden, cell, memory, memory_mask, self.attention.project_keys(memory), feed)

    def _bridge(self, batch_size: int, encoder_final: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The initial (hidden, cell), batch-first [B, layers, H]."""
        zeros = self.rnn.weight_hh_l0.new_zeros(batch_size, self.num_layers, self.hidden_size)
        lstm = self.cell == "lstm"
        if encoder_final is None and self.bridge_layer is not None:
            raise ValueError("bridge='linear' maps the encoder's final state: pass encoder_final")
        if encoder_final is None or self.bridge == "zero":
            return zeros, (zeros if lstm else None)
        if self.bridge == "none":
            if encoder_final.size(-1) != self.hidden_size:
                raise ValueError(f"bridge='none' needs encoder_final of size {self.hidden_size}, "
                                 f"got {encoder_final.size(-1)}")
            hidden = encoder_final.unsqueeze(1).expand(-1, self.num_layers, -1)
            return hidden, (zeros if lstm else None)  # a fresh cell: the summary is a hidden state, not a memory cell
        if self.bridge_layer is None:
            raise ValueError("encoder_final given, but the decoder was built without encoder_final_size")
        states = torch.tanh(self.bridge_layer(encoder_final)).view(batch_size, -1, self.hidden_size)
        if lstm:
            hidden, cell = states.chunk(2, dim=1)
            return hidden, cell
        return states, None

    def prepare_search(self, state: DecoderState) -> DecoderState:
        """The state for many steps over one memory (search): the memory projected once through the columns of
        the weights that multiply each step's attention context. A step then mixes these projections with its
        attention weights instead of multiplying its context (equal by linearity, W sum_s a_s m_s =
        sum_s a_s W m_s; to float rounding). Per step that replaces a [rows, M] x [M, gates * H + H] product by
        [rows, S] x [S, gates * H + H], and with the memory held once per sentence (`Shared`, rows = sentences x
        beams) the projection is paid once per sentence: beam-5 decoding 1.2x faster on Multi30k. Greedy search
        and training do not use it: they would pay S projections per sentence to save T (measured: greedy
        3-5% slower). Without attention the state is returned as is."""
        if self.attention is None or state.memory is None:
            return state
        M = self.memory_size
        gates = None
        if self.attention_kind == "bahdanau":
            w_ih = self.rnn.weight_ih_l0
            gates = F.linear(state.memory, w_ih[:, self.input_size:self.input_size + M])
        return state._replace(memory_gates=gates, memory_combine=F.linear(state.memory, self.combine.weight[:, :M]))

    def _hx(self, state: DecoderState) -> Hx:
        h = state.hidden.transpose(0, 1).contiguous()
        return (h, state.cell.transpose(0, 1).contiguous()) if self.cell == "lstm" else h

    @staticmethod
    def _unpack_hx(hx: Hx) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(hx, tuple):
            return hx[0].transpose(0, 1), hx[1].transpose(0, 1)
        return hx.transpose(0, 1), None

    @staticmethod
    def _layers(state: DecoderState) -> Layers:
        return list(state.hidden.unbind(1)), (list(state.cell.unbind(1)) if state.cell is not None else None)

    @staticmethod
    def _stack(layers: Layers) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden, cell = layers
        return torch.stack(hidden, 1), (torch.stack(cell, 1) if cell is not None else None)

    # ---- computation ----

    def _step(self, inputs: torch.Tensor, layers: Layers, feed: torch.Tensor | None,
              state: DecoderState) -> tuple[torch.Tensor, Layers, torch.Tensor | None]:
        """One time step on per-layer states: inputs [B, input_size] -> (vector before dropout [B, H], layers, weights)."""
        if state.memory_combine is not None:
            return self._prepared_step(inputs, layers, feed, state)
        parts, weights = [inputs], None
        if self.attention_kind == "bahdanau":
            query = layers[0][-1]  # previous top-layer hidden
            context, weights = self.attention(query, state.memory, state.memory_mask, state.projected_keys)
            parts.append(context)
        if self.input_feeding:
            parts.append(feed)
        h, hidden, cell = rnn_step(self.rnn, torch.cat(parts, dim=-1) if len(parts) > 1 else inputs, *layers)
        if self.attention is None:
            return h, (hidden, cell), None
        if self.attention_kind != "bahdanau":
            context, weights = self.attention(h, state.memory, state.memory_mask, state.projected_keys)
        return tanh(self.combine(torch.cat([context, h], dim=-1))), (hidden, cell), weights

    def _prepared_step(self, inputs: torch.Tensor, layers: Layers, feed: torch.Tensor | None,
                       state: DecoderState) -> tuple[torch.Tensor, Layers, torch.Tensor]:
        """`_step` on a state from `prepare_search`. The memory tensors may hold one row per group of
        rows / items consecutive rows (a sentence's beams): each group's queries attend over its item's memory."""
        rows, items = inputs.size(0), state.memory.size(0)
        if rows % items:
            raise ValueError(f"{rows} decoder rows cannot share {items} memories evenly")
        group, M = rows // items, self.memory_size
        hidden, cell = layers

        def attend(query: torch.Tensor) -> torch.Tensor:  # [rows, H] -> [items, group, S]
            return self.attention.weights(query.view(items, group, -1), state.memory_mask, state.projected_keys)

        def mix(weights: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:  # -> [rows, *]
            return torch.bmm(weights, projected).view(rows, -1)

        if self.attention_kind == "bahdanau":
            weights = attend(hidden[-1])  # previous top-layer hidden
            w_ih, E = self.rnn.weight_ih_l0, self.input_size
            gates = F.linear(inputs, w_ih[:, :E], self.rnn.bias_ih_l0 if self.rnn.bias else None)
            gates = gates + mix(weights, state.memory_gates)
            if self.input_feeding:
                gates = gates + F.linear(feed, w_ih[:, E + M:])
            h, hidden, cell = rnn_step(self.rnn, None, hidden, cell, first_gates=gates)
        else:
            h, hidden, cell = rnn_step(self.rnn, torch.cat([inputs, feed], -1) if self.input_feeding else inputs,
                                       hidden, cell)
            weights = attend(h)
        vector = tanh(mix(weights, state.memory_combine) + F.linear(h, self.combine.weight[:, M:]))
        return vector, (hidden, cell), weights.view(rows, -1)

    def step(self, inputs: torch.Tensor, state: DecoderState
             ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """inputs [B, input_size] -> (output [B, output_size], new state, attention weights [B, S] or None)."""
        vector, layers, weights = self._step(inputs, self._layers(state), state.feed, state)
        hidden, cell = self._stack(layers)
        state = state._replace(hidden=hidden, cell=cell, feed=vector if self.input_feeding else None)
        return self.dropout(vector), state, weights

    def forward(self, inputs: torch.Tensor, state: DecoderState, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """Teacher forcing: inputs [B, T, input_size]; lengths [B] or None for all T steps real.

        Returns (outputs [B, T, output_size], state after each sequence's last real step,
        attention weights [B, T, S] or None). Outputs and weights are zero at padded steps.
        A row of length 0 keeps its state. Passing the state returned for one chunk continues the
        sequence (truncated BPTT: detach it first, e.g. with nlpseq.nn.search.map_state).
        """
        valid = None
        if lengths is not None:
            steps = torch.arange(inputs.size(1), device=inputs.device)
            valid = steps < lengths.to(inputs.device).unsqueeze(1)  # [B, T]
        if self._parallel:
            outputs, hx, weights = self._forward_parallel(inputs, self._hx(state), state, lengths)
            hidden, cell = self._unpack_hx(hx)
            feed = None
        else:
            outputs, layers, weights, feed = self._forward_loop(inputs, self._layers(state), state, valid)
            hidden, cell = self._stack(layers)
        if valid is not None:
            outputs = outputs * valid.unsqueeze(-1)
            if weights is not None:
                weights = weights * valid.unsqueeze(-1)
        return self.dropout(outputs), state._replace(hidden=hidden, cell=cell, feed=feed), weights

    def _forward_parallel(self, inputs: torch.Tensor, hx: Hx, state: DecoderState, lengths: torch.Tensor | None
                          ) -> tuple[torch.Tensor, Hx, torch.Tensor | None]:
        if lengths is None and self.training and self.rnn.dropout > 0 and inputs.device.type == "cpu":
            out, hx = layerwise(self.rnn, inputs, hx)  # our dropout between the layers, not torch's bernoulli_
        elif lengths is None:
            out, hx = self.rnn(inputs, hx)
        else:  # packed: padding is never run, and hx is each sequence's state at its true end
            lengths = lengths.cpu()
            packed = pack_padded_sequence(inputs, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
            out, new_hx = self.rnn(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=inputs.size(1))
            if bool((lengths == 0).any()):  # packing needs >= 1 step: empty rows ran one, so restore their state
                new_hx = _where((lengths > 0).to(inputs.device), new_hx, hx)
            hx = new_hx
        if self.attention is None:
            return out, hx, None
        context, weights = self.attention(out, state.memory, state.memory_mask, state.projected_keys)
        return torch.tanh(self.combine(torch.cat([context, out], dim=-1))), hx, weights

    def _forward_loop(self, inputs: torch.Tensor, layers: Layers, state: DecoderState, valid: torch.Tensor | None
                      ) -> tuple[torch.Tensor, Layers, torch.Tensor, torch.Tensor | None]:
        feed = state.feed
        vectors, weights = [], []
        for t in range(inputs.size(1)):
            vector, new_layers, w = self._step(inputs[:, t], layers, feed, state)
            if valid is not None:  # sequences past their end keep their last real state
                keep = valid[:, t].unsqueeze(-1)
                new_layers = tuple(None if new is None else [torch.where(keep, n, o) for n, o in zip(new, old)]
                                   for new, old in zip(new_layers, layers))
                if feed is not None:
                    feed = torch.where(keep, vector, feed)
            elif feed is not None:
                feed = vector
            layers = new_layers
            vectors.append(vector)
            weights.append(w)
        return torch.stack(vectors, 1), layers, torch.stack(weights, 1), feed


_RNN_FUNCTIONS = {"LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}


def layerwise(rnn: nn.RNNBase, inputs: torch.Tensor, hx: Hx) -> tuple[torch.Tensor, Hx]:
    """`rnn(inputs, hx)` in training (batch first, one direction, not packed), one layer at a time with
    `nlpseq.nn.dropout.dropout` between the layers: the same function as nn.RNNBase's inter-layer dropout (the
    random draws differ), whose CPU masks cost ~4x more (7.6 ms of a 325 ms Shakespeare step)."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh")
    lstm = rnn.mode == "LSTM"
    x, hidden, cell = inputs, [], []
    for k in range(rnn.num_layers):
        if k > 0:
            x = dropout(x, rnn.dropout, True)
        weights = [getattr(rnn, f"{name}_l{k}") for name in names]
        if lstm:
            x, h, c = torch.lstm(x, (hx[0][k:k + 1], hx[1][k:k + 1]), weights, rnn.bias, 1, 0.0, True, False, True)
            cell.append(c)
        else:
            x, h = _RNN_FUNCTIONS[rnn.mode](x, hx[k:k + 1], weights, rnn.bias, 1, 0.0, True, False, True)
        hidden.append(h)
    return x, ((torch.cat(hidden), torch.cat(cell)) if lstm else torch.cat(hidden))


def _where(keep: torch.Tensor, new: Hx, old: Hx) -> Hx:
    """Per batch item (keep [B]) choose between two layer-first RNN states."""
    if isinstance(new, tuple):
        return tuple(_where(keep, n, o) for n, o in zip(new, old))
    return torch.where(keep.view(1, -1, 1), new, old)
