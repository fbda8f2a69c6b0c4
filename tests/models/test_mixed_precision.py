"""`trainer.precision=bf16-mixed` trains every task with gradient clipping (the CPU's bf16 autocast; CUDA the same).

Lightning refuses to clip gradients with an optimizer that unscales them itself, which the fused Adam kernel
declares: under mixed precision TaskModule builds the unfused Adam instead of failing with a deep traceback.
"""
from __future__ import annotations

import contextlib
import os

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from nlpseq.bench import compose


@pytest.mark.parametrize("task", ["sentiment", "ner", "translation", "generation"])
def test_bf16_mixed_trains_with_clipping(tmp_path, task):
    cfg = compose([f"task={task}"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare(tmp_path)
    model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
    before = [p.detach().clone() for p in model.parameters()]
    trainer = pl.Trainer(max_steps=3, limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, logger=False, accelerator="cpu",
                         devices=1, precision="bf16-mixed", gradient_clip_val=1.0)
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
    assert trainer.global_step == 3 and model.mixed_precision
    optimizer = trainer.optimizers[0]
    assert not optimizer.defaults.get("fused")
    # fp32 master weights, updated and finite
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


def test_full_precision_keeps_the_fused_optimizer(tmp_path):
    cfg = compose(["task=sentiment"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare(tmp_path)
    model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
    assert not model.mixed_precision  # no trainer yet
    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, logger=False, accelerator="cpu",
                         devices=1, gradient_clip_val=1.0)
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
    assert trainer.optimizers[0].defaults["fused"] is True
