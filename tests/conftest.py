"""Shared fixtures. Tests never touch the network and never need ../shared (real-data tests skip without it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(args: list[str], cwd: Path, module: str = "nlpseq", timeout: int = 300, input: str | None = None,
            env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("LOCAL_RANK", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, input=input)


QUIET = ["callbacks.progress_bar.refresh_rate=0", "trainer.enable_model_summary=false"]


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are latency-bound: one torch thread avoids OpenMP waits on a busy shared machine. Modules
    of tiny-model tests use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_sentiment(tmp_path_factory) -> Path:
    """One short CLI training run on the shipped sample, shared by tests that need a real checkpoint."""
    base = tmp_path_factory.mktemp("sentiment_run")
    run_dir = base / "run"
    proc = run_cli(["task=sentiment", f"hydra.run.dir={run_dir}", "trainer.max_epochs=3", *QUIET], cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir
