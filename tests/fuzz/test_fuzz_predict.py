"""Fuzzing every predict entry with odd inputs (hypothesis), on tiny trained checkpoints.

Inputs: emoji, right-to-left text, combining marks, zero-width and unusual white space, control
characters, lone surrogates, empty and blank strings, wrong types; options drawn too. The property:
a result comes back whose shape matches the input (one per text, tokens/tags/offsets aligned,
probabilities that sum to 1 ...), or an NlpseqError with a one-line message.

N_PREDICT examples per entry (sentiment, ner raw / pretokenized / nbest, translation, generation
predict / generate), N_CLI input files per task through the predict CLI's reading and writing.
"""
from __future__ import annotations

import json
import math
import os

import pytest
from fuzz_helpers import (CELLS, INPUTS, SUPPRESS, TEXTS_S, file_bytes, outcome, pool, predictor, print_stats,
                          rand_cell, temp_dir, utf8_ok, write)
from hypothesis import given, settings
from hypothesis import strategies as st

SCALE = int(os.environ.get("NLPSEQ_FUZZ_SCALE", "1"))  # e.g. 20 for a long exploration run
N_PREDICT = 300 * SCALE  # examples (calls) per predict entry, each with up to 6 inputs
N_CLI = 60 * SCALE       # input files per task through the predict CLI
FUZZ = settings(max_examples=N_PREDICT, deadline=None, suppress_health_check=SUPPRESS, database=None,
                derandomize=os.environ.get("NLPSEQ_FUZZ_RANDOM") != "1")
TMP = temp_dir("nlpseq_fuzz_cli_")

# a string, a list of strings, and now and then something that is not (an error, never a crash)
NAN, INF = float("nan"), float("inf")
NOT_TEXT = st.sampled_from([None, 3, b"bytes", 1.5, {"a": 1}])
TEXTS_ARG = st.one_of(INPUTS, st.lists(INPUTS, max_size=6), st.lists(st.one_of(INPUTS, NOT_TEXT), max_size=3),
                      NOT_TEXT)


def _spoil(options: dict, bad) -> dict:
    """Options with one value replaced by a bad one (when `bad` is not None)."""
    return options if bad is None else {**options, bad[0]: bad[1]}


def with_bad_values(valid: dict, bad: dict) -> st.SearchStrategy[dict]:
    """Valid options four times in five; otherwise one of them has a bad value (NaN, inf, negative ...)."""
    spoil = st.one_of(*[st.none()] * 4, st.sampled_from([(k, v) for k, vs in bad.items() for v in vs]))
    return st.builds(_spoil, st.fixed_dictionaries(valid), spoil)


@pytest.fixture(scope="module", autouse=True)
def fuzz_stats(one_thread):
    """One torch thread for the module; NLPSEQ_FUZZ_STATS=1 prints what the fuzzing covered at its end."""
    yield
    if os.environ.get("NLPSEQ_FUZZ_STATS") == "1":
        print_stats()


def as_list(texts, result):
    """(inputs, results) as lists, checking that a single string gives a single result."""
    if isinstance(texts, str):
        assert not isinstance(result, list)
        return [texts], [result]
    assert isinstance(result, list) and len(result) == len(texts)
    return list(texts), result


# ---------------------------------------------------------------- sentiment

@FUZZ
@given(texts=TEXTS_ARG, batch_size=st.sampled_from([1, 2, 3, 8, 64, 0]))
def test_sentiment_predict(texts, batch_size):
    p = predictor("sentiment")
    result = outcome(p.predict, texts, batch_size=batch_size)
    if result is None:
        return
    for text, r in zip(*as_list(texts, result)):
        assert r.text == text and r.label in p.model.labels
        assert set(r.probabilities) == set(p.model.labels) and abs(sum(r.probabilities.values()) - 1) < 1e-3
        assert r.probabilities[r.label] == max(r.probabilities.values())


# ---------------------------------------------------------------- NER

def check_ner(r, pretokenized_tokens=None) -> None:
    n = len(r.tokens)
    assert len(r.tags) == len(r.offsets) == len(r.confidences) == n
    for tok, (s, e) in zip(r.tokens, r.offsets):
        assert tok and r.text[s:e] == tok and not any(c.isspace() for c in tok)
    assert all(0.0 <= c <= 1.0 + 1e-6 for c in r.confidences)
    if pretokenized_tokens is not None:
        assert r.tokens == list(pretokenized_tokens)
    for ent in r.entities:
        assert 0 <= ent.token_start < ent.token_end <= n and ent.text == r.text[ent.start:ent.end]
        assert ent.start == r.offsets[ent.token_start][0] and ent.end == r.offsets[ent.token_end - 1][1]


SCHEME = st.sampled_from([None, "IOB1", "IOB2", "BIOES", None, None, None, "BILOU"])


@FUZZ
@given(texts=TEXTS_ARG, batch_size=st.integers(1, 8), scheme=SCHEME)
def test_ner_predict_raw_text(texts, batch_size, scheme):
    result = outcome(predictor("ner").predict, texts, batch_size=batch_size, scheme=scheme)
    if result is not None:
        for text, r in zip(*as_list(texts, result)):
            assert r.text == text
            check_ner(r)


# tokens: mostly words (CELLS may hold spaces or lone surrogates: those calls must fail cleanly)
TOKEN = st.one_of(st.sampled_from(["EU", "rejects", "German", "call", ".", "👍", "مرحبا", "e\u0301", "\u200b"]),
                  CELLS, pool(lambda r: rand_cell(r).replace(" ", ""), 5))
SENTENCE = st.lists(TOKEN, max_size=8)


@FUZZ
@given(sentences=st.one_of(st.lists(SENTENCE, max_size=5), SENTENCE), pretokenized=st.sampled_from([None, True]),
       batch_size=st.integers(1, 8), scheme=SCHEME)
def test_ner_predict_pretokenized(sentences, pretokenized, batch_size, scheme):
    result = outcome(predictor("ner").predict, sentences, batch_size=batch_size, pretokenized=pretokenized,
                     scheme=scheme)
    if result is None:
        return
    nested = bool(sentences) and isinstance(sentences[0], list)
    if not nested and pretokenized:  # one sentence given as its tokens
        check_ner(result, sentences)
        return
    assert isinstance(result, list) and len(result) == len(sentences)
    for sent, r in zip(sentences, result):
        check_ner(r, sent if nested else None)


@FUZZ
@given(tokens=st.one_of(INPUTS, SENTENCE, NOT_TEXT), n=st.integers(1, 6), scheme=SCHEME)
def test_ner_nbest(tokens, n, scheme):
    p = predictor("ner")
    result = outcome(p.nbest, tokens, n=n, scheme=scheme)
    if result is None:
        return
    assert 1 <= len(result) <= n
    probs = [prob for _, prob in result]
    assert all(0.0 <= x <= 1.0 + 1e-6 for x in probs) and probs == sorted(probs, reverse=True)
    length = len(result[0][0])
    assert all(len(tags) == length for tags, _ in result)


# ---------------------------------------------------------------- translation

SEARCH = with_bad_values({
    "beam_size": st.integers(1, 3), "n_best": st.sampled_from([1, "beam"]), "attention": st.booleans(),
    "batch_size": st.integers(1, 8), "max_len_ratio": st.sampled_from([None, 0.5, 1.5]),
    "length_penalty": st.sampled_from([None, 0.0, 1.0])},
    {"n_best": [2, 3], "beam_size": [0], "max_len_ratio": [NAN, INF, 0.0], "length_penalty": [NAN, INF, -1.0]})


@FUZZ
@given(texts=TEXTS_ARG, options=SEARCH)
def test_translation_predict(texts, options):
    if options["n_best"] == "beam":
        options = {**options, "n_best": options["beam_size"]}
    result = outcome(predictor("translation").predict, texts, **options)
    if result is None:
        return
    n_best, attention = options["n_best"], options["attention"]
    assert n_best <= options["beam_size"]
    for text, r in zip(*as_list(texts, result)):
        assert r.source == text and isinstance(r.translation, str) and utf8_ok(r.translation)
        assert math.isfinite(r.score) or r.score == float("-inf")
        assert (r.nbest is None) == (n_best == 1) and (n_best == 1 or 1 <= len(r.nbest) <= n_best)
        if attention and text.strip():
            assert len(r.attention) == len(r.output_tokens) and all(len(row) == len(r.source_tokens)
                                                                    for row in r.attention)


# ---------------------------------------------------------------- generation

DECODING = with_bad_values({
    "max_new_tokens": st.integers(0, 8), "temperature": st.sampled_from([0.0, 0.7, 1.0, 2.0]),
    "top_k": st.sampled_from([None, 0, 1, 5]), "top_p": st.sampled_from([None, 0.5, 1.0]),
    "seed": st.sampled_from([None, 0, 7]), "num_samples": st.integers(1, 3), "beam_size": st.integers(1, 3),
    "length_penalty": st.sampled_from([1.0, 0.0, 0.6]), "stop_at_eos": st.booleans(),
    "batch_size": st.integers(1, 8)},
    {"max_new_tokens": [-1, 2.5], "temperature": [NAN, INF, -1.0], "top_k": [-1], "top_p": [NAN, 0.0, 1.5],
     "length_penalty": [NAN, -1.0], "seed": ["x"], "batch_size": [0]})


@FUZZ
@given(texts=TEXTS_ARG, options=DECODING)
def test_generation_predict(texts, options):
    result = outcome(predictor("generation").predict, texts, **options)
    if result is None:
        return
    k = options["num_samples"]
    for text, g in zip(*as_list(texts, result)):
        assert g.prompt == text and len(g.texts) == len(g.scores) == len(g.ended)
        # beam search returns fewer when there are fewer continuations (max_new_tokens=0: just one)
        assert len(g.texts) == k if options["beam_size"] == 1 else 1 <= len(g.texts) <= k
        assert all(isinstance(t, str) and utf8_ok(t) for t in g.texts)
        assert all(f.startswith(text) for f in g.full_texts)


@FUZZ
@given(texts=TEXTS_ARG, options=DECODING)
def test_generation_generate(texts, options):
    result = outcome(predictor("generation").generate, texts, **options)
    if result is None:
        return
    single = isinstance(texts, str)  # one prompt: a string, or a list of num_samples strings
    assert isinstance(result, str if single and options["num_samples"] == 1 else list)
    for text, out in zip([texts] if single else texts, [result] if single else result):
        outs = out if options["num_samples"] > 1 else [out]
        assert 1 <= len(outs) <= options["num_samples"] and all(o.startswith(text) for o in outs)


# ---------------------------------------------------------------- the predict CLI's reading and writing

NER_LINE = st.one_of(INPUTS, pool(lambda r: f"{rand_cell(r)} {r.choice(['O', 'B-PER', 'I-LOC'])}", 6))
CLI_INPUT = {"sentiment": file_bytes(TEXTS_S), "ner": file_bytes(NER_LINE), "translation": file_bytes(TEXTS_S),
             "generation": file_bytes(st.one_of(TEXTS_S, st.just('{"prompt": "KING:\\n"}'),
                                                st.just('{"prompt": 3}'), st.just('{"prompt": "\\ud800"}')))}
CLI_OPTIONS = {"sentiment": {}, "ner": {}, "translation": {"beam_size": 1}, "generation": {"max_new_tokens": 5}}


@pytest.mark.parametrize("task", ["sentiment", "ner", "translation", "generation"])
def test_predict_cli_input_files(task):
    from nlpseq.predict import _run

    p = predictor(task)

    @settings(FUZZ, max_examples=N_CLI)
    @given(data=CLI_INPUT[task])
    def run(data):
        source, target = write(TMP, "input.txt", data), TMP / "out.jsonl"
        target.unlink(missing_ok=True)
        if outcome(_run, p, str(source), str(target), dict(CLI_OPTIONS[task])) is None:
            return
        lines = target.read_text(encoding="utf-8").split("\n")[:-1]  # JSON may hold U+2028 and the like
        if task != "ner" or not lines or lines[0].startswith("{"):
            assert all(isinstance(json.loads(line), dict) for line in lines)

    run()


def test_counts_are_what_the_report_says():
    assert FUZZ.max_examples == N_PREDICT >= 300 and N_CLI >= 50
