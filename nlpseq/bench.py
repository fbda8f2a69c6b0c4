"""Benchmark harness for every task: `python -m nlpseq.bench task=<sentiment|ner|translation|generation>
[config overrides, e.g. experiment=ner_conll2003] [bench.<option>=value ...]`.

In one run on one machine it measures, for the task's configured model and data:
  - training throughput (real tokens/s: words for NER and sentiment, target tokens for translation, characters
    or subwords for generation) of the full nlpseq path (datamodule loader -> LightningModule -> Trainer,
    data loading included) and of a plain PyTorch loop (zero_grad, the module's training_step, backward,
    clipping, the same fused Adam, the same EMA update where the run averages weights) training an
    identical copy of the model on the identical batches, taken from the same loader beforehand; the
    nlpseq path runs the Trainer with the run's own callbacks and loggers (progress bar, throughput, NaN
    guard, periodic last.ckpt, exact-resume state, EMA where the recipe sets it, the CSV logger; files go to
    a temporary directory) except the two that need validation (best-checkpoint selection, early stopping);
    their ratio, by wall time and by this process's CPU time (steadier on a shared machine, where other
    jobs take the cores at random moments), and both paths' median wall time per step with their difference,
    `overhead_ms_per_step`: the fixed cost the nlpseq path adds to every step whatever the model (so a ratio
    below 1 on a tiny model reads as so many milliseconds, not as a slower model). Repeats alternate which of
    the two runs first;
  - padding: the share of the positions in those batches' padded tensors that are padding, per side
    (translation: source and target) and overall; a stream language model has none;
  - FLOP/s: the model's analytic `train_flops_per_token` (matrix products of the recurrent layers and
    output layers, plus NER's character encoder over the real characters of each batch, `train_flops`;
    CRF and elementwise work left out) x nlpseq tokens/s, as a share of a 1024^3 fp32 matmul roof (on a GPU:
    8192^3, in TF32 as cuDNN's fp32 RNNs run) measured in the same process (by wall time, and per CPU
    second; sampled after every repeat of the training timings, the best sample counting, since a roof is a
    ceiling that a busy machine only lowers); and the
    same for the model's main recurrent layer alone (`rnn_kernel_*`): a bare nn.LSTM/GRU forward + backward of the same
    sizes on one batch of the same shape, unpacked -- the most torch's kernel gives this model; as tokens/s,
    `ratio_nlpseq_vs_rnn_kernel` is the whole training step against that bare kernel (on GPU: cuDNN) -- plus
    that layer's own inference speedup from batch 1 to 64, the ceiling of a predictor's batch-64 speedup
    when the recurrence dominates its time;
  - inference through the public API (`nlpseq.load(ckpt).predict`) from a checkpoint of the model trained
    above (or `bench.ckpt`): sentences/s at batch 1 and batch 64 (translation: the checkpoint's default
    search; generation: sampled sequences of bench.gen_tokens tokens); translation also greedy and beam-5
    decoding at batch 64 (sentences/s and output tokens/s, mean output length); generation also sampling
    tokens/s at batch 1 and 64;
  - peak resident memory of the process.
Mixed precision (`trainer.precision=bf16-mixed`, `16-mixed`): both training paths compute the loss under the
same autocast with the same optimizer, and the roof is that dtype's matrix multiply. With a GPU, the
training paths, the roof and the bare kernel all run on it (clocks read after a synchronisation).
Each timing repeats `bench.repeats` times; reported values are medians. Timings on a shared machine are
noisy: compare ratios taken in one run, and set OMP_NUM_THREADS (1 avoids OpenMP spin-waits under load).

Options (bench.KEY=VALUE):
  steps            training steps per timed run (default 60); the first `warmup` are not timed
  warmup           untimed training steps at the start of each run (default 5)
  repeats          repeats of every timing (default 3)
  infer_sentences  inputs for batch-64 inference (default 512; batch 1 uses at most 128, 32 for
                   translation and generation)
  gen_tokens       tokens sampled per sequence for generation inference (default 100)
  ckpt             a trained checkpoint of the same task for the inference timings (default: the model
                   trained by the last nlpseq-path run, i.e. `steps` steps from scratch)
  out              the JSON written (default bench.json)
  skip_train       1: inference timings only (needs nothing trained; default 0)
  callbacks        train (default): the nlpseq path runs the training callbacks and loggers as above;
                   none: a bare Trainer (Lightning's loop and the LightningModule only)

Corpora larger than memory (nlpseq.bench_corpus; a mode of its own: the measurements above are not run):
  large_corpus     sizes in GB, e.g. 0.25,1,4: for each, a generated training corpus of that size in the task's
                   format, trained on out of core for `steps` batches in a subprocess whose peak resident and
                   anonymous memory are watched; the JSON's `anon_growth` says how flat memory stays
  in_memory        sizes in GB trained the same way with data.out_of_core=false, for comparison (keep them small)
  corpus_dir       where corpora and run directories go (default: the system's temporary directory)
  keep             1: keep the corpora and run directories (default 0: each is deleted after its run)
Config overrides given with them (e.g. model sizes, data.tokenizer=bpe) go to each training run.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from nlpseq.errors import NlpseqError
from nlpseq.models.base import autocast_dtype, build_optimizer

DEFAULTS = {"steps": 60, "repeats": 3, "warmup": 5, "infer_sentences": 512, "gen_tokens": 100, "ckpt": "",
            "out": "bench.json", "skip_train": 0, "callbacks": "train",
            "large_corpus": "", "in_memory": "", "corpus_dir": "", "keep": 0}
TEXT_OPTIONS = ("ckpt", "out", "callbacks", "large_corpus", "in_memory", "corpus_dir")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nlpseq.config import conf_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=False)


def _device() -> torch.device:
    """Where the bench computes: the GPU when there is one (as the nlpseq path's Trainer picks), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync() -> None:
    """Waits for queued GPU work, so that a clock read after it times the work (a no-op on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _times(fn, repeats: int, warmup: int = 2, clock=time.perf_counter) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        _sync()
        times.append(clock() - t)
    return times


def _median_time(fn, repeats: int, warmup: int = 2, clock=time.perf_counter) -> float:
    return statistics.median(_times(fn, repeats, warmup, clock))


def _best_time(fn, repeats: int, warmup: int = 2, clock=time.perf_counter) -> float:
    """The fastest of `repeats` calls: for ceilings (the matmul roof, the bare kernel), which a busy machine can
    only lower -- another job taking the core for part of a 30 ms product would otherwise pass for a lower roof
    and inflate every share of it."""
    return min(_times(fn, repeats, warmup, clock))


def autocast(precision: str, device: str | None = None):
    """The autocast context Lightning runs training_step in for `precision` (a no-op for full precision)."""
    dtype = autocast_dtype(precision)
    return torch.autocast(device or _device().type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def matmul_roof(n: int | None = None, repeats: int = 10, clock=time.perf_counter,
                dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an n x n matrix multiply (fp32, or `dtype`) on this machine, now (the same threads as training),
    per second of `clock` (wall time, or time.process_time: per CPU second), from the fastest of `repeats`. n: 1024 on the CPU; 8192 on a GPU,
    whose peak 1024-sized products do not reach. fp32 on CUDA multiplies in TF32 when cuDNN may
    (`torch.backends.cudnn.allow_tf32`, on by default): the recurrent kernels then run in TF32 too."""
    device = _device()
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = previous or _tf32(dtype)
    try:
        return 2 * n ** 3 / _best_time(lambda: a @ b, repeats, warmup=3, clock=clock)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _tf32(dtype: torch.dtype) -> bool:
    """Whether fp32 recurrent kernels run in TF32 here (CUDA, cuDNN allowed to)."""
    return _device().type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32


def rnn_flops_per_token(rnn: torch.nn.RNNBase) -> float:
    """Forward FLOPs per time step and batch row of an nn.RNNBase: 2 per multiply-add of its weight matrices."""
    return sum(2 * p.numel() for name, p in rnn.named_parameters() if name.startswith("weight"))


def rnn_kernel(rnn: torch.nn.RNNBase, batch: int, length: int, repeats: int, precision: str = "32-true") -> float:
    """Training FLOP/s (forward + backward = 3x forward) of a bare copy of `rnn` on one [batch, length] input:
    the recurrent kernel alone, unpacked, the most this model's recurrence can run at (under the run's
    autocast for mixed precision; the fastest of `repeats` steps)."""
    rnn = copy.deepcopy(rnn).to(_device()).train()
    x = torch.randn(batch, length, rnn.input_size, device=_device(), requires_grad=True)

    def step():
        rnn.zero_grad(set_to_none=True)
        with autocast(precision):
            out = rnn(x)[0]
        out.float().sum().backward()

    return 3 * rnn_flops_per_token(rnn) * batch * length / _best_time(step, repeats)


def rnn_batch_speedup(rnn: torch.nn.RNNBase, length: int, repeats: int) -> float:
    """Sequences/s of a bare copy of `rnn` (inference) at batch 64 over batch 1: the most batching can give a
    model whose time is its recurrence (the batch-1 call is matrix-vector products, the batch-64 one GEMMs)."""
    rnn = copy.deepcopy(rnn).to(_device()).eval()
    one, many = (torch.randn(n, length, rnn.input_size, device=_device()) for n in (1, 64))
    with torch.inference_mode():
        return 64 * _median_time(lambda: rnn(one), repeats) / _median_time(lambda: rnn(many), repeats)


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


def _sides(batch: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(side, padded tensor [B, T], lengths [B]) for each padded input the model computes over."""
    if "src" in batch:
        return [("source", batch["src"], batch["lengths"]), ("target", batch["tgt_out"], batch["tgt_lengths"])]
    if "piece_lengths" in batch:  # subword NER: the encoder runs over pieces
        return [("tokens", batch["input_ids"], batch["piece_lengths"])]
    if "lengths" in batch:
        return [("tokens", batch["input_ids"] if "input_ids" in batch else batch["case_ids"], batch["lengths"])]
    return []  # a stream language model: full windows, no padding


def padding_shares(batches: list) -> dict:
    """Share of padded positions per side and overall, over the given batches."""
    real: dict[str, int] = {}
    total: dict[str, int] = {}
    for batch in batches:
        for side, tensor, lengths in _sides(batch):
            real[side] = real.get(side, 0) + int(lengths.sum())
            total[side] = total.get(side, 0) + tensor.numel()
    shares = {side: 1.0 - real[side] / max(total[side], 1) for side in total}
    overall = 1.0 - sum(real.values()) / max(sum(total.values()), 1) if total else 0.0
    return {"padding_share": overall, **({"padding_share_by_side": shares} if len(shares) > 1 else {})}


def _mean_length(batches: list) -> float:
    """Mean real length of the sequences the main recurrent layer reads (the source for translation)."""
    lengths = [lengths for batch in batches for _, _, lengths in _sides(batch)[:1]]
    if not lengths:
        return float(batches[0]["input_ids"].size(1))
    return float(torch.cat(lengths).float().mean())


def plain_loop(model, batches, clip: float | None, optim_cfg: dict, warmup: int,
               ema_decay: float | None = None, precision: str = "32-true") -> tuple[float, float]:
    """Wall and CPU seconds of a bare PyTorch training loop (zero_grad, loss, backward, clip, step; and an EMA
    update of the weights when the run averages them, as the nlpseq path then does) over batches[warmup:].
    Mixed precision: the loss under autocast, as Lightning computes it (bf16 needs no gradient scaling)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    device = _device()
    model.to(device).train()
    opt = build_optimizer(model.parameters(), **optim_cfg, allow_fused=autocast_dtype(precision) is None)
    averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
                if ema_decay is not None else None)
    start, cpu = time.perf_counter(), time.process_time()
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync()
            start, cpu = time.perf_counter(), time.process_time()
        if device.type != "cpu":  # each step copies its batch over, as Lightning does
            batch = model.transfer_batch_to_device(batch, device, 0)
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = model.training_step(batch, i)
        loss = loss["loss"] if isinstance(loss, dict) else loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if averaged is not None:
            averaged.update_parameters(model)
    _sync()
    return time.perf_counter() - start, time.process_time() - cpu


class _Timer:
    """Times trainer.fit from the start of training batch `warmup` to the end of batch `steps - 1` (setup excluded,
    data loading and epoch boundaries included). Batches are counted across epochs: `batch_idx` restarts each epoch.
    The clocks are read at those two points only, as the plain loop does: `time.process_time` costs up to ~0.8 ms
    a call on this VM once the process has several threads, which read every step charged the nlpseq path up to
    5% of a sentiment step."""

    def __init__(self, warmup: int, steps: int):
        import pytorch_lightning as pl

        timer = self

        class Cb(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if timer.batches == warmup:
                    _sync()
                    timer.start, timer.cpu_start = time.perf_counter(), time.process_time()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if timer.batches >= warmup:
                    timer.tokens += _tokens(batch)
                if timer.batches == steps - 1:
                    _sync()
                    timer.end, timer.cpu_end = time.perf_counter(), time.process_time()
                timer.batches += 1

        self.callback = Cb()
        self.start = self.end = self.cpu_start = self.cpu_end = 0.0
        self.tokens = 0
        self.batches = 0


def training_callbacks(cfg, workdir: Path) -> tuple[list, list]:
    """The run's callbacks and loggers as `python -m nlpseq` builds them, writing under `workdir`, less those
    that need validation metrics (ModelCheckpoint, EarlyStopping): the bench trains without validation."""
    from hydra.utils import instantiate
    from omegaconf import open_dict
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    cfg = copy.deepcopy(cfg)

    def build(group: str) -> list:
        out = []
        for name, node in (cfg.get(group) or {}).items():
            if node is None or "_target_" not in node:
                continue
            with open_dict(node):
                for key in ("dirpath", "save_dir"):  # ${hydra:runtime.output_dir} has no value outside a Hydra run
                    if key in node:
                        node[key] = str(workdir / name)
            obj = instantiate(node, _convert_="all")
            if not isinstance(obj, (ModelCheckpoint, EarlyStopping)):
                out.append(obj)
        return out

    return build("callbacks"), build("logger")


def nlpseq_path(model, datamodule, steps: int, clip: float | None, warmup: int, callbacks: list | None = None,
                loggers: list | None = None, precision: str = "32-true") -> tuple[float, float, int]:
    """Wall and CPU seconds of `trainer.fit` over the timed batches, and their real tokens."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ProgressBar

    callbacks = list(callbacks or [])
    timer = _Timer(warmup, steps)
    bar = any(isinstance(c, ProgressBar) for c in callbacks)
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=loggers or False,
                         enable_checkpointing=False, enable_progress_bar=bar, enable_model_summary=False,
                         accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=1,
                         use_distributed_sampler=False, gradient_clip_val=clip, callbacks=[*callbacks, timer.callback],
                         max_epochs=-1, precision=precision)
    # the progress bar is drawn (its cost counts) but not shown: it would interleave with the bench's table
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    # from the first timed batch's start to the last batch's end: loading, stepping, logging all included
    return timer.end - timer.start, timer.cpu_end - timer.cpu_start, timer.tokens


def measure_training(cfg, dm, model, options: dict) -> tuple[dict, torch.nn.Module]:
    """Training throughput of both paths, padding, FLOP/s; returns the results and the last trained model."""
    clip = cfg.trainer.get("gradient_clip_val")
    precision = str(cfg.trainer.get("precision", "32-true"))  # trainer.precision=bf16-mixed: both paths autocast
    optim_cfg = dict(cfg.model.get("optim") or {})
    steps, repeats, warmup = options["steps"], options["repeats"], options["warmup"]
    if steps <= warmup:
        raise NlpseqError(f"bench.steps ({steps}) must be larger than bench.warmup ({warmup})")
    if options["callbacks"] not in ("train", "none"):
        raise NlpseqError(f"bench.callbacks: expected train or none, got {options['callbacks']!r}")
    ema = cfg.get("callbacks", {}).get("ema") if options["callbacks"] == "train" else None
    ema_decay = float(ema.get("decay", 0.999)) if ema and "_target_" in ema else None
    initial = copy.deepcopy(model.state_dict())
    batches = _take(dm.train_dataloader(), steps)
    tokens = sum(_tokens(b) for b in batches[warmup:])

    plain, ours, plain_cpu, ours_cpu, trained = [], [], [], [], model
    step_ms = {"plain": [], "nlpseq": []}  # wall time per timed step
    # mixed precision: the roof of the autocast dtype's matrix multiply, the one the model's big products run in
    roof_dtype = autocast_dtype(precision) or torch.float32
    roofs, roofs_cpu = [], []
    for r in range(repeats):
        for path in (("plain", "nlpseq") if r % 2 == 0 else ("nlpseq", "plain")):  # alternate: load drifts
            m = copy.deepcopy(model)
            m.load_state_dict(initial)
            if path == "plain":
                wall, cpu = plain_loop(m, batches, clip, optim_cfg, warmup, ema_decay, precision)
                plain.append(tokens / wall)
                plain_cpu.append(tokens / cpu)
                step_ms["plain"].append(1000 * wall / (steps - warmup))
            else:
                with tempfile.TemporaryDirectory() as workdir:
                    callbacks, loggers = (training_callbacks(cfg, Path(workdir)) if options["callbacks"] == "train"
                                          else ([], []))
                    wall, cpu, seen = nlpseq_path(m, dm, steps, clip, warmup, callbacks, loggers, precision)
                ours.append(seen / wall)
                ours_cpu.append(seen / cpu)
                step_ms["nlpseq"].append(1000 * wall / (steps - warmup))
                trained = m
        # the roof is sampled once per repeat, between the timed runs, and its best sample counts: another job
        # slowing this core for a second is a dip in the roof, not the machine's ceiling
        roofs.append(matmul_roof(dtype=roof_dtype))
        roofs_cpu.append(matmul_roof(clock=time.process_time, dtype=roof_dtype))
    roof, roof_cpu = max(roofs), max(roofs_cpu)
    med = statistics.median
    result = {"train_tokens_per_sec_nlpseq": med(ours), "train_tokens_per_sec_plain": med(plain),
              "ratio_nlpseq_vs_plain": med(ours) / med(plain),
              "ratio_per_repeat": [o / p for o, p in zip(ours, plain)],
              # per CPU second of this process: what a shared machine's scheduling does not blur
              "train_tokens_per_cpu_sec_nlpseq": med(ours_cpu), "train_tokens_per_cpu_sec_plain": med(plain_cpu),
              "ratio_nlpseq_vs_plain_cpu": med(ours_cpu) / med(plain_cpu),
              # the ratio's gap in absolute terms: what the nlpseq path adds to every step (Lightning's loop and
              # hooks, callbacks, logging, the loader), the same for any model, so it weighs on short steps
              "train_step_ms_plain": med(step_ms["plain"]), "train_step_ms_nlpseq": med(step_ms["nlpseq"]),
              "overhead_ms_per_step": med(step_ms["nlpseq"]) - med(step_ms["plain"]),
              **padding_shares(batches)}
    sampler = getattr(dm, "_train_sampler", None)
    if hasattr(sampler, "padding_share"):  # the whole epoch, by the sampler's own lengths
        result["padding_share_epoch"] = sampler.padding_share()
        by_side = sampler.padding_share_by_side()
        if len(by_side) > 1:
            result["padding_share_epoch_by_side"] = dict(zip(("source", "target"), by_side))
    roof_name = "tfloat32" if _tf32(roof_dtype) else str(roof_dtype).replace("torch.", "")
    result.update(precision=precision, matmul_roof_dtype=roof_name, matmul_roof_flops=roof,
                  matmul_roof_flops_cpu=roof_cpu)
    flops_per_token = model.train_flops_per_token() if hasattr(model, "train_flops_per_token") else None
    if hasattr(model, "train_flops"):  # FLOPs that depend on the batch beyond its token count (characters)
        flops_per_token = sum(model.train_flops(b) for b in batches[warmup:]) / max(tokens, 1)
    if flops_per_token:
        achieved = flops_per_token * result["train_tokens_per_sec_nlpseq"]
        achieved_cpu = flops_per_token * result["train_tokens_per_cpu_sec_nlpseq"]
        result.update(train_flops_per_token=flops_per_token, achieved_flops=achieved, share_of_roof=achieved / roof,
                      share_of_roof_cpu=achieved_cpu / roof_cpu)
    rnn = _main_rnn(model)
    if rnn is not None:
        batch_rows = batches[0]["src" if "src" in batches[0] else "targets" if "targets" in batches[0]
                                else "lengths"].size(0)
        length = max(1, round(_mean_length(batches)))
        kernel = rnn_kernel(rnn, batch_rows, length, max(repeats, 5), precision)
        # the same kernel as tokens/s (batch rows x mean real length per step): the nlpseq path against a bare
        # nn.LSTM/GRU forward + backward of the same shape, everything else in the model counted as overhead
        kernel_tokens = kernel / (3 * rnn_flops_per_token(rnn))
        result.update(rnn_kernel_flops=kernel, rnn_kernel_share_of_roof=kernel / roof,
                      rnn_kernel_tokens_per_sec=kernel_tokens,
                      ratio_nlpseq_vs_rnn_kernel=result["train_tokens_per_sec_nlpseq"] / kernel_tokens,
                      rnn_kernel_batch64_speedup=rnn_batch_speedup(rnn, length, max(repeats, 5)))
    return result, trained


def _main_rnn(model) -> torch.nn.RNNBase | None:
    """The recurrent layer that does most of the model's work: the encoder's, else the decoder's."""
    for name in ("encoder", "decoder"):
        rnn = getattr(getattr(model, name, None), "rnn", None)
        if isinstance(rnn, torch.nn.RNNBase):
            return rnn
    return None


# ---------------------------------------------------------------- inference

def _rates(fn, n: int, repeats: int) -> tuple[float, float]:
    """Items per wall second and per CPU second of fn() producing n items (medians over repeats, one warm-up)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(n / (time.perf_counter() - t))
        cpu.append(n / max(time.process_time() - c, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def measure_inference(predictor, task: str, inputs: list, options: dict) -> dict:
    """Inference rates by wall time, and the same per CPU second under "per_cpu_second"."""
    repeats = options["repeats"]
    if not inputs:
        return {}
    timed: dict[str, tuple[float, float]] = {}  # key -> (wall, cpu)
    extra: dict = {}
    if task in ("sentiment", "ner", "translation"):
        few = inputs[:min(32 if task == "translation" else 128, len(inputs))]
        timed["infer_sentences_per_sec_b1"] = _rates(lambda: predictor.predict(few, batch_size=1), len(few), repeats)
        timed["infer_sentences_per_sec_b64"] = _rates(lambda: predictor.predict(inputs, batch_size=64), len(inputs),
                                                      repeats)
    if task == "translation":
        tok = predictor.model.tgt_tokenizer
        for name, beam in (("greedy", 1), ("beam5", 5)):
            last: list = []  # the timed runs' output, for its length

            def decode(beam=beam, last=last):
                last[:] = predictor.predict(inputs, batch_size=64, beam_size=beam)

            rate = _rates(decode, len(inputs), repeats)
            length = statistics.mean(len(tok.encode(h.translation)) + 1 for h in last)  # + eos, as decoded
            timed[f"decode_{name}_sentences_per_sec_b64"] = rate
            timed[f"decode_{name}_tokens_per_sec_b64"] = (rate[0] * length, rate[1] * length)
            extra[f"decode_{name}_mean_output_tokens"] = length
    if task == "generation":  # sampling (temperature 1) of exactly gen_tokens tokens per prompt
        gen = options["gen_tokens"]

        def run(chunk, batch_size):
            return lambda: predictor.predict(chunk, batch_size=batch_size, max_new_tokens=gen, temperature=1.0,
                                             seed=0, stop_at_eos=False)

        few, many = inputs[:min(8, len(inputs))], inputs[:min(64, len(inputs))]
        timed["infer_sentences_per_sec_b1"] = _rates(run(few, 1), len(few), repeats)
        timed["infer_sentences_per_sec_b64"] = _rates(run(many, 64), len(many), repeats)
        for b in ("b1", "b64"):
            wall, cpu = timed[f"infer_sentences_per_sec_{b}"]
            timed[f"sample_tokens_per_sec_{b}"] = (wall * gen, cpu * gen)
        extra["gen_tokens"] = gen
    if "infer_sentences_per_sec_b1" in timed:
        (w1, c1), (w64, c64) = timed["infer_sentences_per_sec_b1"], timed["infer_sentences_per_sec_b64"]
        timed["batch64_speedup"] = (w64 / w1, c64 / c1)
    return {**{k: v[0] for k, v in timed.items()}, **extra, "per_cpu_second": {k: v[1] for k, v in timed.items()}}


def save_checkpoint(model, path: Path) -> None:
    """A checkpoint written the way training writes one (Lightning's save, with nlpseq's metadata)."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=0, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)


# ---------------------------------------------------------------- the run

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs{gpu}"


def run(overrides: list[str], options: dict) -> dict:
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from nlpseq.predict import load

    cfg = compose(overrides)
    task = cfg.task_name
    pl.seed_everything(cfg.seed, verbose=False)
    result = {"task": task, "overrides": overrides, "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "device": "cuda" if torch.cuda.is_available() else "cpu",
              **({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()} if torch.cuda.is_available()
                 else {}),
              "command": " ".join(["python -m nlpseq.bench", *sys.argv[1:]]) if sys.argv[1:] else None,
              "options": options}
    with tempfile.TemporaryDirectory() as tmp:
        dm = instantiate(cfg.data, _convert_="all")
        dm.prepare(tmp)
        model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
        if not options["skip_train"]:
            trained_result, model = measure_training(cfg, dm, model, options)
            result.update(trained_result)
        ckpt = Path(options["ckpt"]) if options["ckpt"] else Path(tmp) / "bench.ckpt"
        if not options["ckpt"]:
            save_checkpoint(model, ckpt)
        result["inference_checkpoint"] = (str(ckpt) if options["ckpt"] else "untrained" if options["skip_train"]
                                          else f"trained here for {options['steps']} steps")
        predictor = load(ckpt)
        predictor.to(_device())  # inference where training ran: the GPU when there is one
        if predictor.task != task:
            raise NlpseqError(f"bench.ckpt is a {predictor.task} checkpoint, not {task}")
        result.update(measure_inference(predictor, task, dm.bench_inputs(options["infer_sentences"]), options))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def run_large_corpus(overrides: list[str], options: dict) -> dict:
    """The large-corpus mode (nlpseq.bench_corpus): the config is composed first, so a bad override stops
    before gigabytes are written."""
    from nlpseq import bench_corpus

    sizes = bench_corpus.parse_sizes("large_corpus", options["large_corpus"]) if options["large_corpus"] else []
    in_memory = bench_corpus.parse_sizes("in_memory", options["in_memory"]) if options["in_memory"] else []
    task = compose(overrides).task_name
    steps = options["steps"]
    if steps < 1:
        raise NlpseqError(f"bench.steps must be at least 1, got {steps}")
    result = {"task": task, "overrides": overrides, "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine(), "torch": torch.__version__,
              "command": " ".join(["python -m nlpseq.bench", *sys.argv[1:]]) if sys.argv[1:] else None,
              "options": options}
    user = [o for o in overrides if not o.startswith("task=")]  # task= is set by each run itself
    result["large_corpus"] = bench_corpus.measure(task, user, sizes, in_memory, steps,
                                                  options["corpus_dir"] or tempfile.gettempdir(),
                                                  bool(options["keep"]))
    return result


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"nlpseq.bench: {result['task']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    def text(value) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 1e6 else f"{value:.3e}"
        if isinstance(value, list):
            return ", ".join(f"{v:.3f}" for v in value)
        return str(value)

    for key, value in result.items():
        if key in ("overrides", "options", "command"):
            continue
        if isinstance(value, dict):  # per side, per CPU second: one row each
            for sub, v in value.items():
                table.add_row(f"{key}.{sub}", text(v))
        else:
            table.add_row(key, text(value))
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
            if key in TEXT_OPTIONS:
                options[key] = value
            else:
                try:
                    options[key] = int(value)
                except ValueError:
                    print(f"error: bench.{key}: expected an integer, got {value!r}", file=sys.stderr)
                    return 2
        else:
            overrides.append(arg)
    warnings.filterwarnings("ignore")
    large = bool(options["large_corpus"] or options["in_memory"])
    try:
        result = run_large_corpus(overrides, options) if large else run(overrides, options)
    except NlpseqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - hydra compose errors: one line
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
        raise
    Path(options["out"]).write_text(json.dumps(result, indent=2))
    if large:
        from nlpseq.bench_corpus import markdown_table

        print(f"\nnlpseq.bench: {result['task']}, corpora larger than memory\n")
        print(markdown_table(result["large_corpus"]))
    else:
        print_table(result)
    print(f"written to {options['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
