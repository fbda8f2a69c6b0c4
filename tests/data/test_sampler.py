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
