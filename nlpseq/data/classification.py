"""Text classification data (sentiment): labelled TSV/CSV/JSONL files or a hub dataset.

With `char_features` on (the sentiment config turns it on when `model.char_encoder` is set), every token also
gets the characters of its surface form, so words outside the vocabulary (which all share <unk>) keep their
spelling: each split's distinct surfaces are spelled into character ids once, and a batch carries the
characters of its distinct words only (`char_ids` [U, L], `char_lengths` [U], `word_chars` [B, T]), as NER's do.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from nlpseq.data import example_store
from nlpseq.data.base import HUB_NOT_STREAMED, EncodedDataset, RaggedArray, TextDataModule, repeat_to
from nlpseq.data.collate import distinct_spellings, gather_ragged, pad_ids
from nlpseq.data.files import resolve
from nlpseq.data.tables import iter_table, load_hub_table, load_table, to_dataset
from nlpseq.data.tagging import MAX_WORD_CHARS, char_vocab_from_counts
from nlpseq.errors import ConfigError, DataError, check_choice, check_float
from nlpseq.text.labels import LabelVocab
from nlpseq.text.tokenizer import UNK_ID, TextTokenizer, build_tokenizer
from nlpseq.utils.dist import is_worker_process

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


class ClassificationDataModule(TextDataModule):
    """Splits from local files (`train`, `validation`, `test` paths) or from `hub.name`.

    `text_column` / `label_column` may be a list of alternative names (files of one corpus can differ).
    Without a validation split, `val_fraction` of the training examples are held out (seeded).
    `out_of_core` (auto | true | false): the training file is streamed, never held whole: one pass builds the
    vocabulary, one encodes it in chunks to `<run>/cache` (nlpseq.data.example_store), training reads it by
    memmap; batches are identical to the in-memory path. auto: a local training file over 256 MB.
    `char_features` (none | cnn | lstm, or a bool; the config passes `model.char_encoder.kind`): batches also
    carry each token's characters; the characters of the training text travel in the checkpoint.
    """

    def __init__(self, train: str | None = None, validation: str | None = None, test: str | None = None,
                 format: str = "auto", text_column: str | Sequence[str] = "text",
                 label_column: str | Sequence[str] = "label", hub: dict | None = None,
                 tokenizer: dict | None = None, max_length: int | None = None, val_fraction: float = 0.1,
                 batch_size: int = 32, eval_batch_size: int = 128, max_tokens: int | None = None,
                 num_workers: int = 0, bucket_pool: int = 50, seed: int = 0, out_of_core: str | bool = "auto",
                 pin_memory: bool = False, char_features: str | bool | None = False):
        super().__init__(batch_size, eval_batch_size, max_tokens, num_workers, bucket_pool, seed, pin_memory)
        self.paths = {"train": train, "validation": validation, "test": test}
        self._set_hub(hub)
        self._set_out_of_core(out_of_core, not self.hub.get("name"), HUB_NOT_STREAMED)
        self.format, self.text_column, self.label_column = format, text_column, label_column
        self.tokenizer_cfg = dict(tokenizer or {"kind": "word"})
        self.max_length = max_length
        self.val_fraction = check_float("data.val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if not self.hub.get("name") and not train:
            raise ConfigError("data.train", "no training data: set data.train to a file or data.hub.name to a hub dataset")
        self.char_features = _char_flag(char_features)
        self.tokenizer: TextTokenizer | None = None
        self.labels: LabelVocab | None = None
        self.chars: list[str] | None = None
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

    def prepare(self, run_dir=None) -> None:
        self.cache_dir = Path(run_dir) / "cache" if run_dir is not None else None
        super().prepare(run_dir)

    def _use_out_of_core(self) -> bool:
        if self.out_of_core != "auto":
            return self.out_of_core
        return (not self.hub.get("name") and bool(self.paths["train"])
                and resolve(self.paths["train"]).stat().st_size > example_store.AUTO_BYTES)

    def _train_rows(self, heldout: list | None = None) -> Iterator[dict]:
        """The training file's rows, streamed; rows held out for validation go to `heldout` instead."""
        rows = iter_table(self.paths["train"], self.text_column, self.label_column, self.format)
        if self._heldout is None:
            yield from rows
            return
        for i, row in enumerate(rows):
            if self._heldout[i]:
                if heldout is not None:
                    heldout.append(row)
            else:
                yield row

    def _read_out_of_core(self, train_only_for_vocab: bool) -> None:
        """Validation and test files are read whole (metrics and samples need their text); the training file
        is streamed: a counting pass when a validation split must be held out, then the vocabulary pass."""
        self.raw = {s: ds for s in ("validation", "test") if (ds := self._read(s)) is not None}
        if "validation" not in self.raw:
            n = sum(1 for _ in iter_table(self.paths["train"], self.text_column, self.label_column, self.format))
            n_val = max(1, int(round(n * self.val_fraction)))
            if n - n_val < 1:
                raise DataError(f"too few training examples ({n}) to hold out a validation split", self.paths["train"])
            self._heldout = example_store.heldout_mask(n, self.val_fraction, self.seed)
        heldout, started = [], time.perf_counter()
        if train_only_for_vocab:
            labels, chars = set(), Counter()

            def texts() -> Iterator[str]:
                for row in self._train_rows(heldout):
                    labels.add(row["label"])
                    if self.char_features:
                        chars.update(row["text"])
                    yield row["text"]

            self.tokenizer = build_tokenizer(texts(), **self.tokenizer_cfg)
            self.labels = LabelVocab.from_data(labels)
            self.chars = char_list(self.tokenizer, chars) if self.char_features else None
            log.info("vocabulary: %d tokens (%s), labels: %s; one streaming pass in %.1f s", self.tokenizer.vocab_size,
                     self.tokenizer.kind, self.labels.labels, time.perf_counter() - started)
        elif self._heldout is not None:
            for _ in self._train_rows(heldout):
                pass
        if self._heldout is not None:
            self.raw["validation"] = to_dataset(heldout)
            log.info("no validation split given: held out %d of %d training examples", len(heldout), len(self._heldout))
        log.info("out of core: the training file is streamed, its ids cached in %s", self.cache_dir or "a temporary folder")

    def read_splits(self, train_only_for_vocab: bool) -> None:
        if self._use_out_of_core():
            return self._read_out_of_core(train_only_for_vocab)
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
            if self.char_features:
                self.chars = char_list(self.tokenizer, count_chars(self.raw["train"]["text"]))
            log.info("vocabulary: %d tokens (%s)%s, labels: %s", self.tokenizer.vocab_size, self.tokenizer.kind,
                     f", {len(self.chars)} characters" if self.chars else "", self.labels.labels)

    def vocab_settings(self) -> dict:
        return {"tokenizer": self.tokenizer_cfg, "train": str(self.paths["train"]), "hub": self.hub,
                "char_features": self.char_features}

    def dump_vocab(self) -> dict:
        return {"tokenizer": self.tokenizer.to_json(), "labels": self.labels.labels, "chars": self.chars}

    def load_vocab(self, vocab: dict) -> None:
        self.tokenizer = TextTokenizer.from_json(vocab["tokenizer"])
        self.labels = LabelVocab(vocab["labels"])
        self.chars = vocab.get("chars")

    def model_inputs(self) -> dict:
        # the columns travel too: `python -m nlpseq.evaluate` reads labelled files the same way
        reader = {"text_column": _plain(self.text_column), "label_column": _plain(self.label_column)}
        inputs = {"tokenizer": self.tokenizer.to_json(), "labels": list(self.labels.labels), "reader": reader}
        if self.chars:
            inputs["chars"] = list(self.chars)
        return inputs

    # ---- encoding, once
    def _label_ids(self, labels: Sequence[str], lines: Sequence[int], where) -> np.ndarray:
        out = np.empty(len(labels), dtype=np.int64)
        for i, (label, line) in enumerate(zip(labels, lines)):
            if label not in self.labels:
                raise DataError(f"label {label!r} was never seen in training (known: {self.labels.labels})",
                                where, line)
            out[i] = self.labels.index[label]
        return out

    def encode_splits(self) -> None:
        if "train" not in self.raw:  # out of core
            self.splits["train"] = self._encode_train_store()
        for split, ds in self.raw.items():
            where = self.paths.get(split) or f"hub:{self.hub.get('name')}/{split}"
            labels = self._label_ids(ds["label"], ds["line"], where)
            enc = encode_classification(self.tokenizer, ds["text"], self.max_length, self.chars)
            self.splits[split] = _classification_dataset(enc, labels)

    def _encode_train_store(self) -> EncodedDataset:
        """The training file encoded to `<run>/cache/train.examples.*` (token ids and labels; with characters
        also each token's row in `train.types.*`, the spelled distinct surfaces), reused while the key matches."""
        if self.cache_dir is None:  # no run directory (tests, benchmarks): a folder removed with the module
            self._tmp = tempfile.TemporaryDirectory(prefix="nlpseq-examples-")
            self.cache_dir = Path(self._tmp.name)
        key = {"version": example_store.VERSION, "task": "classification",
               "files": example_store.file_key(self.paths["train"]),
               "columns": [self.text_column, self.label_column, self.format], "max_length": self.max_length,
               "heldout": None if self._heldout is None else [self.val_fraction, self.seed],
               "tokenizer": hashlib.sha256(self.tokenizer.to_json().encode("utf-8")).hexdigest(),
               "labels": list(self.labels.labels), "chars": self.chars}
        dtype = example_store.id_dtype(self.tokenizer.vocab_size)
        ragged = {"text": dtype} | ({"types": np.uint32} if self.chars else {})
        char_dtype = example_store.id_dtype(len(self.chars)) if self.chars else None

        def write_types(speller: Speller):
            def write(writer: example_store.StoreWriter) -> None:
                for chunk in example_store.batched(speller.spelled, 65536):
                    writer.add({"chars": example_store.flatten(chunk, char_dtype)}, {})
            return write

        def write(writer: example_store.StoreWriter) -> dict | None:
            speller = Speller(self.tokenizer, self.chars) if self.chars else None
            for rows in example_store.batched(self._train_rows()):
                labels = self._label_ids([r["label"] for r in rows], [r["line"] for r in rows], self.paths["train"])
                texts = [r["text"] for r in rows]
                if speller is None:
                    writer.add({"text": example_store.flatten(encode_seqs(self.tokenizer, texts, self.max_length),
                                                              dtype)}, {"labels": labels})
                    continue
                seqs, types = speller.encode(texts, self.max_length)
                writer.add({"text": example_store.flatten(seqs, dtype),
                            "types": example_store.flatten(types, np.uint32)}, {"labels": labels})
            if speller is None:
                return None
            # the table is written before this store's manifest: a store that opens has its table
            example_store.build_store(self.cache_dir, "train.types", key, {"chars": char_dtype}, {},
                                      write_types(speller))
            return {"distinct_words": len(speller.spelled)}

        if self.chars and not is_worker_process() and \
                example_store.open_store(self.cache_dir, "train.types", key) is None:
            # no table (a run stopped between the two stores): encode both again; workers wait for the first process
            (self.cache_dir / "train.examples.json").unlink(missing_ok=True)
        store = example_store.build_store(self.cache_dir, "train.examples", key, ragged, {"labels": np.int64},
                                          write, wait=is_worker_process())
        enc = Encoded(store.ragged["text"])
        if self.chars:
            table = example_store.open_store(self.cache_dir, "train.types", key)
            enc = Encoded(store.ragged["text"], store.ragged["types"], table.ragged["chars"])
        return _classification_dataset(enc, store.fixed["labels"])

    def bench_inputs(self, n: int) -> list[str]:
        """Validation texts (repeated up to n) for nlpseq.bench's inference timing."""
        return repeat_to(self.raw["validation"]["text"] if "validation" in self.raw else [], n)


def _plain(columns: str | Sequence[str]) -> str | list[str]:
    return columns if isinstance(columns, str) else list(columns)


def _char_flag(value) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    return check_choice("data.char_features", value, ("none", "cnn", "lstm")) != "none"


def encode_seqs(tokenizer: TextTokenizer, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids per text; an empty text becomes one <unk> (every sequence needs a length >= 1)."""
    seqs = tokenizer.encode_batch(texts)
    return [(s[:max_length] if max_length else s) or [UNK_ID] for s in seqs]


def encode_texts(tokenizer: TextTokenizer, texts: Sequence[str], max_length: int | None = None) -> RaggedArray:
    return RaggedArray(encode_seqs(tokenizer, texts, max_length))


def count_chars(texts: Iterable[str], counts: Counter | None = None) -> Counter:
    """Characters of `texts` as written, counted (into `counts` when given: a streaming pass adds text by text)."""
    counts = Counter() if counts is None else counts
    for text in texts:
        counts.update(text)
    return counts


def char_list(tokenizer: TextTokenizer, counts: Counter) -> list[str]:
    """The character list for `count_chars` counts, each character as the tokenizer normalises it (lower-cased
    if it lower-cases): <pad>, <unk>, then most frequent first. Whitespace never reaches a token: left out."""
    norm = tokenizer.hf.normalizer
    out: Counter[str] = Counter()
    for c, n in counts.items():
        for d in (norm.normalize_str(c) if norm is not None else c):
            if not d.isspace():
                out[d] += n
    return char_vocab_from_counts(out)


def text_chars(tokenizer: TextTokenizer, texts: Iterable[str]) -> list[str]:
    return char_list(tokenizer, count_chars(texts))


@dataclass
class Encoded:
    """Token ids per text; with characters, also each token's row in `type_chars` (the spelled distinct
    surface forms of these texts)."""
    ids: RaggedArray
    types: RaggedArray | None = None
    type_chars: RaggedArray | None = None


class Speller:
    """Texts -> token ids and, per token, a row in a growing table of spelled distinct surface forms: the
    token's text (normalised as the tokenizer does) spelled with `chars` (unknown characters -> 1) up to
    MAX_WORD_CHARS. An empty text's one <unk> is spelled as one unknown character."""

    def __init__(self, tokenizer: TextTokenizer, chars: Sequence[str]):
        self.tokenizer, self.norm = tokenizer, tokenizer.hf.normalizer
        self.index = {c: i for i, c in enumerate(chars)}
        self.raw: dict[str, int] = {}    # surface as written -> row (normalised surfaces: one row each)
        self.words: dict[str, int] = {}
        self.spelled: list[list[int]] = []

    def _row(self, surface: str) -> int:
        word = self.norm.normalize_str(surface) if self.norm is not None else surface
        if word not in self.words:
            self.words[word] = len(self.spelled)
            self.spelled.append([self.index.get(c, 1) for c in word[:MAX_WORD_CHARS]] or [1])
        return self.raw.setdefault(surface, self.words[word])

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
        """(ids, rows) per text, the ids exactly as `encode_seqs` gives them."""
        encodings = self.tokenizer.hf.encode_batch(list(texts), add_special_tokens=False)  # with offsets
        raw, seqs, types = self.raw, [], []
        for text, e in zip(texts, encodings):
            ids, offsets = e.ids, e.offsets
            if max_length:
                ids, offsets = ids[:max_length], offsets[:max_length]
            if not ids:
                ids, offsets = [UNK_ID], [(0, 0)]
            seqs.append(ids)
            # strip: a subword's offsets can take in the space before it (BPE's metaspace)
            types.append([raw[w] if (w := text[a:b].strip()) in raw else self._row(w) for a, b in offsets])
        return seqs, types


def encode_classification(tokenizer: TextTokenizer, texts: Sequence[str], max_length: int | None = None,
                          chars: Sequence[str] | None = None) -> Encoded:
    """`encode_texts`, plus each token's characters (`Speller`) when `chars` is given."""
    if not chars:
        return Encoded(encode_texts(tokenizer, texts, max_length))
    speller = Speller(tokenizer, chars)
    seqs, types = speller.encode(texts, max_length)
    return Encoded(RaggedArray(seqs), RaggedArray(types), RaggedArray(speller.spelled))


def classification_batch(enc: Encoded, rows: Sequence[int]) -> dict:
    """input_ids [B, T] and lengths [B] of texts `rows`; with characters also char_ids [U, L] and char_lengths
    [U] of the U distinct surfaces in the batch and word_chars [B, T] (each token's row in them)."""
    ids, lengths = pad_ids([enc.ids[i] for i in rows])
    batch = {"input_ids": ids, "lengths": lengths}
    if enc.types is not None:
        types, _ = gather_ragged(enc.types, np.asarray(rows, dtype=np.int64), pad=-1)
        char_ids, char_lengths, word_chars = distinct_spellings(types, types >= 0, enc.type_chars)
        batch.update(char_ids=torch.from_numpy(char_ids), char_lengths=torch.from_numpy(char_lengths),
                     word_chars=torch.from_numpy(word_chars))
    return batch


def _classification_dataset(enc: Encoded, labels: np.ndarray) -> EncodedDataset:
    """Batches of `classification_batch` + labels; `labels` may be a read-only memmap (out of core): rows are
    copied."""

    def collate(indices: list[int]) -> dict:
        batch = classification_batch(enc, indices)
        batch["labels"] = torch.from_numpy(labels[indices].astype(np.int64))
        return batch

    return EncodedDataset(len(enc.ids), enc.ids.lengths, collate)
