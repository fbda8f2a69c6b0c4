"""Out-of-core token streams: plain text larger than memory, encoded in chunks to a flat id file, read by memmap.

Design (why not HF `datasets`/Arrow): the stream mode needs exactly one thing, a flat array of token ids
it can slice. A raw little-endian `uint8`/`uint16`/`uint32` file plus a small JSON manifest is the simplest store
for that: `np.memmap` slices it without copying (the `[rows, L]` view of `batchify` is a view of the
file), there is no extra dependency or per-row overhead, and writing it is a sequential `write` of each
encoded chunk (no memory-mapped writes, whose dirty pages would count as the process's memory).

The text is read in byte chunks cut at line ends, decoded and normalised exactly as `read_text` does
(line endings '\\n', a first-line BOM dropped, a final '\\n'), then cut again into pieces at points where
encoding is additive (`encode(a + b) == encode(a) + encode(b)`): after a '\\n' for the char and word
tokenizers (no NFC composition, lowercasing context or word crosses a newline), before a ' ' for BPE
(its Metaspace pre-tokenizer starts a new word at every space, and a piece that starts with a space gets
no extra '▁'). So the ids are identical to encoding the whole file at once, with memory bounded by the
chunk size (a BPE text without spaces is held until its next space).

Encoding needs no per-token Python: characters go through a code-point lookup table (numpy), words and
BPE through the HF tokenizer's batch encoder, a batch of pieces at a time. The vocabulary is built from a
streaming pass: character counts by `np.bincount` of code points, words and BPE by the tokenizer's own
trainer fed an iterator over pieces (identical vocabularies to the in-memory path; tests check both).

The id file lives in the run directory (`<run>/cache/<split>.ids` + `<split>.json`), written to a temporary
name and renamed, and is reused by DDP workers and resumed runs while its key (file path, size,
mtime, the part of the file, the tokenizer) matches; a changed file is encoded again.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import models

from nlpseq.data.files import read_error, resolve
from nlpseq.errors import DataError
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, SPECIALS, UNK, UNK_ID, TextTokenizer, build_tokenizer
from nlpseq.utils.io import atomic_write_text

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20  # bytes read at a time
PIECE_CHARS = 1 << 20   # characters per encoded piece (HF encodes a batch of pieces in parallel)
AUTO_BYTES = 4 << 20  # data.out_of_core=auto: files larger than this
# (the in-memory path holds the text and int64 ids: WikiText-2's 10.8 MB peaked at 0.76-1.09 GB by tokenizer;
# this path at the process baseline plus ~100 MB, at any size)
_CR_LF = re.compile(r"\r+\n")  # read_lines strips every '\r' before a '\n'
VERSION = 1


# ---------------------------------------------------------------- reading

def read_chunks(path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The file's text as `lm.read_text` gives it, in pieces that end at line ends (never the whole file).

    Errors are the same one-line DataErrors as `files.read_lines`, with the line number.
    """
    p = resolve(path)
    lineno, pending, first = 1, b"", True  # lineno: the line the next piece starts on
    try:
        with (gzip.open if p.name.lower().endswith(".gz") else open)(p, "rb") as f:
            while True:
                block = f.read(chunk_bytes)
                data = pending + block
                if block:
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:  # one line longer than a chunk: read on
                        pending = data
                        continue
                    raw, pending = data[:cut], data[cut:]
                elif data:
                    raw, pending = data, b""
                elif first:
                    raise DataError("file is empty", path)
                else:
                    return
                text = _decode(raw, path, lineno, first)
                if first and text.startswith("\ufeff"):
                    text = text[1:]
                if "\r" in text:
                    text = _CR_LF.sub("\n", text)
                if not block and not text.endswith("\n"):  # the last line: read_text ends every line with '\n'
                    text = text.rstrip("\r") + "\n"
                lineno += raw.count(b"\n")
                first = False
                yield text
    except (EOFError, zlib.error, OSError) as e:
        raise read_error(e, path) from None


def _decode(raw: bytes, path, lineno: int, first: bool) -> str:
    """UTF-8 text of whole lines; the first bad line (not UTF-8, or a NUL byte) is named as read_lines names it."""
    try:
        text, bad = raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        text, bad = None, e.start
    nul = raw.find(b"\x00")
    if bad is None and nul < 0:
        return text

    def line_of(i: int) -> int:
        return lineno + raw.count(b"\n", 0, i)

    if nul >= 0 and (bad is None or line_of(nul) < line_of(bad)):
        raise DataError("NUL byte in line (is this a binary file?)", path, line_of(nul))
    if first and line_of(bad) == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError("the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8", path)
    column = bad - (raw.rfind(b"\n", 0, bad) + 1) + 1
    raise DataError(f"bytes that are not UTF-8 at column {column}", path, line_of(bad))


@dataclass(frozen=True)
class TextSource:
    """One document of the stream: characters [start, stop) of a plain-text file (stop None: to the end)."""

    path: str
    start: int = 0
    stop: int | None = None
    chunk_bytes: int = CHUNK_BYTES

    def chunks(self) -> Iterator[str]:
        pos = 0
        for text in read_chunks(self.path, self.chunk_bytes):
            end = pos + len(text)
            a, b = max(self.start - pos, 0), len(text) if self.stop is None else min(self.stop - pos, len(text))
            if a < b:
                yield text[a:b] if (a, b) != (0, len(text)) else text
            pos = end
            if self.stop is not None and pos >= self.stop:
                return

    def split(self, fractions) -> list["TextSource"]:
        """Contiguous parts by characters, as lm.split_documents cuts one document (one counting pass)."""
        from nlpseq.data.lm import _cuts

        n = sum(len(t) for t in read_chunks(self.path, self.chunk_bytes))
        cuts = _cuts(n, fractions)
        if any(b - a < 2 for a, b in zip(cuts[:-1], cuts[1:])):
            raise DataError(f"too little text ({n} characters) to split by data.split_fractions", self.path)
        return [TextSource(self.path, a, b, self.chunk_bytes) for a, b in zip(cuts[:-1], cuts[1:])]

    def head(self, chars: int) -> str:
        out, n = [], 0
        for text in self.chunks():
            out.append(text[: chars - n])
            n += len(out[-1])
            if n >= chars:
                break
        return "".join(out)


def pieces(chunks: Iterable[str], kind: str, size: int | None = None) -> Iterator[str]:
    """Re-cut text into pieces of about `size` characters at points where encoding is additive (see above)."""
    size = size or PIECE_CHARS
    sep = " " if kind == "bpe" else "\n"
    after = 0 if kind == "bpe" else 1  # bpe cuts before the space, char/word after the newline

    def cut_in(text: str, lo: int, hi: int) -> int:  # the last cut point in (lo, hi], or -1
        j = text.rfind(sep, lo + 1 - after, hi + 1 - after)
        return j + after if j >= 0 and j + after > lo else -1

    carry = ""
    for chunk in chunks:
        text, start = carry + chunk, 0
        while len(text) - start > size:
            cut = cut_in(text, start, start + size)
            if cut < 0:  # no cut point within `size`: the next one after it
                j = text.find(sep, start + size)
                cut = j + after if j >= 0 else -1
            if cut < 0 or cut >= len(text):
                break
            yield text[start:cut]
            start = cut
        cut = cut_in(text, start, len(text))
        if cut < 0:
            carry = text[start:]
        else:
            if cut > start:
                yield text[start:cut]
            carry = text[cut:]
    if carry:
        yield carry


# ---------------------------------------------------------------- vocabulary

def train_tokenizer(source: TextSource | Sequence[str], cfg: dict) -> TextTokenizer:
    """The vocabulary `build_tokenizer(texts, **cfg)` would give (texts: the source's whole text, or the given
    documents), from one streaming pass over bounded pieces: HF's trainer holds ~300x a text's size when fed
    one long string."""
    kind = cfg.get("kind", "word")

    def all_pieces() -> Iterator[str]:
        if isinstance(source, TextSource):
            return pieces(source.chunks(), kind)
        return (piece for text in source for piece in pieces([text], kind))  # never across documents

    if kind != "char":  # the tokenizer's own trainer, fed bounded pieces (words never cross a piece)
        return build_tokenizer(all_pieces(), **cfg)
    tok = build_tokenizer([], **cfg)  # checks the options; normaliser and pre-tokenizer as configured
    code_points, counts = CodePoints(tok), np.zeros(0x110000, dtype=np.int64)
    for piece in all_pieces():
        found = np.bincount(code_points(piece))  # as long as the piece's largest code point (128 for ASCII)
        counts[: len(found)] += found
    # ranked as TextTokenizer.train ranks words: by count, then by the character
    ranked = sorted((-int(counts[c]), chr(c)) for c in np.flatnonzero(counts >= cfg.get("min_frequency", 1)))
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for _, ch in ranked[: cfg.get("vocab_size", 30000) - len(SPECIALS)]:
        vocab[ch] = len(vocab)
    tok.hf.model = models.WordLevel(vocab, unk_token=UNK)
    return TextTokenizer(tok.hf, "char")


class CodePoints:
    """Text -> its normalised code points, as the char tokenizer sees them (NFC, maybe lowercase)."""

    def __init__(self, tok: TextTokenizer):
        self.norm = tok.hf.normalizer
        self.lower = '"Lowercase"' in json.dumps(json.loads(tok.hf.to_str())["normalizer"])

    def __call__(self, piece: str) -> np.ndarray:
        if piece.isascii():  # the common case, fast: NFC changes no ASCII, and ASCII lowercasing is str.lower
            return np.frombuffer((piece.lower() if self.lower else piece).encode("ascii"), dtype=np.uint8)
        return np.frombuffer(self.norm.normalize_str(piece).encode("utf-32-le"), dtype=np.uint32)


# ---------------------------------------------------------------- encoding

class Encoder:
    """Pieces of text -> id arrays, equal to the tokenizer's own encoding of the concatenated text."""

    def __init__(self, tok: TextTokenizer):
        self.tok, self.kind = tok, tok.kind
        # the smallest that holds every id: a byte per character for most character vocabularies
        self.dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if tok.vocab_size <= np.iinfo(t).max + 1)
        if self.kind == "char":  # code point -> id; anything unseen is <unk>
            self.table = np.full(0x110000, UNK_ID, dtype=self.dtype)
            for token, i in tok.hf.get_vocab().items():
                if len(token) == 1:
                    self.table[ord(token)] = i
            self.code_points = CodePoints(tok)
        self.chars = 0

    def encode(self, batch: list[str]) -> list[np.ndarray]:
        self.chars += sum(map(len, batch))
        if self.kind == "char":
            return [self.table[self.code_points(p)] for p in batch]
        encodings = getattr(self.tok.hf, "encode_batch_fast", self.tok.hf.encode_batch)(batch, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=self.dtype) for e in encodings]

    def stream(self, source: TextSource, batch: int = 8) -> Iterator[np.ndarray]:
        """<s> ids </s> of one document, in arrays of bounded size."""
        yield np.array([BOS_ID], dtype=self.dtype)
        todo = []
        for piece in pieces(source.chunks(), self.kind):
            todo.append(piece)
            if len(todo) == batch:
                yield from self.encode(todo)
                todo = []
        if todo:
            yield from self.encode(todo)
        yield np.array([EOS_ID], dtype=self.dtype)


# ---------------------------------------------------------------- the id file

def cache_key(source: TextSource, tok: TextTokenizer) -> dict:
    st = os.stat(resolve(source.path))
    return {"version": VERSION, "path": str(resolve(source.path)), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "start": source.start, "stop": source.stop,
            "tokenizer": hashlib.sha256(tok.to_json().encode("utf-8")).hexdigest()}


def open_ids(cache_dir: Path, name: str, key: dict) -> np.memmap | None:
    """The cached ids of `name` if its manifest matches `key` (and the file is complete), else None."""
    manifest, ids = cache_dir / f"{name}.json", cache_dir / f"{name}.ids"
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if meta["key"] != key or ids.stat().st_size != meta["length"] * np.dtype(meta["dtype"]).itemsize:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return np.memmap(ids, dtype=meta["dtype"], mode="r", shape=(meta["length"],))


def _wait_for_ids(cache_dir: Path, name: str, key: dict, patience: float) -> np.memmap | None:
    """The ids another process is writing, once it is done; None when its file has not grown for `patience` s."""
    last, since = -1, time.monotonic()
    while (ids := open_ids(cache_dir, name, key)) is None:
        try:
            size = sum(p.stat().st_size for p in cache_dir.glob(f".{name}.ids.*.tmp"))
        except OSError:  # renamed while we looked: done, or about to be
            size = last + 1
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since > patience:
            return None
        time.sleep(0.5)
    return ids


def encode_to_file(source: TextSource, tok: TextTokenizer, cache_dir: Path, name: str,
                   wait: bool = False, patience: float = 600.0) -> np.memmap:
    """Ids of `source` as a read-only memmap, from the cache or encoded now. `wait` (a DDP worker): wait
    for the first process to write them, while its file grows (else, after `patience` s, encode them too)."""
    cache_dir = Path(cache_dir)
    key = cache_key(source, tok)
    ids = open_ids(cache_dir, name, key)
    if ids is None and wait:
        ids = _wait_for_ids(cache_dir, name, key, patience)
    if ids is not None:
        log.info("%s: reusing %d cached token ids (%s)", name, len(ids), cache_dir / f"{name}.ids")
        return ids
    cache_dir.mkdir(parents=True, exist_ok=True)
    encoder, started, length = Encoder(tok), time.perf_counter(), 0
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.ids.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for arr in encoder.stream(source):
                f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).data)
                length += len(arr)
        os.replace(tmp, cache_dir / f"{name}.ids")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(cache_dir / f"{name}.json", json.dumps({"key": key, "dtype": np.dtype(encoder.dtype).str,
                                                              "length": length}))
    seconds = time.perf_counter() - started
    log.info("%s: encoded %d characters to %d tokens in %.1f s (%.2f M chars/s) into %s", name, encoder.chars,
             length, seconds, encoder.chars / 1e6 / max(seconds, 1e-9), cache_dir / f"{name}.ids")
    return open_ids(cache_dir, name, key)
