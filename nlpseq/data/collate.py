"""Padding id sequences (lists or RaggedArray rows) into batch tensors plus lengths and mask."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def pad_ids(seqs: Sequence[Sequence[int]] | Sequence[np.ndarray], pad_id: int = 0,
            min_length: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence -> (ids [B, T] long, lengths [B] long on CPU)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    width = max(int(lengths.max(initial=0)), min_length)
    out = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out), torch.from_numpy(lengths)


def lengths_to_mask(lengths: torch.Tensor, width: int | None = None) -> torch.Tensor:
    width = int(lengths.max()) if width is None else width
    return torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def distinct_spellings(word_types: np.ndarray, valid: np.ndarray, type_chars) -> tuple[np.ndarray, ...]:
    """The characters of the distinct word types at the `valid` positions of `word_types` [B, T], each once:
    char_ids [U, L], char_lengths [U], and word_chars [B, T], each position's row in them (0 where not valid)."""
    uniq, inverse = np.unique(word_types[valid], return_inverse=True)
    word_chars = np.zeros(word_types.shape, dtype=np.int64)
    word_chars[valid] = inverse
    char_ids, char_lengths = gather_ragged(type_chars, uniq)
    return char_ids, char_lengths, word_chars


def gather_ragged(ragged, rows: np.ndarray, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a RaggedArray padded into a matrix [len(rows), longest] and their lengths, with numpy."""
    lengths = ragged.lengths[rows].astype(np.int64, copy=False)  # int64 from any store (int32 lengths, uint8 ids)
    width = max(int(lengths.max(initial=0)), 1)
    cols = np.arange(width)
    valid = cols[None, :] < lengths[:, None]
    index = np.where(valid, ragged.offsets[rows][:, None] + cols[None, :], 0)
    if ragged.flat.size == 0:
        return np.full(valid.shape, pad, dtype=np.int64), lengths
    # int64 before the pad goes in: a negative pad must not wrap around in an unsigned store dtype
    return np.where(valid, ragged.flat[index].astype(np.int64, copy=False), pad), lengths
