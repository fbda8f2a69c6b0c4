import pytest
import torch

from nlpseq.callbacks import NanGuard, batch_tokens
from nlpseq.errors import NlpseqError


class FakeTrainer:
    global_step, current_epoch = 7, 1

    class checkpoint_callback:
        last_model_path = "/run/checkpoints/last.ckpt"
        best_model_path = "/run/checkpoints/best.ckpt"


def test_nan_guard_names_step_and_last_checkpoint():
    guard = NanGuard()
    guard.on_train_batch_end(FakeTrainer(), None, {"loss": torch.tensor(0.5)}, None, 0)
    with pytest.raises(NlpseqError, match=r"loss is nan at step 7 .*last.ckpt"):
        guard.on_train_batch_end(FakeTrainer(), None, {"loss": torch.tensor(float("nan"))}, None, 1)
    with pytest.raises(NlpseqError, match="loss is inf"):
        guard.on_train_batch_end(FakeTrainer(), None, torch.tensor(float("inf")), None, 2)


def test_batch_tokens_counts_real_tokens():
    assert batch_tokens({"lengths": torch.tensor([3, 5])}) == 8
    assert batch_tokens({"num_tokens": 11, "lengths": torch.tensor([1])}) == 11
    assert batch_tokens([1, 2]) == 0
