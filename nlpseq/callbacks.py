"""Lightning callbacks of our own: training throughput in tokens per second."""
from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch


def batch_tokens(batch: Any) -> int:
    """Real (non-padding) tokens in a batch: its `num_tokens`, else the sum of its CPU `lengths`."""
    if isinstance(batch, dict):
        if "num_tokens" in batch:
            return int(batch["num_tokens"])
        lengths = batch.get("lengths")
        if isinstance(lengths, torch.Tensor) and lengths.device.type == "cpu":
            return int(lengths.sum())
    return 0


class Throughput(pl.Callback):
    """Logs `train/tokens_per_sec` each epoch: real tokens over training-step wall time (validation excluded)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tokens, self.seconds = 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._start
        self.tokens += batch_tokens(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seconds > 0 and self.tokens > 0:
            # per process; multiply by world size for the whole job
            pl_module.log("train/tokens_per_sec", self.tokens / self.seconds * trainer.world_size, rank_zero_only=True)


class NanGuard(pl.Callback):
    """Stops training at the first non-finite loss, before a bad state can be checkpointed.

    The message names the step and the last good checkpoint (left as it was). On GPU the check costs a
    host sync per step; `check_every_n_steps` trades that against how late a NaN is caught.
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.every = max(1, int(check_every_n_steps))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx % self.every:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            from nlpseq.errors import NlpseqError

            ckpt = trainer.checkpoint_callback
            last = (getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "")) if ckpt else ""
            raise NlpseqError(f"training loss is {float(loss)} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                              f"stopped. Last good checkpoint: {last or 'none saved yet'}. Try a lower model.optim.lr "
                              f"or trainer.gradient_clip_val")
