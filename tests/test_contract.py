"""The contract every task keeps, through the real CLI on its shipped sample:
train a little, the loss goes down, the checkpoint loads with weights_only=True and on its own,
`predict` returns the task's typed results, empty input gives a normal result, and a checkpoint of
another task is refused by name.
"""
import csv
import math

import pytest
import torch
from conftest import QUIET

import nlpseq
from nlpseq.checkpoint import load_module
from nlpseq.errors import CheckpointError

INPUTS = {
    "sentiment": ["a gripping , funny film", ""],
    "ner": ["Angela Merkel visited Paris .", ""],
    "translation": ["Der Mann sieht ein Hund.", ""],
    "generation": ["The", ""],
}


def check_result(task, result, text):
    if task == "sentiment":
        assert result.label in result.probabilities and abs(sum(result.probabilities.values()) - 1) < 1e-4
    elif task == "ner":
        assert len(result.tokens) == len(result.tags) == len(result.offsets)
        for e in result.entities:
            assert text[e.start:e.end] == e.text and 0 <= e.confidence <= 1
    elif task == "translation":
        assert isinstance(result.translation, str) and math.isfinite(result.score) or result.source == ""
    else:
        assert len(result.texts) >= 1 and all(isinstance(t, str) for t in result.texts)


def first_and_last_train_loss(run_dir):
    rows = [r for r in csv.DictReader(open(run_dir / "logs" / "metrics.csv")) if r.get("train/loss")]
    return float(rows[0]["train/loss"]), float(rows[-1]["train/loss"])


@pytest.mark.parametrize("task", list(INPUTS))
def test_task_contract(task, tmp_path, cli):
    run = tmp_path / "run"
    proc = cli([f"task={task}", f"hydra.run.dir={run}", "trainer.max_epochs=2", "trainer.log_every_n_steps=2",
                *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best checkpoint:" in proc.stdout
    first, last = first_and_last_train_loss(run)
    assert last < first, (first, last)

    path = run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["nlpseq"]["task"] == task
    predictor = nlpseq.load(path)
    assert predictor.task == task
    texts = INPUTS[task]
    results = predictor.predict(texts)
    assert len(results) == len(texts)
    for result, text in zip(results, texts):
        check_result(task, result, text)
    single = predictor.predict(texts[0])
    assert not isinstance(single, list)

    other = "ner" if task == "sentiment" else "sentiment"
    with pytest.raises(CheckpointError, match=f"this is a {task} checkpoint, not {other}"):
        load_module(path, task=other)
