"""Exact resume: a run killed with SIGKILL at any moment (even half way through writing a checkpoint) and
resumed with `ckpt_path=last` ends exactly as an uninterrupted run: weights, optimizer, LR schedule, early
stopping, data position, random state, carried language-model state, metrics."""
import signal

import pytest
import torch


def load(path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
    return x == y


def assert_same_training(reference, resumed) -> None:
    a, b = load(reference), load(resumed)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    worst = max(float((t - b["state_dict"][k]).abs().max()) for k, t in a["state_dict"].items() if t.numel())
    assert worst == 0.0 and same(a["state_dict"], b["state_dict"])
    assert same(a["optimizer_states"], b["optimizer_states"])
    assert same(a["lr_schedulers"], b["lr_schedulers"])
    assert same(a.get("carried_state"), b.get("carried_state"))
    assert same(a["callbacks"]["ExactResume"]["ranks"], b["callbacks"]["ExactResume"]["ranks"])  # random state
    for key, state in a["callbacks"].items():
        if key.startswith("EarlyStopping"):
            assert same(state, b["callbacks"][key])
        if key.startswith("ModelCheckpoint"):
            for field in ("best_model_score", "current_score"):
                assert same(state[field], b["callbacks"][key][field])


def assert_resumed(k, step: int) -> None:
    assert k.killed.returncode == -signal.SIGKILL, k.killed.stderr[-2000:]
    assert k.step_after_kill == step
    assert k.resumed.returncode == 0, k.resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in k.resumed.stdout + k.resumed.stderr
    assert "not resumable" not in k.resumed.stderr
    assert sorted(p.name for p in (k.run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_sentiment_killed_while_writing_a_checkpoint_resumes_exactly(sentiment_runs):
    k, ref = sentiment_runs["killed"], sentiment_runs["a"]
    assert ref.returncode == 0, ref.stderr[-3000:]
    # it died writing step 100's checkpoint: a half-written temporary file, last.ckpt still step 80 (mid-epoch 1)
    assert [n for n in k.files_after_kill if not n.startswith(".last.ckpt.")] == ["best.ckpt", "last.ckpt"]
    assert any(n.startswith(".last.ckpt.") and n.endswith(".tmp") for n in k.files_after_kill)
    assert_resumed(k, step=80)  # (the leftover temporary file is gone)
    for name in ("last.ckpt", "best.ckpt"):
        assert_same_training(ref.run_dir / "checkpoints" / name, k.run_dir / "checkpoints" / name)
    assert k.resumed.results == ref.results and "test/acc" in ref.results


def test_language_model_stream_resumes_exactly_after_two_kills(generation_runs):
    """Epoch end: the next epoch starts fresh. Mid-epoch: the carried state and the window position come back.
    Both: the plateau scheduler takes the steps Lightning alone would skip."""
    ref, first, second = generation_runs["ref"], generation_runs["first"], generation_runs["second"]
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert first.killed.returncode == -signal.SIGKILL and first.step_after_kill == 50
    assert_resumed(second, step=70)  # the first resume, killed in turn, then the second
    assert "Restoring states from the checkpoint" in first.resumed.stdout + first.resumed.stderr
    assert_same_training(ref.run_dir / "checkpoints" / "last.ckpt", second.run_dir / "checkpoints" / "last.ckpt")
    assert load(ref.run_dir / "checkpoints" / "last.ckpt")["lr_schedulers"][0]["last_epoch"] == 2  # stepped twice
    assert second.resumed.results == ref.results and "val/loss (last epoch)" in ref.results


@pytest.mark.parametrize("runs,step,metric", [
    ("ner_runs", 30, "test/f1"),            # word dropout, char CNN, CRF; span-F1 state and the test table
    ("translation_runs", 60, "test/bleu"),  # teacher-forced training, greedy validation BLEU, beam-search test
])
def test_killed_mid_epoch_resumes_exactly(request, runs, step, metric):
    runs = request.getfixturevalue(runs)
    ref, k = runs["ref"], runs["killed"]
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert_resumed(k, step=step)
    for name in ("last.ckpt", "best.ckpt"):
        assert_same_training(ref.run_dir / "checkpoints" / name, k.run_dir / "checkpoints" / name)
    assert k.resumed.results == ref.results and metric in ref.results
