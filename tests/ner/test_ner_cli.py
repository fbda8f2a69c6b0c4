"""NER through the real entry points: `python -m nlpseq task=ner`, `nlpseq.load(...).predict`, and
`python -m nlpseq.predict` on a column file scored like conlleval; plus the predictor's input rules."""
from __future__ import annotations

import csv
import json
import random

import pytest
from conftest import QUIET, ROOT

import nlpseq
from nlpseq.errors import NlpseqError
from nlpseq.metrics.spans import conll_chunks, span_counts, span_scores
from nlpseq.data.tagging import SpanReader
from nlpseq.predictors.ner import Entity, NerPrediction

SAMPLE = ROOT / "tasks" / "ner" / "sample"


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("ner_cli")
    from conftest import run_cli

    proc = run_cli(["task=ner", f"hydra.run.dir={base}/run", "trainer.max_epochs=2", *QUIET], cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "run", proc


def test_training_run_prints_the_conlleval_table_and_saves_a_checkpoint(run):
    run_dir, proc = run
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "vocab.json").is_file()
    assert "span scores (conlleval):" in proc.stdout and "FB1:" in proc.stdout and "test/f1" in proc.stdout
    rows = list(csv.DictReader(open(run_dir / "logs" / "metrics.csv")))
    assert any(r.get("val/f1") for r in rows) and any(r.get("train/tokens_per_sec") for r in rows)


def test_load_and_predict_raw_and_pretokenized_text(run):
    p = nlpseq.load(run[0] / "checkpoints" / "best.ckpt")
    texts = ["Angela Merkel visited Paris .", "", "  Boris Tolman joined Vikdal Bank in Port Elsa on Monday . "]
    preds = p.predict(texts)
    assert [type(x) for x in preds] == [NerPrediction] * 3
    assert preds[1].tokens == [] and preds[1].entities == []
    for text, pred in zip(texts, preds):
        assert len(pred.tags) == len(pred.tokens) == len(pred.offsets) == len(pred.confidences)
        for tok, (s, e) in zip(pred.tokens, pred.offsets):
            assert text[s:e] == tok
        for ent in pred.entities:
            assert isinstance(ent, Entity) and text[ent.start:ent.end] == ent.text
            assert ent.type in ("PER", "LOC", "ORG", "MISC") and 0 < ent.confidence <= 1
            assert ent.confidence == min(pred.confidences[ent.token_start:ent.token_end])
    single = p.predict(["Boris", "Tolman", "visited", "Paris"], pretokenized=True)
    assert isinstance(single, NerPrediction) and single.text == "Boris Tolman visited Paris"
    assert p.predict([["Boris", "Tolman"], []])[1].tags == []
    # batch composition may change the last float digit of a confidence, never the spans
    alone = p.predict(texts[2], scheme="BIOES").entities
    assert p.predict(texts[2], scheme="bioes").tags == p.predict(texts[2], scheme="BIOES").tags  # any case
    assert [(e.type, e.start, e.end) for e in alone] == [(e.type, e.start, e.end) for e in preds[2].entities]
    assert [e.confidence for e in alone] == pytest.approx([e.confidence for e in preds[2].entities], abs=1e-4)
    # a sentence far longer than any in training is tagged normally, one tag per token
    long = " ".join(["Boris visited Paris ,"] * 60)
    assert len(p.predict(long).tags) == 240
    best = p.nbest("Boris Tolman joined Vikdal Bank", n=3)
    assert 1 <= len(best) <= 3 and all(len(tags) == 5 for tags, _ in best)
    assert best == sorted(best, key=lambda x: -x[1]) and sum(pr for _, pr in best) <= 1 + 1e-6


@pytest.mark.parametrize("bad,match", [
    ([1, 2], "text 0 is a int, expected a string"),
    (["a", ["b"]], "mix of strings and token lists"),
    ([["a", "b c"]], "token 1: expected a non-empty string without spaces"),
    ([["a", ""]], "token 1: expected a non-empty string"),
    ("text", "pretokenized=True needs a list of tokens"),
])
def test_bad_predict_inputs_fail_with_one_line(run, bad, match):
    p = nlpseq.load(run[0] / "checkpoints" / "best.ckpt")
    with pytest.raises(NlpseqError, match=match):
        p.predict(bad, pretokenized=True if bad == "text" else None)
    with pytest.raises(NlpseqError, match="batch_size"):
        p.predict("a", batch_size=0)


def test_predict_cli_appends_a_column_scored_exactly_like_training(run, cli, tmp_path):
    run_dir, _ = run
    out = tmp_path / "test.pred.conll"
    proc = cli([f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}",
                f"input={SAMPLE / 'test.conll'}", f"output={out}"], cwd=tmp_path, module="nlpseq.predict")
    assert proc.returncode == 0, proc.stderr[-2000:]
    src = (SAMPLE / "test.conll").read_text().splitlines()
    got = out.read_text().splitlines()
    assert len(got) == len(src)
    gold, pred, g, p = [], [], [], []
    for a, b in zip(src, got):
        if not a.strip():
            assert b == ""
            if g:
                gold.append(g), pred.append(p)
                g, p = [], []
            continue
        assert b.startswith(a + " ") and len(b.split()) == len(a.split()) + 1
        if not a.startswith("-DOCSTART-"):
            g.append(b.split()[-2]), p.append(b.split()[-1])
    if g:
        gold.append(g), pred.append(p)
    scores = span_scores(span_counts(gold, pred, iobes=False))  # the 2004 conlleval rules, IOB2 file
    rows = [r for r in csv.DictReader(open(run_dir / "logs" / "metrics.csv")) if r.get("test/f1")]
    assert abs(scores["f1"] - float(rows[-1]["test/f1"])) < 1e-6
    assert abs(scores["accuracy"] - float(rows[-1]["test/acc"])) < 1e-6


def test_predict_entry_text_mode_options_and_errors(run, tmp_path, capsys, monkeypatch):
    """`nlpseq.predict.main` is what `python -m nlpseq.predict` runs (in-process here: no start-up cost)."""
    import io

    from nlpseq.predict import main

    ckpt = f"ckpt={run[0] / 'checkpoints' / 'best.ckpt'}"
    monkeypatch.setattr("sys.stdin", io.StringIO("Boris Tolman visited Paris .\n\nVikdal Bank said so .\n"))
    assert main([ckpt, "scheme=BIOES"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and lines[1]["tokens"] == [] and "entities" in lines[0]
    assert all(t == "O" or t[0] in "BIES" for t in lines[0]["tags"])
    bad = tmp_path / "bad.conll"
    bad.write_text("Boris B-PER\nTolman I-PER\n\nvisited O extra\n")
    assert main([ckpt, f"input={bad}", "format=conll"]) == 2
    assert f"error: {bad}:4: expected 2 columns (like line 1), found 3" in capsys.readouterr().err
    assert main([ckpt, f"input={bad}", "scheme=IOB3"]) == 2
    assert "scheme: 'IOB3' is not one of IOB1, IOB2, BIOES" in capsys.readouterr().err


def test_bad_training_data_fails_with_file_and_line(cli, tmp_path):
    bad = tmp_path / "train.conll"
    bad.write_text("Boris B-PER\nTolman I-PER\nvisited Q-LOC\n")
    proc = cli(["task=ner", f"hydra.run.dir={tmp_path / 'run'}", f"data.train={bad}", *QUIET], cwd=tmp_path)
    assert proc.returncode == 2
    assert f"error: {bad}:3: tag 'Q-LOC' is not valid in the IOB2 scheme" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_span_reader_equals_conll_chunks_on_any_sequence():
    labels = ["O"] + [f"{p}-{t}" for t in ("LOC", "PER") for p in "BIES"]
    reader = SpanReader(labels)
    rng = random.Random(0)
    for _ in range(3000):
        ids = [rng.randrange(len(labels)) for _ in range(rng.randint(0, 7))]
        assert reader.spans(ids) == conll_chunks([labels[i] for i in ids])


def test_predict_file_streams_column_files_in_blocks(run):
    """Output is written block by block while the input is still being read; blocks change nothing in it."""
    import io

    p = nlpseq.load(run[0] / "checkpoints" / "best.ckpt")
    src = (SAMPLE / "test.conll").read_text().splitlines(keepends=True)
    whole = io.StringIO()
    n = p.predict_file(iter(src), whole)

    class Probe(io.StringIO):
        """Records how many input lines had been read when the first output arrived."""

        def __init__(self):
            super().__init__()
            self.read_at_first_write = None

        def write(self, text):
            if self.read_at_first_write is None:
                self.read_at_first_write = read[0]
            return super().write(text)

    read = [0]

    def lines():
        for line in src:
            read[0] += 1
            yield line

    blocks = Probe()
    assert p._predict_columns((x.rstrip("\n") for x in lines()), blocks, 64, p.model.data_scheme, 0, "auto",
                              "<test>", block=7) == n
    assert blocks.getvalue() == whole.getvalue()
    assert blocks.read_at_first_write < len(src) // 4
    # text mode streams too: a generator of many lines gives one JSON line each
    texts = io.StringIO()
    assert p.predict_file((f"Boris visited Paris {i} .\n" for i in range(5000)), texts, format="text") == 5000
    assert len(texts.getvalue().splitlines()) == 5000
