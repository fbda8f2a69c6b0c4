"""Parallel text (translation) data: readers for aligned files, TSV, JSONL and hub datasets, and the DataModule.

Each split is given as
- a dict `{src: PATH, tgt: PATH}`: two aligned plain-text files, line i of one translating line i of
  the other (the Moses / Multi30k layout); both must have the same number of lines;
- a string PATH: one TSV file (two columns, source then target; a first line naming the columns
  `src_key` and `tgt_key` is taken as a header and may pick them out of more columns) or one JSONL file
  (an object per line, `src_key` / `tgt_key` name the fields, dotted for nested ones: `translation.de`);
- or, for all splits at once, `hub.name`: a dataset on the HF hub (needs the network or a filled cache).
Any local file may be gzip-compressed (`.gz`). Every split ends up as an HF `datasets.Dataset` with
columns `src`, `tgt` and `line` (the 1-based line the pair came from, for error messages).

Tokenizers (BPE by default) are trained on the training split only: one joint vocabulary for both
sides, or one per side. Sources get </s> appended; targets are wrapped in <s> ... </s> at batching.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
import numpy as np
import torch

from nlpseq.data import example_store
from nlpseq.data.base import HUB_NOT_STREAMED, EncodedDataset, RaggedArray, TextDataModule, repeat_to
from nlpseq.data.collate import pad_ids
from nlpseq.data.files import format_from_name, read_json_lines, read_lines, resolve
from nlpseq.data.sampler import SideLengths
from nlpseq.errors import ConfigError, DataError, check_bool, check_float, check_int
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, TextTokenizer, build_tokenizer
from nlpseq.utils.dist import is_worker_process

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
PAIR_FORMATS = ("auto", "tsv", "jsonl")


# ---------------------------------------------------------------- readers

def _dataset(src: list[str], tgt: list[str], lines: list[int]) -> datasets.Dataset:
    features = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string"),
                                  "line": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"src": src, "tgt": tgt, "line": lines}, features=features)


def iter_aligned(src_path, tgt_path) -> Iterator[tuple[int, str, str]]:
    """(line, source, target) of two aligned text files (plain or .gz), streamed. Different line counts fail
    with both counts in the message (the longer file is counted to its end)."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    n = 0
    for s, t in zip_longest(src, tgt):
        if s is None or t is None:  # one file ended first
            n_src = n + (s is not None) + sum(1 for _ in src)
            n_tgt = n + (t is not None) + sum(1 for _ in tgt)
            raise DataError(f"misaligned parallel files: the source has {n_src} lines but the target "
                            f"{tgt_path} has {n_tgt}", src_path)
        n += 1
        yield s[0], s[1], t[1]


def read_aligned(src_path, tgt_path) -> datasets.Dataset:
    """Two aligned text files (plain or .gz). Different line counts fail with both counts in the message."""
    return _rows_dataset(iter_aligned(src_path, tgt_path))


def _rows_dataset(rows) -> datasets.Dataset:
    src, tgt, lines = [], [], []
    for lineno, s, t in rows:
        src.append(s)
        tgt.append(t)
        lines.append(lineno)
    return _dataset(src, tgt, lines)


def detect_pair_format(path, fmt: str = "auto") -> str:
    if fmt not in PAIR_FORMATS:
        raise ConfigError("data.format", f"{fmt!r} is not one of {', '.join(PAIR_FORMATS)}")
    if fmt != "auto":
        return fmt
    found = {"tsv": "tsv", "text": "tsv", "jsonl": "jsonl"}.get(format_from_name(path))
    if found:
        return found
    raise DataError("cannot tell the format from the file name; set data.format to tsv or jsonl "
                    "(or give the split as {src: PATH, tgt: PATH} for two aligned files)", path)


def _get(obj: Any, dotted: str):
    """obj['a']['b'] for 'a.b'; KeyError if a part is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(part)
        obj = obj[part]
    return obj


def read_pair_table(path, src_key: str = "src", tgt_key: str = "tgt", fmt: str = "auto") -> datasets.Dataset:
    """One TSV or JSONL file of pairs (plain or .gz); errors name the file and line."""
    return _rows_dataset(iter_pair_table(path, src_key, tgt_key, fmt))


def iter_pair_table(path, src_key: str = "src", tgt_key: str = "tgt", fmt: str = "auto"
                    ) -> Iterator[tuple[int, str, str]]:
    """(line, source, target) of one TSV or JSONL file of pairs, streamed; errors name the file and line."""
    fmt = detect_pair_format(path, fmt)
    n = 0
    if fmt == "tsv":
        index = None  # (src column, tgt column, columns per line) once a header is seen
        for lineno, line in read_lines(path):
            if not line.strip():
                continue
            cells = line.split("\t")
            if index is None and not n:
                index = (0, 1, 2)
                if src_key in cells and tgt_key in cells:  # a header naming the columns
                    index = (cells.index(src_key), cells.index(tgt_key), len(cells))
                    continue
            if len(cells) != index[2]:
                what = "2 tab-separated columns (source, target)" if index[2] == 2 else \
                    f"{index[2]} tab-separated columns like the header"
                raise DataError(f"expected {what}, found {len(cells)}", path, lineno)
            n += 1
            yield lineno, cells[index[0]], cells[index[1]]
    else:
        for lineno, obj in read_json_lines(path):
            pair = []
            for key, option in ((src_key, "data.src_key"), (tgt_key, "data.tgt_key")):
                try:
                    value = _get(obj, key)
                except KeyError:
                    raise DataError(f"no field {key!r} (option {option}); the object has {list(obj)}", path, lineno) from None
                if not isinstance(value, str):
                    raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path, lineno)
                pair.append(value)
            n += 1
            yield lineno, pair[0], pair[1]
    if not n:
        raise DataError("no sentence pairs in file", path)


def load_hub_pairs(name: str, split: str, subset: str | None, src_key: str, tgt_key: str) -> datasets.Dataset:
    """A split of a hub dataset (needs the network or a populated HF cache); keys may be dotted."""
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # the hub raises many types; the user needs one line
        raise DataError(f"could not load hub dataset {name!r} split {split!r}: {type(e).__name__}: {e}".splitlines()[0])
    src, tgt = [], []
    for i, row in enumerate(ds):
        try:
            src.append(_get(row, src_key))
            tgt.append(_get(row, tgt_key))
        except KeyError as e:
            raise DataError(f"hub dataset {name!r} split {split!r} has no field {e.args[0]!r} "
                            f"(options data.src_key / data.tgt_key); its columns are {ds.column_names}") from None
    return _dataset([str(s) for s in src], [str(t) for t in tgt], list(range(1, len(src) + 1)))


def read_split(spec, src_key: str = "src", tgt_key: str = "tgt", fmt: str = "auto", option: str = "data.train"
               ) -> datasets.Dataset:
    """A split given as {src: PATH, tgt: PATH} (aligned files) or PATH (TSV/JSONL)."""
    return _rows_dataset(iter_split(spec, src_key, tgt_key, fmt, option))


def iter_split(spec, src_key: str = "src", tgt_key: str = "tgt", fmt: str = "auto", option: str = "data.train"
               ) -> Iterator[tuple[int, str, str]]:
    """(line, source, target) of a split given as {src: PATH, tgt: PATH} or PATH, streamed (the spec is checked
    at the call, before the first pair)."""
    return iter_aligned(*split_paths(spec, option)) if isinstance(spec, dict) else \
        iter_pair_table(split_paths(spec, option)[0], src_key, tgt_key, fmt)


def split_paths(spec, option: str = "data.train") -> list:
    """The file(s) of a split spec: [src, tgt] for aligned files, [path] for a table; a ConfigError otherwise."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"src", "tgt"}
        if unknown or not spec.get("src") or not spec.get("tgt"):
            raise ConfigError(option, f"aligned files are given as {{src: PATH, tgt: PATH}}, got {spec}")
        return [spec["src"], spec["tgt"]]
    if isinstance(spec, str):
        return [spec]
    raise ConfigError(option, f"expected a file path or {{src: PATH, tgt: PATH}}, got {spec!r}")


def split_where(spec) -> str:
    if isinstance(spec, dict):
        return f"{spec.get('src')} / {spec.get('tgt')}"
    return str(spec)


# ---------------------------------------------------------------- DataModule

class TranslationDataModule(TextDataModule):
    """Parallel splits -> source/target tokenizers -> length-bucketed batches of (source, target) ids.

    Batch dict: `src` [B, S] (ids, </s> appended), `lengths` [B] source lengths (CPU), `tgt_in` [B, T]
    (<s> + target), `tgt_out` [B, T] (target + </s>), `tgt_lengths` [B], `num_tokens` (int: predicted target
    tokens, what throughput counts), `index` [B] (example numbers);
    evaluation batches also carry `sources` and `references`: the raw strings, for BLEU and samples.

    `out_of_core` (auto | true | false): the training files are streamed, never held whole (passes for the
    vocabulary, then one that encodes them in chunks to `<run>/cache`, nlpseq.data.example_store); training reads
    the ids by memmap, with batches identical to the in-memory path. auto: local training files over 256 MB.
    """

    def __init__(self, train: Any = None, validation: Any = None, test: Any = None, format: str = "auto",
                 src_key: str = "src", tgt_key: str = "tgt", hub: dict | None = None, tokenizer: dict | None = None,
                 joint_vocab: bool = True, tgt_vocab_size: int | None = None, max_length: int | None = 100,
                 val_fraction: float = 0.05, batch_size: int = 64, eval_batch_size: int = 128,
                 max_tokens: int | None = None, num_workers: int = 0, bucket_pool: int = 200, seed: int = 0,
                 out_of_core: str | bool = "auto", pin_memory: bool = False):
        super().__init__(batch_size, eval_batch_size, max_tokens, num_workers, bucket_pool, seed, pin_memory)
        self._set_hub(hub)
        self._set_out_of_core(out_of_core, not self.hub.get("name"), HUB_NOT_STREAMED)
        self.paths = {"train": train, "validation": validation, "test": test}
        self.format, self.src_key, self.tgt_key = format, src_key, tgt_key
        self.tokenizer_cfg = dict(tokenizer or {"kind": "bpe", "vocab_size": 8000})
        self.joint_vocab = check_bool("data.joint_vocab", joint_vocab)
        if tgt_vocab_size is not None:
            check_int("data.tgt_vocab_size", tgt_vocab_size, minimum=5)
            if joint_vocab:
                raise ConfigError("data.tgt_vocab_size", "applies to separate vocabularies only (data.joint_vocab=false); "
                                                         "the joint one has data.tokenizer.vocab_size")
        self.tgt_vocab_size = tgt_vocab_size
        if max_length is not None:
            check_int("data.max_length", max_length, minimum=2)
        self.max_length = max_length
        self.val_fraction = check_float("data.val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if not self.hub.get("name") and not train:
            raise ConfigError("data.train", "no training data: set data.train to {src: PATH, tgt: PATH}, a TSV/JSONL "
                                            "file, or data.hub.name to a hub dataset")
        self.src_tokenizer: TextTokenizer | None = None
        self.tgt_tokenizer: TextTokenizer | None = None
        self.raw: dict[str, datasets.Dataset] = {}
        self.max_src_length = 1
        self.tgt_output_ids: list[int] = []

    # ---- reading
    def _read(self, split: str) -> datasets.Dataset | None:
        if self.hub.get("name"):
            hub_splits = {"train": "train", "validation": "validation", "test": "test", **(self.hub.get("splits") or {})}
            if not hub_splits.get(split):
                return None
            return load_hub_pairs(self.hub["name"], hub_splits[split], self.hub.get("subset"), self.src_key, self.tgt_key)
        if not self.paths[split]:
            return None
        return read_split(self.paths[split], self.src_key, self.tgt_key, self.format, f"data.{split}")

    def prepare(self, run_dir=None) -> None:
        self.cache_dir = Path(run_dir) / "cache" if run_dir is not None else None
        super().prepare(run_dir)

    def _use_out_of_core(self) -> bool:
        if self.out_of_core != "auto":
            return self.out_of_core
        if self.hub.get("name") or not self.paths["train"]:
            return False
        files = split_paths(self.paths["train"])
        return sum(resolve(f).stat().st_size for f in files) > example_store.AUTO_BYTES

    def _train_pairs(self, heldout: list | None = None) -> Iterator[tuple[int, str, str]]:
        """The training pairs with both sides non-empty, streamed; pairs held out for validation go to `heldout`."""
        i = 0
        for row in iter_split(self.paths["train"], self.src_key, self.tgt_key, self.format, "data.train"):
            if not (row[1].strip() and row[2].strip()):
                continue
            if self._heldout is not None and self._heldout[i]:
                if heldout is not None:
                    heldout.append(row)
            else:
                yield row
            i += 1

    def _read_out_of_core(self, train_only_for_vocab: bool) -> None:
        """Validation and test are read whole (BLEU needs their text); the training files are streamed: when a
        validation split must be held out, a counting pass and one that collects it, then the vocabulary passes
        (all sources, then all targets: the order of the in-memory path, so the vocabulary is the same)."""
        started = time.perf_counter()
        self.raw = {s: ds for s in ("validation", "test") if (ds := self._read(s)) is not None}
        where, heldout = split_where(self.paths["train"]), []
        if "validation" not in self.raw:
            n = sum(1 for _ in self._train_pairs())
            if not n:
                raise DataError("every training pair has an empty side", where)
            n_val = max(1, int(round(n * self.val_fraction)))
            if n - n_val < 1:
                raise DataError(f"too few training pairs ({n}) to hold out a validation split", where)
            self._heldout = example_store.heldout_mask(n, self.val_fraction, self.seed)
            for _ in self._train_pairs(heldout):
                pass
        if train_only_for_vocab:
            sources = (s for _, s, _ in self._train_pairs())
            targets = (t for _, _, t in self._train_pairs())
            self.src_tokenizer, self.tgt_tokenizer = build_tokenizers(
                sources, targets, self.tokenizer_cfg, self.joint_vocab, self.tgt_vocab_size)
            log.info("vocabulary: %s; streaming passes in %.1f s", "joint %d" % self.src_tokenizer.vocab_size
                     if self.joint_vocab else "source %d, target %d" % (self.src_tokenizer.vocab_size,
                                                                         self.tgt_tokenizer.vocab_size),
                     time.perf_counter() - started)
        if self._heldout is not None:
            self.raw["validation"] = _rows_dataset(heldout)
            log.info("no validation split given: held out %d of %d training pairs", len(heldout), len(self._heldout))
        log.info("out of core: the training data is streamed, its ids cached in %s", self.cache_dir or "a temporary folder")

    def read_splits(self, train_only_for_vocab: bool) -> None:
        if self._use_out_of_core():
            return self._read_out_of_core(train_only_for_vocab)
        raw = {s: self._read(s) for s in SPLITS}
        train = raw["train"]
        cols = train[:]  # one batched read (iterating a Column formats row by row)
        keep = [i for i, (s, t) in enumerate(zip(cols["src"], cols["tgt"])) if s.strip() and t.strip()]
        if len(keep) < len(train):
            log.info("training data: skipped %d pair(s) with an empty side", len(train) - len(keep))
            if not keep:
                raise DataError("every training pair has an empty side", split_where(self.paths["train"]))
            train = train.select(keep)
        if raw["validation"] is None:  # hold out part of train, reproducibly
            n = len(train)
            n_val = max(1, int(round(n * self.val_fraction)))
            if n - n_val < 1:
                raise DataError(f"too few training pairs ({n}) to hold out a validation split",
                                split_where(self.paths["train"]))
            perm = np.random.default_rng(self.seed).permutation(n)
            raw["validation"] = train.select(sorted(perm[:n_val]))
            train = train.select(sorted(perm[n_val:]))
            log.info("no validation split given: held out %d of %d training pairs", n_val, n)
        raw["train"] = train
        self.raw = {s: ds for s, ds in raw.items() if ds is not None}
        if train_only_for_vocab:
            cols = self.raw["train"][:]
            self.src_tokenizer, self.tgt_tokenizer = build_tokenizers(
                cols["src"], cols["tgt"], self.tokenizer_cfg, self.joint_vocab, self.tgt_vocab_size)
            log.info("vocabulary: %s", "joint %d" % self.src_tokenizer.vocab_size if self.joint_vocab else
                     "source %d, target %d" % (self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size))

    def vocab_settings(self) -> dict:
        return {"tokenizer": self.tokenizer_cfg, "joint": self.joint_vocab, "tgt_vocab_size": self.tgt_vocab_size,
                "train": split_where(self.paths["train"]), "hub": self.hub}

    def dump_vocab(self) -> dict:
        return {"src": self.src_tokenizer.to_json(), "tgt": self.tgt_tokenizer.to_json()}

    def load_vocab(self, vocab: dict) -> None:
        self.src_tokenizer = TextTokenizer.from_json(vocab["src"])
        self.tgt_tokenizer = (self.src_tokenizer if vocab["tgt"] == vocab["src"]
                              else TextTokenizer.from_json(vocab["tgt"]))

    def model_inputs(self) -> dict:
        """Both tokenizers, the longest training source, and the target-side training tokens (the model may
        restrict its output vocabulary to them: with a joint vocabulary, source-only subwords are left out)."""
        return {"src_tokenizer": self.src_tokenizer.to_json(), "tgt_tokenizer": self.tgt_tokenizer.to_json(),
                "max_src_length": int(self.max_src_length), "tgt_output_ids": list(self.tgt_output_ids),
                # the table fields travel too: `python -m nlpseq.evaluate` reads pair tables the same way
                "reader": {"src_key": self.src_key, "tgt_key": self.tgt_key}}

    # ---- encoding, once
    def encode_splits(self) -> None:
        if "train" not in self.raw:  # out of core
            store = self._encode_train_store()
            self.max_src_length = store.meta["max_src_length"]
            self.tgt_output_ids = store.meta["tgt_output_ids"]
            self.splits["train"] = pair_dataset(store.ragged["src"], store.ragged["tgt"])
        for split, ds in self.raw.items():
            cols = ds[:]
            sources, references = cols["src"], cols["tgt"]
            src_ids = self.src_tokenizer.encode_batch(sources, add_eos=True)
            tgt_ids = self.tgt_tokenizer.encode_batch(references)
            if split == "train" and self.max_length:
                keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids))
                        if len(s) <= self.max_length and len(t) + 1 <= self.max_length]
                if len(keep) < len(src_ids):
                    log.info("training data: skipped %d pair(s) longer than data.max_length=%d tokens",
                             len(src_ids) - len(keep), self.max_length)
                    if not keep:
                        raise DataError(f"every training pair is longer than data.max_length={self.max_length} tokens",
                                        split_where(self.paths["train"]))
                    src_ids = [src_ids[i] for i in keep]
                    tgt_ids = [tgt_ids[i] for i in keep]
            if split == "train":
                self.max_src_length = max(len(s) for s in src_ids)
                self.tgt_output_ids = sorted({i for t in tgt_ids for i in t})
            self.splits[split] = pair_dataset(RaggedArray(src_ids), RaggedArray(tgt_ids),
                                              None if split == "train" else (sources, references))

    def _encode_train_store(self) -> example_store.Store:
        """The training pairs encoded to `<run>/cache/train.examples.*` (reused while its key matches), with the
        longest source and the target ids seen (what `model_inputs` needs) in its manifest."""
        if self.cache_dir is None:  # no run directory (tests, benchmarks): a folder removed with the module
            self._tmp = tempfile.TemporaryDirectory(prefix="nlpseq-examples-")
            self.cache_dir = Path(self._tmp.name)
        sha = lambda tok: hashlib.sha256(tok.to_json().encode("utf-8")).hexdigest()  # noqa: E731
        key = {"version": example_store.VERSION, "task": "translation",
               "files": example_store.file_key(*split_paths(self.paths["train"])),
               "reader": [self.src_key, self.tgt_key, self.format], "max_length": self.max_length,
               "heldout": None if self._heldout is None else [self.val_fraction, self.seed],
               "tokenizers": [sha(self.src_tokenizer), sha(self.tgt_tokenizer)]}
        src_dtype = example_store.id_dtype(self.src_tokenizer.vocab_size)
        tgt_dtype = example_store.id_dtype(self.tgt_tokenizer.vocab_size)

        def write(writer: example_store.StoreWriter) -> dict:
            seen = np.zeros(self.tgt_tokenizer.vocab_size, dtype=bool)
            longest, skipped, pairs = 0, 0, 0
            for rows in example_store.batched(self._train_pairs()):
                pairs += len(rows)
                src_ids = self.src_tokenizer.encode_batch([r[1] for r in rows], add_eos=True)
                tgt_ids = self.tgt_tokenizer.encode_batch([r[2] for r in rows])
                if self.max_length:
                    keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids))
                            if len(s) <= self.max_length and len(t) + 1 <= self.max_length]
                    skipped += len(src_ids) - len(keep)
                    src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
                src, tgt = example_store.flatten(src_ids, src_dtype), example_store.flatten(tgt_ids, tgt_dtype)
                seen[tgt[0]] = True
                longest = max(longest, int(src[1].max(initial=0)))
                writer.add({"src": src, "tgt": tgt}, {})
            if skipped:
                log.info("training data: skipped %d pair(s) longer than data.max_length=%d tokens", skipped,
                         self.max_length)
            if not pairs:
                raise DataError("every training pair has an empty side", split_where(self.paths["train"]))
            if not writer.n:
                raise DataError(f"every training pair is longer than data.max_length={self.max_length} tokens",
                                split_where(self.paths["train"]))
            return {"max_src_length": longest, "tgt_output_ids": np.flatnonzero(seen).tolist()}

        return example_store.build_store(self.cache_dir, "train.examples", key, {"src": src_dtype, "tgt": tgt_dtype},
                                         {}, write, wait=is_worker_process())

    def bench_inputs(self, n: int) -> list[str]:
        """Validation sources (repeated up to n) for nlpseq.bench's inference timing."""
        return repeat_to(self.raw["validation"][:]["src"] if "validation" in self.raw else [], n)


def build_tokenizers(src_texts: Sequence[str], tgt_texts: Sequence[str], cfg: dict, joint: bool = True,
                     tgt_vocab_size: int | None = None) -> tuple[TextTokenizer, TextTokenizer]:
    """(source, target) tokenizers trained on the training texts; the same object twice when joint."""
    if joint:
        tok = build_tokenizer(chain(src_texts, tgt_texts), **cfg)
        return tok, tok
    src = build_tokenizer(src_texts, **cfg)
    tgt_cfg = dict(cfg)
    if tgt_vocab_size is not None:
        tgt_cfg["vocab_size"] = tgt_vocab_size
    return src, build_tokenizer(tgt_texts, **tgt_cfg)


def pair_dataset(src: RaggedArray, tgt: RaggedArray, raw: tuple[list[str], list[str]] | None = None) -> EncodedDataset:
    """Batches of (source, target) ids; `raw` (sources, references) adds the strings to each batch."""
    # the sampler buckets on both sides' padded lengths (source, target + <s> or </s>); max_tokens bounds the longer
    lengths = SideLengths([src.lengths, tgt.lengths], add=(0, 1))  # no [N, 2] copy of an out-of-core store's lengths

    def collate(indices: list[int]) -> dict:
        src_ids, src_lengths = pad_ids([src[i] for i in indices])
        tgts = [tgt[i] for i in indices]
        tgt_in, tgt_lengths = pad_ids([np.concatenate(([BOS_ID], t)) for t in tgts])
        tgt_out, _ = pad_ids([np.concatenate((t, [EOS_ID])) for t in tgts])
        batch = {"src": src_ids, "lengths": src_lengths, "tgt_in": tgt_in, "tgt_out": tgt_out,
                 "tgt_lengths": tgt_lengths, "num_tokens": int(tgt_lengths.sum()),
                 "index": torch.as_tensor(indices, dtype=torch.long)}
        if raw is not None:
            batch["sources"] = [raw[0][i] for i in indices]
            batch["references"] = [raw[1][i] for i in indices]
        return batch

    return EncodedDataset(len(src), lengths, collate)
