"""NER inference: raw or pre-tokenized text -> tokens, tags and entity spans with character offsets.

Raw text is split by `nlpseq.data.tagging.tokenize_text` (a documented CoNLL-like regex that keeps
character offsets); a list of tokens is used as given (its text is the tokens joined by spaces).
Confidence: a word's confidence is the probability of its predicted tag (CRF marginal from
forward-backward, or the softmax probability); an entity's confidence is the *minimum* over its words.

`predict_file` reads either plain text (one text per line -> one JSON object per line) or a column
file (CoNLL style: the same lines come back with a predicted-tag column appended, so conlleval or
seqeval can score it).

Odd and big inputs: empty or whitespace-only text gives a prediction with no tokens; a string that is
not valid Unicode (a lone surrogate) is an NlpseqError. A sentence longer than MAX_WORDS words (or
the model's max_length) is tagged in pieces of at most that many words, cut after the last
sentence-final token (. ! ? ...) inside the limit where there is one, so memory stays bounded on a
100,000-character text; the pieces' tags are joined back into one prediction. Batches hold at most
`batch_size` sentences and MAX_BATCH_WORDS words.

Ensembles: `nlpseq.load([a, b, ...])` tags with several taggers of the same labels (e.g. one recipe trained
with different seeds). CRF members: their emission scores and their transition, start and end scores are
averaged into one CRF (a product of the members' distributions, renormalised), which Viterbi decodes and whose
marginals give the confidences. Softmax members: their per-word probabilities are averaged. Each member reads
the words with its own vocabulary and characters.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence, TextIO

import torch

from nlpseq.data.conll import DOCSTART, SEPARATORS, iter_column_sentences, split_columns
from nlpseq.data.tagging import SpanReader, tokenize_text, tokens_with_offsets
from nlpseq.errors import CheckpointError, DataError, NlpseqError, check_choice, check_int
from nlpseq.metrics.schemes import SCHEMES, canonical_scheme, convert, from_spans
from nlpseq.predictors.base import Predictor, _chunks, batches_by_length, check_unicode, json_line

FILE_FORMATS = ("auto", "text", "conll")
_SPACE = re.compile(r"\s")
MAX_WORDS = 1000          # longer sentences are tagged in pieces of at most this many words
MAX_BATCH_WORDS = 16_384  # words (padded) per batch, on top of batch_size
MAX_NBEST_CELLS = 10_000_000  # n x words x labels: the n-best search keeps that many back-pointers
SENTENCE_END = frozenset(".!?…。！？؟۔।")


def _valid_tokens(tokens: list) -> bool:
    """Whether every token is a non-empty string without whitespace or lone surrogates, in one pass over the
    joined sentence (C loops) instead of four Python calls per token."""
    try:
        joined = "\x00".join(tokens)  # TypeError for a token that is not a string
        joined.encode("utf-8")        # UnicodeEncodeError for a lone surrogate
    except (TypeError, UnicodeEncodeError):
        return False
    return all(tokens) and _SPACE.search(joined) is None


def _check_tokens(tokens: list, i: int) -> None:
    """The one-line error naming sentence i's first bad token (a check per token: for when `_valid_tokens` fails)."""
    for j, tok in enumerate(tokens):
        if not isinstance(tok, str) or not tok or _SPACE.search(tok):
            raise NlpseqError(f"predict: sentence {i}, token {j}: expected a non-empty string without "
                              f"spaces, got {tok!r}"[:300])
        check_unicode(tok, f"sentence {i}, token {j}")


def _round6(conf: torch.Tensor) -> torch.Tensor:
    """Confidences rounded to 6 decimals in float64: a float32 times 1e6 is exact in float64, so each value equals
    Python's round(c, 6) (the same half-to-even choice, then the nearest double)."""
    return conf.float().double().mul_(1e6).round_().div_(1e6)


@dataclass
class Entity:
    type: str
    text: str                # text[start:end] of the input
    start: int               # character offsets into the input text (end exclusive)
    end: int
    token_start: int         # token indices (end exclusive)
    token_end: int
    confidence: float        # min over the entity's words of the probability of their tag


@dataclass
class NerPrediction:
    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]   # character span of each token in `text`
    tags: list[str]                  # one per token, in the requested scheme
    confidences: list[float]         # probability of each token's tag
    entities: list[Entity] = field(default_factory=list)


class NerPredictor(Predictor):
    task = "ner"

    @classmethod
    def ensemble(cls, models: Sequence[torch.nn.Module], paths: Sequence[str]) -> "NerPredictor":
        """Taggers that tag together; they must share their labels (in the same order), tag scheme and output
        kind (all CRF or all softmax)."""
        first = models[0]
        for model, path in zip(models[1:], paths[1:]):
            for what, a, b in (("labels", model.labels, first.labels), ("tag scheme", model.scheme, first.scheme),
                               ("output", "crf" if model.crf is not None else "softmax",
                                "crf" if first.crf is not None else "softmax")):
                if a != b:
                    raise CheckpointError(f"{path}: its {what} ({a}) does not match that of {paths[0]} ({b}); taggers "
                                          f"in an ensemble must share labels, scheme and output")
        return cls(models[0], models[1:])

    # ---------------------------------------------------------------- ensembles
    def _crf(self):
        """The CRF to decode with: the model's own, or for an ensemble the mean of the members' scores."""
        if len(self.members) == 1 or self.model.crf is None:
            return self.model.crf
        crf = copy.deepcopy(self.model.crf)
        with torch.no_grad():
            for name in ("transitions", "start", "end", "transition_penalty", "start_penalty", "end_penalty"):
                getattr(crf, name).copy_(torch.stack([getattr(m.crf, name) for m in self.members]).mean(0))
        return crf

    def _emissions(self, encoded: list, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Emission scores [B, T, K], mask [B, T] and lengths [B] of a batch: the model's, or for an ensemble the
        mean of its CRF members' emissions, or the log of its softmax members' mean probabilities."""
        device = self.device
        each = []
        for model, enc in zip(self.members, encoded):
            batch = model.featurizer.collate(enc, rows)
            lengths = batch["lengths"]
            batch = {k: (v if k == "lengths" else v.to(device)) for k, v in batch.items()}
            emissions, mask = model(batch)
            each.append(emissions)
        if len(each) == 1:
            return each[0], mask, lengths
        if self.model.crf is not None:
            return torch.stack(each).float().mean(0), mask, lengths
        log_probs = torch.stack([torch.log_softmax(e.float(), -1) for e in each])
        return torch.logsumexp(log_probs, 0) - math.log(len(each)), mask, lengths

    # ---------------------------------------------------------------- inputs
    def _inputs(self, texts, pretokenized: bool | None) -> tuple[list[tuple[str, list[str], list]], bool]:
        """[(text, tokens, offsets)] and whether one input was given."""
        if isinstance(texts, str):
            if pretokenized:
                raise NlpseqError("predict: pretokenized=True needs a list of tokens, got a string")
            items, single = [texts], True
        else:
            if not isinstance(texts, (list, tuple)):
                try:
                    texts = list(texts)
                except TypeError:
                    raise NlpseqError(f"predict: expected a string, a list of strings or a list of token lists, "
                                      f"got {type(texts).__name__}") from None
            nested = [isinstance(t, (list, tuple)) for t in texts]
            if pretokenized and texts and not any(nested):
                items, single = [list(texts)], True   # one sentence given as its tokens
            elif texts and all(nested):
                items, single = [list(t) for t in texts], False
            elif any(nested):
                raise NlpseqError("predict: mix of strings and token lists; pass texts or token lists, not both")
            else:
                if pretokenized is True:
                    raise NlpseqError("predict: pretokenized=True needs token lists")
                items, single = list(texts), False
                for i, t in enumerate(items):
                    if not isinstance(t, str):
                        raise NlpseqError(f"predict: text {i} is a {type(t).__name__}, expected a string "
                                          f"(or pass token lists)")
        out = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                check_unicode(item, f"text {i}")
                pairs = tokenize_text(item)
                out.append((item, [t for t, _ in pairs], [o for _, o in pairs]))
                continue
            if not _valid_tokens(item):
                _check_tokens(item, i)
            text, offsets = tokens_with_offsets(item)
            out.append((text, list(item), offsets))
        return out, single

    # ---------------------------------------------------------------- core
    def _span_reader(self) -> SpanReader:
        return self.model.span_reader

    @torch.inference_mode()
    def _tag(self, sentences: Sequence[Sequence[str]], batch_size: int) -> list[tuple[list[int], list[float]]]:
        """Tag ids (training scheme) and confidences (6 decimals) per sentence; empty sentences give empty lists.
        Long sentences are tagged in pieces (see the module doc) and joined back."""
        model = self.model
        limit = min(MAX_WORDS, model.text.max_length or MAX_WORDS)
        pieces = [(i, a, b) for i, s in enumerate(sentences) if len(s) for a, b in _pieces(s, limit)]
        tagged: list[tuple[list[int], list[float]]] = [([], []) for _ in pieces]
        if pieces:
            words = [sentences[i][a:b] for i, a, b in pieces]
            encoded = [m.featurizer.encode(words) for m in self.members]  # each member's own vocabulary
            crf = self._crf()
            for rows in batches_by_length(encoded[0].lengths.tolist(), batch_size, MAX_BATCH_WORDS):
                emissions, mask, lengths = self._emissions(encoded, rows)
                paths, conf = model.decode(emissions, mask, confidence=True, crf=crf)
                for r, n, p, c in zip(rows, lengths.tolist(), paths.tolist(), _round6(conf).tolist()):
                    tagged[r] = (p[:n], c[:n])
        results: list[tuple[list[int], list[float]]] = [([], []) for _ in sentences]
        for (i, _, _), (ids, conf) in zip(pieces, tagged):
            results[i][0].extend(ids)
            results[i][1].extend(conf)
        return results

    def predict(self, texts, batch_size: int = 64, pretokenized: bool | None = None, scheme: str | None = None):
        """Entities of each text: a `NerPrediction` per text (a single one for a single string or, with
        pretokenized=True, a single list of tokens). Accepts a string, a list of strings (raw text), or a
        list of token lists. Tags come in `scheme` (default: the scheme of the training data)."""
        check_int("batch_size", batch_size, minimum=1)
        scheme = check_choice("scheme", canonical_scheme(scheme or self.model.data_scheme), SCHEMES)
        items, single = self._inputs(texts, pretokenized)
        tagged = self._tag([tokens for _, tokens, _ in items], batch_size)
        labels, train_scheme, reader = self.model.labels, self.model.scheme, self._span_reader()
        results = []
        for (text, tokens, offsets), (ids, conf) in zip(items, tagged):
            spans = reader.spans(ids)
            entities = [Entity(type_, text[offsets[s][0]:offsets[e - 1][1]], offsets[s][0], offsets[e - 1][1], s, e,
                               min(conf[s:e]))
                        for type_, s, e in spans]
            out_tags = from_spans(spans, len(ids), scheme) if scheme != train_scheme else [labels[i] for i in ids]
            results.append(NerPrediction(text, tokens, [tuple(o) for o in offsets], out_tags,
                                         conf, entities))
        return results[0] if single else results

    @torch.inference_mode()
    def nbest(self, tokens: Sequence[str] | str, n: int = 3, scheme: str | None = None) -> list[tuple[list[str], float]]:
        """The n most probable taggings of one sentence (raw text or tokens): [(tags, probability)], best first."""
        check_int("n", n, minimum=1)
        scheme = check_choice("scheme", canonical_scheme(scheme or self.model.data_scheme), SCHEMES)
        if not isinstance(tokens, str):
            try:
                tokens = [list(tokens)]  # one sentence as its tokens
            except TypeError:
                raise NlpseqError(f"nbest: expected a string or a list of tokens, got {type(tokens).__name__}") from None
        (_, toks, _), = self._inputs(tokens, None)[0]
        if not toks:
            return [([], 1.0)]
        model = self.model
        k = len(model.labels)
        n = min(n, k ** min(len(toks), 20))  # no more taggings than there are (the rest would be -inf)
        if n * len(toks) * k > MAX_NBEST_CELLS:
            raise NlpseqError(f"nbest: the {n} best taggings of {len(toks)} tokens need more memory than allowed "
                              f"({MAX_NBEST_CELLS} back-pointers); ask for fewer or pass a shorter sentence")
        emissions, mask, _ = self._emissions([m.featurizer.encode([toks]) for m in self.members], [0])
        paths, probs = model.nbest(emissions, mask, n, crf=self._crf())
        out = []
        for rank, (path, p) in enumerate(zip(paths[0].tolist(), probs[0].tolist())):
            if p <= 0 and rank:  # impossible under the CRF's constraints (the best may underflow to 0)
                continue
            tags = [model.labels[i] for i in path[: len(toks)]]
            out.append((convert(tags, model.scheme, scheme) if scheme != model.scheme else tags, p))
        return out

    # ---------------------------------------------------------------- files
    def predict_file(self, lines: Iterable[str], out: TextIO, batch_size: int = 64, format: str = "auto",
                     scheme: str | None = None, token_column: int | None = None, separator: str | None = None,
                     source: str | None = None) -> int:
        """Text lines -> JSON lines; a column file -> the same lines plus a predicted-tag column.

        format: auto (a column file if there are -DOCSTART- lines, or if the first 200 non-blank lines
        all have the same number of columns, at least 2, and end in a tag; one text per line
        otherwise), text or conll (for column files without a tag column).
        token_column / separator default to the training data's settings. Returns the number of
        sentences written."""
        check_int("batch_size", batch_size, minimum=1)
        check_choice("format", format, FILE_FORMATS)
        scheme = check_choice("scheme", canonical_scheme(scheme or self.model.data_scheme), SCHEMES)
        separator = check_choice("separator", separator or self.model.reader.get("separator", "auto"), SEPARATORS)
        token_column = check_int("token_column", self.model.reader.get("token_column", 0)
                                 if token_column is None else token_column)
        # streamed: only the format probe (200 non-blank lines) and one block of sentences are held in memory
        stream = (line.rstrip("\r\n") for line in lines)
        head, nonblank = [], 0
        for line in stream:
            head.append(line)
            nonblank += bool(line.strip())
            if nonblank >= 200:
                break
        if format == "auto":
            format = "conll" if _looks_like_columns(head, separator) else "text"
        stream = itertools.chain(head, stream)
        if format == "text":
            n = 0
            for chunk in _chunks(stream, 4096):
                for result in self.predict(chunk, batch_size=batch_size, scheme=scheme):
                    out.write(json_line(result))
                    n += 1
            out.flush()
            return n
        return self._predict_columns(stream, out, batch_size, scheme, token_column, separator, source or "<input>")

    def _predict_columns(self, lines: Iterable[str], out: TextIO, batch_size: int, scheme: str, token_column: int,
                         separator: str, source: str, block: int = 2048) -> int:
        """Tag a column file `block` sentences at a time: the lines read so far are written (with their tags)
        whenever the reader has handed over `block` complete sentences."""
        docstart = self.model.reader.get("docstart", True)
        buffer: list[tuple[int, str]] = []

        def numbered() -> Iterator[tuple[int, str]]:
            for item in enumerate(lines, 1):
                buffer.append(item)
                yield item

        sentences = iter_column_sentences(numbered(), source, token_column, None, separator, docstart)
        n = 0
        while True:
            group = list(itertools.islice(sentences, block))
            # the reader stops right after the blank line that ends a block's last sentence: every buffered
            # line belongs to a sentence of this block, or is a blank or -DOCSTART- line
            self._write_columns(group, buffer, out, batch_size, scheme, separator, source)
            n += len(group)
            buffer.clear()
            if len(group) < block:
                break
        out.flush()
        return n

    def tag_tokens(self, sentences: Sequence[Sequence[str]], batch_size: int = 64,
                   scheme: str | None = None) -> list[list[str]]:
        """Tags (in `scheme`, default the training data's) of sentences given as token lists, each token used
        exactly as given (a column file's token may hold spaces); what `predict_file` writes to a column file
        and `python -m nlpseq.evaluate` scores."""
        check_int("batch_size", batch_size, minimum=1)
        scheme = check_choice("scheme", canonical_scheme(scheme or self.model.data_scheme), SCHEMES)
        labels, train_scheme, reader = self.model.labels, self.model.scheme, self._span_reader()
        return [from_spans(reader.spans(ids), len(ids), scheme) if scheme != train_scheme else [labels[i] for i in ids]
                for ids, _ in self._tag(sentences, batch_size)]

    def _write_columns(self, sentences: list, lines: list[tuple[int, str]], out: TextIO, batch_size: int,
                       scheme: str, separator: str, source: str) -> None:
        tagged = self.tag_tokens([tokens for _, tokens, _ in sentences], batch_size, scheme)
        predicted: dict[int, str] = {}  # line number -> tag
        for (start, tokens, _), tags in zip(sentences, tagged):
            for i, tag in enumerate(tags):
                predicted[start + i] = tag
        sep = "\t" if separator == "tab" else " "
        for lineno, line in lines:
            if not line.strip():
                out.write("\n")
                continue
            tag = predicted.get(lineno)
            if tag is None:  # a -DOCSTART- line: keep it well-formed for conlleval
                if split_columns(line, separator)[0] != DOCSTART:
                    raise DataError("line was not read as a token (internal error)", source, lineno)
                tag = "O"
            out.write(f"{line.rstrip()}{sep if separator != 'auto' else _separator_of(line)}{tag}\n")


def _pieces(tokens: Sequence[str], limit: int) -> list[tuple[int, int]]:
    """[start, end) pieces of at most `limit` tokens, each cut after the last sentence-final token inside
    the limit where there is one (otherwise at the limit)."""
    out, start, n = [], 0, len(tokens)
    while n - start > limit:
        cut = start + limit
        for i in range(start + limit - 1, start, -1):
            if tokens[i] in SENTENCE_END:
                cut = i + 1
                break
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out



def _separator_of(line: str) -> str:
    return "\t" if "\t" in line else " "


def _looks_like_columns(lines: list[str], separator: str, probe: int = 200) -> bool:
    """A column file has -DOCSTART- lines, or lines with one fixed number (>= 2) of columns whose last
    cell is always a tag (O, B-X, I-PER ...). Untagged column files need format=conll."""
    from nlpseq.metrics.schemes import tag_error

    counts, seen, tag_like = set(), 0, True
    for line in lines:
        if not line.strip():
            continue
        cells = split_columns(line, separator)
        if cells[0] == DOCSTART:
            return True
        counts.add(len(cells))
        tag_like = tag_like and tag_error(cells[-1], "BIOES") is None
        seen += 1
        if seen >= probe:
            break
    return len(counts) == 1 and min(counts) >= 2 and tag_like
