"""Text classification data (sentiment): labelled TSV/CSV/JSONL files or a hub dataset."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from nlpseq.data.base import EncodedDataset, RaggedArray, TextDataModule, repeat_to
from nlpseq.data.collate import pad_ids
from nlpseq.data.tables import load_hub_table, load_table
from nlpseq.errors import ConfigError, DataError, check_float
from nlpseq.text.labels import LabelVocab
from nlpseq.text.tokenizer import UNK_ID, TextTokenizer, build_tokenizer

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


class ClassificationDataModule(TextDataModule):
    """Splits from local files (`train`, `validation`, `test` paths) or from `hub.name`.

    `text_column` / `label_column` may be a list of alternative names (files of one corpus can differ).
    Without a validation split, `val_fraction` of the training examples are held out (seeded).
    """

    def __init__(self, train: str | None = None, validation: str | None = None, test: str | None = None,
                 format: str = "auto", text_column: str | Sequence[str] = "text",
                 label_column: str | Sequence[str] = "label", hub: dict | None = None,
                 tokenizer: dict | None = None, max_length: int | None = None, val_fraction: float = 0.1,
                 batch_size: int = 32, eval_batch_size: int = 128, max_tokens: int | None = None,
                 num_workers: int = 0, bucket_pool: int = 50, seed: int = 0):
        super().__init__(batch_size, eval_batch_size, max_tokens, num_workers, bucket_pool, seed)
        self.paths = {"train": train, "validation": validation, "test": test}
        self.format, self.text_column, self.label_column = format, text_column, label_column
        self.hub = dict(hub or {})
        unknown = set(self.hub) - {"name", "subset", "splits"}
        if unknown:
            raise ConfigError("data.hub", f"unknown option(s) {sorted(unknown)}; expected name, subset, splits")
        self.tokenizer_cfg = dict(tokenizer or {"kind": "word"})
        self.max_length = max_length
        self.val_fraction = check_float("data.val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if not self.hub.get("name") and not train:
            raise ConfigError("data.train", "no training data: set data.train to a file or data.hub.name to a hub dataset")
        self.tokenizer: TextTokenizer | None = None
        self.labels: LabelVocab | None = None
        self.raw: dict = {}

    # ---- reading
    def _read(self, split: str):
        if self.hub.get("name"):
            hub_splits = {"train": "train", "validation": "validation", "test": "test", **(self.hub.get("splits") or {})}
            if not hub_splits.get(split):
                return None
            return load_hub_table(self.hub["name"], hub_splits[split], self.hub.get("subset"),
                                  self.text_column, self.label_column)
        if not self.paths[split]:
            return None
        return load_table(self.paths[split], self.text_column, self.label_column, self.format)

    def read_splits(self, train_only_for_vocab: bool) -> None:
        raw = {s: self._read(s) for s in SPLITS}
        if raw["validation"] is None:  # hold out part of train, reproducibly
            n = len(raw["train"])
            n_val = max(1, int(round(n * self.val_fraction)))
            if n - n_val < 1:
                raise DataError(f"too few training examples ({n}) to hold out a validation split",
                                self.paths["train"])
            perm = np.random.default_rng(self.seed).permutation(n)
            raw["validation"] = raw["train"].select(sorted(perm[:n_val]))
            raw["train"] = raw["train"].select(sorted(perm[n_val:]))
            log.info("no validation split given: held out %d of %d training examples", n_val, n)
        self.raw = {s: ds for s, ds in raw.items() if ds is not None}
        if train_only_for_vocab:
            self.tokenizer = build_tokenizer(self.raw["train"]["text"], **self.tokenizer_cfg)
            self.labels = LabelVocab.from_data(self.raw["train"]["label"])
            log.info("vocabulary: %d tokens (%s), labels: %s", self.tokenizer.vocab_size, self.tokenizer.kind,
                     self.labels.labels)

    def vocab_settings(self) -> dict:
        return {"tokenizer": self.tokenizer_cfg, "train": str(self.paths["train"]), "hub": self.hub}

    def dump_vocab(self) -> dict:
        return {"tokenizer": self.tokenizer.to_json(), "labels": self.labels.labels}

    def load_vocab(self, vocab: dict) -> None:
        self.tokenizer = TextTokenizer.from_json(vocab["tokenizer"])
        self.labels = LabelVocab(vocab["labels"])

    def model_inputs(self) -> dict:
        return {"tokenizer": self.tokenizer.to_json(), "labels": list(self.labels.labels)}

    # ---- encoding, once
    def encode_splits(self) -> None:
        for split, ds in self.raw.items():
            where = self.paths.get(split) or f"hub:{self.hub.get('name')}/{split}"
            labels = np.empty(len(ds), dtype=np.int64)
            for i, (label, line) in enumerate(zip(ds["label"], ds["line"])):
                if label not in self.labels:
                    raise DataError(f"label {label!r} was never seen in training (known: {self.labels.labels})",
                                    where, line)
                labels[i] = self.labels.index[label]
            ids = encode_texts(self.tokenizer, ds["text"], self.max_length)
            self.splits[split] = _classification_dataset(ids, labels)

    def bench_inputs(self, n: int) -> list[str]:
        """Validation texts (repeated up to n) for nlpseq.bench's inference timing."""
        return repeat_to(self.raw["validation"]["text"] if "validation" in self.raw else [], n)


def encode_texts(tokenizer: TextTokenizer, texts: Sequence[str], max_length: int | None = None) -> RaggedArray:
    """Token ids per text; an empty text becomes one <unk> (every sequence needs a length >= 1)."""
    seqs = tokenizer.encode_batch(texts)
    seqs = [(s[:max_length] if max_length else s) or [UNK_ID] for s in seqs]
    return RaggedArray(seqs)


def _classification_dataset(ids: RaggedArray, labels: np.ndarray) -> EncodedDataset:
    labels_t = torch.from_numpy(labels)

    def collate(indices: list[int]) -> dict:
        tokens, lengths = pad_ids([ids[i] for i in indices])
        return {"input_ids": tokens, "lengths": lengths, "labels": labels_t[indices]}

    return EncodedDataset(len(ids), ids.lengths, collate)
