"""conlleval-exact chunk counting, agreement with seqeval, and the SpanF1 metric."""
from __future__ import annotations

import random
import warnings

import pytest
import torch
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

from nlpseq.errors import ConfigError, DataError
from nlpseq.metrics.schemes import SCHEMES, from_spans
from nlpseq.metrics.spans import SpanF1, conll_chunks, format_table, span_counts, span_scores

# ---- chunks: what conlleval.pl's startOfChunk/endOfChunk find ----


@pytest.mark.parametrize("tags,chunks", [
    ("B-PER I-PER O B-LOC", [("PER", 0, 2), ("LOC", 3, 4)]),                     # IOB2
    ("I-PER I-PER B-PER O I-LOC", [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]),  # IOB1
    ("B-PER E-PER S-LOC O B-ORG I-ORG E-ORG", [("PER", 0, 2), ("LOC", 2, 3), ("ORG", 4, 7)]),  # BIOES
    ("I-PER I-LOC", [("PER", 0, 1), ("LOC", 1, 2)]),      # a type change ends and starts a chunk
    ("B-PER I-LOC", [("PER", 0, 1), ("LOC", 1, 2)]),
    ("O I-PER", [("PER", 1, 2)]),                         # O -> I starts a chunk
    ("E-PER", [("PER", 0, 1)]),                           # (the sentence starts after an O)
    ("I-PER E-PER O", [("PER", 0, 2)]),                   # I -> E continues
    ("B-PER E-PER I-PER", [("PER", 0, 2), ("PER", 2, 3)]),  # E -> I ends and starts
    ("B-PER O E-PER", [("PER", 0, 1), ("PER", 2, 3)]),
    ("S-PER S-PER", [("PER", 0, 1), ("PER", 1, 2)]),
    ("E-PER B-PER", [("PER", 0, 1), ("PER", 1, 2)]),
    ("B-PER S-PER E-PER", [("PER", 0, 1), ("PER", 1, 2), ("PER", 2, 3)]),
    ("B I O I", [("", 0, 2), ("", 3, 4)]),                # untyped chunks
    ("B-ORG-X I-ORG-X", [("ORG-X", 0, 2)]),               # types may hold hyphens
    ("B-X [-X", [("X", 0, 1), ("X", 1, 2)]),              # "[" starts without ending the B chunk
    ("O O", []),
    ("", []),
])
def test_conll_chunks(tags, chunks):
    assert conll_chunks(tags.split()) == chunks


@pytest.mark.parametrize("tags,chunks", [
    # the 2004 script has no S rules and nothing ends a chunk between E and B/S of one type
    ("S-PER S-PER", [("PER", 0, 2)]),
    ("E-PER B-PER", [("PER", 0, 2)]),
    ("B-PER E-PER S-LOC S-LOC O", [("PER", 0, 2), ("LOC", 2, 4)]),
    ("I-PER I-LOC B-LOC", [("PER", 0, 1), ("LOC", 1, 2), ("LOC", 2, 3)]),  # B/I/O: same as iobes=True
])
def test_conll_chunks_of_the_2004_script(tags, chunks):
    assert conll_chunks(tags.split(), iobes=False) == chunks


def counts_of(gold: str, pred: str, iobes: bool = True) -> tuple:
    c = span_counts([s.split() for s in gold.split("|")], [s.split() for s in pred.split("|")], iobes=iobes)
    return c.correct, c.pred, c.gold, c.token_correct, c.token_total


@pytest.mark.parametrize("gold,pred,expected", [
    ("B-PER I-PER O B-LOC", "B-PER I-PER O B-ORG",
     ({"PER": 1}, {"ORG": 1, "PER": 1}, {"LOC": 1, "PER": 1}, 3, 4)),
    # split prediction: neither half is correct
    ("B-PER I-PER", "B-PER B-PER", ({}, {"PER": 2}, {"PER": 1}, 1, 2)),
    # IOB1 gold, IOB2 guess: the same chunk, though only one tag matches
    ("I-PER I-PER O", "B-PER I-PER O", ({"PER": 1}, {"PER": 1}, {"PER": 1}, 2, 3)),
    # ill-formed guess "O I-PER I-LOC" is two chunks; PER matches
    ("O B-PER B-LOC", "O I-PER I-LOC", ({"LOC": 1, "PER": 1}, {"LOC": 1, "PER": 1}, {"LOC": 1, "PER": 1}, 1, 3)),
    # a guess that runs one token too long is wrong
    ("B-PER O", "B-PER I-PER", ({}, {"PER": 1}, {"PER": 1}, 1, 2)),
    # chunks never cross a sentence boundary
    ("B-PER|I-PER", "B-PER|I-PER", ({"PER": 2}, {"PER": 2}, {"PER": 2}, 2, 2)),
    # BIOES against IOB2 tags of the same chunks
    ("B-LOC E-LOC S-PER", "B-LOC I-LOC B-PER", ({"LOC": 1, "PER": 1}, {"LOC": 1, "PER": 1},
                                                {"LOC": 1, "PER": 1}, 1, 3)),
    # conlleval's "." prefix never ends a chunk; a type mismatch while both run on still spoils the match
    ("B-X I-X .-X", "B-X .-X O", ({}, {"X": 1}, {"X": 1}, 1, 3)),
])
def test_span_counts_hand_worked(gold, pred, expected):
    assert counts_of(gold, pred) == expected


def test_span_counts_of_the_2004_script_merge_s_chunks():
    assert counts_of("S-PER S-PER", "S-PER S-PER") == ({"PER": 2}, {"PER": 2}, {"PER": 2}, 2, 2)
    assert counts_of("S-PER S-PER", "S-PER S-PER", iobes=False) == ({"PER": 1}, {"PER": 1}, {"PER": 1}, 2, 2)


def test_joint_scan_differs_from_set_intersection_only_for_bracket_prefixes():
    # gold starts twice ("B" then "[") but ends once; conlleval credits the guess spanning both
    gold, pred = ["B-X", "[-X"], ["B-X", "I-X"]
    assert counts_of(" ".join(gold), " ".join(pred)) == ({"X": 1}, {"X": 1}, {"X": 2}, 1, 2)
    assert set(conll_chunks(gold)) & set(conll_chunks(pred)) == set()


def random_tags(rng: random.Random, n: int, prefixes: str = "BIES", types: tuple = ("PER", "LOC", "MISC")) -> list:
    return ["O" if rng.random() < 0.35 else f"{rng.choice(prefixes)}-{rng.choice(types)}" for _ in range(n)]


def perturb(rng: random.Random, tags: list[str]) -> list[str]:
    """A guess that mostly agrees with the gold tags."""
    noise = random_tags(rng, len(tags))
    return [noise[i] if rng.random() < 0.2 else t for i, t in enumerate(tags)]


def random_corpus(rng: random.Random, case: int) -> tuple[list, list]:
    gold, pred = [], []
    for _ in range(rng.randint(1, 4)):
        n = rng.randint(1, 9)
        if case % 2:  # ill-formed anything
            gold.append(random_tags(rng, n))
            pred.append(random_tags(rng, n) if case % 4 == 1 else perturb(rng, gold[-1]))
        else:  # well-formed gold in some scheme, guess near it
            spans, pos = [], 0
            while pos < n:
                start = pos + rng.randint(0, 2)
                end = min(n, start + rng.randint(1, 3))
                if start < n:
                    spans.append((rng.choice(["PER", "LOC"]), start, end))
                pos = end
            gold.append(from_spans(spans, n, SCHEMES[case % 3]))
            pred.append(perturb(rng, gold[-1]))
    return gold, pred


@pytest.mark.parametrize("iobes,prefixes", [(True, "BIES"), (False, "BIE"), (False, "BI")])
def test_joint_scan_equals_set_intersection_for_bioes_prefixes(iobes, prefixes):
    rng = random.Random(7)
    for _ in range(300):
        gold = [random_tags(rng, rng.randint(1, 8), prefixes) for _ in range(3)]
        pred = [random_tags(rng, len(g), prefixes) if rng.random() < 0.5 else perturb(rng, g) for g in gold]
        pred = [[t if t[0] in prefixes + "O" else "O" for t in p] for p in pred]
        counts = span_counts(gold, pred, iobes=iobes)
        expected: dict[str, int] = {}
        for g, p in zip(gold, pred):
            for t, _, _ in set(conll_chunks(g, iobes)) & set(conll_chunks(p, iobes)):
                expected[t] = expected.get(t, 0) + 1
        assert counts.correct == dict(sorted(expected.items())), (gold, pred)


def test_agrees_with_seqeval_default_mode():
    rng = random.Random(11)
    for case in range(300):
        gold, pred = random_corpus(rng, case)
        ours = span_scores(span_counts(gold, pred))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns where a type has no guesses
            report = classification_report(gold, pred, output_dict=True)
            micro = (precision_score(gold, pred), recall_score(gold, pred), f1_score(gold, pred))
        types = {t for t in report if not t.endswith(" avg")}
        assert types == set(ours["per_type"]), (gold, pred)
        for t in types:
            expect = report[t]
            got = ours["per_type"][t]
            assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx(
                (expect["precision"], expect["recall"], expect["f1-score"], expect["support"])), (gold, pred, t)
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(micro), (gold, pred)
        assert ours["accuracy"] == pytest.approx(accuracy_score(gold, pred))


def test_span_counts_length_errors():
    with pytest.raises(ValueError, match="sentence 1"):
        span_counts([["O"], ["O", "B-PER"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1"):
        span_counts([["O"], ["O"]], [["O"]])


# ---- report ----

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]


def test_scores_and_table_like_conlleval():
    result = span_scores(span_counts(GOLD, PRED))
    assert result["precision"] == result["recall"] == result["f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(5 / 6)
    assert result["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1,
                                         "found": 0, "correct": 0}
    assert format_table(result) == (
        "processed 6 tokens with 3 phrases; found: 3 phrases; correct: 2.\n"
        "accuracy:  83.33%; precision:  66.67%; recall:  66.67%; FB1:  66.67\n"
        "              LOC: precision:   0.00%; recall:   0.00%; FB1:   0.00  0\n"
        "              ORG: precision:  50.00%; recall: 100.00%; FB1:  66.67  2\n"
        "              PER: precision: 100.00%; recall: 100.00%; FB1: 100.00  1")


def test_empty_input_scores_zero():
    result = span_scores(span_counts([], []))
    assert (result["precision"], result["recall"], result["f1"], result["accuracy"]) == (0, 0, 0, 0)
    assert format_table(result) == "processed 0 tokens with 0 phrases; found: 0 phrases; correct: 0."


# ---- SpanF1 ----


def test_span_f1_metric():
    metric = SpanF1(["PER", "LOC", "ORG"])
    metric.update(PRED, GOLD)
    out = metric.compute()
    assert set(out) == {"precision", "recall", "f1", "accuracy"}
    assert all(isinstance(v, torch.Tensor) for v in out.values())
    assert out["f1"].item() == pytest.approx(2 / 3) and out["accuracy"].item() == pytest.approx(5 / 6)
    per_type = metric.per_type()
    assert list(per_type) == ["PER", "LOC", "ORG"]  # the configured order, no "<other>" when unused
    assert per_type["ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert metric.summary()["tokens"] == 6
    assert format_table(metric.summary()).splitlines()[0] == \
        "processed 6 tokens with 3 phrases; found: 3 phrases; correct: 2."
    metric.reset()
    metric.update([["O"]], [["O"]])
    assert metric.compute()["f1"].item() == 0.0 and metric.compute()["accuracy"].item() == 1.0


def test_unlisted_types_go_to_other():
    metric = SpanF1(["PER"])
    metric.update([["B-PER", "B-MISC", "S-DATE"]], [["B-PER", "B-MISC", "O"]])
    per_type = metric.per_type()
    assert list(per_type) == ["PER", "<other>"]
    assert per_type["<other>"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert metric.compute()["precision"].item() == pytest.approx(2 / 3)  # micro counts them too
    assert metric.compute()["recall"].item() == 1.0


def test_batching_does_not_change_counts():
    rng = random.Random(3)
    gold, pred = [], []
    for case in range(40):
        g, p = random_corpus(rng, case)
        gold += g
        pred += p
    whole, pieces = SpanF1(["PER", "LOC"]), SpanF1(["PER", "LOC"])
    whole.update(pred, gold)
    for i in range(0, len(gold), 3):
        pieces.update(pred[i:i + 3], gold[i:i + 3])
    assert whole.summary() == pieces.summary()
    expected = span_scores(span_counts(gold, pred))
    assert whole.compute()["f1"].item() == pytest.approx(expected["f1"])


def test_distributed_aggregation_is_exact():
    rng = random.Random(5)
    gold, pred = [], []
    for case in range(30):
        g, p = random_corpus(rng, case)
        gold += g
        pred += p
    half = len(gold) // 2
    ranks = [SpanF1(["PER", "LOC"]) for _ in range(2)]
    ranks[0].update(pred[:half], gold[:half])
    ranks[1].update(pred[half:], gold[half:])
    single = SpanF1(["PER", "LOC"])
    single.update(pred, gold)
    expected = single.summary()

    # what DDP does: gather every state from both ranks and apply its dist_reduce_fx
    def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, next(other_states)]

    rank0 = ranks[0]
    rank0.dist_sync_fn, rank0.distributed_available_fn = gather, lambda: True
    other_states = iter(ranks[1].metric_state.values())
    assert rank0.summary() == expected
    other_states = iter(ranks[1].metric_state.values())
    synced = rank0.compute()
    assert all(synced[k].item() == pytest.approx(expected[k]) for k in synced)
    assert rank0.token_total.item() == sum(map(len, gold[:half]))  # local state is restored afterwards

    # and merging states by hand (what the sums do) gives the same
    merged = SpanF1(["PER", "LOC"])
    merged.merge_state(ranks[0])
    merged.merge_state(ranks[1])
    assert merged.summary() == expected


def test_span_f1_errors():
    metric = SpanF1(["PER"])
    with pytest.raises(ValueError, match="sentence 1"):
        metric.update([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 predicted sentences but 1 gold"):
        metric.update([["O"], ["O"]], [["O"]])
    with pytest.raises(DataError, match="sentence 0: tag 'X-PER'"):
        metric.update([["X-PER"]], [["O"]])
    with pytest.raises(DataError, match="''"):
        metric.update([["O"]], [[""]])
    with pytest.raises(ConfigError, match="entity_types"):
        SpanF1(["PER", "PER"])
    with pytest.raises(ConfigError, match="entity_types"):
        SpanF1(["PER", "<other>"])
