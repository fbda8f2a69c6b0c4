"""Shared DataModule machinery: encoded splits held as flat id arrays, bucketed loaders, vocab caching.

Subclasses read their splits, train their tokenizer/labels on the training split, and encode every
split once (never per epoch). The vocabulary is written to the run directory the first time, so DDP
worker processes and resumed runs reuse exactly the same ids instead of rebuilding them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nlpseq.data.sampler import BucketBatchSampler
from nlpseq.errors import ConfigError, check_bool, check_int
from nlpseq.utils.dist import is_worker_process
from nlpseq.utils.io import atomic_write_text

log = logging.getLogger(__name__)

HUB_NOT_STREAMED = ("streams local training files; a hub dataset (data.hub.name) is read by `datasets`: "
                    "set data.out_of_core=false")


class RaggedArray:
    """Variable-length integer sequences stored as one flat array plus offsets (compact, fast to slice)."""

    def __init__(self, seqs: Sequence[Sequence[int]] | None = None, flat=None, offsets=None, lengths=None):
        self._lengths = lengths  # given (a memmap of the out-of-core store), or computed from offsets
        if seqs is not None:
            lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
            offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]) if len(seqs) else \
                np.zeros(0, dtype=np.int64)
        self.flat, self.offsets = flat, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets) if self._lengths is None else self._lengths


class EncodedDataset(Dataset):
    """Index -> example; `__getitems__` hands whole batches of indices to `collate` at once."""

    def __init__(self, size: int, lengths: np.ndarray, collate: Callable[[list[int]], Any]):
        self.size, self.lengths, self.collate = size, lengths, collate

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        return self.collate([i])

    def __getitems__(self, indices: list[int]):
        return self.collate(indices)


def _wait_for(path: Path, timeout: float = 600.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ConfigError("hydra.run.dir", f"waited {timeout:.0f} s for the first process to write {path}; "
                                               f"give every process the same hydra.run.dir")
        time.sleep(0.5)


def repeat_to(items: list, n: int) -> list:
    """`items` repeated until there are n (the first n; empty stays empty): inputs for inference timings."""
    out = list(items)
    while out and len(out) < n:
        out = out + out
    return out[:n]


def _first(batch):
    return batch[0] if isinstance(batch, list) else batch


class ResumableLoader(DataLoader):
    """The training loader, resumable mid-epoch: Lightning keeps its `state_dict` in every checkpoint.

    The state is how many batches of the current epoch were trained, read from the trainer's progress by
    `position` (Lightning fetches a batch ahead, so the sampler's own count would be one too many). After
    `load_state_dict`, the next pass starts after those batches: through the batch sampler's `start_batch`
    when it has one, else by drawing and dropping them. Iteration starts at the first batch, not at
    `iter()`: Lightning creates the iterator before it sets the sampler's epoch.
    """

    def __init__(self, *args: Any, position: Callable[[], dict] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.position = position
        self._skip = 0

    def state_dict(self) -> dict:
        return self.position() if self.position is not None else {"epoch": 0, "batches": 0}

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("batches", 0))

    def __iter__(self):
        skip, self._skip = self._skip, 0
        if skip and hasattr(self.batch_sampler, "start_batch"):
            self.batch_sampler.start_batch, skip = skip, 0
        it = super().__iter__()
        for _ in range(skip):
            if next(it, None) is None:
                return
        yield from it


class TextDataModule(pl.LightningDataModule):
    """Loaders with length-bucketed batches over encoded splits; subclasses fill `self.splits`."""

    def __init__(self, batch_size: int = 32, eval_batch_size: int = 128, max_tokens: int | None = None,
                 num_workers: int = 0, bucket_pool: int = 50, seed: int = 0, pin_memory: bool = False):
        super().__init__()
        self.batch_size = check_int("data.batch_size", batch_size, minimum=1)
        self.eval_batch_size = check_int("data.eval_batch_size", eval_batch_size, minimum=1)
        if max_tokens is not None:
            check_int("data.max_tokens", max_tokens, minimum=1)
        self.max_tokens, self.num_workers = max_tokens, check_int("data.num_workers", num_workers, minimum=0)
        self.bucket_pool, self.seed = check_int("data.bucket_pool", bucket_pool, minimum=1), seed
        # page-locked batches, so that a GPU copies them asynchronously (ignored without an accelerator; off by
        # default: with num_workers=0 the pinning runs on the training thread, which small models' steps feel)
        self.pin_memory = check_bool("data.pin_memory", pin_memory)
        self.splits: dict[str, EncodedDataset] = {}
        self._train_sampler: BucketBatchSampler | None = None

    # ---- options every file-reading datamodule shares
    def _set_hub(self, hub: dict | None, extra: tuple[str, ...] = ()) -> None:
        """`data.hub` (name, subset, splits and the subclass's `extra` keys); an unknown key stops here."""
        self.hub = dict(hub or {})
        known = {"name", "subset", "splits", *extra}
        if set(self.hub) - known:
            raise ConfigError("data.hub", f"unknown option(s) {sorted(set(self.hub) - known)}; expected {sorted(known)}")

    def _set_out_of_core(self, out_of_core: str | bool, streamable: bool, needs: str) -> None:
        """`data.out_of_core` (auto | true | false); true stops here when the data cannot be streamed (`needs`
        says what it takes)."""
        if out_of_core not in (True, False, "auto"):
            raise ConfigError("data.out_of_core", f"expected auto, true or false, got {out_of_core!r}")
        if out_of_core is True and not streamable:
            raise ConfigError("data.out_of_core", needs)
        self.out_of_core = out_of_core
        self.cache_dir: Path | None = None
        self._heldout = None  # out of core without a validation split: which training examples are held out

    # ---- vocabulary: built once per run directory
    def prepare(self, run_dir: str | Path | None = None) -> None:
        """Read the data, build (or reuse) the vocabulary, encode every split. Called before the model exists."""
        path = Path(run_dir) / "vocab.json" if run_dir is not None else None
        settings = self.vocab_settings()
        if path is not None and is_worker_process():
            _wait_for(path)  # ranks started together (torchrun, SLURM) use the first process's vocabulary
        if path is not None and path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("settings") != settings:
                raise ConfigError("data", f"settings differ from the vocabulary saved in {path} by this run "
                                          f"directory's first start; resume with the same data and tokenizer settings")
            self.load_vocab(saved["vocab"])
            self.read_splits(train_only_for_vocab=False)
        else:
            self.read_splits(train_only_for_vocab=True)
            if path is not None:
                atomic_write_text(path, json.dumps({"settings": settings, "vocab": self.dump_vocab()}))
        self.encode_splits()

    def vocab_settings(self) -> Any:
        raise NotImplementedError

    def read_splits(self, train_only_for_vocab: bool) -> None:
        """Read the data; when `train_only_for_vocab`, also build the vocabulary from the training split."""
        raise NotImplementedError

    def dump_vocab(self) -> dict:
        raise NotImplementedError

    def load_vocab(self, vocab: dict) -> None:
        raise NotImplementedError

    def encode_splits(self) -> None:
        raise NotImplementedError

    def model_inputs(self) -> dict:
        """What the model needs from the data (tokenizer JSON, labels): plain values for the checkpoint."""
        raise NotImplementedError

    # ---- loaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_position(self) -> dict:
        """Where training stands, for a checkpoint: the epoch a resumed run starts in and its batches already trained."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {"epoch": 0, "batches": 0}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:  # the epoch's training is over: a resume starts the next one
            return {"epoch": trainer.current_epoch + 1, "batches": 0}
        return {"epoch": trainer.current_epoch, "batches": done}

    def make_loader(self, dataset: Dataset, train: bool, **kwargs: Any) -> DataLoader:
        """A loader with its own seed generator (making an iterator then leaves the global RNG alone, so
        a resumed run's random stream matches); the training loader is resumable mid-epoch."""
        kwargs.setdefault("generator", torch.Generator().manual_seed(self.seed))
        kwargs.setdefault("num_workers", self.num_workers)
        kwargs.setdefault("persistent_workers", self.num_workers > 0 and train)
        kwargs.setdefault("pin_memory", self.pin_memory and torch.cuda.is_available())
        if train:
            return ResumableLoader(dataset, position=self.train_position, **kwargs)
        return DataLoader(dataset, **kwargs)

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.splits[split]
        replicas, rank = self._world()
        sampler = BucketBatchSampler(ds.lengths, batch_size=self.batch_size if train else self.eval_batch_size,
                                     max_tokens=self.max_tokens, shuffle=train, seed=self.seed,
                                     pool_batches=self.bucket_pool, num_replicas=replicas, rank=rank)
        if train:
            self._train_sampler = sampler
        return self.make_loader(ds, train, batch_sampler=sampler, collate_fn=_first)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            raise ConfigError("data.test", "no test split configured")
        return self._loader("test", train=False)

    @property
    def has_test(self) -> bool:
        return "test" in self.splits

    @property
    def num_examples(self) -> dict[str, int]:
        return {s: len(d) for s, d in self.splits.items()}

    def bench_inputs(self, n: int) -> list:
        """n inputs for `predict()` (`python -m nlpseq.bench` inference timings); none by default."""
        return []
