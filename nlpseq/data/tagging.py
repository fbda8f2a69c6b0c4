"""Sequence tagging data (NER): tagged sentences -> word, case, character and (optionally) subword ids.

`TaggingFeaturizer` turns lists of words into model inputs. It is built from plain values only (the
tokenizer JSON, the character list, a few settings) that travel in the checkpoint, and the training
data module and the predictor use the very same object, so training and inference can never encode
a word differently. `TaggingDataModule` reads the splits (column files, JSONL or a hub dataset),
converts the tags to the training scheme, builds the vocabularies on the training split and encodes
every split once.

Encoding works on distinct words: each distinct word of a split (or of a predict call) is looked up,
case-classified and spelled into character ids once; a batch then gathers those rows with numpy, and
the character encoder runs on the distinct words of the batch only.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from nlpseq.data import example_store
from nlpseq.data.base import HUB_NOT_STREAMED, EncodedDataset, RaggedArray, TextDataModule, repeat_to
from nlpseq.data.collate import distinct_spellings
from nlpseq.data.conll import (FORMATS, INPUT_SCHEMES, SEPARATORS, convert, convert_all, detect_format, detect_scheme,
                               iter_tagged, load_hub_tagged, read_tagged)
from nlpseq.data.files import resolve
from nlpseq.errors import ConfigError, DataError, check_bool, check_choice, check_float, check_int
from nlpseq.metrics.schemes import PREFIXES, SCHEMES, canonical_scheme, split_tag
from nlpseq.metrics.spans import conll_chunks
from nlpseq.text.tokenizer import PAD_ID, SPECIALS, UNK, UNK_ID, TextTokenizer, build_tokenizer
from nlpseq.utils.dist import is_worker_process

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
TOKENIZER_KINDS = ("word", "bpe", "wordpiece")
MAX_WORD_CHARS = 50  # longer words are spelled by their first 50 characters
CACHE_WORDS = 200_000  # distinct words whose ids/features a featurizer remembers between calls

# ---------------------------------------------------------------- raw text -> tokens with offsets

# CoNLL/PTB-like tokens, tried in this order at each position (whitespace separates, never a token):
TOKEN_PATTERN = re.compile(r"""
    (?:[^\W\d_]\.){2,}                                 # abbreviations with dots: U.S. e.g.
  | \d+(?:[.,:/-]\d+)*                                 # numbers, dates, times: 3,000.50 1996-08-22 12:30
  | '(?:[sSdDmM]|re|RE|ve|VE|ll|LL)\b                  # clitics: 's 'd 'm 're 've 'll
  | n't\b | N'T\b
  | \w+?(?=n't\b|N'T\b)                                # the word before n't: do|n't
  | [^\W\d_]+'(?!(?:[sSdDmM]|re|RE|ve|VE|ll|LL)\b)\w+  # names with an apostrophe: O'Neill
  | \w+(?:-\w+)*                                       # words, with inner hyphens: Saint-Denis
  | \S                                                 # any other character on its own: . , ( " $
""", re.VERBOSE)


def tokenize_text(text: str) -> list[tuple[str, tuple[int, int]]]:
    """Split raw text into CoNLL-like tokens with character offsets (`text[start:end] == token`).

    Characters that only modify their neighbour stay in one token with it (the regex's \\w does not
    cover them): combining marks (Hindi vowel signs, a decomposed é), zero-width (non-)joiners, emoji
    skin tones and tag characters, and the two halves of a flag."""
    out: list[tuple[str, tuple[int, int]]] = []
    for m in TOKEN_PATTERN.finditer(text):
        tok, (start, end) = m.group(), m.span()
        if out and out[-1][1][1] == start and _joins(out[-1][0], tok):
            prev, (pstart, _) = out.pop()
            tok, start = prev + tok, pstart
        out.append((tok, (start, end)))
    return out


def _is_modifier(c: str) -> bool:
    o = ord(c)
    return (unicodedata.category(c)[0] == "M" or c in "\u200c\u200d" or 0x1F3FB <= o <= 0x1F3FF
            or 0xE0020 <= o <= 0xE007F)


def _joins(prev: str, tok: str) -> bool:
    """Whether `tok`, right after `prev`, continues it (see tokenize_text)."""
    if _is_modifier(tok[0]) or prev[-1] == "\u200d":
        return True
    if _is_modifier(prev[-1]):  # a letter after a mark: the rest of the word (हि|न्दी)
        return tok[0].isalnum() or tok[0] == "\u200d"
    return len(prev) == 1 and _is_flag_half(prev) and _is_flag_half(tok[0])


def _is_flag_half(c: str) -> bool:
    return 0x1F1E6 <= ord(c) <= 0x1F1FF  # regional indicator symbols: two make a flag


def tokens_with_offsets(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-tokenized input: the text is the tokens joined by single spaces; offsets point into it."""
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), offsets


# ---------------------------------------------------------------- word shape (case) feature

CASES = ("<pad>", "lower", "upper", "title", "mixed", "numeric", "has_digit", "punct", "other")
_LOWER, _UPPER, _TITLE, _MIXED, _NUMERIC, _DIGIT, _PUNCT, _OTHER = range(1, 9)


def case_class(word: str) -> int:
    """Index into CASES of the word's shape (computed on the word as written, before lower-casing)."""
    if word.isdigit():
        return _NUMERIC
    if any(c.isdigit() for c in word):
        return _DIGIT
    if word.islower():
        return _LOWER
    if word.isupper():
        return _UPPER
    if word[:1].isupper() and (len(word) == 1 or word[1:].islower() or not any(c.isalpha() for c in word[1:])):
        return _TITLE
    if any(c.isupper() for c in word):
        return _MIXED
    if not any(c.isalnum() for c in word):
        return _PUNCT
    return _OTHER


_DIGITS = re.compile(r"\d")


def normalize_word(word: str, zero_digits: bool) -> str:
    """What the word vocabulary sees (before the tokenizer's own lower-casing): digits -> 0 if asked."""
    return _DIGITS.sub("0", word) if zero_digits else word


# ---------------------------------------------------------------- tokenizers (word / subword)

def train_tokenizer(sentences: Iterable[Sequence[str]] | None, kind: str = "word", vocab_size: int = 30000,
                    min_frequency: int = 1, lowercase: bool = False, split: str = "regex",
                    word_counts: Counter | None = None) -> str:
    """Train the word or subword vocabulary on pre-split training words; returns the tokenizer JSON.

    word and bpe are `TextTokenizer`s (pretokenized); wordpiece is an HF WordPiece model ('##' marks
    a word's continuation pieces) stored in the same JSON layout with kind 'wordpiece'. A word vocabulary
    can come from `word_counts` (word -> count) instead of sentences: the same tokenizer, far faster."""
    check_choice("data.tokenizer.kind", kind, TOKENIZER_KINDS)
    if word_counts is not None:
        if kind != "word":
            raise ValueError(f"word_counts build a word vocabulary, not {kind}")
        return TextTokenizer.from_word_counts(word_counts, vocab_size=vocab_size, min_frequency=min_frequency,
                                              lowercase=lowercase, split=split).to_json()
    if kind != "wordpiece":
        return build_tokenizer(sentences, kind=kind, vocab_size=vocab_size, min_frequency=min_frequency,
                               lowercase=lowercase, split=split, pretokenized=True).to_json()
    check_int("data.tokenizer.vocab_size", vocab_size, minimum=len(SPECIALS) + 1)
    check_int("data.tokenizer.min_frequency", min_frequency, minimum=1)
    check_bool("data.tokenizer.lowercase", lowercase)
    hf = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##"))
    hf.normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else []))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIALS), continuing_subword_prefix="##",
                                        show_progress=False)
    hf.train_from_iterator((" ".join(s) for s in sentences), trainer=trainer)
    for i, tok in enumerate(SPECIALS):
        if hf.token_to_id(tok) != i:
            raise ConfigError("data.tokenizer", f"special token {tok!r} must have id {i}")
    return json.dumps({"kind": "wordpiece", "tokenizer": json.loads(hf.to_str())})


def load_tokenizer(text: str) -> tuple[str, Tokenizer]:
    """(kind, HF tokenizer) of a JSON written by `train_tokenizer`."""
    data = json.loads(text)
    kind = data.get("kind")
    if kind in ("word", "bpe"):
        return kind, TextTokenizer.from_json(text).hf
    if kind == "wordpiece":
        return kind, Tokenizer.from_str(json.dumps(data["tokenizer"]))
    raise ConfigError("tokenizer", f"kind {kind!r} cannot tag words (known: {', '.join(TOKENIZER_KINDS)})")


def char_vocab(sentences: Iterable[Sequence[str]], min_frequency: int = 1) -> list[str]:
    """Characters of the training words, most frequent first (ties by character): ids 0 pad, 1 unk."""
    counts: Counter[str] = Counter()
    for words in sentences:
        for w in words:
            counts.update(w[:MAX_WORD_CHARS])
    return char_vocab_from_counts(counts, min_frequency)


def char_vocab_from_counts(counts: Counter, min_frequency: int = 1) -> list[str]:
    ranked = sorted((c for c, n in counts.items() if n >= min_frequency), key=lambda c: (-counts[c], c))
    return ["<pad>", "<unk>", *ranked]


def label_set(types: Sequence[str], scheme: str) -> list[str]:
    """O plus every prefix of `scheme` for every entity type: the labels the model predicts."""
    return ["O"] + [f"{p}-{t}" if t else p for t in sorted(set(types)) for p in PREFIXES[scheme]]


class SpanReader:
    """Chunks of a tag-id sequence exactly as `conll_chunks` finds them (the conlleval reading, ill-formed
    sequences included), from two tables over label pairs built with `conll_chunks` itself: whether a
    tag starts a chunk after the previous one, and whether it closes the chunk that was open."""

    def __init__(self, labels: Sequence[str]):
        k = len(labels)
        self.types = [split_tag(label)[1] for label in labels]
        outside = k  # the "previous tag" of a sentence's first word
        self.starts = [[False] * k for _ in range(k + 1)]
        self.closes = [[False] * k for _ in range(k + 1)]
        for cur, label in enumerate(labels):
            self.starts[outside][cur] = bool(conll_chunks([label]))
            for prev, before in enumerate(labels):
                chunks = conll_chunks([before, label])
                self.starts[prev][cur] = any(s == 1 for _, s, _ in chunks)
                self.closes[prev][cur] = any(e == 1 for _, _, e in chunks)
        self.outside = outside

    def spans(self, ids: Sequence[int]) -> list[tuple[str, int, int]]:
        out, open_at, prev = [], -1, self.outside
        starts, closes = self.starts, self.closes
        for i, cur in enumerate(ids):
            if open_at >= 0 and closes[prev][cur]:
                out.append((self.types[ids[open_at]], open_at, i))
                open_at = -1
            if starts[prev][cur]:
                open_at = i
            prev = cur
        if open_at >= 0:
            out.append((self.types[ids[open_at]], open_at, len(ids)))
        return out


# ---------------------------------------------------------------- words -> ids

@dataclass
class EncodedWords:
    """Sentences as indices into a table of distinct words, plus per-distinct-word features."""

    lengths: np.ndarray          # [N] words per sentence
    offsets: np.ndarray          # [N + 1] start of each sentence in `types`
    types: np.ndarray            # [total words] index of each word in the distinct-word table
    type_ids: np.ndarray         # [W] word-vocabulary id of each distinct word (word kind)
    type_case: np.ndarray        # [W] case class
    type_chars: RaggedArray      # [W] character ids
    type_pieces: RaggedArray | None  # [W] subword ids (subword kinds)


class TaggingFeaturizer:
    """Lists of words -> the arrays a `SequenceTagger` reads. Built from checkpoint values only."""

    def __init__(self, tokenizer: str, chars: Sequence[str], zero_digits: bool = True):
        self.kind, self.hf = load_tokenizer(tokenizer)
        self.subword = self.kind != "word"
        self.vocab = self.hf.get_vocab()
        self.normalizer = self.hf.normalizer
        self.zero_digits = zero_digits
        self.chars = list(chars)
        self.char_index = {c: i for i, c in enumerate(self.chars)}
        if self.char_index.get("<pad>") != 0 or self.char_index.get("<unk>") != 1:
            raise ConfigError("chars", "the character list must start with <pad>, <unk>")
        self._cache: dict[str, tuple] = {}

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def word_id(self, word: str) -> int:
        w = normalize_word(word, self.zero_digits)
        if self.normalizer is not None:
            w = self.normalizer.normalize_str(w)
        return self.vocab.get(w, UNK_ID)

    def _describe(self, words: list[str]) -> list[tuple]:
        """(word id, case class, char ids, piece ids) of each word, from a cache of words seen before."""
        cache = self._cache
        missing = [w for w in dict.fromkeys(words) if w not in cache]
        if missing:
            if len(cache) + len(missing) > CACHE_WORDS:
                cache.clear()
            ci = self.char_index
            pieces = [None] * len(missing)
            if self.subword:
                encs = self.hf.encode_batch([[normalize_word(w, self.zero_digits)] for w in missing],
                                            is_pretokenized=True, add_special_tokens=False)
                pieces = [e.ids or [UNK_ID] for e in encs]  # a word always has >= 1 piece
            for w, p in zip(missing, pieces):
                cache[w] = (0 if self.subword else self.word_id(w), case_class(w),
                            [ci.get(c, 1) for c in w[:MAX_WORD_CHARS]], p)
        return [cache[w] for w in words]

    def encode(self, sentences: Sequence[Sequence[str]]) -> EncodedWords:
        index: dict[str, int] = {}
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        types = np.fromiter((index.setdefault(w, len(index)) for s in sentences for w in s), dtype=np.int64,
                            count=int(offsets[-1]))
        info = self._describe(list(index))
        type_ids = np.fromiter((d[0] for d in info), dtype=np.int64, count=len(info))
        type_case = np.fromiter((d[1] for d in info), dtype=np.int64, count=len(info))
        type_chars = RaggedArray([d[2] for d in info])
        pieces = RaggedArray([d[3] for d in info]) if self.subword else None
        return EncodedWords(lengths, offsets, types, type_ids, type_case, type_chars, pieces)

    def collate(self, enc: EncodedWords, rows: Sequence[int], tags: RaggedArray | None = None) -> dict:
        """A batch of sentences `rows` (each >= 1 word): a dict of tensors, `lengths` [B] in words.

        Keys: word_ids or (input_ids, piece_lengths, first_piece, piece_word) for subwords, case_ids,
        char_ids [U, L] + char_lengths [U] for the U distinct words of the batch and word_chars [B, T]
        (each word's row in them), and tags [B, T] when `tags` is given. Padding is 0 everywhere."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = enc.lengths[rows].astype(np.int64, copy=False)
        width = max(int(lengths.max(initial=0)), 1)
        cols = np.arange(width)
        valid = cols[None, :] < lengths[:, None]
        flat_pos = np.where(valid, enc.offsets[rows][:, None] + cols[None, :], 0)
        # int64 whatever the store's dtype (out of core: uint32 types, uint8 tags): torch reads uint8 as a mask
        word_types = np.where(valid, enc.types[flat_pos], 0).astype(np.int64, copy=False) if enc.types.size \
            else np.zeros_like(flat_pos)
        char_ids, char_lengths, word_chars = distinct_spellings(word_types, valid, enc.type_chars)
        batch = {
            "lengths": torch.from_numpy(lengths),
            "case_ids": torch.from_numpy(np.where(valid, enc.type_case[word_types], 0)),
            "char_ids": torch.from_numpy(char_ids),
            "char_lengths": torch.from_numpy(np.maximum(char_lengths, 1)),
            "word_chars": torch.from_numpy(word_chars),
        }
        if self.subword:
            batch.update(self._collate_pieces(enc, word_types, valid))
        else:
            batch["word_ids"] = torch.from_numpy(np.where(valid, enc.type_ids[word_types], PAD_ID))
        if tags is not None:
            batch["tags"] = torch.from_numpy(np.where(valid, tags.flat[flat_pos] if tags.flat.size else 0, 0)
                                             .astype(np.int64, copy=False))
        return batch

    @staticmethod
    def _collate_pieces(enc: EncodedWords, word_types: np.ndarray, valid: np.ndarray) -> dict:
        """Subword ids of each sentence (its words' pieces in order), where each word's first piece is,
        and which word each piece belongs to -- all with numpy, no loop over sentences."""
        pieces = enc.type_pieces
        counts = np.where(valid, pieces.lengths[word_types], 0)           # [B, T] pieces per word
        piece_lengths = counts.sum(1)
        first = np.cumsum(counts, axis=1) - counts                        # [B, T] first piece of each word
        b_idx, t_idx = np.nonzero(valid)
        c = counts[b_idx, t_idx]
        total = int(c.sum())
        starts = np.repeat(np.cumsum(c) - c, c)
        within = np.arange(total) - starts
        src = np.repeat(pieces.offsets[word_types[b_idx, t_idx]], c) + within
        rows = np.repeat(b_idx, c)
        cols = np.repeat(first[b_idx, t_idx], c) + within
        width = max(int(piece_lengths.max(initial=0)), 1)
        input_ids = np.zeros((valid.shape[0], width), dtype=np.int64)
        piece_word = np.zeros((valid.shape[0], width), dtype=np.int64)
        input_ids[rows, cols] = pieces.flat[src]
        piece_word[rows, cols] = np.repeat(t_idx, c)
        return {"input_ids": torch.from_numpy(input_ids), "piece_lengths": torch.from_numpy(piece_lengths),
                "first_piece": torch.from_numpy(np.where(valid, first, 0)), "piece_word": torch.from_numpy(piece_word)}


# ---------------------------------------------------------------- the data module

class TaggingDataModule(TextDataModule):
    """Tagged splits from local files (`train`, `validation`, `test`: column files or JSONL) or `hub.name`.

    `scheme` is the scheme the files are written in (IOB1, IOB2, BIOES, or auto to detect it from the
    training file); tags are converted on read to `train_scheme`, the scheme the model learns and
    predicts, and written back in `scheme` (the predictor's default). Without a validation split,
    `val_fraction` of the training sentences are held out (seeded). Sentences without tokens (JSONL)
    are skipped. `max_length`: sentences with more words are an error (none by default: a recurrent
    tagger reads sentences of any length).
    `out_of_core` (auto | true | false): the training file is streamed, never held whole (passes for the tag
    scheme, the vocabulary and the characters, then one that encodes it in chunks to `<run>/cache`,
    nlpseq.data.example_store); batches are identical to the in-memory path. Memory then grows with the
    distinct words of the corpus, not with its size. auto: a local training file over 256 MB.
    """

    def __init__(self, train: str | None = None, validation: str | None = None, test: str | None = None,
                 format: str = "auto", token_column: int = 0, tag_column: int = -1, separator: str = "auto",
                 docstart: bool = True, scheme: str = "IOB2", train_scheme: str = "BIOES",
                 tokens_key: str = "tokens", tags_key: str = "tags", hub: dict | None = None,
                 tokenizer: dict | None = None, zero_digits: bool = True, char_min_frequency: int = 1,
                 max_length: int | None = None, val_fraction: float = 0.1, batch_size: int = 32,
                 eval_batch_size: int = 128, max_tokens: int | None = None, num_workers: int = 0,
                 bucket_pool: int = 50, seed: int = 0, out_of_core: str | bool = "auto",
                 pin_memory: bool = False):
        super().__init__(batch_size, eval_batch_size, max_tokens, num_workers, bucket_pool, seed, pin_memory)
        self.paths = {"train": train, "validation": validation, "test": test}
        self._set_hub(hub, extra=("tokens_column", "tags_column"))
        self._set_out_of_core(out_of_core, not self.hub.get("name"), HUB_NOT_STREAMED)
        self.reader = {"format": check_choice("data.format", format, FORMATS),
                       "token_column": check_int("data.token_column", token_column),
                       "tag_column": check_int("data.tag_column", tag_column),
                       "separator": check_choice("data.separator", separator, SEPARATORS),
                       "docstart": check_bool("data.docstart", docstart),
                       "tokens_key": tokens_key, "tags_key": tags_key}
        # case-insensitive (iob2 = IOB2); stored in the canonical spelling
        self.scheme = check_choice("data.scheme", canonical_scheme(scheme), INPUT_SCHEMES)
        self.train_scheme = check_choice("data.train_scheme", canonical_scheme(train_scheme), SCHEMES)
        self.tokenizer_cfg = dict(tokenizer or {"kind": "word"})
        self.zero_digits = check_bool("data.zero_digits", zero_digits)
        self.char_min_frequency = check_int("data.char_min_frequency", char_min_frequency, minimum=1)
        if max_length is not None:
            check_int("data.max_length", max_length, minimum=1)
        self.max_length = max_length
        self.val_fraction = check_float("data.val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if not self.hub.get("name") and not train:
            raise ConfigError("data.train", "no training data: set data.train to a file or data.hub.name to a hub dataset")
        self.raw: dict = {}
        self.vocab: dict | None = None
        self.featurizer: TaggingFeaturizer | None = None
        self.data_scheme = None if self.scheme == "auto" else self.scheme

    # ---- reading
    def _where(self, split: str) -> str:
        return str(self.paths.get(split) or f"hub:{self.hub.get('name')}/{split}")

    def _read(self, split: str):
        if self.hub.get("name"):
            hub_splits = {"train": "train", "validation": "validation", "test": "test", **(self.hub.get("splits") or {})}
            if not hub_splits.get(split):
                return None
            return load_hub_tagged(self.hub["name"], hub_splits[split], self.hub.get("subset"),
                                   self.hub.get("tokens_column", "tokens"), self.hub.get("tags_column", "ner_tags"),
                                   self.scheme)
        if not self.paths[split]:
            return None
        r = self.reader
        return read_tagged(self.paths[split], r["format"], r["token_column"], r["tag_column"], r["separator"],
                           self.scheme, r["docstart"], r["tokens_key"], r["tags_key"])

    def prepare(self, run_dir=None) -> None:
        self.cache_dir = Path(run_dir) / "cache" if run_dir is not None else None
        super().prepare(run_dir)

    def _use_out_of_core(self) -> bool:
        if self.out_of_core != "auto":
            return self.out_of_core
        return (not self.hub.get("name") and bool(self.paths["train"])
                and resolve(self.paths["train"]).stat().st_size > example_store.AUTO_BYTES)

    def _train_sentences(self, heldout: list | None = None) -> Iterator[tuple[int, list[str], list[str]]]:
        """(line, tokens, tags as written) of the training file, streamed: sentences without tokens skipped, the
        length limit checked; sentences held out for validation go to `heldout` instead."""
        r, where = self.reader, self._where("train")
        i = 0
        for line, tokens, tags in iter_tagged(self.paths["train"], r["format"], r["token_column"], r["tag_column"],
                                              r["separator"], self.scheme, r["docstart"], r["tokens_key"], r["tags_key"]):
            if not tokens:
                continue
            if self.max_length is not None and len(tokens) > self.max_length:
                raise DataError(f"sentence has {len(tokens)} tokens, more than data.max_length={self.max_length}",
                                where, line)
            if self._heldout is not None and self._heldout[i]:
                if heldout is not None:
                    heldout.append((line, tokens, tags))
            else:
                yield line, tokens, tags
            i += 1

    def _read_out_of_core(self, train_only_for_vocab: bool) -> None:
        """Validation and test are read whole (span F1 needs them); the training file is streamed."""
        started = time.perf_counter()
        self.raw = self._read_splits(("validation", "test"))
        where = self._where("train")
        if self.data_scheme is None:
            self.data_scheme = detect_scheme(tags for _, _, tags in self._train_sentences())
            log.info("tag scheme of the data: %s (detected)", self.data_scheme)
        for d in self.raw.values():
            d["tags"] = convert_all(d["tags"], self.data_scheme, self.train_scheme)
        if "validation" not in self.raw:
            n = sum(1 for _ in self._train_sentences())
            if not n:
                raise DataError("no sentence with tokens", where)
            n_val = max(1, int(round(n * self.val_fraction)))
            if n - n_val < 1:
                raise DataError(f"too few training sentences ({n}) to hold out a validation split", where)
            self._heldout = example_store.heldout_mask(n, self.val_fraction, self.seed)
            held: list = []
            for _ in self._train_sentences(held):
                pass
            step = 0 if detect_format(self.paths["train"], self.reader["format"]) == "jsonl" else 1
            self.raw["validation"] = {
                "tokens": [t for _, t, _ in held], "line": [line for line, _, _ in held], "step": step, "where": where,
                "tags": convert_all([g for _, _, g in held], self.data_scheme, self.train_scheme)}
            log.info("no validation split given: held out %d of %d training sentences", n_val, n)
        if train_only_for_vocab:
            self.vocab = self._build_vocab(lambda: ((t, g) for _, t, g in self._train_sentences()))
            log.info("vocabulary: streaming passes in %.1f s", time.perf_counter() - started)
        self.featurizer = TaggingFeaturizer(self.vocab["tokenizer"], self.vocab["chars"], self.zero_digits)
        log.info("out of core: the training file is streamed, its ids cached in %s", self.cache_dir or "a temporary folder")

    def _read_splits(self, names: Sequence[str]) -> dict:
        """The named splits read whole: {tokens, tags (as written), line, step, where} each."""
        splits = {}
        for split in names:
            ds = self._read(split)
            if ds is None:
                continue
            where = self._where(split)
            # lists: datasets >= 4 returns a lazy Column, which the hold-out below would not index
            tokens, tags, lines = list(ds["tokens"]), list(ds["tags"]), list(ds["line"])
            keep = [i for i, t in enumerate(tokens) if t]  # an empty JSONL sentence teaches nothing
            if len(keep) < len(tokens):
                log.info("%s: skipped %d sentence(s) without tokens", where, len(tokens) - len(keep))
                tokens, tags, lines = [tokens[i] for i in keep], [tags[i] for i in keep], [lines[i] for i in keep]
            if not tokens:
                raise DataError("no sentence with tokens", where)
            # token i of a sentence is on line `line + step * i` (column files) or on `line` (JSONL, hub)
            step = 0 if self.hub.get("name") or detect_format(self.paths[split], self.reader["format"]) == "jsonl" else 1
            if self.max_length is not None:
                for toks, line in zip(tokens, lines):
                    if len(toks) > self.max_length:
                        raise DataError(f"sentence has {len(toks)} tokens, more than data.max_length={self.max_length}",
                                        where, line)
            splits[split] = {"tokens": tokens, "tags": tags, "line": lines, "step": step, "where": where}
        return splits

    def read_splits(self, train_only_for_vocab: bool) -> None:
        if self._use_out_of_core():
            return self._read_out_of_core(train_only_for_vocab)
        splits = self._read_splits(SPLITS)
        if self.data_scheme is None:
            self.data_scheme = detect_scheme(splits["train"]["tags"])
            log.info("tag scheme of the data: %s (detected)", self.data_scheme)
        for split, d in splits.items():
            d["tags"] = convert_all(d["tags"], self.data_scheme, self.train_scheme)
        if "validation" not in splits:  # hold out part of train, reproducibly
            tr = splits["train"]
            n = len(tr["tokens"])
            n_val = max(1, int(round(n * self.val_fraction)))
            if n - n_val < 1:
                raise DataError(f"too few training sentences ({n}) to hold out a validation split", self._where("train"))
            perm = np.random.default_rng(self.seed).permutation(n)
            pick = {"validation": sorted(perm[:n_val]), "train": sorted(perm[n_val:])}
            splits = {**splits, **{s: {k: ([v[i] for i in idx] if isinstance(v, list) else v) for k, v in tr.items()}
                                   for s, idx in pick.items()}}
            log.info("no validation split given: held out %d of %d training sentences", n_val, n)
        self.raw = splits
        if train_only_for_vocab:
            tr = splits["train"]
            self.vocab = self._build_vocab(lambda: zip(tr["tokens"], tr["tags"]))
        self.featurizer = TaggingFeaturizer(self.vocab["tokenizer"], self.vocab["chars"], self.zero_digits)

    def _build_vocab(self, sentences: Callable[[], Iterable[tuple[list[str], list[str]]]]) -> dict:
        """Tokenizer, labels and characters from the training (tokens, tags) that a `sentences()` call yields:
        one pass, which counts the distinct words and tags (C-speed Counter updates) and, for subword
        tokenizers, feeds the tokenizer's trainer on the way; everything per word (digit folding, the
        tokenizer's normalisation, characters) is then done once per distinct word."""
        cfg = dict(self.tokenizer_cfg)
        word_kind = cfg.get("kind", "word") == "word"
        raw_words, tag_counts = Counter(), Counter()

        def counted() -> Iterator[list[str]]:
            for s, tags in sentences():
                raw_words.update(s)
                tag_counts.update(tags)
                yield s

        try:
            if word_kind:
                for _ in counted():
                    pass
                folded = Counter()
                for w, n in raw_words.items():
                    folded[normalize_word(w, self.zero_digits)] += n
                tokenizer = train_tokenizer(None, word_counts=folded, **cfg)
            else:
                tokenizer = train_tokenizer(([normalize_word(w, self.zero_digits) for w in s] for s in counted()),
                                            **cfg)
        except TypeError as e:
            raise ConfigError("data.tokenizer", str(e)) from None
        norm = load_tokenizer(tokenizer)[1].normalizer
        types = {split_tag(t)[1] for t in tag_counts if t != "O"}
        chars, words = Counter(), Counter()
        for w, n in raw_words.items():
            for c in w[:MAX_WORD_CHARS]:
                chars[c] += n
            if word_kind:
                normed = normalize_word(w, self.zero_digits)
                words[norm.normalize_str(normed) if norm is not None else normed] += n
        types = sorted(types)
        if not types:
            raise DataError("the training data has no entities (every tag is O)", self._where("train"))
        rare_from = None
        if word_kind:  # vocabulary ids are ordered by count: the words seen once come last
            vocab = load_tokenizer(tokenizer)[1].get_vocab()
            seen_once = [vocab[w] for w, c in words.items() if c == 1 and w in vocab]
            rare_from = min(seen_once) if seen_once else len(vocab)
        vocab = {"tokenizer": tokenizer, "labels": label_set(types, self.train_scheme),
                 "chars": char_vocab_from_counts(chars, self.char_min_frequency), "rare_from": rare_from,
                 "data_scheme": self.data_scheme}
        log.info("vocabulary: %d %s entries, %d characters, labels: %s",
                 load_tokenizer(tokenizer)[1].get_vocab_size(), cfg.get("kind", "word"), len(vocab["chars"]),
                 vocab["labels"])
        return vocab

    def vocab_settings(self) -> dict:
        return {"tokenizer": self.tokenizer_cfg, "train": str(self.paths["train"]), "hub": self.hub,
                "reader": self.reader, "scheme": self.scheme, "train_scheme": self.train_scheme,
                "zero_digits": self.zero_digits, "char_min_frequency": self.char_min_frequency}

    def dump_vocab(self) -> dict:
        return dict(self.vocab)

    def load_vocab(self, vocab: dict) -> None:
        self.vocab = dict(vocab)
        self.data_scheme = vocab["data_scheme"]

    @property
    def labels(self) -> list[str]:
        return list(self.vocab["labels"])

    def model_inputs(self) -> dict:
        v = self.vocab
        return {"tokenizer": v["tokenizer"], "labels": list(v["labels"]), "chars": list(v["chars"]),
                "scheme": self.train_scheme, "data_scheme": v["data_scheme"],
                "text": {"zero_digits": self.zero_digits, "rare_from": v["rare_from"], "max_length": self.max_length},
                "reader": {"token_column": self.reader["token_column"], "separator": self.reader["separator"],
                           "docstart": self.reader["docstart"]}}

    # ---- encoding, once
    def _tag_ids(self, index: dict, toks: list[str], tags: list[str], where, line: int, step: int) -> list[int]:
        ids = [index.get(t, -1) for t in tags]
        if -1 in ids:
            i = ids.index(-1)
            raise DataError(f"entity type {split_tag(tags[i])[1]!r} (token {toks[i]!r}) was never seen in "
                            f"training (known: {', '.join(sorted({split_tag(x)[1] for x in index if x != 'O'}))})",
                            where, line + step * i)
        return ids

    def encode_splits(self) -> None:
        index = {label: i for i, label in enumerate(self.vocab["labels"])}
        if "train" not in self.raw:  # out of core
            self.splits["train"] = self._encode_train_store(index)
        for split, d in self.raw.items():
            tag_ids = [self._tag_ids(index, toks, tags, d["where"], line, d["step"])
                       for toks, tags, line in zip(d["tokens"], d["tags"], d["line"])]
            enc = self.featurizer.encode(d["tokens"])
            self.splits[split] = _tagging_dataset(self.featurizer, enc, RaggedArray(tag_ids))

    def _encode_train_store(self, index: dict) -> EncodedDataset:
        """The training file encoded to `<run>/cache/train.examples.*` (per sentence: its words as indices into
        the table of distinct words, and its tag ids) and `train.types.*` (that table's word ids, case classes,
        characters and pieces, as `TaggingFeaturizer.encode` makes them), reused while their key matches."""
        if self.cache_dir is None:  # no run directory (tests, benchmarks): a folder removed with the module
            self._tmp = tempfile.TemporaryDirectory(prefix="nlpseq-examples-")
            self.cache_dir = Path(self._tmp.name)
        v = self.vocab
        key = {"version": example_store.VERSION, "task": "tagging", "files": example_store.file_key(self.paths["train"]),
               "reader": self.reader, "schemes": [self.scheme, self.data_scheme, self.train_scheme],
               "max_length": self.max_length, "zero_digits": self.zero_digits,
               "heldout": None if self._heldout is None else [self.val_fraction, self.seed],
               "vocab": hashlib.sha256(json.dumps([v["tokenizer"], v["chars"], v["labels"]]).encode("utf-8")).hexdigest()}
        feat, where, step = self.featurizer, self._where("train"), 0 if detect_format(
            self.paths["train"], self.reader["format"]) == "jsonl" else 1
        types_fields = ({"chars": example_store.id_dtype(len(v["chars"]))}
                        | ({"pieces": example_store.id_dtype(feat.vocab_size)} if feat.subword else {}))
        tag_dtype = example_store.id_dtype(len(v["labels"]))

        def write_types(words: list[str]) -> Callable:
            def write(writer: example_store.StoreWriter) -> None:
                for chunk in example_store.batched(words, 65536):
                    info = feat._describe(chunk)
                    ragged = {"chars": example_store.flatten([d[2] for d in info], types_fields["chars"])}
                    if feat.subword:
                        ragged["pieces"] = example_store.flatten([d[3] for d in info], types_fields["pieces"])
                    writer.add(ragged, {"ids": np.array([d[0] for d in info], dtype=np.int64),
                                        "case": np.array([d[1] for d in info], dtype=np.int64)})
            return write

        def write(writer: example_store.StoreWriter) -> dict:
            word_index: dict[str, int] = {}  # distinct word -> its row in the types table, in order of first use
            for chunk in example_store.batched(self._train_sentences()):
                tag_ids = [self._tag_ids(index, toks, convert(tags, self.data_scheme, self.train_scheme), where, line,
                                         step) for line, toks, tags in chunk]
                lengths = np.fromiter((len(t) for _, t, _ in chunk), dtype=np.int64, count=len(chunk))
                types = np.fromiter((word_index.setdefault(w, len(word_index)) for _, toks, _ in chunk for w in toks),
                                    dtype=np.uint32, count=int(lengths.sum()))
                writer.add({"words": (types, lengths), "tags": example_store.flatten(tag_ids, tag_dtype)}, {})
            if not writer.n:
                raise DataError("no sentence with tokens", where)
            # the table is written before this store's manifest: a store that opens has its table
            example_store.build_store(self.cache_dir, "train.types", key, types_fields, {"ids": np.int64, "case": np.int64},
                                      write_types(list(word_index)))
            return {"distinct_words": len(word_index)}

        if not is_worker_process() and example_store.open_store(self.cache_dir, "train.types", key) is None:
            # no table (a run stopped between the two stores): encode both again; workers wait for the first process
            (self.cache_dir / "train.examples.json").unlink(missing_ok=True)
        ex = example_store.build_store(self.cache_dir, "train.examples", key, {"words": np.uint32, "tags": tag_dtype},
                                       {}, write, wait=is_worker_process())
        table = example_store.open_store(self.cache_dir, "train.types", key)
        words = ex.ragged["words"]
        enc = EncodedWords(words.lengths, words.offsets, words.flat, table.fixed["ids"], table.fixed["case"],
                           table.ragged["chars"], table.ragged.get("pieces"))
        return _tagging_dataset(feat, enc, ex.ragged["tags"])

    def bench_inputs(self, n: int) -> list[list[str]]:
        """Inputs for `predict()` timings (`python -m nlpseq.bench task=ner`): n validation sentences as tokens."""
        return repeat_to(self.raw["validation"]["tokens"], n)


def _tagging_dataset(featurizer: TaggingFeaturizer, enc: EncodedWords, tags: RaggedArray) -> EncodedDataset:
    def collate(indices: list[int]) -> dict:
        return featurizer.collate(enc, indices, tags)

    return EncodedDataset(len(enc.lengths), enc.lengths, collate)
