"""Encoded examples on disk: the training split of a sentence-level task, larger than memory, read by memmap.

A split of N examples is stored as, per variable-length field (a text's ids, a source, a target), a flat id
file in the smallest unsigned dtype that holds the vocabulary, an int64 offsets file of N + 1 entries and an
int32 lengths file (the sampler reads the lengths without a copy and without touching the offsets), and
per fixed-width field (a label) one array of N values; a JSON manifest names them, with the cache key and a
few facts gathered while writing (`meta`: the longest source, the target ids seen). `RaggedArray` views
these memmaps exactly as it views in-memory arrays, so batches are identical to the in-memory path and the
collate functions do not change: a batch copies only its own rows out of the page cache.

Why not HF `datasets`' memory-mapped Arrow tables: reading a batch from one goes through Python objects per
row (hundreds of microseconds a batch, against a few for a slice of a memmap), which would show in the
training loop; the files here are written sequentially in encoded chunks (no memory-mapped writes, whose
dirty pages count as the process's memory) and need no extra dependency. The text is still parsed by the
task's own readers, so every error names the file and line as in memory.

Files are written under temporary names and renamed, the manifest last, so a crashed run leaves no
half-valid store; DDP workers wait for the first process's store while its files grow, and resumed runs reuse it
while its key (input files' size and mtime, tokenizer, labels, settings) matches.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from nlpseq.data.base import RaggedArray
from nlpseq.data.files import resolve
from nlpseq.utils.io import _umask, atomic_write_text

log = logging.getLogger(__name__)

VERSION = 1
AUTO_BYTES = 256 << 20  # data.out_of_core=auto: a training file over this (in memory, a sentence corpus
# costs Python objects per token: ~40 bytes a token while encoding)
BATCH_ROWS = 8192  # examples encoded at a time


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id below `vocab_size`."""
    return np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32) if vocab_size <= np.iinfo(t).max + 1))


def file_key(*paths) -> list:
    """What identifies the input files: resolved path, size and modification time of each."""
    out = []
    for p in paths:
        st = os.stat(resolve(p))
        out.append([str(resolve(p)), st.st_size, st.st_mtime_ns])
    return out


def flatten(seqs: Sequence[Sequence[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Python id lists -> (flat ids, lengths) without a per-token Python loop beyond the iterator."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((i for s in seqs for i in s), dtype=dtype, count=int(lengths.sum()))
    return flat, lengths


class StoreWriter:
    """Appends encoded examples to temporary files; `finish` renames them into place and writes the manifest."""

    def __init__(self, cache_dir: Path, name: str, ragged: dict[str, np.dtype], fixed: dict[str, np.dtype]):
        self.cache_dir, self.name = Path(cache_dir), name
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.ragged = {f: np.dtype(d) for f, d in ragged.items()}
        self.fixed = {f: np.dtype(d) for f, d in fixed.items()}
        self.files: dict[str, tuple] = {}  # final name -> (tmp path, open file)
        self.totals = {f: 0 for f in self.ragged}
        self.n = 0
        for f in self.ragged:
            self._open(f"{f}.ids")
            self._open(f"{f}.offsets").write(np.zeros(1, dtype="<i8").data)
            self._open(f"{f}.lengths")
        for f in self.fixed:
            self._open(f"{f}.values")

    def _open(self, suffix: str):
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{self.name}.{suffix}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp makes it private)
        self.files[suffix] = (tmp, os.fdopen(fd, "wb"))
        return self.files[suffix][1]

    def add(self, ragged: dict[str, tuple[np.ndarray, np.ndarray]], fixed: dict[str, np.ndarray]) -> None:
        """One chunk of examples: per ragged field (flat ids, lengths), per fixed field values; all the same count."""
        counts = {len(lengths) for _, lengths in ragged.values()} | {len(v) for v in fixed.values()}
        if len(counts) != 1:
            raise ValueError(f"fields of one chunk differ in length: {counts}")
        for f, (flat, lengths) in ragged.items():
            self.files[f"{f}.ids"][1].write(np.ascontiguousarray(flat, dtype=self.ragged[f].newbyteorder("<")).data)
            offsets = self.totals[f] + np.cumsum(lengths, dtype=np.int64)
            self.files[f"{f}.offsets"][1].write(offsets.astype("<i8").data)
            if len(lengths) and int(lengths.max()) > np.iinfo(np.int32).max:
                raise ValueError(f"an example of {int(lengths.max())} tokens")
            self.files[f"{f}.lengths"][1].write(np.asarray(lengths, dtype="<i4").data)
            self.totals[f] += int(lengths.sum())
        for f, values in fixed.items():
            self.files[f"{f}.values"][1].write(np.ascontiguousarray(values, dtype=self.fixed[f].newbyteorder("<")).data)
        self.n += counts.pop()

    def finish(self, key: dict, meta: dict | None = None) -> None:
        for _, f in self.files.values():
            f.close()
        for suffix, (tmp, _) in self.files.items():
            os.replace(tmp, self.cache_dir / f"{self.name}.{suffix}")
        manifest = {"key": key, "n": self.n, "meta": meta or {},
                    "ragged": {f: {"dtype": d.newbyteorder("<").str, "total": self.totals[f]} for f, d in self.ragged.items()},
                    "fixed": {f: d.newbyteorder("<").str for f, d in self.fixed.items()}}
        atomic_write_text(self.cache_dir / f"{self.name}.json", json.dumps(manifest))

    def abort(self) -> None:
        for tmp, f in self.files.values():
            f.close()
            Path(tmp).unlink(missing_ok=True)


class Store:
    """An opened store: `n` examples, `ragged[field]` RaggedArrays and `fixed[field]` arrays over memmaps."""

    def __init__(self, n: int, ragged: dict[str, RaggedArray], fixed: dict[str, np.ndarray], meta: dict):
        self.n, self.ragged, self.fixed, self.meta = n, ragged, fixed, meta


def open_store(cache_dir: Path, name: str, key: dict) -> Store | None:
    """The store `name` if its manifest matches `key` and every file has its full size, else None."""
    cache_dir = Path(cache_dir)
    try:
        m = json.loads((cache_dir / f"{name}.json").read_text(encoding="utf-8"))
        if m["key"] != key:
            return None
        n, ragged, fixed = m["n"], {}, {}

        def mapped(suffix: str, dtype, count: int, random: bool = True) -> np.ndarray:
            path = cache_dir / f"{name}.{suffix}"
            if path.stat().st_size != count * np.dtype(dtype).itemsize:
                raise ValueError(f"{path} is incomplete")
            if count == 0:  # numpy cannot map an empty file
                return np.zeros(0, dtype=dtype)
            arr = np.memmap(path, dtype=dtype, mode="r", shape=(count,))
            if random:
                _read_randomly(arr)
            return arr

        for f, spec in m["ragged"].items():
            ragged[f] = RaggedArray(flat=mapped(f"{f}.ids", spec["dtype"], spec["total"]),
                                    offsets=mapped(f"{f}.offsets", "<i8", n + 1),
                                    lengths=mapped(f"{f}.lengths", "<i4", n, random=False))
        for f, dtype in m["fixed"].items():
            fixed[f] = mapped(f"{f}.values", dtype, n)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Store(n, ragged, fixed, m.get("meta", {}))


def _read_randomly(arr: np.memmap) -> None:
    """Tell the kernel that batches read this file at random: no read-ahead around each row (on Linux it reads
    128 KB around every page fault, which fills memory and costs I/O for rows no batch asked for)."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        try:
            mm.madvise(mmap.MADV_RANDOM)
        except OSError:  # pragma: no cover - advice only
            pass


def _wait(cache_dir: Path, name: str, key: dict, patience: float) -> Store | None:
    """The store another process is writing, once it is done; None when its files have not grown for `patience` s."""
    last, since = -1, time.monotonic()
    while (store := open_store(cache_dir, name, key)) is None:
        try:
            size = sum(p.stat().st_size for p in Path(cache_dir).glob(f".{name}.*.tmp"))
        except OSError:  # renamed while we looked: done, or about to be
            size = last + 1
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since > patience:
            return None
        time.sleep(0.5)
    return store


def build_store(cache_dir: Path, name: str, key: dict, ragged: dict[str, np.dtype], fixed: dict[str, np.dtype],
                write: Callable[[StoreWriter], dict | None], wait: bool = False, patience: float = 600.0) -> Store:
    """The store `name` for `key`: reused when present, else written now by `write(writer)` (which returns the
    manifest's `meta`). `wait` (a DDP worker): wait for the first process to write it, while its files grow."""
    cache_dir = Path(cache_dir)
    store = open_store(cache_dir, name, key)
    if store is None and wait:
        store = _wait(cache_dir, name, key, patience)
    if store is not None:
        log.info("%s: reusing %d encoded examples (%s)", name, store.n, cache_dir / f"{name}.json")
        return store
    started = time.perf_counter()
    writer = StoreWriter(cache_dir, name, ragged, fixed)
    try:
        meta = write(writer)
        writer.finish(key, meta)
    except BaseException:
        writer.abort()
        raise
    log.info("%s: encoded %d examples in %.1f s into %s", name, writer.n, time.perf_counter() - started,
             cache_dir / f"{name}.*")
    store = open_store(cache_dir, name, key)
    if store is None:  # pragma: no cover - the files were just written
        raise OSError(f"could not read back {cache_dir / name}")
    return store


def batched(rows: Iterable, size: int = BATCH_ROWS) -> Iterable[list]:
    """Lists of up to `size` consecutive items."""
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def heldout_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Which of n examples the in-memory path holds out for validation (the same seeded permutation)."""
    n_val = max(1, int(round(n * fraction)))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return mask
