"""Deterministic mode, runs started side by side, the NaN guard, atomic checkpoint files, run-directory locks."""
import io
import os

import pytest
import torch

import nlpseq
from nlpseq.callbacks import AtomicCheckpointIO
from nlpseq.errors import ConfigError

QUIET = ["callbacks.progress_bar.refresh_rate=0", "trainer.enable_model_summary=false"]


def load(path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def test_two_runs_started_together_in_one_directory_stay_apart(sentiment_runs):
    a, b, cwd = sentiment_runs["a"], sentiment_runs["b"], sentiment_runs["cwd"]
    assert a.returncode == 0 and b.returncode == 0, (a.stderr + b.stderr)[-3000:]
    assert a.run_dir != b.run_dir
    assert sorted(p.name for p in (cwd / "outputs" / "sentiment").iterdir()) == sorted([a.run_dir.name, b.run_dir.name])
    for run in (a, b):
        d = run.run_dir
        assert d.parent == cwd / "outputs" / "sentiment"
        assert (d / ".hydra" / "config.yaml").is_file() and (d / "vocab.json").is_file()
        assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert (d / "logs" / "metrics.csv").is_file() and f"run directory: {d}" in (d / "__main__.log").read_text()
    assert sorted(p.name for p in cwd.iterdir()) == ["outputs"]  # nothing shared in the working directory
    for cache in ("hf_home", "hf_datasets"):  # local files: no Hugging Face cache is written at all
        path = sentiment_runs["base"] / cache
        assert not path.exists() or not any(path.rglob("*"))


def test_deterministic_mode_gives_identical_runs(sentiment_runs):
    a, b = sentiment_runs["a"], sentiment_runs["b"]
    assert "deterministic: true" in (a.run_dir / ".hydra" / "config.yaml").read_text()
    for name in ("best.ckpt", "last.ckpt"):
        x, y = load(a.run_dir / "checkpoints" / name), load(b.run_dir / "checkpoints" / name)
        assert all(torch.equal(t, y["state_dict"][k]) for k, t in x["state_dict"].items())
    assert a.results == b.results and {"best val/acc", "test/acc"} <= set(a.results)
    metrics = [[r for r in (run.run_dir / "logs" / "metrics.csv").read_text().splitlines()] for run in (a, b)]
    header = metrics[0][0].split(",")
    drop = [i for i, h in enumerate(header) if "tokens_per_sec" in h]  # wall-clock speed differs, of course
    rows = [[",".join(v for i, v in enumerate(r.split(",")) if i not in drop) for r in m] for m in metrics]
    assert rows[0] == rows[1]


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, cli):
    run = tmp_path / "run"
    proc = cli(["task=sentiment", f"hydra.run.dir={run}", "model.embedding.dim=16", "model.encoder.hidden_size=16",
                "callbacks.last_checkpoint.every_n_steps=10", "+callbacks.poison._target_=killer.PoisonAt",
                "+callbacks.poison.step=25", *QUIET], cwd=tmp_path,
               env_extra={"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
                   [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: training loss is nan at step 25 (epoch 0); stopped before that update. Last good "
                      f"checkpoint: {last} (step 20). Try a lower model.optim.lr or trainer.gradient_clip_val"]
    assert "Traceback" not in proc.stderr
    ckpt = load(last)
    assert ckpt["global_step"] == 20
    assert all(bool(torch.isfinite(t).all()) for t in ckpt["state_dict"].values() if t.is_floating_point())
    assert nlpseq.load(last).predict("a fine film").label in ("negative", "positive")


def _dying_save(real):
    """torch.save that writes half of the file, then fails (as a full disk or a crash would)."""

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    return save


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(sentiment_runs, tmp_path, monkeypatch):
    source = sentiment_runs["a"].run_dir / "checkpoints" / "last.ckpt"
    path = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin = AtomicCheckpointIO()
    checkpoint = load(source)
    io_plugin.save_checkpoint(checkpoint, path)
    before = path.read_bytes()
    assert io_plugin.last_saved == (str(path), checkpoint["global_step"])
    newer = {**checkpoint, "global_step": checkpoint["global_step"] + 1,
             "state_dict": {k: t + 1 if t.is_floating_point() else t for k, t in checkpoint["state_dict"].items()}}
    monkeypatch.setattr(torch, "save", _dying_save(torch.save))
    with pytest.raises(OSError, match="No space left"):
        io_plugin.save_checkpoint(newer, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temporary file left behind
    assert load(path)["global_step"] == checkpoint["global_step"]
    assert nlpseq.load(path).predict("a fine film").label in ("negative", "positive")
    io_plugin.save_checkpoint(newer, path)  # and a successful write replaces it
    assert load(path)["global_step"] == checkpoint["global_step"] + 1
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_one_run_directory_serves_one_process_at_a_time(tmp_path):
    from nlpseq.train import _lock_run_dir

    first = _lock_run_dir(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"hydra.run.dir: .* is in use by another nlpseq process \(pid \d+"):
        _lock_run_dir(tmp_path / "run")
    first.close()  # as when the process ends, even by SIGKILL
    _lock_run_dir(tmp_path / "run").close()
