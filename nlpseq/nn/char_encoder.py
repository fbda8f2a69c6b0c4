"""Character-level word features: a char CNN (max over positions) or a char BiLSTM (final states).

The encoder reads a batch of *words* (usually the distinct words of a sentence batch, so each word
is encoded once per batch): char ids [U, L] right-padded with 0 and lengths [U] (>= 1). Padding never
changes a result: the pad embedding is zero (like the CNN's own zero padding) and masked out of the
max, and the BiLSTM is packed.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from nlpseq.errors import check_choice, check_float, check_int
from nlpseq.nn.dropout import Dropout

KINDS = ("cnn", "lstm")


class CharEncoder(nn.Module):
    """kind=cnn: `hidden_size` filters of width `kernel_size` (Ma & Hovy 2016), output `hidden_size`.
    kind=lstm: a BiLSTM of `hidden_size` per direction (Lample et al. 2016), output 2 * `hidden_size`."""

    def __init__(self, num_chars: int, kind: str = "cnn", dim: int = 25, hidden_size: int = 50,
                 kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        check_int("num_chars", num_chars, minimum=2)
        self.kind = check_choice("kind", kind, KINDS)
        check_int("dim", dim, minimum=1)
        check_int("hidden_size", hidden_size, minimum=1)
        check_int("kernel_size", kernel_size, minimum=1)
        check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        if kind == "cnn" and kernel_size % 2 == 0:
            from nlpseq.errors import ConfigError

            raise ConfigError("kernel_size", f"must be odd (so every position keeps its centre), got {kernel_size}")
        self.embed = nn.Embedding(num_chars, dim, padding_idx=0)
        self.dropout = Dropout(dropout)
        self.hidden_size = hidden_size
        if kind == "cnn":
            self.conv = nn.Conv1d(dim, hidden_size, kernel_size, padding=kernel_size // 2)
        else:
            self.rnn = nn.LSTM(dim, hidden_size, batch_first=True, bidirectional=True)

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.kind == "lstm" else 1)

    def flops_per_char(self) -> int:
        """Forward multiply-add FLOPs (2 per multiply-add) per character position."""
        dim = self.embed.embedding_dim
        if self.kind == "cnn":
            return 2 * dim * self.hidden_size * self.conv.kernel_size[0]
        return 2 * 2 * 4 * self.hidden_size * (dim + self.hidden_size)

    def forward(self, char_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """char_ids [U, L], lengths [U] -> word features [U, output_size]."""
        if char_ids.size(0) == 0:
            return char_ids.new_zeros((0, self.output_size), dtype=self.embed.weight.dtype)
        x = self.dropout(self.embed(char_ids))  # [U, L, D]
        if self.kind == "cnn":
            h = self.conv(x.transpose(1, 2))  # [U, H, L]
            pad = char_ids.eq(0).unsqueeze(1)
            return h.masked_fill(pad, float("-inf")).amax(2)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)  # h [2, U, H]
        return torch.cat([h[0], h[1]], dim=1)
