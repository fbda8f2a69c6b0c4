"""DDP on two CPU processes (gloo) for the tasks whose metrics are not plain means: span F1 (NER) is
summed as counts over ranks and BLEU (translation) is computed on hypotheses gathered from every rank.
In both cases the figure logged at test time must equal a single-process evaluation of the same checkpoint."""
from __future__ import annotations

import csv

from conftest import QUIET, ROOT

import nlpseq
from nlpseq.metrics.spans import span_counts, span_scores

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]


def _last(run, key):
    rows = [r for r in csv.DictReader(open(run / "logs" / "metrics.csv")) if r.get(key)]
    return float(rows[-1][key])


def _conll(path):
    sents, toks, tags = [], [], []
    for line in path.read_text().splitlines() + [""]:
        if not line.strip() or line.startswith("-DOCSTART-"):
            if toks:
                sents.append((toks, tags))
            toks, tags = [], []
            continue
        parts = line.split()
        toks.append(parts[0]), tags.append(parts[-1])
    return sents


def test_ner_ddp_span_f1_equals_single_process(tmp_path, cli):
    run = tmp_path / "ner"
    proc = cli(["task=ner", f"hydra.run.dir={run}", "trainer.max_epochs=2", *DDP, *QUIET], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()  # the worker wrote into the same run directory
    sents = _conll(ROOT / "tasks" / "ner" / "sample" / "test.conll")
    tagger = nlpseq.load(run / "checkpoints" / "best.ckpt")
    preds = tagger.predict([toks for toks, _ in sents])
    scores = span_scores(span_counts([g for _, g in sents], [p.tags for p in preds], iobes=False))
    assert abs(scores["f1"] - _last(run, "test/f1")) < 1e-6
    assert abs(scores["accuracy"] - _last(run, "test/acc")) < 1e-6


def test_translation_ddp_bleu_equals_single_process(tmp_path, cli):
    from nlpseq.metrics.bleu import corpus_scores

    run = tmp_path / "mt"
    # out of core: the first process encodes the training pairs to run/cache, the worker maps the same files
    proc = cli(["task=translation", f"hydra.run.dir={run}", "trainer.max_epochs=1", "data.out_of_core=true", *DDP, *QUIET],
               cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()
    assert "train.examples: reusing 3000 encoded examples" in (run / "train_ddp_process_1.log").read_text()
    sample = ROOT / "tasks" / "translation" / "sample"
    sources = (sample / "test.de").read_text(encoding="utf-8").splitlines()
    references = (sample / "test.en").read_text(encoding="utf-8").splitlines()
    # one process, the checkpoint's own test-time search settings (beam 5)
    hyps = nlpseq.load(run / "checkpoints" / "best.ckpt").predict(sources)
    hyps = [h.translation for h in hyps]
    single = corpus_scores(hyps, references)
    assert abs(single["bleu"] - _last(run, "test/bleu")) < 1e-4
    assert abs(single["chrf"] - _last(run, "test/chrf")) < 1e-4
