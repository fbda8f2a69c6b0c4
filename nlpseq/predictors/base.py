"""Predictor base: a trained module in eval mode plus batching, input checks and JSON-lines output."""
from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any, Iterable, Iterator, Sequence, TextIO

import torch

from nlpseq.data.files import surrogate_in
from nlpseq.errors import NlpseqError


class Predictor:
    """Subclasses implement `predict`; `predict_file` is the CLI's entry (one input per line -> JSON lines)."""

    task = ""

    def __init__(self, model: torch.nn.Module, others: Sequence[torch.nn.Module] = ()):
        self.model = model.eval()
        # an ensemble's members, the first one being `model` (tasks that support ensembles use them all)
        self.members = [self.model, *(m.eval() for m in others)]
        self._device = next(model.parameters()).device

    @property
    def device(self) -> torch.device:
        # cached: walking the parameters costs ~0.1 ms, read once per batch (a tenth of a batch-1 call)
        return self._device

    @classmethod
    def ensemble(cls, models: Sequence[torch.nn.Module], paths: Sequence[str]) -> "Predictor":
        """The predictor that combines several checkpoints of this task (`nlpseq.load([a, b, ...])`); each task
        checks that its members fit together."""
        raise NlpseqError(f"{paths[0]}: {cls.task} checkpoints cannot be combined into an ensemble")

    def to(self, device) -> "Predictor":
        for m in self.members:
            m.to(device)
        self._device = next(self.model.parameters()).device
        return self

    @staticmethod
    def check_texts(texts: str | Sequence[str], what: str = "text") -> tuple[list[str], bool]:
        """A list of strings, and whether a single string was passed (then return a single result)."""
        if isinstance(texts, str):
            check_unicode(texts, f"{what} 0")
            return [texts], True
        if not isinstance(texts, (list, tuple)):
            try:
                texts = list(texts)
            except TypeError:
                raise NlpseqError(f"predict: expected a string or a list of strings, got {type(texts).__name__}") from None
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise NlpseqError(f"predict: {what} {i} is a {type(t).__name__}, expected a string")
            check_unicode(t, f"{what} {i}")
        return list(texts), False

    def predict(self, texts, batch_size: int = 64):
        raise NotImplementedError

    def predict_file(self, lines: Iterable[str], out: TextIO, batch_size: int = 64) -> int:
        """Predict for each input line, write one JSON object per line; returns the number written."""
        n = 0
        for chunk in _chunks((line.rstrip("\r\n") for line in lines), 4096):
            for result in self.predict(chunk, batch_size=batch_size):
                out.write(json_line(result))
                n += 1
        out.flush()
        return n


def json_line(obj: Any) -> str:
    """One JSON Lines record: UTF-8 text as is, but U+2028/U+2029 escaped, since readers that split on
    Unicode line breaks (Python's str.splitlines, JavaScript) would cut the record there."""
    text = json.dumps(to_plain(obj), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def to_plain(result: Any) -> Any:
    if is_dataclass(result):
        return asdict(result)
    return result


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def batches_by_length(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
                      ) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), to pad as little as possible: at most
    `batch_size` items and, with `max_tokens`, at most that many padded tokens (one item at least)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        per = len(rows) if max_tokens is None else max(1, max_tokens // max(lengths[rows[0]], 1))  # rows[0]: longest
        for r in range(0, len(rows), per):
            yield rows[r:r + per]


def check_unicode(text: str, what: str) -> None:
    """Text a tokenizer can read: a lone surrogate (no UTF-8 writer accepts it) is a one-line error."""
    bad = surrogate_in(text)
    if bad is not None:
        raise NlpseqError(f"predict: {what} is not valid Unicode: lone surrogate {text[bad]!r} at character {bad}")
