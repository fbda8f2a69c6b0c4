"""Text tokenizers over HF `tokenizers`: word, character and BPE; trained on the training split only.

A `TextTokenizer` is fully described by its JSON string (the HF tokenizer JSON plus our `kind`), which
is what a checkpoint stores, so a model reloads with exactly the vocabulary it was trained with.

Every tokenizer shares the same special tokens and ids (pad=0, unk=1, bos=2, eos=3) so models and
search code never have to look them up.
"""
from __future__ import annotations

import json
from collections import Counter
from operator import itemgetter
from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from nlpseq.errors import ConfigError, check_bool, check_choice, check_int

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
KINDS = ("word", "char", "bpe")
SPLITS = ("regex", "whitespace")


def _normalizer(lowercase: bool) -> normalizers.Normalizer:
    steps = [normalizers.NFC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def _pre_tokenizer(kind: str, split: str) -> pre_tokenizers.PreTokenizer:
    if kind == "char":
        # every character (spaces and newlines included) is a token
        return pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    if kind == "bpe":
        # SentencePiece-style: spaces become '▁' so decoding restores the exact text
        return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    if split == "whitespace":
        return pre_tokenizers.WhitespaceSplit()
    return pre_tokenizers.Whitespace()  # words and punctuation runs: \w+|[^\w\s]+


def _decoder(kind: str) -> decoders.Decoder | None:
    if kind == "char":
        return decoders.Fuse()
    if kind == "bpe":
        return decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return None  # word level: tokens joined by single spaces


def _count_words(texts: Iterable[str], norm, pre, kind: str, counts: Counter, chars: int = 4096) -> None:
    """Add each text's tokens to `counts`, normalising and pre-tokenizing ~`chars` characters of texts joined by
    '\\n' per call (one call per text costs more than the work for short texts). The same counts as text by
    text: NFC and lowercasing never act across a newline, the word pre-tokenizers drop it as whitespace, and
    the char one counts it once per join, taken off again."""
    batch, size = [], 0

    def flush() -> None:
        counts.update(map(itemgetter(0), pre.pre_tokenize_str(norm.normalize_str("\n".join(batch)))))
        if kind == "char" and len(batch) > 1:
            counts["\n"] -= len(batch) - 1
            if counts["\n"] <= 0:
                counts.pop("\n", None)

    for text in texts:
        batch.append(text)
        size += len(text) + 1
        if size >= chars:
            flush()
            batch, size = [], 0
    if batch:
        flush()


class TextTokenizer:
    """A trained tokenizer: text <-> ids, JSON round-trippable."""

    def __init__(self, hf: Tokenizer, kind: str):
        self.hf = hf
        self.kind = check_choice("kind", kind, KINDS)
        for i, tok in enumerate(SPECIALS):
            if hf.token_to_id(tok) != i:
                raise ConfigError("tokenizer", f"special token {tok!r} must have id {i}")

    # ---------------------------------------------------------------- building
    @classmethod
    def train(cls, texts: Iterable[str], kind: str = "word", vocab_size: int = 30000,
              min_frequency: int = 1, lowercase: bool = False, split: str = "regex",
              pretokenized: bool = False) -> "TextTokenizer":
        """Learn a vocabulary from `texts` (an iterable of strings, or of token lists if `pretokenized`).

        Word and character vocabularies are built here, sorted by (-count, token), so the same data
        always gives the same ids in every process (HF's trainers break frequency ties by hash order).
        """
        check_choice("kind", kind, KINDS)
        check_int("vocab_size", vocab_size, minimum=len(SPECIALS) + 1)
        check_int("min_frequency", min_frequency, minimum=1)
        check_bool("lowercase", lowercase)
        check_choice("split", split, SPLITS)
        norm = _normalizer(lowercase)
        pre = _pre_tokenizer(kind, split)
        if kind == "bpe":
            hf = Tokenizer(models.BPE(unk_token=UNK))
            hf.normalizer, hf.pre_tokenizer, hf.decoder = norm, pre, _decoder(kind)
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=list(SPECIALS), show_progress=False)
            if pretokenized:
                texts = (" ".join(t) for t in texts)
            hf.train_from_iterator(texts, trainer=trainer)
            return cls(hf, kind)
        counts: Counter[str] = Counter()
        if pretokenized:
            for text in texts:
                words = [norm.normalize_str(w) for w in text]
                if kind == "char":
                    words = [c for w in words for c in w]
                counts.update(words)
        else:
            _count_words(texts, norm, pre, kind, counts)
        return cls._from_counts(counts, kind, vocab_size, min_frequency, norm, pre)

    @classmethod
    def from_word_counts(cls, counts: Counter[str], vocab_size: int = 30000, min_frequency: int = 1,
                         lowercase: bool = False, split: str = "regex") -> "TextTokenizer":
        """A word vocabulary from pre-split words and their counts: the same tokenizer as `train(kind="word",
        pretokenized=True)` on texts with these word counts, at the cost of one normalisation per distinct
        word instead of one per word of the corpus."""
        check_int("vocab_size", vocab_size, minimum=len(SPECIALS) + 1)
        check_int("min_frequency", min_frequency, minimum=1)
        check_bool("lowercase", lowercase)
        check_choice("split", split, SPLITS)
        norm = _normalizer(lowercase)
        normalized: Counter[str] = Counter()
        for word, n in counts.items():
            normalized[norm.normalize_str(word)] += n
        return cls._from_counts(normalized, "word", vocab_size, min_frequency, norm, _pre_tokenizer("word", split))

    @classmethod
    def _from_counts(cls, counts: Counter[str], kind: str, vocab_size: int, min_frequency: int,
                     norm, pre) -> "TextTokenizer":
        """The word or character vocabulary of normalised token counts, ids sorted by (-count, token)."""
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted(((c, w) for w, c in counts.items() if c >= min_frequency), key=lambda cw: (-cw[0], cw[1]))
        vocab = {tok: i for i, tok in enumerate(SPECIALS)}
        for _, w in ranked[: vocab_size - len(SPECIALS)]:
            vocab[w] = len(vocab)
        hf = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        hf.normalizer, hf.pre_tokenizer = norm, pre
        dec = _decoder(kind)
        if dec is not None:
            hf.decoder = dec
        return cls(hf, kind)

    # ---------------------------------------------------------------- (de)serialisation
    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "tokenizer": json.loads(self.hf.to_str())})

    @classmethod
    def from_json(cls, text: str) -> "TextTokenizer":
        data = json.loads(text)
        return cls(Tokenizer.from_str(json.dumps(data["tokenizer"])), data["kind"])

    def save(self, path) -> None:
        from nlpseq.utils.io import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path) -> "TextTokenizer":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    # ---------------------------------------------------------------- use
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return self.encode_batch([text], add_bos, add_eos)[0]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets: a third less time, the same ids
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
        head, tail = [BOS_ID] if add_bos else [], [EOS_ID] if add_eos else []
        return [head + e.ids + tail for e in encodings]

    def encode_words(self, words_batch: Sequence[Sequence[str]]) -> list[list[int]]:
        """Pre-split words to ids, one id per word (word kind only: the NER alignment relies on it)."""
        if self.kind != "word":
            raise ConfigError("tokenizer.kind", "encode_words needs a word-level tokenizer")
        norm, vocab = self.hf.normalizer, self.hf.get_vocab()
        return [[vocab.get(norm.normalize_str(w), UNK_ID) for w in words] for words in words_batch]

    def tokenize_with_offsets(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """Tokens (as they appear in `text`) with character offsets, before vocabulary lookup."""
        enc = self.hf.encode(text, add_special_tokens=False)
        return [(text[s:e], (s, e)) for s, e in enc.offsets]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.decode_batch([ids], skip_special)[0]

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
        # word/char vocabularies hold the specials as plain entries, which HF's skip_special_tokens keeps
        n = len(SPECIALS)
        rows = [[i for i in ids if i >= n] if skip_special else list(ids) for ids in batch]
        return self.hf.decode_batch(rows, skip_special_tokens=skip_special)

    def id_to_token(self, i: int) -> str | None:
        return self.hf.id_to_token(i)


def build_tokenizer(texts: Iterable[str], kind: str = "word", vocab_size: int = 30000, min_frequency: int = 1,
                    lowercase: bool = False, split: str = "regex", pretokenized: bool = False) -> TextTokenizer:
    """Config-facing builder (the `tokenizer` config group); errors are named under `data.tokenizer`."""
    try:
        return TextTokenizer.train(texts, kind=kind, vocab_size=vocab_size, min_frequency=min_frequency,
                                   lowercase=lowercase, split=split, pretokenized=pretokenized)
    except ConfigError as e:
        raise e.under("data.tokenizer") from None
