"""Checkpoints: self-contained, safe to load, identical predictions in a fresh process."""
import json
import os
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch

import nlpseq
from nlpseq.errors import CheckpointError

TEXTS = ["a gripping , funny film", "dull", "", "   ", "the plot is never charming ."]


def test_every_checkpoint_loads_with_weights_only(trained_sentiment):
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(trained_sentiment / "checkpoints" / name, weights_only=True)
        assert ckpt["nlpseq"]["task"] == "sentiment"
        hp = ckpt["hyper_parameters"]
        assert isinstance(hp["tokenizer"], str) and hp["labels"] == ["negative", "positive"]


def test_round_trip_in_a_fresh_process(trained_sentiment, tmp_path):
    path = trained_sentiment / "checkpoints" / "best.ckpt"
    here = [(p.label, p.probabilities) for p in nlpseq.load(path).predict(TEXTS)]
    code = ("import json, nlpseq; p = nlpseq.load(%r); "
            "print(json.dumps([(r.label, r.probabilities) for r in p.predict(%r)]))" % (str(path), TEXTS))
    # from an empty directory: loading needs neither the data nor the conf tree
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [list(x) for x in here]
    for label, probs in here:
        assert label in ("negative", "positive") and abs(sum(probs.values()) - 1) < 1e-4


def test_single_string_and_bad_inputs(trained_sentiment):
    p = nlpseq.load(trained_sentiment / "checkpoints" / "best.ckpt")
    assert p.predict("great film").label in ("negative", "positive")
    assert p.predict([]) == []
    with pytest.raises(nlpseq.NlpseqError, match="text 1 is a int"):
        p.predict(["ok", 3])


def test_predict_cli_writes_json_lines(trained_sentiment, tmp_path, cli):
    src = tmp_path / "in.txt"
    # U+2028 inside a line is text, not a line break: the JSON record escapes it so line splitters keep it whole
    src.write_text("a great film .\n\nnever\u2028funny\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = cli([f"ckpt={trained_sentiment / 'checkpoints' / 'best.ckpt'}", f"input={src}", f"output={out}"],
               cwd=tmp_path, module="nlpseq.predict")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a great film .", "", "never\u2028funny"]
    proc = cli([f"ckpt={trained_sentiment / 'checkpoints' / 'best.ckpt'}", "input=-"], cwd=tmp_path,
               module="nlpseq.predict", input="fine\n")
    assert proc.returncode == 0 and json.loads(proc.stdout)["text"] == "fine"
    proc = cli([f"ckpt={tmp_path / 'missing.ckpt'}", "input=-"], cwd=tmp_path, module="nlpseq.predict", input="")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/nlpseq_pwned",))


def test_pickle_payload_is_refused_without_running(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"nlpseq": {"task": "sentiment", "format_version": 1}, "payload": Boom()}, path)
    if os.path.exists("/tmp/nlpseq_pwned"):
        os.remove("/tmp/nlpseq_pwned")
    with pytest.raises(CheckpointError, match="refused to load"):
        nlpseq.load(path)
    assert not os.path.exists("/tmp/nlpseq_pwned")


def test_corrupt_foreign_and_future_checkpoints(trained_sentiment, tmp_path):
    good = (trained_sentiment / "checkpoints" / "best.ckpt").read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="trunc.ckpt: not a readable checkpoint"):
        nlpseq.load(tmp_path / "trunc.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        nlpseq.load(tmp_path / "text.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not an nlpseq checkpoint"):
        nlpseq.load(tmp_path / "foreign.ckpt")
    ckpt = torch.load(trained_sentiment / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["nlpseq"]["format_version"] = 99
    torch.save(ckpt, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="newer than this nlpseq"):
        nlpseq.load(tmp_path / "future.ckpt")
    ckpt["nlpseq"].update(format_version=1, task="ner")
    torch.save(ckpt, tmp_path / "other.ckpt")
    from nlpseq.checkpoint import load_module

    with pytest.raises(CheckpointError, match="this is a ner checkpoint, not sentiment"):
        load_module(tmp_path / "other.ckpt", task="sentiment")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        nlpseq.load(tmp_path / "nothing.ckpt")


def test_predict_cli_turns_an_allocation_failure_into_one_line(trained_sentiment, tmp_path, capsys, monkeypatch):
    """An absurd batch or beam that exhausts memory ends with one line naming the options to lower."""
    from nlpseq.predict import main
    from nlpseq.predictors.sentiment import SentimentPredictor

    def exhausted(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 137438953472 bytes.")

    monkeypatch.setattr(SentimentPredictor, "predict", exhausted)
    src = tmp_path / "in.txt"
    src.write_text("fine\n")
    assert main([f"ckpt={trained_sentiment / 'checkpoints' / 'best.ckpt'}", f"input={src}", "batch_size=100000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out of memory while predicting (batch_size=100000)")
    assert "DefaultCPUAllocator" in err[0]
    monkeypatch.setattr(SentimentPredictor, "predict", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):  # anything else is not hidden
        main([f"ckpt={trained_sentiment / 'checkpoints' / 'best.ckpt'}", f"input={src}"])

