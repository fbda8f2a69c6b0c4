"""Test-only callbacks, loaded in CLI subprocesses through PYTHONPATH: `+callbacks.kill._target_=killer.KillAt`."""
from __future__ import annotations

import io
import os
import signal

import pytorch_lightning as pl
import torch


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(pl.Callback):
    """SIGKILL this process when training reaches `step`; with `during_save`, half way through the next checkpoint
    file written after that step instead."""

    def __init__(self, step: int, during_save: bool = False):
        self.step, self.during_save = step, during_save

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if not self.during_save:
            _die()
        real_save = torch.save

        def dying_save(obj, f, *args, **kwargs):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _die()

        torch.save = dying_save


class PoisonAt(pl.Callback):
    """Makes the weights NaN at the start of `step`, so that step's loss is NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))
