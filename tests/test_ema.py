"""Weight averaging (`callbacks.ema`): checkpoints hold the averaged weights, which `nlpseq.load` and the
test pass use, and the raw weights for resuming."""
from __future__ import annotations

import csv
import math

import torch
from conftest import QUIET, ROOT

import nlpseq


def test_ema_checkpoint_holds_the_average_and_test_uses_it(tmp_path, cli):
    run = tmp_path / "run"
    proc = cli(["task=sentiment", f"hydra.run.dir={run}", "trainer.max_epochs=2",
                "callbacks.ema={_target_:nlpseq.callbacks.EMA,decay:0.9}", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    avg, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert avg.keys() == raw.keys() and any(not torch.equal(avg[k], raw[k]) for k in avg)
    # the logged test metrics are those of the averaged weights, as nlpseq.load serves them; the loss tells the
    # two weight sets apart even where both classify every test sentence right
    rows = [line.split("\t") for line in (ROOT / "tasks/sentiment/sample/test.tsv").read_text().splitlines()[1:]]
    texts = [t for t, _ in rows]
    predictor = nlpseq.load(run / "checkpoints" / "best.ckpt")

    def acc_and_loss(preds):
        acc = sum(p.label == gold for p, (_, gold) in zip(preds, rows)) / len(rows)
        return acc, -sum(math.log(p.probabilities[gold]) for p, (_, gold) in zip(preds, rows)) / len(rows)

    acc, loss = acc_and_loss(predictor.predict(texts))
    predictor.model.load_state_dict(raw)
    _, raw_loss = acc_and_loss(predictor.predict(texts))
    logged = [r for r in csv.DictReader(open(run / "logs" / "metrics.csv")) if r.get("test/acc")][-1]
    assert abs(acc - float(logged["test/acc"])) < 1e-6
    assert abs(loss - float(logged["test/loss"])) < 1e-4, (loss, raw_loss, logged["test/loss"])
    assert abs(raw_loss - loss) > 1e-3, (loss, raw_loss)


def test_ema_rejects_a_bad_decay(tmp_path, cli):
    proc = cli(["task=sentiment", f"hydra.run.dir={tmp_path / 'run'}",
                "callbacks.ema={_target_:nlpseq.callbacks.EMA,decay:1.5}", *QUIET], cwd=tmp_path)
    assert proc.returncode == 2 and "callbacks.ema.decay" in proc.stderr and "Traceback" not in proc.stderr
