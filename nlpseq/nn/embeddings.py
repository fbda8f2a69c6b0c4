"""Token embeddings with dropout, and loading of pretrained vectors from a GloVe-style text file."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from nlpseq.errors import DataError, check_float, check_int
from nlpseq.nn.dropout import Dropout
from nlpseq.text.tokenizer import UNK_ID

log = logging.getLogger(__name__)


class TokenEmbedding(nn.Module):
    """Embedding lookup with dropout; padding rows stay zero and get no gradient.

    `word_dropout`: in training, each non-padding token becomes `unk_id` with this probability, so the model
    learns to read unknown words from their context (at test time every rare word is unknown).
    """

    def __init__(self, vocab_size: int, dim: int = 128, dropout: float = 0.0, padding_idx: int = 0,
                 word_dropout: float = 0.0, unk_id: int = UNK_ID):
        super().__init__()
        check_int("vocab_size", vocab_size, minimum=1)
        check_int("dim", dim, minimum=1)
        check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        check_float("word_dropout", word_dropout, 0.0, 1.0, high_open=True)
        self.dim, self.padding_idx, self.word_dropout, self.unk_id = dim, padding_idx, word_dropout, unk_id
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        nn.init.normal_(self.embed.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.embed.weight[padding_idx].zero_()
        self.dropout = Dropout(dropout)

    @property
    def weight(self) -> nn.Parameter:
        return self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and self.word_dropout > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.word_dropout
            ids = ids.masked_fill(drop & (ids != self.padding_idx), self.unk_id)
        return self.dropout(self.embed(ids))


def load_vectors(path, vocab: Mapping[str, int], dim: int, lowercase_fallback: bool = True) -> tuple[torch.Tensor, int]:
    """Read a GloVe/word2vec-text file; return a [len(vocab), dim] tensor of found rows and how many were found.

    Rows for words not in the file are NaN, so the caller keeps its own initialisation there.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("pretrained vectors file not found", path)
    out = torch.full((max(vocab.values()) + 1, dim), float("nan"))
    found = 0
    with open(path, encoding="utf-8", errors="strict") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "<count> <dim>"
            if len(parts) != dim + 1:
                raise DataError(f"expected a word and {dim} numbers, got {len(parts) - 1} numbers", path, lineno)
            word = parts[0]
            idx = vocab.get(word)
            if idx is None and lowercase_fallback:
                idx = vocab.get(word.lower())
            if idx is None or not torch.isnan(out[idx, 0]):
                continue
            try:
                out[idx] = torch.tensor([float(x) for x in parts[1:]])
            except ValueError:
                raise DataError("vector has a value that is not a number", path, lineno) from None
            found += 1
    log.info("pretrained vectors: %d of %d vocabulary entries found in %s", found, len(vocab), path)
    return out, found
