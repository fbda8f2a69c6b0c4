"""CLI runs shared by the reliability tests, started side by side to keep the wall time down.

Every run is small (tiny models, 3 epochs on the shipped samples), deterministic and single-threaded.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

QUIET = ["callbacks.progress_bar.refresh_rate=0", "trainer.enable_model_summary=false"]  # as tests/conftest.py
HERE = Path(__file__).resolve().parent  # killer.py: test-only callbacks for the subprocesses

SENTIMENT = ["task=sentiment", "trainer.max_epochs=3", "model.embedding.dim=16", "model.encoder.hidden_size=16",
             "callbacks.last_checkpoint.every_n_steps=20", "deterministic=true", *QUIET]  # 63 steps per epoch
# stream mode (carried state, shifted windows) with a plateau scheduler that acts every epoch: 50 steps per epoch
GENERATION = ["task=generation", "trainer.max_epochs=3", "model.embedding.dim=16", "model.decoder.hidden_size=32",
              "model.samples.prompts=[]", "data.seq_len=50", "model.scheduler.name=plateau",
              "+model.scheduler.mode=min", "+model.scheduler.patience=0", "+model.scheduler.factor=0.5",
              "callbacks.last_checkpoint.every_n_steps=10", "deterministic=true", *QUIET]
# tagger with char CNN, word dropout and CRF: 20 steps per epoch
NER = ["task=ner", "trainer.max_epochs=3", "model.embedding.dim=16", "model.encoder.hidden_size=16",
       "model.char_encoder.hidden_size=8", "callbacks.last_checkpoint.every_n_steps=5", "deterministic=true", *QUIET]
# encoder-decoder with attention, validation BLEU by greedy search, beam-search test: 47 steps per epoch
TRANSLATION = ["task=translation", "trainer.max_epochs=2", "model.embedding.dim=16", "model.encoder.hidden_size=16",
               "model.decoder.hidden_size=16", "callbacks.last_checkpoint.every_n_steps=20", "deterministic=true",
               *QUIET]


def kill_at(step: int, during_save: bool = False) -> list[str]:
    return ["+callbacks.kill._target_=killer.KillAt", f"+callbacks.kill.step={step}",
            f"+callbacks.kill.during_save={str(during_save).lower()}"]


@dataclass
class Run:
    args: list[str]
    cwd: Path
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    def start(self) -> "Run":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **self.env}
        env.pop("LOCAL_RANK", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "nlpseq", *self.args], cwd=self.cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def wait(self, timeout: int = 300) -> "Run":
        self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        self.returncode = self.proc.returncode
        return self

    @property
    def run_dir(self) -> Path:
        return Path(re.findall(r"^run directory: (.+)$", self.stdout, re.M)[-1])

    @property
    def results(self) -> dict[str, str]:
        """The printed results table: metric -> value as printed."""
        return dict(re.findall(r"^│ (\S[^│]*?)\s+│\s+(\S+) │$", self.stdout, re.M))


def run_all(*runs: Run) -> None:
    for r in runs:
        r.start()
    for r in runs:
        r.wait()


def load(path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


@dataclass
class Killed:
    """A run killed with SIGKILL, what it left behind, and its resumption."""

    killed: Run
    run_dir: Path
    files_after_kill: list[str] = field(default_factory=list)
    step_after_kill: int = -1
    resumed: Run | None = None

    def note(self) -> None:
        ckpts = self.run_dir / "checkpoints"
        self.files_after_kill = sorted(p.name for p in ckpts.iterdir())
        self.step_after_kill = load(ckpts / "last.ckpt")["global_step"]


@pytest.fixture(scope="session")
def sentiment_runs(tmp_path_factory):
    """Two identical runs started at the same instant in one directory (default run directories), and a run
    killed half way through writing a mid-epoch checkpoint, then resumed."""
    base = tmp_path_factory.mktemp("sentiment")
    cwd = base / "cwd"
    cwd.mkdir()
    caches = {"HF_HOME": str(base / "hf_home"), "HF_DATASETS_CACHE": str(base / "hf_datasets")}
    a, b = Run(SENTIMENT, cwd, caches), Run(SENTIMENT, cwd, caches)
    # checkpoints at steps 20, 40, 60, (63: epoch end), 80, 100...; dies writing step 100's: last.ckpt is step 80
    killed = Killed(Run([*SENTIMENT, f"hydra.run.dir={base / 'killed'}", *kill_at(90, during_save=True)], base),
                    base / "killed")
    run_all(a, b, killed.killed)
    killed.note()
    killed.resumed = Run([*SENTIMENT, f"hydra.run.dir={killed.run_dir}", "ckpt_path=last"], base).start().wait()
    return {"a": a, "b": b, "killed": killed, "base": base, "cwd": cwd}


@pytest.fixture(scope="session")
def generation_runs(tmp_path_factory):
    """An uninterrupted language-model run, and one killed twice: just after an epoch end (at step 55; last.ckpt is
    the end of epoch 0, step 50), then, resumed, in the middle of an epoch (at step 75; last.ckpt is step 70)."""
    base = tmp_path_factory.mktemp("generation")
    ref = Run([*GENERATION, f"hydra.run.dir={base / 'ref'}"], base)
    run_dir = base / "killed"
    first = Killed(Run([*GENERATION, f"hydra.run.dir={run_dir}", *kill_at(55)], base), run_dir)
    run_all(ref, first.killed)
    first.note()
    second = Killed(Run([*GENERATION, f"hydra.run.dir={run_dir}", "ckpt_path=last", *kill_at(75)], base), run_dir)
    first.resumed = second.killed.start().wait()
    second.note()
    second.resumed = Run([*GENERATION, f"hydra.run.dir={run_dir}", "ckpt_path=last"], base).start().wait()
    return {"ref": ref, "first": first, "second": second}


def _killed_once(base: Path, args: list[str], step: int) -> dict:
    """An uninterrupted run and one killed at `step`, then resumed with ckpt_path=last."""
    ref = Run([*args, f"hydra.run.dir={base / 'ref'}"], base)
    killed = Killed(Run([*args, f"hydra.run.dir={base / 'killed'}", *kill_at(step)], base), base / "killed")
    run_all(ref, killed.killed)
    killed.note()
    killed.resumed = Run([*args, f"hydra.run.dir={killed.run_dir}", "ckpt_path=last"], base).start().wait()
    return {"ref": ref, "killed": killed}


@pytest.fixture(scope="session")
def ner_runs(tmp_path_factory):
    """Killed at step 33, in the middle of epoch 1 (steps 20-39): last.ckpt is step 30."""
    return _killed_once(tmp_path_factory.mktemp("ner"), NER, 33)


@pytest.fixture(scope="session")
def translation_runs(tmp_path_factory):
    """Killed at step 70, in the middle of epoch 1 (steps 47-93): last.ckpt is step 60."""
    return _killed_once(tmp_path_factory.mktemp("translation"), TRANSLATION, 70)

