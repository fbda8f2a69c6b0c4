"""Learning tests through the real training path (Lightning Trainer + data module), then a checkpoint round trip.

- stream mode: "aaaab" repeated. A model without memory cannot tell which 'a' it is at (best bigram
  loss ~0.45 nats/char); a working LSTM with state carried across windows predicts it exactly.
- lines mode with a condition: "up" examples count a, b, c, a, ...; "down" examples count c, b, a, c, ...;
  generating from the start symbol alone, only the condition tells which.
"""
import contextlib
import io
import json

import pytest
import pytorch_lightning as pl
import torch
from gen_helpers import datamodule

import nlpseq
from nlpseq.models.language_model import LanguageModel
from nlpseq.predictors.generation import GenerationPredictor

pytestmark = pytest.mark.usefixtures("one_thread")


def fit(model, dm, epochs: int) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         use_distributed_sampler=False, gradient_clip_val=1.0)
    trainer.fit(model, datamodule=dm)
    return trainer


def build(dm, samples=None, lr=0.02, **decoder) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(**dm.model_inputs(), embedding={"dim": 16},
                         decoder={"hidden_size": 32, "num_layers": 1, **decoder}, condition_dim=8,
                         optim={"name": "adam", "lr": lr}, samples=samples or {"prompts": []})


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    dm = datamodule(tmp, "aaaab" * 800, "aaaab" * 300, seq_len=20, batch_size=8, eval_batch_size=1, seed=1)
    model = build(dm, samples={"prompts": ["aaaab"], "max_new_tokens": 10, "temperature": 0.3}, lr=0.03)
    threads = torch.get_num_threads()  # set here too: module fixtures may run before one_thread
    torch.set_num_threads(1)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            trainer = fit(model, dm, epochs=12)
    finally:
        torch.set_num_threads(threads)
    return tmp, model, trainer, printed.getvalue()


def test_stream_model_learns_a_pattern_that_needs_memory(stream_run):
    _, model, trainer, printed = stream_run
    val = float(trainer.callback_metrics["val/loss"])
    assert val < 0.15, f"val/loss {val:.3f}: no better than a model without memory (~0.45)"
    assert float(trainer.callback_metrics["val/bpc"]) == pytest.approx(val / 0.6931471805599453, rel=1e-5)
    gen = GenerationPredictor(model)
    # prompts begin like the training stream (<s>aaaab...): right after <s> the phase is known
    assert gen.generate("aaaab", max_new_tokens=15, temperature=0) == "aaaab" + "aaaab" * 3
    assert gen.generate("aaaabaa", max_new_tokens=8, temperature=0) == "aaaabaa" + "aabaaaab"
    assert "samples at epoch 11" in printed and "\naaaabaaaab" in printed


def test_checkpoint_round_trip_gives_identical_output(stream_run):
    tmp, model, trainer, _ = stream_run
    path = tmp / "lm.ckpt"
    trainer.save_checkpoint(path)
    before = GenerationPredictor(model.eval())
    after = nlpseq.load(path)
    assert isinstance(after, GenerationPredictor) and after.model.tokenizer.to_json() == model.tokenizer.to_json()
    prompts = ["", "aaaab", "aa", "xyz"]
    assert after.generate(prompts, max_new_tokens=30, temperature=0) == \
        before.generate(prompts, max_new_tokens=30, temperature=0)
    kw = dict(max_new_tokens=30, temperature=1.5, seed=5, num_samples=3, stop_at_eos=False)
    assert after.generate(prompts, **kw) == before.generate(prompts, **kw)


def test_condition_starts_the_state_and_decides_the_sequence(tmp_path):
    rng = torch.Generator().manual_seed(0)
    rows = []
    for i in range(600):
        style = "up" if i % 2 else "down"
        n = int(torch.randint(3, 9, (1,), generator=rng))
        cycle = "abc" if style == "up" else "cba"
        rows.append(json.dumps({"text": (cycle * 3)[:n], "style": style}))
    text = "\n".join(rows) + "\n"
    dm = datamodule(tmp_path, text, "\n".join(rows[:60]) + "\n", name="s.jsonl", mode="lines",
                    condition_column="style", batch_size=16, eval_batch_size=64)
    model = build(dm)
    fit(model, dm, epochs=4)
    gen = GenerationPredictor(model)
    up, down = gen.predict(["", ""], max_new_tokens=12, temperature=0, condition=["up", "down"])
    assert len(up.texts[0]) >= 3 and ("abc" * 4).startswith(up.texts[0])
    assert len(down.texts[0]) >= 3 and ("cba" * 4).startswith(down.texts[0])
    samples = gen.predict("", max_new_tokens=12, temperature=1.0, seed=0, num_samples=8, condition="down")
    assert all(t[:1] == "c" for t in samples.texts)
