"""Shared LightningModule base: optimizers and schedules from config, checkpoint metadata, device moves.

Each task module passes only plain values (dicts, lists, strings, numbers) to `save_hyperparameters`,
so a checkpoint holds no pickled objects and loads with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from nlpseq.errors import ConfigError, check_choice, check_float, check_int

FORMAT_VERSION = 1
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau", "cosine", "linear")


def build_optimizer(params, name: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                    momentum: float = 0.9, betas: tuple[float, float] | list[float] = (0.9, 0.999),
                    allow_fused: bool = True) -> torch.optim.Optimizer:
    """`allow_fused=False` under mixed precision: Lightning refuses gradient clipping with an optimizer that
    unscales gradients itself, which the fused Adam kernel declares."""
    check_choice("name", name, OPTIMIZERS)
    check_float("lr", lr, 0.0, low_open=True)
    check_float("weight_decay", weight_decay, 0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    # the fused Adam(W) kernel makes one pass over each tensor instead of ~6: about 3x faster on CPU,
    # where the dense update of a large word embedding otherwise costs a third of a training step
    fused = allow_fused and all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in tensors)
    return cls(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), fused=fused or None)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision setting (`bf16-mixed`, `16-mixed`); None: no autocast."""
    precision = str(precision)
    if "mixed" not in precision:
        return None
    return torch.bfloat16 if precision.startswith("bf16") else torch.float16


class TaskModule(pl.LightningModule):
    """Base of the four task modules. Subclasses set `task` and call `save_hyperparameters(logger=False)`."""

    task: ClassVar[str] = ""
    monitor: ClassVar[str] = "val/loss"  # metric the plateau scheduler follows (task configs set their own)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Lightning asks `inspect.getfullargspec(training_step)` on every training step (does it take batch_idx?),
        # ~25 us a step, 6-10% of Lightning's own per-step cost; a precomputed `__signature__` answers at once.
        step = cls.__dict__.get("training_step")
        if callable(step) and not hasattr(step, "__signature__"):
            step.__signature__ = inspect.signature(step)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` before and after every hook it calls (~45 times a training step);
        # nn.Module.__setattr__ first checks parameters, buffers and submodules (~5 us a call, ~0.25 ms a step,
        # 1.5% of a sample-size NER step). A string attribute needs none of that.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def configure_optimizers(self) -> Any:
        optim_cfg = dict(self.hparams.get("optim") or {})
        try:
            optimizer = build_optimizer(self.parameters(), **optim_cfg, allow_fused=not self.mixed_precision)
        except ConfigError as e:
            raise e.under("model.optim") from None
        except TypeError as e:
            raise ConfigError("model.optim", str(e)) from None
        sched = dict(self.hparams.get("scheduler") or {"name": "none"})
        name = check_choice("model.scheduler.name", sched.pop("name", "none"), SCHEDULERS)
        if name == "none":
            return optimizer
        if name == "plateau":
            allowed = {"factor", "patience", "monitor", "mode", "min_lr"}
            _only(sched, allowed)
            s = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=sched.get("mode", "max"), factor=sched.get("factor", 0.5),
                patience=sched.get("patience", 1), min_lr=sched.get("min_lr", 0.0))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": s, "monitor": sched.get("monitor", self.monitor),
                                                             "interval": "epoch"}}
        _only(sched, {"warmup_steps", "min_lr_ratio"})
        warmup = check_int("model.scheduler.warmup_steps", sched.get("warmup_steps", 0), minimum=0)
        floor = check_float("model.scheduler.min_lr_ratio", sched.get("min_lr_ratio", 0.0), 0.0, 1.0)
        total = max(int(self.trainer.estimated_stepping_batches), 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            shape = 0.5 * (1 + math.cos(math.pi * progress)) if name == "cosine" else 1.0 - progress
            return floor + (1 - floor) * shape

        s = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": s, "interval": "step"}}

    @property
    def mixed_precision(self) -> bool:
        """Whether the trainer runs this module under autocast (`trainer.precision=bf16-mixed` or `16-mixed`)."""
        trainer = self._trainer
        return trainer is not None and autocast_dtype(getattr(trainer, "precision", "")) is not None

    def log_train_step(self, name: str, value: torch.Tensor, batch_size: int) -> None:
        """`self.log` of a per-step training value (shown on the progress bar), on the steps where something reads
        it: the logger's steps (`log_every_n_steps`, and the last) and the steps where a TQDM progress bar redraws
        (every `refresh_rate` batches and the epoch's last; every step for other bars). The logged series and the
        values the bar shows are the same; each skipped call saves ~1.2 ms on CPU (Lightning moves its result
        record to the value's device on every call), 5-10% of a small model's training step."""
        trainer = self._trainer
        if trainer is not None:
            connector = getattr(trainer, "_logger_connector", None)  # Lightning's own "log this step?" test
            if not getattr(connector, "should_update_logs", True) and not _bar_redraws(trainer):
                return
        self.log(name, value, prog_bar=True, batch_size=batch_size)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from nlpseq import __version__

        checkpoint["nlpseq"] = {"task": self.task, "format_version": FORMAT_VERSION, "version": __version__}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if device.type == "cpu":  # batches are collated on the CPU: nothing to move (Lightning's walk costs ~50 us)
            return batch
        # `lengths` stays on the CPU: packing needs it there, and moving it back would force a sync
        if isinstance(batch, dict) and "lengths" in batch:
            lengths = batch["lengths"]
            moved = super().transfer_batch_to_device({k: v for k, v in batch.items() if k != "lengths"},
                                                     device, dataloader_idx)
            moved["lengths"] = lengths
            return moved
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("nlpseq") or {}
        if meta.get("task") not in (None, self.task):
            raise ConfigError("ckpt_path", f"checkpoint is for task {meta.get('task')!r}, not {self.task!r}")


def _only(cfg: dict, allowed: set[str]) -> None:
    for key in cfg:
        if key not in allowed:
            raise ConfigError(f"model.scheduler.{key}", f"unknown option (known: {', '.join(sorted(allowed))})")


def _bar_redraws(trainer) -> bool:
    """Whether the training progress bar shows the metrics logged at this step."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    bar = trainer.progress_bar_callback
    if bar is None or not bar.is_enabled:
        return False
    if not isinstance(bar, TQDMProgressBar):
        return True
    n = trainer.fit_loop.epoch_loop.batch_idx + 1  # what the bar's on_train_batch_end will call n
    return n % bar.refresh_rate == 0 or n == trainer.num_training_batches

