"""Chunk (span) precision/recall/F1 exactly as conlleval.pl counts it, and a torchmetrics wrapper.

conlleval.pl (version 2004-01-26) finds chunk boundaries with two rule tables, startOfChunk and
endOfChunk, that look only at the previous and current (prefix, type). They read IOB1, IOB2 and IOE
tags and tolerate ill-formed sequences: "O I-PER" starts a chunk, "B-PER I-LOC" is two chunks, a lone
"E-PER" is a chunk. The 2004 script has no rules for S, so on BIOES tags it merges "S-PER S-PER" or
"E-PER B-PER" into one chunk. The default here (`iobes=True`) adds the rules of the widely used IOBES
variant of the script, which split those; on tags that use only B/I/O (IOB1, IOB2) both rule sets are
identical, and `iobes=False` gives the 2004 script exactly. With `iobes=True` and prefixes B/I/E/S/O the
chunks equal those of seqeval's default (non-strict) mode.

Counting follows the script's joint token-by-token scan (a guessed chunk is correct when it starts at
the same token as a gold chunk with the same type and both next end at the same token). For tags with
the prefixes B/I/E/S/O every token belongs to at most one chunk, and the scan gives the same count as
intersecting the two sets of (type, start, end). They differ only for conlleval's rarely used "[", "]"
and "." prefixes, where a chunk can start before the previous one ended: gold "B-X [-X" (two starts, one
end) against guessed "B-X I-X" counts one correct chunk in conlleval, none by set intersection.

One Perl accident is not copied: the script turns the type "0" (false in Perl) into the empty type.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torchmetrics import Metric

from nlpseq.errors import ConfigError, DataError
from nlpseq.metrics.schemes import split_tag, tag_error

# (previous prefix, current prefix) pairs of conlleval.pl's startOfChunk / endOfChunk
_START = {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}
_END = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
# the IOBES variant's additions: S is a whole chunk, and nothing continues a chunk after E
_START_IOBES = _START | {("S", "B"), ("E", "B"), ("B", "S"), ("I", "S"), ("O", "S"), ("S", "S"),
                         ("E", "S"), ("S", "I"), ("S", "E")}
_END_IOBES = _END | {("B", "S"), ("I", "S"), ("E", "S"), ("E", "B"), ("S", "E"), ("S", "I"),
                     ("S", "O"), ("S", "S"), ("S", "B")}

_OUTSIDE = ("O", "")  # what conlleval reads for the line between two sentences
OTHER = "<other>"  # SpanF1's bucket for entity types it was not told about

Tag = tuple[str, str]


def _end_of_chunk(prev: Tag, cur: Tag, iobes: bool) -> bool:
    rules = _END_IOBES if iobes else _END
    return ((prev[0], cur[0]) in rules or (prev[0] not in ("O", ".") and prev[1] != cur[1])
            or prev[0] in ("[", "]"))


def _start_of_chunk(prev: Tag, cur: Tag, iobes: bool) -> bool:
    rules = _START_IOBES if iobes else _START
    return ((prev[0], cur[0]) in rules or (cur[0] not in ("O", ".") and prev[1] != cur[1])
            or cur[0] in ("[", "]"))


def conll_chunks(tags: Sequence[str], iobes: bool = True) -> list[tuple[str, int, int]]:
    """The chunks conlleval.pl finds in one sentence, as (type, start, end_exclusive), one per start.

    With the odd "[", "]", "." prefixes a chunk may start before the previous one ended; the previous
    one is then cut there, and one that never ends runs to the end of the sentence."""
    chunks = []
    prev, open_chunk = _OUTSIDE, None  # open_chunk: (type, start)
    for i, cur in enumerate([*map(split_tag, tags), _OUTSIDE]):
        ends = _end_of_chunk(prev, cur, iobes)
        starts = i < len(tags) and _start_of_chunk(prev, cur, iobes)
        if open_chunk is not None and (ends or starts or i == len(tags)):
            chunks.append((*open_chunk, i))
            open_chunk = None
        if starts:
            open_chunk = (cur[1], i)
        prev = cur
    return chunks


@dataclass
class SpanCounts:
    """Chunk counts per type (correct, guessed, gold) and tag counts, as conlleval.pl keeps them."""

    correct: dict[str, int] = field(default_factory=dict)
    pred: dict[str, int] = field(default_factory=dict)
    gold: dict[str, int] = field(default_factory=dict)
    token_correct: int = 0
    token_total: int = 0


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


def span_counts(gold_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]],
                iobes: bool = True) -> SpanCounts:
    """Count chunks the way conlleval.pl does on a file of these sentences (blank line after each):
    one joint scan over gold and guessed tags, token by token, with the script's state carried over."""
    if len(gold_seqs) != len(pred_seqs):
        raise ValueError(f"{len(gold_seqs)} gold sentences but {len(pred_seqs)} predicted")
    counts = SpanCounts()
    in_correct = False  # the chunks that started together are still the same so far
    last_g = last_p = _OUTSIDE
    for n, (gold, pred) in enumerate(zip(gold_seqs, pred_seqs)):
        if len(gold) != len(pred):
            raise ValueError(f"sentence {n}: {len(gold)} gold tags but {len(pred)} predicted")
        pairs = [(split_tag(g), split_tag(p)) for g, p in zip(gold, pred)]
        for i, (g, p) in enumerate([*pairs, (_OUTSIDE, _OUTSIDE)]):
            if in_correct:
                g_end, p_end = _end_of_chunk(last_g, g, iobes), _end_of_chunk(last_p, p, iobes)
                if g_end and p_end and last_g[1] == last_p[1]:
                    in_correct = False
                    _bump(counts.correct, last_g[1])
                elif g_end != p_end or g[1] != p[1]:
                    in_correct = False
            g_start, p_start = _start_of_chunk(last_g, g, iobes), _start_of_chunk(last_p, p, iobes)
            if g_start and p_start and g[1] == p[1]:
                in_correct = True
            if g_start:
                _bump(counts.gold, g[1])
            if p_start:
                _bump(counts.pred, p[1])
            if i < len(pairs):  # the sentence boundary is not a token
                counts.token_correct += g == p
                counts.token_total += 1
            last_g, last_p = g, p
    if in_correct:  # end of file closes whatever is open
        _bump(counts.correct, last_g[1])
    # conlleval lists types sorted by name
    for name in ("correct", "pred", "gold"):
        setattr(counts, name, dict(sorted(getattr(counts, name).items())))
    return counts


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _prf(correct: int, pred: int, gold: int) -> tuple[float, float, float]:
    p, r = _ratio(correct, pred), _ratio(correct, gold)
    return p, r, _ratio(2 * p * r, p + r)


def span_scores(counts: SpanCounts) -> dict:
    """Micro precision/recall/F1 over all types, tag accuracy and per-type scores, as fractions in
    [0, 1] (0 where undefined, as conlleval prints 0.00), plus the raw counts `format_table` prints."""
    correct, pred, gold = (sum(d.values()) for d in (counts.correct, counts.pred, counts.gold))
    p, r, f = _prf(correct, pred, gold)
    per_type = {}
    for t in dict.fromkeys([*counts.gold, *counts.pred]):
        tp, tr, tf = _prf(counts.correct.get(t, 0), counts.pred.get(t, 0), counts.gold.get(t, 0))
        per_type[t] = {"precision": tp, "recall": tr, "f1": tf, "support": counts.gold.get(t, 0),
                       "found": counts.pred.get(t, 0), "correct": counts.correct.get(t, 0)}
    return {"precision": p, "recall": r, "f1": f,
            "accuracy": _ratio(counts.token_correct, counts.token_total),
            "tokens": counts.token_total, "phrases": gold, "found": pred, "correct": correct,
            "per_type": per_type}


def format_table(result: dict) -> str:
    """conlleval.pl's report for a `span_scores` / `SpanF1.summary()` result (percentages)."""
    lines = [f"processed {result['tokens']} tokens with {result['phrases']} phrases; "
             f"found: {result['found']} phrases; correct: {result['correct']}."]
    if result["tokens"]:
        lines.append(f"accuracy: {100 * result['accuracy']:6.2f}%; precision: {100 * result['precision']:6.2f}%; "
                     f"recall: {100 * result['recall']:6.2f}%; FB1: {100 * result['f1']:6.2f}")
    for t, s in result["per_type"].items():
        lines.append(f"{t:>17}: precision: {100 * s['precision']:6.2f}%; recall: {100 * s['recall']:6.2f}%; "
                     f"FB1: {100 * s['f1']:6.2f}  {s['found']}")
    return "\n".join(lines)


class SpanF1(Metric):
    """conlleval chunk F1 (micro over types) and tag accuracy, accumulated over batches and devices.

    State is count tensors only (per type: correct, guessed, gold; plus tag counts), summed across
    processes, so distributed results equal one pass over all data. Types not in `entity_types` are
    counted under "<other>" rather than dropped. `compute()` returns tensors (precision, recall, f1,
    accuracy) so they can be logged; `per_type()` and `summary()` give plain-float breakdowns.

    Tags must be "O" or carry a B/I/E/S prefix (any scheme, even mixed); the counts then split
    exactly by sentence, so batching does not change them.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, entity_types: Sequence[str]) -> None:
        super().__init__()
        types = [str(t) for t in entity_types]
        if len(set(types)) != len(types):
            raise ConfigError("entity_types", f"duplicate entity types in {types}")
        if OTHER in types:
            raise ConfigError("entity_types", f"{OTHER!r} is reserved for types not listed")
        self.entity_types = types
        self.names = [*types, OTHER]
        self.index = {t: i for i, t in enumerate(types)}
        for name in ("correct", "pred", "gold"):
            self.add_state(name, default=torch.zeros(len(self.names), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("token_correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("token_total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> None:
        if len(pred) != len(gold):
            raise ValueError(f"{len(pred)} predicted sentences but {len(gold)} gold")
        for n, (p_seq, g_seq) in enumerate(zip(pred, gold)):
            if len(p_seq) != len(g_seq):
                raise ValueError(f"sentence {n}: {len(p_seq)} predicted tags but {len(g_seq)} gold")
            for tag in (*p_seq, *g_seq):
                problem = tag_error(tag, "BIOES")
                if problem is not None:
                    raise DataError(f"sentence {n}: {problem}")
        counts = span_counts(gold, pred)
        for name in ("correct", "pred", "gold"):
            add = [0] * len(self.names)
            for t, c in getattr(counts, name).items():
                add[self.index.get(t, len(self.entity_types))] += c
            state = getattr(self, name)
            state += torch.tensor(add, dtype=state.dtype, device=state.device)
        self.token_correct += counts.token_correct
        self.token_total += counts.token_total

    def _counts(self) -> SpanCounts:
        # "<other>" is listed only once something was counted there
        keep = [i for i, t in enumerate(self.names) if t != OTHER or self.pred[i] or self.gold[i]]
        correct, pred, gold = (getattr(self, n).tolist() for n in ("correct", "pred", "gold"))
        return SpanCounts({self.names[i]: correct[i] for i in keep}, {self.names[i]: pred[i] for i in keep},
                          {self.names[i]: gold[i] for i in keep},
                          int(self.token_correct), int(self.token_total))

    def compute(self) -> dict[str, torch.Tensor]:
        s = span_scores(self._counts())
        return {k: torch.tensor(s[k], dtype=torch.float) for k in ("precision", "recall", "f1", "accuracy")}

    def summary(self) -> dict:
        """Everything `format_table` prints (see `span_scores`), over all processes like compute()."""
        # compute() is synced by torchmetrics' wrapper; sync here too unless a caller already did
        outer = self._is_synced
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync and not outer,
                               should_unsync=self._should_unsync and not outer):
            return span_scores(self._counts())

    def per_type(self) -> dict[str, dict[str, float]]:
        """{type: {precision, recall, f1, support}} for every listed type (and "<other>" if seen)."""
        return {t: {k: s[k] for k in ("precision", "recall", "f1", "support")}
                for t, s in self.summary()["per_type"].items()}
