"""Length-bucketed batching: batches of similar lengths so little compute goes to padding.

Training batches are formed within pools of `pool_batches` batches of randomly drawn examples (larger
pools: less padding, less randomness in which examples meet in a batch). With one length per example the
pool is sorted by it. With one length per side (a source and a target), one sort order cannot keep both
sides tight (sorting by the source leaves ~30% target padding on Multi30k), so the pool is split like a
k-d tree: recursively in two, at a batch boundary, along whichever side's order leaves less padding.

Works under DDP without Lightning's sampler replacement (set `use_distributed_sampler=False`): each
rank takes every `num_replicas`-th batch. Training batches are padded by repetition so that every
rank runs the same number of steps (unequal counts would hang the gradient all-reduce); evaluation
batches are not padded, so metrics summed over ranks count every example exactly once.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from nlpseq.errors import check_int


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int], batch_size: int = 32, max_tokens: int | None = None,
                 shuffle: bool = True, seed: int = 0, pool_batches: int = 50, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0, pad_to_equal: bool | None = None):
        check_int("batch_size", batch_size, minimum=1)
        if max_tokens is not None:
            check_int("max_tokens", max_tokens, minimum=1)
        if not isinstance(lengths, SideLengths):
            # int32 (no copy of an int32 memmap): an index of tens of millions of examples stays a few bytes each
            lengths = np.asarray(lengths)
            if lengths.ndim not in (1, 2):
                raise ValueError(f"lengths must be [N] or [N, sides], got shape {lengths.shape}")
            lengths = _int32(lengths)
            if lengths.ndim == 2:
                lengths = SideLengths([lengths[:, k] for k in range(lengths.shape[1])])
        # per side for multi-sided examples (bucketing); self.lengths: the longest side, for max_tokens
        self.side_lengths = lengths if isinstance(lengths, SideLengths) else None
        self._lengths = None if self.side_lengths is not None else lengths
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.shuffle, self.seed, self.pool_batches, self.drop_last = shuffle, seed, pool_batches, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.pad_to_equal = shuffle if pad_to_equal is None else pad_to_equal
        self.epoch = 0
        self.start_batch = 0  # batches already consumed this epoch (exact mid-epoch resume)
        self._len_of = (-1, 0)  # (epoch, its number of batches on this rank)

    @property
    def lengths(self) -> np.ndarray:
        """The longest side per example; for multi-sided examples made on first use (max_tokens, evaluation
        order): shuffled training by batch_size never needs the extra 4 bytes per example."""
        if self._lengths is None:
            self._lengths = self.side_lengths.longest()
        return self._lengths

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunk(self, order: np.ndarray) -> list[np.ndarray]:
        """Cut length-sorted indices into batches of at most batch_size examples (and max_tokens)."""
        if self.max_tokens is None:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, start, longest = [], 0, 0
        for i, idx in enumerate(order):
            longest_if = max(longest, int(self.lengths[idx]))
            n = i - start + 1
            if n > 1 and (n > self.batch_size or n * longest_if > self.max_tokens):
                batches.append(order[start:i])
                start, longest_if = i, int(self.lengths[idx])
            longest = longest_if
        batches.append(order[start:])
        return batches

    def _padding(self, rows: np.ndarray) -> int:
        sides = self.side_lengths[rows].astype(np.int64)
        return int((sides.max(axis=0) * len(rows) - sides.sum(axis=0)).sum())

    def _split(self, rows: np.ndarray) -> list[np.ndarray]:
        """k-d split of a pool over all sides' lengths into groups of batch_size (in a length order that
        `_chunk` then cuts; with max_tokens a batch may span two groups of similar lengths)."""
        groups, todo = [], [rows]
        while todo:
            rows = todo.pop()
            n_batches = -(-len(rows) // self.batch_size)
            if n_batches <= 1:
                groups.append(rows)
                continue
            cut = n_batches // 2 * self.batch_size
            best = None
            sides = self.side_lengths
            for side in range(sides.num_sides):
                keys = [sides.column(other, rows) for other in range(sides.num_sides) if other != side]
                ordered = rows[np.lexsort((*keys, sides.column(side, rows)))]
                cost = self._padding(ordered[:cut]) + self._padding(ordered[cut:])
                if best is None or cost < best[0]:
                    best = (cost, ordered[:cut], ordered[cut:])
            todo.extend((best[2], best[1]))  # popped shorter half first: groups come out short to long
        return groups

    def all_batches(self) -> "Batches":
        """Every batch of this epoch, for all ranks, in order."""
        n = len(self.side_lengths if self.side_lengths is not None else self._lengths)
        if self.shuffle:
            rng = np.random.default_rng((self.seed, self.epoch))
            flat = np.arange(n, dtype=np.int32)  # rng.permutation(n) in half the memory (the same order)
            rng.shuffle(flat)
            pool = self.batch_size * self.pool_batches
            sizes: list[int] = []
            for s in range(0, n, pool):  # sort within pools: similar lengths, still random order overall
                chunk = flat[s:s + pool]
                if self.side_lengths is None:
                    chunk[:] = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                else:
                    chunk[:] = np.concatenate(self._split(chunk))
                sizes.extend(len(b) for b in self._chunk(chunk))
            batches = Batches.from_sizes(flat, sizes)
            if self.drop_last and self.max_tokens is None:
                batches = batches.where(batches.sizes == self.batch_size)
            batches = batches.where(rng.permutation(len(batches)))
        else:  # evaluation: globally sorted, longest first (fails fast on memory)
            flat = np.argsort(-self.lengths, kind="stable")
            batches = Batches.from_sizes(flat, [len(b) for b in self._chunk(flat)])
        return batches

    def rank_batches(self) -> "Batches":
        batches = self.all_batches()
        if self.num_replicas > 1:
            if self.pad_to_equal and batches:
                per_rank = -(-len(batches) // self.num_replicas)
                batches = batches + batches[: per_rank * self.num_replicas - len(batches)]
            batches = batches[self.rank::self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        start, self.start_batch = self.start_batch, 0
        flat = batches.flat
        # bounds to Python a block at a time: all of them at once cost ~140 bytes per batch
        for s in range(start, len(batches), 4096):
            for lo, hi in batches.bounds[s:s + 4096].tolist():
                yield flat[lo:hi].tolist()

    def __len__(self) -> int:
        if self._len_of[0] != self.epoch:  # Lightning asks during the epoch too: build the batches once
            self._len_of = (self.epoch, len(self.rank_batches()))
        return self._len_of[1]

    def padding_share(self) -> float:
        """Share of positions in this epoch's padded batches that are padding (all sides together)."""
        real, total = self._padding_counts()
        return 1.0 - float(real.sum()) / max(float(total.sum()), 1.0)

    def padding_share_by_side(self) -> list[float]:
        """The same per side (one value for one-sided examples)."""
        real, total = self._padding_counts()
        return [1.0 - float(r) / max(float(t), 1.0) for r, t in zip(real, total)]

    def _padding_counts(self) -> tuple[np.ndarray, np.ndarray]:
        sides = self.side_lengths if self.side_lengths is not None else SideLengths([self.lengths])
        real, total = np.zeros(sides.num_sides, dtype=np.int64), np.zeros(sides.num_sides, dtype=np.int64)
        for b in self.all_batches():
            lens = sides[b].astype(np.int64)
            real += lens.sum(axis=0)
            total += lens.max(axis=0) * len(b)
        return real, total


def _int32(lengths: np.ndarray) -> np.ndarray:
    if lengths.size and int(lengths.max()) > np.iinfo(np.int32).max:
        raise ValueError("an example longer than 2**31 - 1 tokens")
    return lengths.astype(np.int32, copy=False)


class SideLengths:
    """Per-side lengths of multi-sided examples (a source and a target) without stacking them: each side is
    its own 1-D array (an int32 memmap stays a memmap) plus a constant (the target's <s> or </s>), so an
    out-of-core corpus costs no [N, sides] copy. Indexing with rows gives the [rows, sides] block."""

    def __init__(self, sides: Sequence[np.ndarray], add: Sequence[int] | None = None):
        self.sides = [_int32(np.asarray(a)) for a in sides]
        self.add = [int(x) for x in (add or [0] * len(self.sides))]
        if len({len(a) for a in self.sides}) > 1 or len(self.add) != len(self.sides):
            raise ValueError("every side needs one length per example (and one constant)")

    @property
    def num_sides(self) -> int:
        return len(self.sides)

    def __len__(self) -> int:
        return len(self.sides[0])

    def column(self, side: int, rows) -> np.ndarray:
        return self.sides[side][rows] + np.int32(self.add[side])

    def __getitem__(self, rows) -> np.ndarray:
        return np.stack([self.column(k, rows) for k in range(self.num_sides)], axis=1)

    def longest(self) -> np.ndarray:
        """The longest side of each example, [N] int32."""
        out = self.column(0, slice(None))  # a new array (the constant is added): safe to write into
        for k in range(1, self.num_sides):
            np.maximum(out, self.column(k, slice(None)), out=out)
        return out


class Batches:
    """An epoch's batches as one flat index array and a (start, stop) row per batch: a few bytes per example
    where a list of small arrays costs a Python object per batch (corpora of tens of millions of examples)."""

    def __init__(self, flat: np.ndarray, bounds: np.ndarray):
        self.flat, self.bounds = flat, bounds

    @classmethod
    def from_sizes(cls, flat: np.ndarray, sizes: Sequence[int]) -> "Batches":
        stops = np.cumsum(np.asarray(sizes, dtype=np.int64))
        return cls(flat, np.stack([stops - np.asarray(sizes, dtype=np.int64), stops], axis=1))

    @property
    def sizes(self) -> np.ndarray:
        return self.bounds[:, 1] - self.bounds[:, 0]

    def where(self, index) -> "Batches":
        """The batches at `index` (a boolean mask, an order, a slice), sharing the flat array."""
        return Batches(self.flat, self.bounds[index])

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.where(i)
        start, stop = self.bounds[i]
        return self.flat[start:stop]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start, stop in self.bounds.tolist():
            yield self.flat[start:stop]

    def __add__(self, other: "Batches") -> "Batches":
        if other.flat is not self.flat:
            raise ValueError("only batches of one epoch can be joined")
        return Batches(self.flat, np.concatenate([self.bounds, other.bounds]))
