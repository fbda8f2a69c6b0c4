"""The training CLI end to end on the shipped sample: run dirs, errors, resume, sweeps, DDP."""
import csv
import shutil
import subprocess

import pytest
from conftest import QUIET, ROOT

import nlpseq


def test_run_directory_holds_everything(trained_sentiment):
    run = trained_sentiment
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "logs" / "metrics.csv").is_file() and (run / "vocab.json").is_file()
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    assert any(r.get("val/acc") for r in rows) and any(r.get("test/acc") for r in rows)


def test_cli_prints_metrics_and_refuses_to_overwrite_then_resumes(tmp_path, cli):
    run = tmp_path / "run"
    proc = cli(["task=sentiment", f"hydra.run.dir={run}", "trainer.max_epochs=1", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test/acc" in proc.stdout and f"best checkpoint: {run}/checkpoints/best.ckpt" in proc.stdout
    before = (run / "checkpoints" / "best.ckpt").read_bytes()
    again = cli(["task=sentiment", f"hydra.run.dir={run}", "trainer.max_epochs=1", *QUIET], cwd=tmp_path)
    assert again.returncode == 2 and "already holds a training run" in again.stderr
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == before
    resumed = cli(["task=sentiment", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_epochs=2", *QUIET],
                  cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert nlpseq.load(run / "checkpoints" / "last.ckpt").predict("fine").label


@pytest.mark.parametrize("override,expected", [
    ("model.encoder.hiden_size=3", "Key 'hiden_size' is not in struct"),
    ("model.encoder.cell=transformer", "model.encoder.cell: 'transformer' is not one of rnn, lstm, gru"),
    ("model.encoder.hidden_size=abc", "model.encoder.hidden_size: expected an integer, got 'abc'"),
    ("trainer.max_epochs=abc", "trainer.max_epochs: expected an integer"),
    ("data.train=missing.tsv", "missing.tsv: file not found"),
    ("data.text_column=sentence", "no column 'sentence' (option data.text_column)"),
    ("+model.embedding.vocab_size=10", "model.embedding.vocab_size: is set from the data"),
])
def test_bad_settings_fail_with_one_line_naming_the_key(tmp_path, cli, override, expected):
    proc = cli(["task=sentiment", f"hydra.run.dir={tmp_path / 'run'}", override, *QUIET], cwd=tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_routes_predict(trained_sentiment, tmp_path):
    exe = shutil.which("nlpseq")
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    proc = subprocess.run([exe, "predict", f"ckpt={trained_sentiment / 'checkpoints' / 'best.ckpt'}", "input=-"],
                          input="good film\n", capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and '"label"' in proc.stdout
    data = tmp_path / "dev.tsv"
    data.write_text("text\tlabel\ngood film\tpositive\nbad film\tnegative\n")
    proc = subprocess.run([exe, "evaluate", f"ckpt={trained_sentiment / 'checkpoints' / 'best.ckpt'}",
                           f"data={data}", "output=-"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and '"accuracy"' in proc.stdout, proc.stderr[-2000:]


def test_sweep_runs_four_jobs_and_prints_one_table(tmp_path, cli):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "task=sentiment", "model/encoder=lstm,gru", "model.encoder.hidden_size=16,32",
                "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job in range(4):
        assert (sweep / str(job) / "checkpoints" / "best.ckpt").is_file()
    assert "sweep summary: val/acc" in proc.stdout
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    combos = {tuple(o for o in r["overrides"].split() if o.startswith("model")) for r in rows}
    assert combos == {(f"model/encoder={c}", f"model.encoder.hidden_size={h}") for c in ("lstm", "gru") for h in (16, 32)}


def test_optuna_search_runs_offline(tmp_path, cli):
    sweep = tmp_path / "optuna"
    proc = cli(["-m", "hparams_search=sentiment_optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1",
                f"hydra.sweep.dir={sweep}", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Best value" in proc.stdout + proc.stderr
    assert len(list(csv.DictReader(open(sweep / "sweep_summary.csv")))) == 2


def test_ddp_on_two_cpu_processes_gives_one_run_and_exact_metrics(tmp_path, cli):
    run = tmp_path / "ddp"
    proc = cli(["task=sentiment", f"hydra.run.dir={run}", "trainer.accelerator=cpu", "trainer.devices=2",
                "trainer.strategy=ddp", "trainer.max_epochs=2", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (tmp_path / "outputs").exists()  # the worker wrote into the same run directory
    # the reported test accuracy (aggregated over both processes) equals a single-process evaluation
    reported = [r for r in csv.DictReader(open(run / "logs" / "metrics.csv")) if r.get("test/acc")]
    test_acc = float(reported[-1]["test/acc"])
    p = nlpseq.load(run / "checkpoints" / "best.ckpt")
    rows = [line.split("\t") for line in (ROOT / "tasks/sentiment/sample/test.tsv").read_text().splitlines()[1:]]
    preds = p.predict([t for t, _ in rows])
    acc = sum(pr.label == gold for pr, (_, gold) in zip(preds, rows)) / len(rows)
    assert abs(acc - test_acc) < 1e-6
