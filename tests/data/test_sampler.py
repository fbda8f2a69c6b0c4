import pytest
import numpy as np

from nlpseq.data.sampler import BucketBatchSampler


def test_eval_batches_cover_every_example_once_across_ranks():
    lengths = np.random.default_rng(0).integers(1, 50, size=103)
    seen = []
    for rank in range(3):
        s = BucketBatchSampler(lengths, batch_size=8, shuffle=False, num_replicas=3, rank=rank)
        seen += [i for b in s for i in b]
    assert sorted(seen) == list(range(103))


def test_training_ranks_get_equal_step_counts_and_epochs_differ():
    lengths = np.random.default_rng(1).integers(1, 50, size=101)
    counts = [len(list(BucketBatchSampler(lengths, batch_size=8, num_replicas=2, rank=r))) for r in range(2)]
    assert counts[0] == counts[1]
    s = BucketBatchSampler(lengths, batch_size=8, seed=3)
    first = [tuple(b) for b in s]
    s.set_epoch(1)
    assert [tuple(b) for b in s] != first
    s.set_epoch(0)
    assert [tuple(b) for b in s] == first  # same seed and epoch: same batches
    assert sorted(i for b in first for i in b) == list(range(101))


def test_bucketing_keeps_padding_low_and_respects_max_tokens():
    lengths = np.random.default_rng(2).integers(1, 60, size=5000)
    s = BucketBatchSampler(lengths, batch_size=32, seed=0)
    assert s.padding_share() < 0.05
    unbucketed = BucketBatchSampler(lengths, batch_size=32, seed=0, pool_batches=1)
    assert unbucketed.padding_share() > s.padding_share()
    t = BucketBatchSampler(lengths, batch_size=1000, max_tokens=500, seed=0)
    for b in t:
        assert len(b) * lengths[b].max() <= 500 or len(b) == 1


def _side_padding(lengths: np.ndarray, batches) -> np.ndarray:
    """Padding share per side (column) of [N, sides] lengths over the given batches."""
    real = sum(lengths[b].sum(axis=0) for b in batches)
    total = sum(lengths[b].max(axis=0) * len(b) for b in batches)
    return 1.0 - real / total


def test_two_sided_bucketing_keeps_both_sides_tight():
    # a parallel corpus: target length follows the source length with a spread, as in translation
    rng = np.random.default_rng(4)
    src = rng.integers(4, 40, size=20000)
    tgt = np.clip(np.round(src * rng.normal(1.0, 0.15, size=src.size)), 1, None).astype(np.int64)
    sides = np.stack([src, tgt], axis=1)
    s = BucketBatchSampler(sides, batch_size=64, seed=0, pool_batches=200)
    batches = s.all_batches()
    assert sorted(i for b in batches for i in b) == list(range(len(src)))
    assert sum(len(b) != 64 for b in batches) <= 2  # the last group of each pool may be short
    two_sided = _side_padding(sides, batches)
    # one sort key (the longer side) over the same pools: what bucketing on a single length gives
    one_key = _side_padding(sides, BucketBatchSampler(sides.max(axis=1), batch_size=64, seed=0,
                                                      pool_batches=200).all_batches())
    assert (two_sided < 0.05).all(), two_sided
    assert (two_sided < one_key).all(), (two_sided, one_key)
    assert abs(s.padding_share() - (1 - sides.sum() / sum(sides[b].max(axis=0).sum() * len(b) for b in batches))) < 1e-9
    assert np.allclose(s.padding_share_by_side(), two_sided)
    # max_tokens bounds the longer side; evaluation order and DDP shares use it too
    t = BucketBatchSampler(sides, batch_size=1000, max_tokens=600, seed=0)
    assert all(len(b) * sides[b].max() <= 600 or len(b) == 1 for b in t)
    seen = [i for r in range(2) for b in BucketBatchSampler(sides, batch_size=64, shuffle=False, num_replicas=2,
                                                            rank=r) for i in b]
    assert sorted(seen) == list(range(len(src)))


def test_start_batch_skips_batches_once():
    lengths = np.random.default_rng(3).integers(1, 50, size=100)
    s = BucketBatchSampler(lengths, batch_size=8, seed=1)
    full = [tuple(b) for b in s]
    s.start_batch = 5
    assert [tuple(b) for b in s] == full[5:]
    assert [tuple(b) for b in s] == full  # consumed: the next epoch is whole


def _resumable(sampler_kind: str, trained_batches: int):
    """A ResumableLoader whose checkpoint says `trained_batches` batches of this epoch are done."""
    import torch
    from torch.utils.data import SequentialSampler

    from nlpseq.data.base import ResumableLoader, _first

    data = list(range(40))
    position = lambda: {"epoch": 0, "batches": trained_batches}  # noqa: E731
    if sampler_kind == "bucket":
        sampler = BucketBatchSampler(np.ones(40, dtype=np.int64), batch_size=4, seed=0)
        loader = ResumableLoader(data, batch_sampler=sampler, collate_fn=lambda b: torch.tensor(b), position=position)
    else:  # a plain sampler without start_batch (as the language model's windows): draw and drop
        loader = ResumableLoader(data, batch_size=None, sampler=SequentialSampler(data), collate_fn=_first,
                                 position=position)
    return loader


def test_resumable_loader_continues_after_the_trained_batches():
    import torch

    for kind in ("bucket", "plain"):
        fresh = [b.tolist() if isinstance(b, torch.Tensor) else b for b in _resumable(kind, 0)]
        loader = _resumable(kind, 3)
        state = loader.state_dict()
        assert state == {"epoch": 0, "batches": 3}
        resumed = _resumable(kind, 0)
        resumed.load_state_dict(state)
        got = [b.tolist() if isinstance(b, torch.Tensor) else b for b in resumed]
        assert got == fresh[3:], kind
        assert [b.tolist() if isinstance(b, torch.Tensor) else b for b in resumed] == fresh  # next epoch: all


def test_loaders_leave_the_global_random_stream_alone():
    """Starting a pass over our loaders must not draw from torch's global generator: a resumed run restores
    that generator before its first batch, after the loader was built."""
    import torch
    from torch.utils.data import DataLoader

    from nlpseq.data.base import ResumableLoader, TextDataModule

    dm = TextDataModule(seed=0)
    data = list(range(40))

    def draws_after(loader) -> torch.Tensor:
        torch.manual_seed(0)
        next(iter(loader))
        return torch.rand(3)

    torch.manual_seed(0)
    untouched = torch.rand(3)
    assert not torch.equal(draws_after(DataLoader(data, batch_size=4)), untouched)  # torch's default does draw
    for train in (True, False):
        loader = dm.make_loader(data, train, batch_size=4)
        assert isinstance(loader, ResumableLoader) == train
        assert torch.equal(draws_after(loader), untouched)


def _reference_epoch(lengths, batch_size, pool_batches, seed, epoch):
    """The bucketing rule written plainly: shuffle, sort each pool by length, cut, shuffle the batches."""
    rng = np.random.default_rng((seed, epoch))
    perm = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for s in range(0, len(perm), pool):
        chunk = perm[s:s + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def test_epoch_equals_the_plain_reference_and_is_held_compactly():
    lengths = np.random.default_rng(1).integers(1, 80, size=10_007)
    s = BucketBatchSampler(lengths, batch_size=16, pool_batches=5, seed=3)
    for epoch in (0, 1, 7):
        s.set_epoch(epoch)
        assert list(s) == _reference_epoch(lengths, 16, 5, 3, epoch)
        assert len(s) == len(_reference_epoch(lengths, 16, 5, 3, epoch))
    batches = s.all_batches()  # one int32 index array and two int64 bounds per batch, no object per batch
    assert batches.flat.dtype == np.int32 and batches.flat.size == lengths.size and batches.bounds.shape == (len(s), 2)
    assert sorted(batches.flat.tolist()) == list(range(lengths.size))


def test_side_lengths_give_the_stacked_batches_without_a_copy(tmp_path):
    """Per-side arrays (memmaps stay memmaps) plus a constant batch exactly as the stacked [N, 2] array."""
    from nlpseq.data.sampler import SideLengths

    rng = np.random.default_rng(3)
    src = rng.integers(1, 60, 5000).astype(np.int32)
    tgt = rng.integers(1, 60, 5000).astype(np.int32)
    src.tofile(tmp_path / "src")
    mapped = np.memmap(tmp_path / "src", dtype=np.int32, mode="r")
    sides = SideLengths([mapped, tgt], add=(0, 1))
    stacked = np.stack([src, tgt + 1], axis=1)
    for kwargs in ({"batch_size": 64, "pool_batches": 20}, {"batch_size": 500, "max_tokens": 900},
                   {"batch_size": 64, "shuffle": False}, {"batch_size": 64, "num_replicas": 2, "rank": 1}):
        a, b = BucketBatchSampler(sides, seed=1, **kwargs), BucketBatchSampler(stacked, seed=1, **kwargs)
        assert list(a) == list(b), kwargs
        assert a.padding_share_by_side() == b.padding_share_by_side()
    assert np.shares_memory(sides.sides[0], mapped) and np.array_equal(sides.longest(), stacked.max(axis=1))
    assert np.array_equal(sides[[3, 1]], stacked[[3, 1]])
    with pytest.raises(ValueError, match="one length per example"):
        SideLengths([src, tgt[:10]])
