"""The per-step training loss reaches the logger and the progress bar on the steps they read it, and only then."""
from __future__ import annotations

import contextlib
import csv
import os

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import TQDMProgressBar

from nlpseq.bench import compose
from nlpseq.loggers import CSVLogger


class _Record(pl.Callback):
    """Each step's loss, and what the bar shows after each of its redraws."""

    def __init__(self, bar: TQDMProgressBar):
        self.bar, self.losses, self.shown = bar, {}, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step - 1
        self.losses[step] = float(outputs["loss"])
        n = batch_idx + 1
        if n % self.bar.refresh_rate == 0 or n == trainer.num_training_batches:
            self.shown[step] = float(trainer.progress_bar_metrics["train/loss"])


def test_loss_is_logged_for_the_logger_and_the_bar_only(tmp_path):
    cfg = compose(["task=sentiment", "data.batch_size=16"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare(tmp_path)
    model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
    calls = []
    log = model.log

    def counting_log(name, *args, **kwargs):
        calls.append(name)
        return log(name, *args, **kwargs)

    model.log = counting_log
    bar = TQDMProgressBar(refresh_rate=4)
    record = _Record(bar)
    trainer = pl.Trainer(max_steps=30, limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, log_every_n_steps=7,
                         logger=CSVLogger(str(tmp_path), name="logs", version=""), callbacks=[bar, record])
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        trainer.fit(model, datamodule=dm)
    assert len(record.losses) == 30
    # the bar shows the loss of the step it redraws at
    assert record.shown and all(abs(v - record.losses[s]) < 1e-6 for s, v in record.shown.items())
    # the logger's rows hold the loss of their own step
    rows = [r for r in csv.DictReader(open(tmp_path / "logs" / "metrics.csv")) if r.get("train/loss")]
    assert rows and all(abs(float(r["train/loss"]) - record.losses[int(r["step"])]) < 1e-6 for r in rows)
    # and nothing else pays for a log call
    assert 0 < calls.count("train/loss") <= len(record.shown) + len(rows)
    assert calls.count("train/loss") < 30
    assert torch.isfinite(torch.tensor(list(record.losses.values()))).all()


def test_hook_name_bookkeeping_skips_module_registration():
    # Lightning sets `_current_fx_name` around every hook; TaskModule stores it as a plain attribute, and every
    # other assignment still goes through nn.Module (parameters and submodules register)
    from nlpseq.models.base import TaskModule

    m = TaskModule()
    m._current_fx_name = "training_step"
    assert m.__dict__["_current_fx_name"] == "training_step" and m._current_fx_name == "training_step"
    m._current_fx_name = None
    assert m._current_fx_name is None
    m.lin = torch.nn.Linear(2, 2)
    m.scale = torch.nn.Parameter(torch.ones(1))
    assert "lin" in m._modules and "scale" in m._parameters and "lin" not in m.__dict__


def test_training_step_signature_is_precomputed_and_exact():
    # Lightning inspects training_step's signature every step; each task module carries it precomputed, and
    # Lightning's own test still finds batch_idx (a step without it would be called with one argument)
    import inspect

    from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature

    from nlpseq.models.base import TaskModule
    from nlpseq.models.classifier import SentimentClassifier
    from nlpseq.models.language_model import LanguageModel
    from nlpseq.models.seq2seq import Translator
    from nlpseq.models.tagger import SequenceTagger

    for cls in (SentimentClassifier, SequenceTagger, Translator, LanguageModel):
        assert "__signature__" in vars(cls.training_step)
        assert cls.training_step.__signature__ == inspect.signature(inspect.unwrap(cls.training_step))

    class OneArgument(TaskModule):
        def training_step(self, batch):
            return batch

    assert not is_param_in_hook_signature(OneArgument().training_step, "batch_idx", min_args=2)
    assert is_param_in_hook_signature(SentimentClassifier.training_step.__get__(object()), "batch_idx", min_args=2)
