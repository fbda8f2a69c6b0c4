"""nlpseq.bench on every task's shipped sample, with tiny settings: it runs and reports every measure.

The per-task runs call `main` in this process (a subprocess would spend most of its time importing
Lightning); the CLI itself is checked through its one-line errors.
"""
import json

import pytest
import torch

from nlpseq import bench

TINY = ["bench.steps=4", "bench.warmup=1", "bench.repeats=1", "bench.infer_sentences=16", "bench.gen_tokens=5"]
COMMON = ("train_tokens_per_sec_nlpseq", "train_tokens_per_sec_plain", "ratio_nlpseq_vs_plain", "padding_share",
          "matmul_roof_flops", "train_flops_per_token", "achieved_flops", "share_of_roof", "rnn_kernel_flops",
          "infer_sentences_per_sec_b1", "infer_sentences_per_sec_b64", "batch64_speedup", "peak_rss_mb")
EXTRA = {"sentiment": (), "ner": (),
         "translation": ("decode_greedy_sentences_per_sec_b64", "decode_beam5_sentences_per_sec_b64",
                         "decode_greedy_tokens_per_sec_b64", "decode_beam5_tokens_per_sec_b64"),
         "generation": ("sample_tokens_per_sec_b1", "sample_tokens_per_sec_b64")}


@pytest.mark.parametrize("task", list(EXTRA))
def test_bench_measures_every_task_and_writes_json(tmp_path, capsys, task):
    out = tmp_path / "b.json"
    assert bench.main([f"task={task}", *TINY, f"bench.out={out}"]) == 0
    r = json.loads(out.read_text())
    assert r["task"] == task and r["date"] and r["machine"]
    for key in COMMON + EXTRA[task]:
        assert isinstance(r[key], (int, float)) and r[key] >= 0, key
    assert r["train_tokens_per_sec_nlpseq"] > 0 and r["train_tokens_per_sec_plain"] > 0
    assert r["train_step_ms_plain"] > 0 and r["train_step_ms_nlpseq"] > 0
    assert r["overhead_ms_per_step"] == pytest.approx(r["train_step_ms_nlpseq"] - r["train_step_ms_plain"])
    assert 0 <= r["padding_share"] < 0.5
    if task == "generation":
        assert r["padding_share"] == 0.0  # stream windows
    if task == "translation":
        assert set(r["padding_share_by_side"]) == {"source", "target"}
    assert f"nlpseq.bench: {task}" in capsys.readouterr().out


def test_bench_mixed_precision_autocasts_both_paths(tmp_path, monkeypatch):
    # trainer.precision=bf16-mixed: the Trainer runs under bf16 autocast, the plain loop computes its loss under
    # the same autocast (with the same unfused Adam Lightning needs for clipping), and the roof is bf16's
    seen = []
    real = bench.autocast

    def spy(precision, device=None):
        seen.append(bench.autocast_dtype(precision))
        return real(precision, device)

    monkeypatch.setattr(bench, "autocast", spy)
    out = tmp_path / "b.json"
    assert bench.main(["task=ner", "trainer.precision=bf16-mixed", *TINY, f"bench.out={out}"]) == 0
    r = json.loads(out.read_text())
    assert r["precision"] == "bf16-mixed" and r["matmul_roof_dtype"] == "bfloat16"
    assert r["train_tokens_per_sec_nlpseq"] > 0 and r["train_tokens_per_sec_plain"] > 0
    assert r["train_step_ms_plain"] > 0 and r["train_step_ms_nlpseq"] > 0
    assert r["overhead_ms_per_step"] == pytest.approx(r["train_step_ms_nlpseq"] - r["train_step_ms_plain"])
    assert seen and set(seen) == {torch.bfloat16}  # plain-loop steps and the bare kernel, all under bf16


def test_plain_loop_optimizer_matches_the_trainer_under_mixed_precision():
    # the fused Adam kernel unscales gradients itself, so Lightning refuses to clip with it under autocast:
    # TaskModule then builds the unfused one, and the plain loop must time the same optimizer
    from nlpseq.models.base import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert build_optimizer(params).defaults["fused"] is True
    assert not build_optimizer(params, allow_fused=False).defaults["fused"]
    assert bench.autocast_dtype("bf16-mixed") is torch.bfloat16 and bench.autocast_dtype("16-mixed") is torch.float16
    assert bench.autocast_dtype("32-true") is None and bench.autocast_dtype("bf16-true") is None


@pytest.fixture(scope="module")
def sentiment_ckpt(tmp_path_factory):
    """An untrained sentiment checkpoint, written the way training writes one."""
    from hydra.utils import instantiate

    tmp = tmp_path_factory.mktemp("bench_ckpt")
    cfg = bench.compose(["task=sentiment"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare(tmp)
    bench.save_checkpoint(instantiate(cfg.model, _convert_="all", **dm.model_inputs()), tmp / "s.ckpt")
    return tmp / "s.ckpt"


def test_bench_inference_only_from_a_checkpoint(tmp_path, sentiment_ckpt):
    out = tmp_path / "b.json"
    ckpt = sentiment_ckpt
    assert bench.main(["task=sentiment", "bench.skip_train=1", f"bench.ckpt={ckpt}", "bench.repeats=1",
                       "bench.infer_sentences=16", f"bench.out={out}"]) == 0
    r = json.loads(out.read_text())
    assert r["inference_checkpoint"] == str(ckpt) and r["infer_sentences_per_sec_b64"] > 0
    assert "train_tokens_per_sec_nlpseq" not in r


def test_bench_cli_unknown_option_is_a_one_line_error(tmp_path, cli):
    proc = cli(["task=sentiment", "bench.stepz=3"], cwd=tmp_path, module="nlpseq.bench")
    assert proc.returncode == 2 and "bench.stepz: unknown option" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["task=sentiment", "bench.steps=many"], "bench.steps: expected an integer"),
    (["task=sentiment", "bench.steps=3", "bench.warmup=5"], "must be larger than bench.warmup"),
    (["task=nonsense"], "error: "),
])
def test_bench_bad_settings_are_one_line_errors(tmp_path, capsys, args, message):
    assert bench.main([*args, f"bench.out={tmp_path / 'b.json'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_wrong_task_checkpoint_is_an_error(tmp_path, capsys, sentiment_ckpt):
    ckpt = sentiment_ckpt
    assert bench.main(["task=ner", "bench.skip_train=1", f"bench.ckpt={ckpt}", "bench.repeats=1",
                       f"bench.out={tmp_path / 'b.json'}"]) == 2
    assert "sentiment checkpoint, not ner" in capsys.readouterr().err


def test_bench_runs_the_training_callbacks_and_matches_ema_in_the_plain_loop(tmp_path, monkeypatch):
    """The nlpseq path gets the run's callbacks and loggers (less those that need validation); with an EMA in
    the run, the plain loop averages the weights too; bench.callbacks=none gives a bare Trainer."""
    seen = {}
    real_path, real_loop = bench.nlpseq_path, bench.plain_loop

    def spy_path(model, dm, steps, clip, warmup, callbacks=None, loggers=None, precision="32-true"):
        seen["callbacks"] = sorted(type(c).__name__ for c in callbacks or [])
        seen["loggers"] = [type(x).__name__ for x in loggers or []]
        return real_path(model, dm, steps, clip, warmup, callbacks, loggers, precision)

    def spy_loop(model, batches, clip, optim_cfg, warmup, ema_decay=None, precision="32-true"):
        seen["ema_decay"] = ema_decay
        return real_loop(model, batches, clip, optim_cfg, warmup, ema_decay, precision)

    monkeypatch.setattr(bench, "nlpseq_path", spy_path)
    monkeypatch.setattr(bench, "plain_loop", spy_loop)
    ema = "callbacks.ema={_target_:nlpseq.callbacks.EMA,decay:0.9}"
    assert bench.main(["task=sentiment", ema, *TINY, "bench.skip_train=0", f"bench.out={tmp_path / 'a.json'}"]) == 0
    assert seen["callbacks"] == ["EMA", "ExactResume", "LastCheckpoint", "NanGuard", "TQDMProgressBar", "Throughput"]
    assert seen["loggers"] == ["CSVLogger"] and seen["ema_decay"] == 0.9
    assert bench.main(["task=sentiment", ema, *TINY, "bench.callbacks=none", f"bench.out={tmp_path / 'b.json'}"]) == 0
    assert seen["callbacks"] == [] and seen["loggers"] == [] and seen["ema_decay"] is None
    assert bench.main(["task=sentiment", *TINY, "bench.callbacks=some"]) == 2
