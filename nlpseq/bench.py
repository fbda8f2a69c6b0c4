"""Benchmark harness: `python -m nlpseq.bench task=sentiment [config overrides] [bench.steps=60 ...]`.

In one run on one machine it measures, for the task's configured model and data:
  - training throughput (real tokens/s) of the full nlpseq path (datamodule -> LightningModule -> Trainer)
    and of a plain PyTorch loop training an identical copy of the model on the identical batches; their ratio;
  - the share of computed positions that are padding (default batching);
  - inference sentences/s through `nlpseq.load(...).predict` at batch sizes 1 and 64;
  - achieved training FLOP/s (from the model's analytic FLOP count) against a matrix-multiply roof measured now;
  - peak memory.
Each timing repeats `bench.repeats` times and reports the median. Writes JSON (`bench.out`) and prints a table.
Options: bench.steps (training steps per repeat), bench.repeats, bench.warmup, bench.infer_sentences, bench.out.
"""
from __future__ import annotations

import copy
import json
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from nlpseq.errors import NlpseqError

DEFAULTS = {"steps": 60, "repeats": 3, "warmup": 5, "infer_sentences": 512, "out": "bench.json"}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nlpseq.config import conf_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=False)


def matmul_roof(n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an n x n fp32 matrix multiply on this machine, now (the same threads as training)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


def _take(loader, n: int) -> list:
    batches = []
    while len(batches) < n:
        for batch in loader:
            batches.append(batch)
            if len(batches) == n:
                break
    return batches


def _tokens(batch) -> int:
    from nlpseq.callbacks import batch_tokens

    return batch_tokens(batch)


def plain_loop(model, batches, clip: float | None, optim_cfg: dict, warmup: int) -> float:
    """Seconds for a bare PyTorch training loop (zero_grad, loss, backward, clip, step) over batches[warmup:]."""
    from nlpseq.models.base import build_optimizer

    model.train()
    opt = build_optimizer(model.parameters(), **optim_cfg)
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.training_step(batch, i)
        loss = loss["loss"] if isinstance(loss, dict) else loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return time.perf_counter() - start


class _Timer:
    """Times trainer.fit from the first training batch to the last (setup excluded, data loading included)."""

    def __init__(self, warmup: int):
        import pytorch_lightning as pl

        timer = self

        class Cb(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == warmup:
                    timer.start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if batch_idx >= warmup:
                    timer.end = time.perf_counter()
                    timer.tokens += _tokens(batch)

        self.callback = Cb()
        self.start = None
        self.end = None
        self.tokens = 0


def nlpseq_path(model, datamodule, steps: int, clip: float | None, warmup: int) -> tuple[float, int]:
    import pytorch_lightning as pl

    timer = _Timer(warmup)
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=1,
                         use_distributed_sampler=False, gradient_clip_val=clip, callbacks=[timer.callback],
                         max_epochs=-1)
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    # from the first timed batch's start to the last batch's end: loading, stepping, logging all included
    return timer.end - timer.start, timer.tokens


def inference(predictor, texts: list, batch_size: int) -> float:
    start = time.perf_counter()
    predictor.predict(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - start)


def run(overrides: list[str], options: dict) -> dict:
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from nlpseq.predict import load

    cfg = compose(overrides)
    task = cfg.task_name
    pl.seed_everything(cfg.seed, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        dm = instantiate(cfg.data, _convert_="all")
        dm.prepare(tmp)
        model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
        clip = cfg.trainer.get("gradient_clip_val")
        optim_cfg = dict(cfg.model.get("optim") or {})
        steps, repeats, warmup = options["steps"], options["repeats"], options["warmup"]
        initial = copy.deepcopy(model.state_dict())

        loader = dm.train_dataloader()
        sampler = dm._train_sampler
        padding = sampler.padding_share() if hasattr(sampler, "padding_share") else None
        batches = _take(loader, steps)
        tokens = sum(_tokens(b) for b in batches[warmup:])
        flops_per_token = model.train_flops_per_token() if hasattr(model, "train_flops_per_token") else None

        plain, ours = [], []
        for _ in range(repeats):
            m = copy.deepcopy(model)
            m.load_state_dict(initial)
            plain.append(tokens / plain_loop(m, batches, clip, optim_cfg, warmup))
            m = copy.deepcopy(model)
            m.load_state_dict(initial)
            seconds, seen = nlpseq_path(m, dm, steps, clip, warmup)
            ours.append(seen / seconds)
        roof = matmul_roof()
        result = {
            "task": task, "overrides": overrides, "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "train_tokens_per_sec_nlpseq": statistics.median(ours),
            "train_tokens_per_sec_plain": statistics.median(plain),
            "ratio_nlpseq_vs_plain": statistics.median(ours) / statistics.median(plain),
            "padding_share": padding, "matmul_roof_flops": roof,
        }
        if flops_per_token:
            achieved = flops_per_token * result["train_tokens_per_sec_nlpseq"]
            result.update(train_flops_per_token=flops_per_token, achieved_flops=achieved, share_of_roof=achieved / roof)

        # inference through the public API, from a checkpoint written the way training writes it
        ckpt = Path(tmp) / "bench.ckpt"
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, max_epochs=0)
        trainer.strategy.connect(model)
        trainer.save_checkpoint(ckpt)
        predictor = load(ckpt)
        texts = bench_inputs(dm, options["infer_sentences"])
        if texts:
            inference(predictor, texts[:32], 32)  # warm-up
            per = {bs: statistics.median(inference(predictor, texts if bs > 1 else texts[:128], bs)
                                         for _ in range(repeats)) for bs in (1, 64)}
            result.update(infer_sentences_per_sec_b1=per[1], infer_sentences_per_sec_b64=per[64],
                          batch64_speedup=per[64] / per[1])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def bench_inputs(dm, n: int) -> list:
    """Raw inputs for predict(): the datamodule's validation texts if it keeps them."""
    if hasattr(dm, "bench_inputs"):
        return dm.bench_inputs(n)
    raw = getattr(dm, "raw", {}).get("validation")
    if raw is not None and "text" in raw.column_names:
        texts = list(raw["text"])
        while texts and len(texts) < n:
            texts = texts + texts
        return texts[:n]
    return []


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"nlpseq.bench: {result['task']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key == "overrides":
            continue
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    Console(highlight=False).print(table)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    options, overrides = dict(DEFAULTS), []
    for arg in argv:
        if arg.startswith("bench."):
            key, _, value = arg[len("bench."):].partition("=")
            if key not in DEFAULTS:
                print(f"error: bench.{key}: unknown option (known: {', '.join(DEFAULTS)})", file=sys.stderr)
                return 2
            options[key] = value if key == "out" else int(value)
        else:
            overrides.append(arg)
    warnings.filterwarnings("ignore")
    try:
        result = run(overrides, options)
    except NlpseqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - hydra compose errors: one line
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
        raise
    Path(options["out"]).write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"written to {options['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
