"""Language-model data: plain text (one document, or one example per line), JSONL/TSV/CSV, or a hub dataset.

Two training modes (`data.mode`):

- `stream`: every document becomes `<s> tokens </s>`, all concatenated into one token stream. The
  stream is cut into `batch_size` parallel contiguous rows (as pytorch/examples' `batchify`) and fed as
  consecutive windows of `seq_len` tokens, in order, so the model can carry its hidden state (detached)
  from one window to the next: truncated backpropagation through time. Under DDP each rank takes its
  own contiguous slice of the stream, of equal length. Targets that are `<s>` (the token after `</s>`,
  known by construction) are not scored.
- `lines`: each example is its own sequence `<s> tokens </s>`, padded in length-bucketed batches; the
  state starts fresh for every example (from a condition, when `condition_column` is set).

Without a validation file, `split_fractions` cuts the training data contiguously: a single document by
characters (Tiny Shakespeare: first 90% / last 10%), many examples by example.

Corpora larger than memory (`data.out_of_core`: auto = a plain-text training file over 4 MB, in stream
mode): plain-text splits are read and encoded in chunks into an id file in the run directory and trained
from a read-only memmap (nlpseq.data.token_store); the batches are identical to the in-memory path.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nlpseq.data import token_store
from nlpseq.data.base import EncodedDataset, RaggedArray, TextDataModule, repeat_to
from nlpseq.data.collate import pad_ids
from nlpseq.data.files import format_from_name, read_lines, resolve
from nlpseq.data.tables import iter_rows, load_hub_table
from nlpseq.errors import ConfigError, DataError, check_bool, check_choice, check_float, check_int
from nlpseq.text.labels import LabelVocab
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, TextTokenizer
from nlpseq.utils.dist import is_worker_process

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
FORMATS = ("auto", "text", "lines", "jsonl", "tsv", "csv")
MODES = ("stream", "lines")
IGNORE = -100  # target id that the loss skips (padding, and <s> after </s> in a stream)


# ---------------------------------------------------------------- reading

@dataclass
class Documents:
    """Texts of one split, optional condition per text, and where each came from (for error messages)."""

    texts: list[str]
    conditions: list[str] | None = None
    where: list[tuple[str, int | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, start: int, stop: int) -> "Documents":
        return Documents(self.texts[start:stop], None if self.conditions is None else self.conditions[start:stop],
                         self.where[start:stop])


def detect_format(path, fmt: str = "auto") -> str:
    check_choice("data.format", fmt, FORMATS)
    if fmt != "auto":
        return fmt
    found = format_from_name(path)
    return found if found in ("jsonl", "tsv", "csv") else "text"  # .txt and anything else: one plain-text document (set data.format=lines for one per line)


def read_text(path) -> Documents:
    """The whole file as one document (line endings normalised to '\\n')."""
    text = "".join(line + "\n" for _, line in read_lines(path))
    return Documents([text], None, [(str(path), None)])


def read_line_examples(path) -> Documents:
    """One example per non-blank line."""
    texts, where = [], []
    for lineno, line in read_lines(path):
        if line.strip():
            texts.append(line)
            where.append((str(path), lineno))
    if not texts:
        raise DataError("file has only blank lines", path)
    return Documents(texts, None, where)


def read_table(path, fmt: str, text_column, condition_column) -> Documents:
    """JSONL/TSV/CSV rows: a text column and, optionally, a condition (label) column."""
    columns = {"text": (text_column, "data.text_column")}
    if condition_column is not None:
        columns["condition"] = (condition_column, "data.condition_column")
    texts, conds, where = [], [], []
    for lineno, row in iter_rows(path, columns, fmt):
        text = row["text"]
        if not isinstance(text, str):
            raise DataError(f"text must be a string, got {type(text).__name__}", path, lineno)
        if condition_column is not None:
            cond = row["condition"]
            if isinstance(cond, (bool, dict, list)) or cond is None or str(cond).strip() == "":
                raise DataError(f"missing or invalid condition {cond!r} (column {condition_column!r})", path, lineno)
            conds.append(str(cond).strip())
        texts.append(text)
        where.append((str(path), lineno))
    if not texts:
        raise DataError("file has no examples", path)
    return Documents(texts, conds if condition_column is not None else None, where)


def read_documents(path, fmt: str = "auto", text_column="text", condition_column=None) -> Documents:
    resolve(path)
    fmt = detect_format(path, fmt)
    if fmt in ("text", "lines") and condition_column is not None:
        raise ConfigError("data.condition_column", f"needs a table (jsonl, tsv or csv) with a condition column; "
                                                   f"{path} is read as plain {fmt}")
    if fmt == "text":
        return read_text(path)
    if fmt == "lines":
        return read_line_examples(path)
    return read_table(path, fmt, text_column, condition_column)


def split_documents(docs: Documents, fractions: Sequence[float], path) -> list[Documents]:
    """Contiguous parts: one document is cut by characters, many documents by document."""
    if len(docs) == 1 and docs.conditions is None:
        text = docs.texts[0]
        cuts = _cuts(len(text), fractions)
        parts = [Documents([text[a:b]], None, docs.where[:1]) for a, b in zip(cuts[:-1], cuts[1:])]
        if any(len(p.texts[0]) < 2 for p in parts):
            raise DataError(f"too little text ({len(text)} characters) to split by data.split_fractions", path)
        return parts
    cuts = _cuts(len(docs), fractions)
    parts = [docs.select(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    if any(len(p) == 0 for p in parts):
        raise DataError(f"too few examples ({len(docs)}) to split by data.split_fractions {list(fractions)}", path)
    return parts


def _cuts(n: int, fractions: Sequence[float]) -> list[int]:
    cuts, total = [0], 0.0
    for f in fractions[:-1]:
        total += f
        cuts.append(int(n * total))
    cuts.append(n)
    return cuts


# ---------------------------------------------------------------- stream batching

def batchify(tokens: np.ndarray, rows: int, num_replicas: int = 1, rank: int = 0) -> np.ndarray:
    """This rank's contiguous slice of the stream, cut into `rows` parallel rows: [rows, L].

    Every rank gets the same L (the tail that does not divide evenly is dropped), so all ranks take
    the same number of steps. A view, never a copy (of a memmap too: nothing is read until sliced).
    """
    per_rank = len(tokens) // num_replicas
    part = tokens[rank * per_rank:(rank + 1) * per_rank]
    length = len(part) // rows
    return part[: rows * length].reshape(rows, length)


class StreamWindows(Dataset):
    """Window starting at column s of a [rows, L] array -> inputs [rows, t], targets [rows, t] (shifted by one)."""

    def __init__(self, data: np.ndarray, seq_len: int):
        self.data, self.seq_len = data, seq_len
        self.length = data.shape[1]

    def __len__(self) -> int:  # not used for sampling (the sampler yields start columns)
        return max(self.length - 1, 0)

    def __getitem__(self, start: int) -> dict:
        stop = min(start + self.seq_len, self.length - 1)
        # int64 whatever the store's dtype (the id file holds uint8/16/32)
        inputs = torch.from_numpy(np.ascontiguousarray(self.data[:, start:stop], dtype=np.int64))
        targets = torch.from_numpy(np.ascontiguousarray(self.data[:, start + 1:stop + 1], dtype=np.int64))
        targets = targets.masked_fill(targets == BOS_ID, IGNORE)
        # scored tokens, for throughput counters (nlpseq.callbacks.batch_tokens); a plain int stays on the CPU
        return {"input_ids": inputs, "targets": targets, "num_tokens": int((targets != IGNORE).sum())}


class WindowSampler(Sampler[int]):
    """Start columns of consecutive windows, in order (the carried state needs them in order).

    With `random_offset`, each training epoch starts at a seeded offset in [0, seq_len), so window
    boundaries move between epochs; the number of windows stays the same every epoch.
    """

    def __init__(self, length: int, seq_len: int, random_offset: bool = False, seed: int = 0):
        self.length, self.seq_len, self.seed = length, seq_len, seed
        self.epoch = 0
        # full windows only when shifting, so every epoch has the same count
        self.random_offset = random_offset and (length - seq_len) // seq_len >= 1
        if self.random_offset:
            self.count = (length - seq_len) // seq_len
        else:
            self.count = -(-(length - 1) // seq_len) if length > 1 else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def offset(self) -> int:
        if not self.random_offset:
            return 0
        return int(np.random.default_rng((self.seed, self.epoch)).integers(0, self.seq_len))

    def __iter__(self) -> Iterator[int]:
        first = self.offset()
        return iter(range(first, first + self.count * self.seq_len, self.seq_len))

    def __len__(self) -> int:
        return self.count


def _single(batch):
    return batch


# ---------------------------------------------------------------- the data module

class LanguageModelDataModule(TextDataModule):
    """Text for a language model, from local files (`train`, `validation`, `test`) or `hub.name`.

    `format`: auto (by extension: .jsonl/.json, .tsv, .csv, anything else plain text) | text (the whole
    file is one document) | lines (one example per line) | jsonl | tsv | csv. `condition_column` names
    a label column (lines mode, tables only): its value, embedded, starts the model's state.
    `batch_size` / `eval_batch_size` are the number of parallel rows in stream mode.
    `out_of_core`: auto | true | false: plain-text splits encoded in chunks to `<run>/cache` and read by
    memmap (stream mode); auto when the training file is larger than token_store.AUTO_BYTES.
    """

    def __init__(self, train: str | None = None, validation: str | None = None, test: str | None = None,
                 format: str = "auto", mode: str = "stream", split_fractions: Sequence[float] | None = None,
                 text_column: str | Sequence[str] = "text", condition_column: str | Sequence[str] | None = None,
                 hub: dict | None = None, tokenizer: dict | None = None, seq_len: int = 128,
                 max_length: int | None = None, random_offset: bool = True, batch_size: int = 32,
                 eval_batch_size: int = 32, max_tokens: int | None = None, num_workers: int = 0,
                 bucket_pool: int = 50, seed: int = 0, out_of_core: str | bool = "auto",
                 pin_memory: bool = False):
        super().__init__(batch_size, eval_batch_size, max_tokens, num_workers, bucket_pool, seed, pin_memory)
        self.paths = {"train": train, "validation": validation, "test": test}
        self.format = check_choice("data.format", format, FORMATS)
        self.mode = check_choice("data.mode", mode, MODES)
        self.seq_len = check_int("data.seq_len", seq_len, minimum=1)
        if max_length is not None:
            check_int("data.max_length", max_length, minimum=1)
        self.max_length = max_length
        self.random_offset = check_bool("data.random_offset", random_offset)
        self.text_column, self.condition_column = text_column, condition_column
        if condition_column is not None and mode == "stream":
            raise ConfigError("data.condition_column",
                              "conditions start each example's state, so they need data.mode=lines "
                              "(stream mode carries the state across examples)")
        if split_fractions is not None:
            split_fractions = list(split_fractions)
            if len(split_fractions) not in (2, 3):
                raise ConfigError("data.split_fractions", f"expected 2 (train, validation) or 3 (…, test) numbers, "
                                                          f"got {split_fractions}")
            for f in split_fractions:
                check_float("data.split_fractions", f, 0.0, 1.0, low_open=True, high_open=True)
            if abs(sum(split_fractions) - 1.0) > 1e-6:
                raise ConfigError("data.split_fractions", f"must sum to 1, got {split_fractions}")
        self.split_fractions = split_fractions
        self._set_hub(hub)
        if not self.hub.get("name") and not train:
            raise ConfigError("data.train", "no training data: set data.train to a file or data.hub.name to a hub dataset")
        streamable = (out_of_core is not True or (mode == "stream" and train and not self.hub.get("name")
                                                  and detect_format(train, format) == "text"))
        self._set_out_of_core(out_of_core, streamable,
                              "needs a plain-text training file (data.format=text) in data.mode=stream")
        self.sources: dict[str, token_store.TextSource] = {}  # out-of-core splits
        self.tokenizer_cfg = dict(tokenizer or {"kind": "char"})
        self.tokenizer: TextTokenizer | None = None
        self.conditions: LabelVocab | None = None
        self.raw: dict[str, Documents] = {}
        self.streams: dict[str, np.ndarray] = {}

    # ---- reading
    def _read(self, split: str) -> Documents | None:
        if self.hub.get("name"):
            hub_splits = {"train": "train", "validation": "validation", "test": "test", **(self.hub.get("splits") or {})}
            if not hub_splits.get(split):
                return None
            ds = load_hub_table(self.hub["name"], hub_splits[split], self.hub.get("subset"), self.text_column,
                                self.condition_column)
            where = f"hub:{self.hub['name']}/{hub_splits[split]}"
            return Documents(list(ds["text"]), list(ds["label"]) if self.condition_column is not None else None,
                             [(where, i + 1) for i in range(len(ds))])
        if not self.paths[split]:
            return None
        return read_documents(self.paths[split], self.format, self.text_column, self.condition_column)

    def prepare(self, run_dir=None) -> None:
        self.cache_dir = Path(run_dir) / "cache" if run_dir is not None else None
        started = time.perf_counter()
        super().prepare(run_dir)
        log.info("data prepared in %.1f s: %s tokens", time.perf_counter() - started,
                 ", ".join(f"{s} {n:,}" for s, n in self.num_tokens.items()))

    def _use_out_of_core(self) -> bool:
        if self.out_of_core != "auto":
            return self.out_of_core
        train = self.paths["train"]
        return (self.mode == "stream" and bool(train) and not self.hub.get("name")
                and detect_format(train, self.format) == "text"
                and resolve(train).stat().st_size > token_store.AUTO_BYTES)

    def _read_out_of_core(self, train_only_for_vocab: bool) -> None:
        """Plain-text splits become TextSources (read later, in chunks); any other split is read as usual."""
        self.raw, self.sources = {}, {}
        for split in SPLITS:
            path = self.paths[split]
            if not path:
                continue
            if detect_format(path, self.format) == "text":
                self.sources[split] = token_store.TextSource(str(path))
            else:
                self.raw[split] = read_documents(path, self.format, self.text_column, self.condition_column)
        if "validation" not in self.sources and "validation" not in self.raw:
            fractions = self.split_fractions or [0.9, 0.1]
            parts = self.sources["train"].split(fractions)
            self.sources["train"], self.sources["validation"] = parts[0], parts[1]
            if len(parts) == 3 and "test" not in self.sources and "test" not in self.raw:
                self.sources["test"] = parts[2]
            log.info("no validation split given: cut the training data by fractions %s", fractions)
        log.info("out of core: %s read in chunks, token ids cached in %s", sorted(self.sources),
                 self.cache_dir or "a temporary folder")
        if train_only_for_vocab:
            started = time.perf_counter()
            self.tokenizer = token_store.train_tokenizer(self.sources["train"], self.tokenizer_cfg)
            log.info("vocabulary: %d tokens (%s), one streaming pass in %.1f s", self.tokenizer.vocab_size,
                     self.tokenizer.kind, time.perf_counter() - started)

    def read_splits(self, train_only_for_vocab: bool) -> None:
        if self._use_out_of_core():
            return self._read_out_of_core(train_only_for_vocab)
        raw = {s: self._read(s) for s in SPLITS}
        if raw["validation"] is None:
            fractions = self.split_fractions or [0.9, 0.1]
            parts = split_documents(raw["train"], fractions, self.paths["train"])
            raw["train"], raw["validation"] = parts[0], parts[1]
            if len(parts) == 3 and raw["test"] is None:
                raw["test"] = parts[2]
            log.info("no validation split given: cut the training data by fractions %s", fractions)
        self.raw = {s: d for s, d in raw.items() if d is not None}
        if train_only_for_vocab:
            self.tokenizer = token_store.train_tokenizer(self.raw["train"].texts, self.tokenizer_cfg)
            if self.condition_column is not None:
                self.conditions = LabelVocab.from_data(self.raw["train"].conditions)
            log.info("vocabulary: %d tokens (%s)%s", self.tokenizer.vocab_size, self.tokenizer.kind,
                     f", conditions: {self.conditions.labels}" if self.conditions else "")

    def vocab_settings(self) -> dict:
        return {"tokenizer": self.tokenizer_cfg, "train": str(self.paths["train"]), "hub": self.hub,
                "format": self.format, "split_fractions": self.split_fractions,
                "condition_column": self.condition_column}

    def dump_vocab(self) -> dict:
        return {"tokenizer": self.tokenizer.to_json(),
                "conditions": list(self.conditions.labels) if self.conditions else None}

    def load_vocab(self, vocab: dict) -> None:
        self.tokenizer = TextTokenizer.from_json(vocab["tokenizer"])
        self.conditions = LabelVocab(vocab["conditions"]) if vocab.get("conditions") else None

    def model_inputs(self) -> dict:
        # how the text was read travels too: `python -m nlpseq.evaluate` reads held-out files the same way
        columns = lambda c: c if c is None or isinstance(c, str) else list(c)  # noqa: E731
        return {"tokenizer": self.tokenizer.to_json(),
                "conditions": list(self.conditions.labels) if self.conditions else None,
                "reader": {"mode": self.mode, "text_column": columns(self.text_column),
                           "condition_column": columns(self.condition_column)}}

    # ---- encoding, once
    def _encode(self, docs: Documents) -> list[np.ndarray]:
        """<s> ids </s> per document, as compact arrays. Long documents are encoded in pieces cut where encoding
        is additive (token_store.pieces): one HF call on a megabyte-long string holds ~100x its size in
        Encoding objects, and a Python list of ids 8+ bytes per token."""
        encoder = token_store.Encoder(self.tokenizer)
        bos, eos = np.array([BOS_ID], dtype=encoder.dtype), np.array([EOS_ID], dtype=encoder.dtype)
        seqs = []
        for start in range(0, len(docs), 10000):  # bounded memory for corpora of many documents
            texts = docs.texts[start:start + 10000]
            cut = [list(token_store.pieces([t], self.tokenizer.kind)) if len(t) > token_store.PIECE_CHARS else [t]
                   for t in texts]
            ids = iter(encoder.encode([piece for parts in cut for piece in parts]))
            for parts in cut:
                doc = [next(ids) for _ in parts]
                if self.max_length is not None and self.mode == "lines":
                    doc = [np.concatenate(doc)[: self.max_length]]
                seqs.append(np.concatenate([bos, *doc, eos]))
        return seqs

    def _encode_source(self, split: str) -> np.ndarray:
        """A read-only memmap of the split's ids, cached in the run directory (DDP workers wait for it)."""
        if self.cache_dir is None:  # no run directory (tests, benchmarks): a folder removed with the module
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="nlpseq-ids-")
            self.cache_dir = Path(self._tmp.name)
        return token_store.encode_to_file(self.sources[split], self.tokenizer, self.cache_dir, split,
                                          wait=is_worker_process())

    def encode_splits(self) -> None:
        self.streams, self.splits = {}, {}
        for split in self.sources:
            flat = self._encode_source(split)
            if len(flat) < 2:
                raise DataError(f"the {split} split has too little text for a language model", self.paths.get(split))
            self.streams[split] = flat
        for split, docs in self.raw.items():
            seqs = self._encode(docs)
            if self.mode == "stream":
                flat = RaggedArray(seqs).flat
                if len(flat) < 2:
                    raise DataError(f"the {split} split has too little text for a language model",
                                    self.paths.get(split))
                self.streams[split] = flat
                continue
            conds = None
            if self.conditions is not None:
                conds = np.empty(len(docs), dtype=np.int64)
                for i, (c, (path, line)) in enumerate(zip(docs.conditions, docs.where)):
                    if c not in self.conditions:
                        raise DataError(f"condition {c!r} was never seen in training (known: "
                                        f"{self.conditions.labels})", path, line)
                    conds[i] = self.conditions.index[c]
            self.splits[split] = _lines_dataset(RaggedArray(seqs), conds)

    def bench_inputs(self, n: int) -> list[str]:
        """Prompts for inference benchmarks (nlpseq.bench): the starts of validation lines."""
        texts = self.raw["validation"].texts if "validation" in self.raw else [self.sources["validation"].head(1 << 20)]
        lines = [line[:20] for text in texts for line in text.splitlines() if line.strip()]
        return repeat_to(lines, n)

    @property
    def num_tokens(self) -> dict[str, int]:
        if self.mode == "stream":
            return {s: len(t) for s, t in self.streams.items()}
        return {s: int(d.lengths.sum()) for s, d in self.splits.items()}

    # ---- loaders
    def _stream_loader(self, split: str, train: bool) -> DataLoader:
        replicas, rank = self._world()
        rows = self.batch_size if train else self.eval_batch_size
        data = batchify(self.streams[split], rows, replicas, rank)
        if data.shape[1] < 2:
            raise ConfigError("data.batch_size" if train else "data.eval_batch_size",
                              f"{rows} rows x {replicas} process(es) leave fewer than 2 tokens per row of the "
                              f"{split} split ({len(self.streams[split])} tokens); use fewer rows")
        sampler = WindowSampler(data.shape[1], self.seq_len, random_offset=train and self.random_offset,
                                seed=self.seed)
        return self.make_loader(StreamWindows(data, self.seq_len), train, batch_size=None, sampler=sampler,
                                collate_fn=_single)

    def train_dataloader(self) -> DataLoader:
        return self._stream_loader("train", True) if self.mode == "stream" else super().train_dataloader()

    def val_dataloader(self) -> DataLoader:
        return self._stream_loader("validation", False) if self.mode == "stream" else super().val_dataloader()

    def test_dataloader(self) -> DataLoader:
        if not self.has_test:
            raise ConfigError("data.test", "no test split configured")
        return self._stream_loader("test", False) if self.mode == "stream" else super().test_dataloader()

    @property
    def has_test(self) -> bool:
        return "test" in (self.streams if self.mode == "stream" else self.splits)


def _lines_dataset(seqs: RaggedArray, conditions: np.ndarray | None) -> EncodedDataset:
    """Each example <s> ... </s>: inputs drop the last token, targets the first; padding is IGNORE."""
    conds_t = torch.from_numpy(conditions) if conditions is not None else None

    def collate(indices: list[int]) -> dict:
        rows = [seqs[i] for i in indices]
        inputs, lengths = pad_ids([r[:-1] for r in rows], PAD_ID)
        targets, _ = pad_ids([r[1:] for r in rows], IGNORE)
        batch = {"input_ids": inputs, "targets": targets, "lengths": lengths}
        if conds_t is not None:
            batch["conditions"] = conds_t[indices]
        return batch

    return EncodedDataset(len(seqs), seqs.lengths - 1, collate)
