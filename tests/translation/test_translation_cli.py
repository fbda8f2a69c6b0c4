"""Translation end to end through the real entry points: train on the shipped sample, predict, plot, errors."""
import json

import pytest
from conftest import QUIET, ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nlpseq.config import conf_dir, register_resolvers
from nlpseq.utils.build import check_keys

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: one thread is as fast, and far faster on a busy machine
SAMPLE = ROOT / "tasks" / "translation" / "sample"
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.log_every_n_steps=2", "model.embedding.dim=32", "model.encoder.hidden_size=32",
        "model.decoder.hidden_size=32", "data.batch_size=32", "data.eval_batch_size=16"]


def composed(overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("overrides", [["task=translation"], ["experiment=translation_multi30k"],
                                       ["task=translation", "model/decoder=lstm", "model/encoder=lstm"]])
def test_configs_match_the_constructors(overrides):
    from nlpseq.data.parallel import TranslationDataModule
    from nlpseq.models.seq2seq import Translator
    from nlpseq.nn.decoders import RecurrentDecoder
    from nlpseq.nn.encoders import RecurrentEncoder

    cfg = composed(overrides)
    assert cfg.task_name == "translation" and cfg.monitor.metric == "val/bleu" and cfg.monitor.mode == "max"
    data = {k: v for k, v in cfg.data.items() if k != "_target_"}
    check_keys(TranslationDataModule, data, "data")
    model = {k: v for k, v in cfg.model.items() if k != "_target_"}
    check_keys(Translator, model, "model", {"src_tokenizer": 0, "tgt_tokenizer": 0, "max_src_length": 0, "tgt_output_ids": 0})
    check_keys(RecurrentEncoder, dict(cfg.model.encoder), "model.encoder", {"input_size": 0})
    check_keys(RecurrentDecoder, dict(cfg.model.decoder), "model.decoder",
               {"input_size": 0, "memory_size": 0, "encoder_final_size": 0})
    if overrides == ["task=translation"]:  # the sample config builds for real
        dm = instantiate(cfg.data, _convert_="all")
        dm.prepare()
        module = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
        assert module.decoder.attention_kind == "bahdanau" and module.encoder.num_directions == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import run_cli

    base = tmp_path_factory.mktemp("translation_run")
    run = base / "run"
    proc = run_cli(["task=translation", f"hydra.run.dir={run}", *FAST, *QUIET], cwd=base, env_extra=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def test_training_run_shows_samples_and_logs_bleu(trained):
    run, proc = trained
    assert "validation samples (epoch 0" in proc.stdout
    assert "  src: " in proc.stdout and "  ref: " in proc.stdout and "  hyp: " in proc.stdout
    assert "test/bleu" in proc.stdout
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "vocab.json").is_file()
    header = (run / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("val/bleu", "val/chrf", "val/ppl", "test/bleu", "train/loss", "train/tokens_per_sec"):
        assert key in header, key


def test_predict_cli_json_text_and_attention_plot(trained, tmp_path, cli):
    ckpt = trained[0] / "checkpoints" / "best.ckpt"
    src = tmp_path / "in.de"
    src.write_text("Ein Mann fährt Fahrrad.\n\nDer Hund sieht die Katze.\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = cli([f"ckpt={ckpt}", f"input={src}", f"output={out}", "beam_size=3", "n_best=2", "batch_size=2",
                f"plot_attention={tmp_path / 'attn.png'}"], cwd=tmp_path, module="nlpseq.predict", env_extra=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in rows] == ["Ein Mann fährt Fahrrad.", "", "Der Hund sieht die Katze."]
    assert rows[1]["translation"] == "" and all(len(r["nbest"]) == 2 for r in (rows[0], rows[2]))
    for n in (1, 2, 3):  # one picture per input line
        assert (tmp_path / f"attn-{n}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = cli([f"ckpt={ckpt}", "input=-", "output_format=text", "beam_size=1"], cwd=tmp_path,
               module="nlpseq.predict", input="Ein Mann fährt Fahrrad.\nZwei Hunde.\n", env_extra=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) == 2 and not proc.stdout.startswith("{")
    proc = cli([f"ckpt={ckpt}", "text=Ein Mann fährt Fahrrad.", f"out={tmp_path / 'one.png'}"], cwd=tmp_path,
               module="nlpseq.plots", env_extra=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,expected", [
    (["beam_size=0"], "error: beam_size: must be >= 1, got 0"),
    (["beam_size=2", "n_best=3"], "error: n_best: must be <= beam_size (2), got 3"),
    (["output_format=xml"], "error: output_format: 'xml' is not one of json, text"),
    (["beam_width=3"], "error: beam_width: unknown option for translation"),
])
def test_predict_bad_options_are_one_line_errors(trained, tmp_path, capsys, args, expected):
    from nlpseq.predict import main

    src = tmp_path / "in.de"
    src.write_text("Ein Hund.\n", encoding="utf-8")
    code = main([f"ckpt={trained[0] / 'checkpoints' / 'best.ckpt'}", f"input={src}", *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err


def test_misaligned_training_files_fail_with_one_line(tmp_path, cli):
    short = tmp_path / "short.en"
    short.write_text("A man.\nA dog.\n", encoding="utf-8")
    proc = cli(["task=translation", f"hydra.run.dir={tmp_path / 'run'}", f"data.train.tgt={short}", *QUIET], cwd=tmp_path,
                env_extra=ONE_THREAD)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "misaligned parallel files: the source has 3000 lines but the target" in proc.stderr
    assert "short.en has 2" in proc.stderr
