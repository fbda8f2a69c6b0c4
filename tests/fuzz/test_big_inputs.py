"""Big and odd inputs at inference, for every predictor (tiny trained checkpoints).

- a 100,000-character text (with sentences, and without a single space): a sane result in bounded
  time and memory (translation splits it into pieces; NER tags it in pieces of at most MAX_WORDS
  words; generation reads it in windows);
- 10,000 texts in one call: batched internally (no model call sees more than batch_size texts),
  peak resident memory growth bounded;
- emoji, right-to-left scripts, combining marks, whitespace-only and empty strings: normal results.

Peak memory is the growth of the resident set during the call, sampled every 2 ms (fuzz_helpers).
"""
from __future__ import annotations

import random

import pytest
from fuzz_helpers import peak_rss_growth, predictor

from nlpseq.predictors import generation as gen_mod
from nlpseq.predictors import ner as ner_mod
from nlpseq.predictors import sentiment as sent_mod

TASKS = ["sentiment", "ner", "translation", "generation"]
_r = random.Random(0)
_WORDS = "Ein Mann fährt Fahrrad . the cat sat on a mat ! Paris EU 👍 👨‍👩‍👧 مرحبا بالعالم שלום e\u0301 हिन्दी ?".split()
BIG = " ".join(_r.choice(_WORDS) for _ in range(40_000))[:100_000]
BIG_NO_SPACE = "ab" * 50_000
MANY = [" ".join(_r.choice(_WORDS) for _ in range(_r.randint(0, 12))) for _ in range(10_000)]
MANY[::97] = [""] * len(MANY[::97])
MANY[::89] = [" \t\u3000 "] * len(MANY[::89])
FAST = {"sentiment": {}, "ner": {}, "translation": {"beam_size": 1}, "generation": {"max_new_tokens": 5, "seed": 0}}
MAX_MB, MAX_SECONDS = 300, 60  # generous: the machine is shared; what they catch is unbounded growth


pytestmark = pytest.mark.usefixtures("one_thread")


def _record_calls(p, monkeypatch) -> list[tuple[int, int]]:
    """(sequences, padded length) of every model call the predictor makes."""
    calls: list[tuple[int, int]] = []
    model = p.model
    if p.task == "sentiment":
        inner = model.forward
        monkeypatch.setattr(model, "forward", lambda ids, lengths, *a: calls.append(tuple(ids.shape)) or inner(ids, lengths, *a))
    elif p.task == "ner":
        inner = model.forward
        monkeypatch.setattr(model, "forward", lambda batch: calls.append(tuple(batch["case_ids"].shape)) or inner(batch))
    elif p.task == "translation":  # every search starts by encoding its batch of sources
        inner = model.encode
        monkeypatch.setattr(model, "encode", lambda src, *a, **k: calls.append(tuple(src.shape)) or inner(src, *a, **k))
    else:  # the predictor's one entry into the model(s)
        inner = gen_mod.generate_ids
        monkeypatch.setattr(gen_mod, "generate_ids", lambda models, prompts, *a, **k: calls.append(
            (len(prompts), max(map(len, prompts), default=0))) or inner(models, prompts, *a, **k))
    return calls


# ---------------------------------------------------------------- one 100,000-character text

@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("text", [BIG, BIG_NO_SPACE], ids=["sentences", "no-spaces"])
def test_a_100k_character_text(task, text, monkeypatch):
    p = predictor(task)
    calls = _record_calls(p, monkeypatch)
    out, seconds, mb = peak_rss_growth(p.predict, text, **FAST[task])
    assert seconds < MAX_SECONDS and mb < MAX_MB, (seconds, mb)
    if task == "sentiment":
        assert out.label in p.model.labels and abs(sum(out.probabilities.values()) - 1) < 1e-3
    elif task == "ner":
        assert len(out.tokens) == len(out.tags) == len(out.offsets) and out.tokens
        assert all(text[s:e] == t for t, (s, e) in zip(out.tokens, out.offsets))
        assert max(width for _, width in calls) <= ner_mod.MAX_WORDS  # tagged in pieces
    elif task == "translation":
        assert out.translation and out.pieces and out.pieces > 1 and not out.truncated
        assert max(width for _, width in calls) <= 2 * p.model.max_src_length  # no 20k-token source
    else:
        # read whole, in windows that carry the state (tests/generation/test_lm_model.py checks the windows)
        assert not out.truncated and out.full_texts[0].startswith(text) and len(out.texts[0]) <= 5 * 8
        assert max(width for _, width in calls) <= gen_mod.MAX_PROMPT_TOKENS


# ---------------------------------------------------------------- 10,000 texts in one call

@pytest.mark.parametrize("task", TASKS)
def test_10000_texts_in_one_call_are_batched_in_bounded_memory(task, monkeypatch):
    p = predictor(task)
    calls = _record_calls(p, monkeypatch)
    batch_size = 128
    out, seconds, mb = peak_rss_growth(p.predict, MANY, batch_size=batch_size, **FAST[task])
    assert len(out) == len(MANY) and seconds < MAX_SECONDS and mb < MAX_MB, (seconds, mb)
    assert max(n for n, _ in calls) <= batch_size and len(calls) >= len(MANY) // batch_size // 2
    for text, r in zip(MANY[:50], out):
        assert (r.text if task in ("sentiment", "ner") else r.source if task == "translation" else r.prompt) == text


@pytest.mark.parametrize("task", ["sentiment", "ner", "generation"])
def test_a_big_text_among_small_ones_does_not_pad_the_batch(task, monkeypatch):
    """Batches are capped in padded tokens as well as in texts: one long text does not drag 127 short
    ones to its length."""
    p = predictor(task)
    calls = _record_calls(p, monkeypatch)
    texts = [BIG[:40_000]] + MANY[:300]
    out = p.predict(texts, batch_size=128, **FAST[task])
    assert len(out) == len(texts)
    cap = {"sentiment": sent_mod.MAX_BATCH_TOKENS, "ner": ner_mod.MAX_BATCH_WORDS,
           "generation": gen_mod.MAX_BATCH_TOKENS}[task]
    assert max(n * width for n, width in calls) <= cap


# ---------------------------------------------------------------- odd texts: what a user gets

ODD = {"emoji": "I ❤️ 👨‍👩‍👧 and 🇩🇪 👍🏽", "arabic": "مرحبا بالعالم، كيف حالك؟", "hebrew": "שלום עולם",
       "mixed": "Paris \u202eabc\u202c مرحبا e\u0301 a\u200bb हिन्दी", "blank": " \t\u3000 ", "empty": ""}


def test_odd_texts_give_normal_results():
    sentiment, ner, translation, generation = (predictor(t) for t in TASKS)
    texts = list(ODD.values())
    for r in sentiment.predict(texts):  # blank or empty: one <unk> token, an ordinary prediction
        assert r.label in sentiment.model.labels
    tagged = dict(zip(ODD, ner.predict(texts)))
    assert tagged["blank"].tokens == tagged["empty"].tokens == []  # nothing to tag
    assert "👨‍👩‍👧" in tagged["emoji"].tokens and "👍🏽" in tagged["emoji"].tokens and "🇩🇪" in tagged["emoji"].tokens
    assert "e\u0301" in tagged["mixed"].tokens and "हिन्दी" in tagged["mixed"].tokens
    assert "بالعالم" in tagged["arabic"].tokens and "؟" in tagged["arabic"].tokens
    translated = dict(zip(ODD, translation.predict(texts, beam_size=2)))
    assert translated["blank"].translation == translated["empty"].translation == ""  # without running the model
    assert translated["blank"].score == 0.0 and all(isinstance(t.translation, str) for t in translated.values())
    generated = dict(zip(ODD, generation.predict(texts, max_new_tokens=5, seed=0)))
    assert all(g.full_texts[0].startswith(g.prompt) for g in generated.values())
    assert generated["empty"].unknown == [] and "م" in generated["arabic"].unknown  # unseen characters are listed


@pytest.mark.parametrize("task", TASKS)
def test_lone_surrogates_are_a_one_line_error(task):
    from nlpseq.errors import NlpseqError

    with pytest.raises(NlpseqError, match=r"^predict: (text|prompt) 1 is not valid Unicode: lone surrogate '\\ud800'"):
        predictor(task).predict(["fine", "bad \ud800 text"], **FAST[task])


def test_ner_nbest_on_a_long_sentence_is_bounded():
    from nlpseq.errors import NlpseqError

    p = predictor("ner")
    tokens = BIG[:20_000].split()
    best = p.nbest(tokens, n=2)
    assert 1 <= len(best) <= 2 and len(best[0][0]) == len(tokens)  # the best tagging even if its probability underflows
    with pytest.raises(NlpseqError, match="need more memory than allowed"):
        p.nbest(BIG.split(), n=1000)
