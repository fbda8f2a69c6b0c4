"""Ensembles: `nlpseq.load([a, b, ...])` and `python -m nlpseq.predict ckpt=a,b`; sentiment members average their
probabilities (the other tasks' ensembles are tested with each task)."""
import json

import pytest
import torch

import nlpseq
from nlpseq.bench import save_checkpoint
from nlpseq.errors import CheckpointError, ConfigError
from nlpseq.models.classifier import SentimentClassifier
from nlpseq.models.language_model import LanguageModel
from nlpseq.text.tokenizer import TextTokenizer

TEXTS = ["a gripping , funny film", "dull", "", "the plot is never charming .", "unseen words only"]


def sentiment(tmp_path, name: str, labels: list[str], corpus: list[str], seed: int):
    torch.manual_seed(seed)
    model = SentimentClassifier(TextTokenizer.train(corpus, kind="word").to_json(), labels,
                                embedding={"dim": 8}, encoder={"cell": "gru", "hidden_size": 8}).eval()
    path = tmp_path / f"{name}.ckpt"
    save_checkpoint(model, path)
    return path


@pytest.fixture
def members(tmp_path):
    corpus = ["a gripping , funny film", "the plot is dull", "never charming ."]
    return [sentiment(tmp_path, "a", ["negative", "positive"], corpus, 0),
            sentiment(tmp_path, "b", ["negative", "positive"], corpus, 1),  # same tokenizer as a
            # another vocabulary and the labels in the other order: aligned by name
            sentiment(tmp_path, "c", ["positive", "negative"], ["funny film", "dull plot"], 2)]


def test_probabilities_are_the_members_mean(members):
    single = [nlpseq.load(p).predict(TEXTS) for p in members]
    ensemble = nlpseq.load(members)
    assert len(ensemble.members) == 3 and len(ensemble._groups) == 2  # a and b share one encoding
    out = ensemble.predict(TEXTS)
    for i, pred in enumerate(out):
        for label in ("negative", "positive"):
            mean = sum(s[i].probabilities[label] for s in single) / 3
            assert pred.probabilities[label] == pytest.approx(mean, abs=2e-6)
        assert pred.label == max(pred.probabilities, key=pred.probabilities.get)
        assert list(pred.probabilities) == ["negative", "positive"]  # the first member's label order
    assert ensemble.predict("dull").probabilities == out[1].probabilities  # a single string: a single result
    # batching does not change the result
    assert [p.probabilities for p in ensemble.predict(TEXTS, batch_size=1)] == [p.probabilities for p in out]


def test_one_path_in_a_list_is_a_plain_predictor(members):
    p = nlpseq.load([members[0]])
    assert len(p.members) == 1
    assert p.predict(TEXTS) == nlpseq.load(members[0]).predict(TEXTS)


def test_bad_ensembles_are_one_line_errors(members, tmp_path):
    with pytest.raises(ConfigError, match="at least one checkpoint"):
        nlpseq.load([])
    other = sentiment(tmp_path, "other", ["neg", "pos"], ["x y"], 3)
    with pytest.raises(CheckpointError, match=r"other\.ckpt: labels \['neg', 'pos'\] differ"):
        nlpseq.load([members[0], other])
    lm = tmp_path / "lm.ckpt"
    save_checkpoint(LanguageModel(TextTokenizer.train(["to be or not"], kind="char").to_json(),
                                  embedding={"dim": 4}, decoder={"hidden_size": 4}, samples={"prompts": []}), lm)
    with pytest.raises(CheckpointError, match=r"lm\.ckpt: a generation checkpoint cannot join an ensemble of "
                                              r"sentiment"):
        nlpseq.load([members[0], lm])
    from nlpseq.predict import _ckpt_paths

    with pytest.raises(ConfigError, match="ckpt: not a path.*NUL"):
        _ckpt_paths(f"{members[0]},x\0")


def test_predict_cli_takes_comma_separated_checkpoints(members, tmp_path, cli):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS[:2]) + "\n", encoding="utf-8")
    proc = cli([f"ckpt={members[0]},{members[2]}", f"input={src}"], cwd=tmp_path, module="nlpseq.predict")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = nlpseq.load([members[0], members[2]]).predict(TEXTS[:2])
    assert [r["probabilities"] for r in rows] == [e.probabilities for e in expected]
    proc = cli([f"ckpt={members[0]},{tmp_path / 'missing.ckpt'}", f"input={src}"], cwd=tmp_path,
               module="nlpseq.predict")
    assert proc.returncode == 2 and "missing.ckpt" in proc.stderr and "Traceback" not in proc.stderr


def test_ensemble_script_scores_members_and_ensembles(members, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "scores.json"
    data = ROOT / "tasks" / "sentiment" / "sample" / "dev.tsv"
    proc = subprocess.run([sys.executable, str(ROOT / "tasks" / "sentiment" / "ensemble.py"), "--ckpt",
                           *map(str, members), "--data", str(data), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(out.read_text())
    assert result["examples"] == 300
    scores = result["accuracy"]
    assert list(scores)[3:] == ["ensemble of the first 2", "ensemble of the first 3"]
    predicted = nlpseq.load(members).predict([line.split("\t")[0] for line in data.read_text().splitlines()[1:]])
    gold = [line.split("\t")[1] for line in data.read_text().splitlines()[1:]]
    assert scores["ensemble of the first 3"] == pytest.approx(
        sum(p.label == g for p, g in zip(predicted, gold)) / len(gold))
