"""Training entry: compose config -> data -> model -> trainer -> fit -> test on the best checkpoint.

Entry points compose; they do not compute. The return value (the monitored metric of the best
checkpoint) is what Hydra sweeps and the Optuna sweeper optimise.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict, read_write

from nlpseq.callbacks import AtomicCheckpointIO, remove_stale_temp_files
from nlpseq.errors import ConfigError, NlpseqError, check_bool
from nlpseq.utils.dist import is_worker_process

log = logging.getLogger("nlpseq")


def _instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Hydra instantiate, but our own errors come out unwrapped and others name the config key."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, NlpseqError):
            raise cause from None
        detail = str(cause or e).strip().splitlines()[0] if str(cause or e).strip() else type(cause or e).__name__
        raise ConfigError(key, detail) from None


def _prepare_ddp_relaunch() -> None:
    """Lightning's DDP launcher re-runs `sys.argv` with `hydra.run.dir=<HydraConfig run.dir>`.

    Point that at this job's real output directory, and in a sweep turn the relaunch into a single
    run of this job's overrides (otherwise each worker would start the whole sweep again).
    """
    hc = HydraConfig.get()
    with read_write(hc):
        with open_dict(hc):
            hc.run.dir = hc.runtime.output_dir
    if hc.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hc.overrides.task]


def _check_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """Never write a new run over an old one: a used run directory is only for resuming."""
    ckpts = run_dir / "checkpoints"
    # (hidden files are temporary files of checkpoint writes that never finished)
    if cfg.get("ckpt_path") is None and ckpts.is_dir() and any(not p.name.startswith(".") for p in ckpts.iterdir()):
        raise ConfigError("hydra.run.dir", f"{run_dir} already holds a training run; choose a new directory "
                                           f"or resume it with ckpt_path=last")


def _resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    path = cfg.get("ckpt_path")
    if path is None:
        return None
    if path == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError("ckpt_path", f"no last.ckpt in {run_dir / 'checkpoints'} to resume from")
        return str(last)
    if not Path(path).is_file():
        raise ConfigError("ckpt_path", f"{path}: checkpoint not found")
    return str(path)


_TRAINER_INTS = ("max_epochs", "min_epochs", "max_steps", "log_every_n_steps", "check_val_every_n_epoch",
                 "num_sanity_val_steps", "accumulate_grad_batches", "num_nodes")
_TRAINER_NUMBERS = ("gradient_clip_val", "val_check_interval", "limit_train_batches", "limit_val_batches",
                    "limit_test_batches")


def _check_trainer(cfg: DictConfig) -> None:
    """Lightning checks some values only deep inside fit (with a bare AssertionError): check them first."""
    for key in _TRAINER_INTS + _TRAINER_NUMBERS:
        value = cfg.trainer.get(key)
        if value is None:
            continue
        ok = (isinstance(value, int) if key in _TRAINER_INTS else isinstance(value, (int, float)))
        if isinstance(value, bool) or not ok:
            kind = "an integer" if key in _TRAINER_INTS else "a number"
            raise ConfigError(f"trainer.{key}", f"expected {kind}, got {value!r}")


def _lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on `<run>/.lock` while this process trains, so that a second training or resume
    in the same directory fails at once instead of writing into it. The OS drops it when the process ends,
    even when killed. Returns the open lock file (None where file locks are not available)."""
    try:
        import fcntl
    except ImportError:  # Windows: run directories still differ by time and process id
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / ".lock", "a+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise ConfigError("hydra.run.dir", f"{run_dir} is in use by another nlpseq process ({owner}); "
                                           f"choose another directory") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    return lock


def train(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    child = is_worker_process()
    lock = None if child else _lock_run_dir(run_dir)
    try:
        return _train(cfg, run_dir, child)
    finally:
        if lock is not None:
            lock.close()


def _train(cfg: DictConfig, run_dir: Path, child: bool) -> float | None:
    if not child:
        _check_run_dir(run_dir, cfg)
    ckpt_path = _resolve_ckpt_path(cfg, run_dir)
    _check_trainer(cfg)
    deterministic = check_bool("deterministic", cfg.get("deterministic", False))
    if ckpt_path is not None and not child:
        remove_stale_temp_files(run_dir / "checkpoints")
    _prepare_ddp_relaunch()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = _instantiate(cfg.data, "data")
    datamodule.prepare(run_dir)
    model = _instantiate(cfg.model, "model", **datamodule.model_inputs())
    callbacks = [_instantiate(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()
                 if node is not None and "_target_" in node]
    loggers = [_instantiate(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()
               if node is not None and "_target_" in node]
    # deterministic=true: deterministic kernels (or an error naming the op that has none), no cuDNN autotuning
    switches = {"deterministic": True, "benchmark": False} if deterministic else {}
    trainer: pl.Trainer = _instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
                                       plugins=[AtomicCheckpointIO()], **switches)

    if not child:
        log.info("run directory: %s", run_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except RuntimeError as e:
        if deterministic and "deterministic implementation" in str(e):
            op = str(e).strip().splitlines()[0].split(" does not have")[0]
            raise ConfigError("deterministic", f"{op} has no deterministic kernel on this device; "
                                               f"train without deterministic=true") from None
        raise
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = checkpoint.best_model_score if checkpoint is not None else None

    results: dict[str, float] = {}
    if cfg.get("test", True) and datamodule.has_test:
        tested = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        results = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    if trainer.is_global_zero:
        from nlpseq.utils.report import print_results

        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        print_results(cfg.monitor.metric, best_score, val, results, best, run_dir)
    if best_score is None:
        return None
    value = float(best_score)
    return value if math.isfinite(value) else None
