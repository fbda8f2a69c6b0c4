import random

import numpy as np
import pytest
import torch

from nlpseq.callbacks import ExactResume, LastCheckpoint, NanGuard, batch_tokens
from nlpseq.errors import ConfigError, NlpseqError


class FakeTrainer:
    global_step, current_epoch, world_size, global_rank, ckpt_path = 7, 1, 1, 0, None

    class strategy:
        root_device = torch.device("cpu")

        class checkpoint_io:
            last_saved = ("/run/checkpoints/last.ckpt", 5)

    callback_metrics: dict = {}
    lr_scheduler_configs: list = []


def test_nan_guard_names_step_and_last_checkpoint():
    guard = NanGuard()
    guard.on_train_start(FakeTrainer(), None)
    guard.on_before_backward(FakeTrainer(), None, torch.tensor(0.5))
    with pytest.raises(NlpseqError, match=r"loss is nan at step 7 .*stopped before that update.*last.ckpt \(step 5\)"):
        guard.on_before_backward(FakeTrainer(), None, torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(NlpseqError, match="loss is inf"):
        guard.on_before_backward(FakeTrainer(), None, torch.tensor(float("inf")))


class _Steps(FakeTrainer):
    def __init__(self, step):
        self.global_step = step


def test_nan_guard_defers_the_check_on_accelerators(monkeypatch):
    """On a GPU the flag stays on the device: read every N steps and before a checkpoint, naming the first bad step."""
    guard = NanGuard()
    monkeypatch.setattr(guard, "_interval", lambda device: (4, True))  # what a CUDA loss gets, on CPU tensors
    guard.on_train_start(FakeTrainer(), None)
    for step, value in enumerate([0.5, 0.4, 0.3, 0.2, 0.1]):  # a clean check at step 3
        guard.on_before_backward(_Steps(step), None, torch.tensor(value))
    guard.on_before_backward(_Steps(5), None, torch.tensor(float("inf")))  # first bad step: not read yet
    guard.on_before_backward(_Steps(6), None, torch.tensor(float("nan")))
    with pytest.raises(NlpseqError, match=r"loss is inf at step 5 .*before any checkpoint.*last.ckpt \(step 5\)"):
        guard.on_save_checkpoint(_Steps(6), None, {})  # a checkpoint is about to be written: read the flag first
    with pytest.raises(NlpseqError, match="at step 5"):
        guard.on_before_backward(_Steps(7), None, torch.tensor(1.0))  # the regular check at step 7 too


def test_nan_guard_auto_is_synchronous_on_cpu_and_deferred_elsewhere():
    guard = NanGuard()
    assert guard._interval(torch.device("cpu")) == (1, False)
    assert guard._interval(torch.device("cuda")) == (NanGuard.AUTO_ACCELERATOR_STEPS, True)
    assert NanGuard(1)._interval(torch.device("cuda")) == (1, False)
    assert NanGuard(5)._interval(torch.device("cpu")) == (5, False)
    with pytest.raises(ConfigError, match="callbacks.nan_guard.check_every_n_steps"):
        NanGuard(0)


def test_batch_tokens_counts_real_tokens():
    assert batch_tokens({"lengths": torch.tensor([3, 5])}) == 8
    assert batch_tokens({"num_tokens": 11, "lengths": torch.tensor([1])}) == 11
    assert batch_tokens([1, 2]) == 0


def test_last_checkpoint_rejects_bad_interval(tmp_path):
    with pytest.raises(ConfigError, match="callbacks.last_checkpoint.every_n_steps"):
        LastCheckpoint(str(tmp_path), every_n_steps=-1)


def test_random_state_round_trip_restores_at_the_next_batch():
    """The saved states come back at the first training batch after loading, not at load time."""
    cb = ExactResume()
    cb.setup(FakeTrainer(), None, "fit")
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = cb.state_dict()
    expected = (torch.rand(2), np.random.rand(), random.random())
    state = torch.load(_saved(state), weights_only=True)  # checkpoints stay loadable without pickled objects
    resumed = ExactResume()
    resumed.setup(FakeTrainer(), None, "fit")
    resumed.load_state_dict(state)
    torch.manual_seed(2)  # whatever building the run draws in between
    resumed.on_train_batch_start(FakeTrainer(), None, None, 0)
    got = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    torch.manual_seed(3)
    resumed.on_train_batch_start(FakeTrainer(), None, None, 1)  # only once
    assert not torch.equal(torch.rand(2), expected[0])


def _saved(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf
