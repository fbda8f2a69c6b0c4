"""The generation task end to end: `python -m nlpseq task=generation`, the predict CLI, and the shipped configs."""
import json

import pytest
import torch
from conftest import QUIET, ROOT, SHARED_DATA, run_cli
from gen_helpers import char_tokenizer
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nlpseq.config import conf_dir, register_resolvers
from nlpseq.predict import main as predict_main

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = ROOT / "tasks" / "generation" / "sample"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("generation_run")
    run = base / "run"
    proc = run_cli(["task=generation", f"hydra.run.dir={run}", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
                    "model.samples.max_new_tokens=30", *QUIET], cwd=base, env_extra={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def test_training_cli_prints_samples_and_metrics(trained):
    run, proc = trained
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "vocab.json").is_file()
    assert "samples at epoch 0" in proc.stdout and "samples at epoch 1" in proc.stdout
    assert "> prompt 'KING:':\nKING:" in proc.stdout
    assert "val/bpc" in proc.stdout and "val/ppl" in proc.stdout and "best val/loss" in proc.stdout


def test_predict_cli_writes_samples(trained, tmp_path, capsys):
    ckpt = trained[0] / "checkpoints" / "best.ckpt"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('KING:\n\n{"prompt": "FOOL:\\n"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = [f"ckpt={ckpt}", f"input={prompts}", "max_new_tokens=25", "temperature=0.8", "top_p=0.9", "seed=3",
            "num_samples=2"]
    assert predict_main([*args, f"output={out}"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == ["KING:", "", "FOOL:\n"]
    assert all(len(r["texts"]) == 2 and len(r["scores"]) == 2 and r["condition"] is None for r in rows)
    again = tmp_path / "again.jsonl"
    assert predict_main([*args, f"output={again}"]) == 0
    assert again.read_text() == out.read_text()  # the seed makes the samples reproducible
    assert predict_main([f"ckpt={ckpt}", f"input={prompts}", "max_new_tokens=10", "beam_size=3", "format=text"]) == 0
    assert capsys.readouterr().out.startswith("KING:")


@pytest.mark.parametrize("option,message", [
    ("temperature=-1", "error: temperature: must be >= 0.0, got -1.0"),
    ("top_p=1.5", "error: top_p: must be <= 1.0, got 1.5"),
    ("condition=happy", "error: condition: this model was trained without conditions"),
    ("format=xml", "error: format: 'xml' is not one of jsonl, text"),
    ("beams=2", "error: beams: unknown option for generation"),
])
def test_predict_cli_bad_options_give_one_line(trained, tmp_path, capsys, option, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("KING:\n", encoding="utf-8")
    assert predict_main([f"ckpt={trained[0] / 'checkpoints' / 'best.ckpt'}", f"input={prompts}", option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def _compose(overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("experiment,hidden", [("generation_shakespeare", 1024), ("generation_shakespeare_cpu", 320)])
def test_shakespeare_recipes_compose_and_build(experiment, hidden):
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.task_name == "generation" and cfg.monitor.metric == "val/loss" and cfg.monitor.mode == "min"
    assert cfg.data.train.endswith("generation/tinyshakespeare/input.txt") and cfg.data.mode == "stream"
    assert list(cfg.data.split_fractions) == [0.9, 0.1] and cfg.data.tokenizer.kind == "char"
    model = instantiate(cfg.model, _convert_="all", tokenizer=char_tokenizer().to_json(), conditions=None)
    assert model.decoder.hidden_size == hidden and model.decoder.cell == "lstm"
    dm = instantiate(cfg.data, _convert_="all")  # constructor only: the data is read by prepare()
    if (SHARED_DATA / "generation" / "tinyshakespeare" / "input.txt").is_file():
        assert (ROOT / dm.paths["train"]).resolve() == (SHARED_DATA / "generation/tinyshakespeare/input.txt").resolve()


def test_conditioned_sample_config_builds_and_computes_a_loss():
    cfg = _compose(["task=generation", "data.mode=lines", f"data.train={SAMPLE / 'styles_train.jsonl'}",
                    f"data.validation={SAMPLE / 'styles_valid.jsonl'}", "data.condition_column=style",
                    "data.tokenizer.kind=word"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare(None)
    model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
    assert model.conditions == sorted(["command", "exclamation", "question", "statement"])
    batch = next(iter(dm.train_dataloader()))
    loss, count = model._loss(batch, "val")
    assert torch.isfinite(loss) and int(count) == int(batch["lengths"].sum())
