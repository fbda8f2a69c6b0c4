import pytest
import torch

from nlpseq.nn.heads import PoolingClassifier


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_pooling_ignores_padding(pooling):
    torch.manual_seed(0)
    head = PoolingClassifier(4, 3, pooling=pooling).eval()
    states = torch.randn(1, 3, 4)
    padded = torch.cat([states, torch.randn(1, 2, 4) * 100], dim=1)
    final = torch.randn(1, 4)
    a = head(states, torch.ones(1, 3, dtype=torch.bool), final)
    b = head(padded, torch.tensor([[True] * 3 + [False] * 2]), final)
    torch.testing.assert_close(a, b)
    assert a.shape == (1, 3)
