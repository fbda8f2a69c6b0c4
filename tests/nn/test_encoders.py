import itertools

import pytest
import torch

from nlpseq.errors import ConfigError
from nlpseq.nn.encoders import RecurrentEncoder


@pytest.mark.parametrize("cell,bidirectional,layers", list(itertools.product(["rnn", "lstm", "gru"], [False, True], [1, 2])))
def test_padding_never_changes_a_result(cell, bidirectional, layers):
    torch.manual_seed(0)
    enc = RecurrentEncoder(8, hidden_size=6, cell=cell, num_layers=layers, bidirectional=bidirectional).eval()
    seqs = [torch.randn(n, 8) for n in (5, 2, 7)]
    batch = torch.zeros(3, 7, 8)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s + 0
        batch[i, len(s):] = torch.randn(7 - len(s), 8)  # garbage in padding must not leak
    out = enc(batch, torch.tensor([5, 2, 7]))
    assert out.states.shape == (3, 7, enc.output_size)
    for i, s in enumerate(seqs):
        alone = enc(s.unsqueeze(0), torch.tensor([len(s)]))
        torch.testing.assert_close(out.states[i, : len(s)], alone.states[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.final[i], alone.final[0], atol=1e-6, rtol=1e-5)
        assert torch.all(out.states[i, len(s):] == 0)


def test_final_state_is_last_forward_and_first_backward():
    enc = RecurrentEncoder(4, hidden_size=3, cell="gru", bidirectional=True).eval()
    x = torch.randn(2, 6, 4)
    out = enc(x, torch.tensor([6, 3]))
    torch.testing.assert_close(out.final[1, :3], out.states[1, 2, :3])   # forward at true end
    torch.testing.assert_close(out.final[1, 3:], out.states[1, 0, 3:])   # backward at position 0


def test_output_size_and_inits():
    assert RecurrentEncoder(4, hidden_size=5, bidirectional=True).output_size == 10
    assert RecurrentEncoder(4, hidden_size=5, bidirectional=False).output_size == 5
    irnn = RecurrentEncoder(4, hidden_size=5, cell="rnn", nonlinearity="relu", init="identity", bidirectional=False)
    torch.testing.assert_close(irnn.rnn.weight_hh_l0.data, torch.eye(5))
    orth = RecurrentEncoder(4, hidden_size=5, cell="lstm", init="orthogonal")
    block = orth.rnn.weight_hh_l0.data[:5]
    torch.testing.assert_close(block @ block.T, torch.eye(5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs,key", [
    ({"cell": "transformer"}, "cell"), ({"hidden_size": "abc"}, "hidden_size"), ({"hidden_size": 0}, "hidden_size"),
    ({"dropout": 1.5}, "dropout"), ({"cell": "lstm", "nonlinearity": "relu"}, "nonlinearity"),
    ({"cell": "gru", "init": "identity"}, "init"), ({"bidirectional": "yes"}, "bidirectional"),
])
def test_bad_settings_name_the_option(kwargs, key):
    with pytest.raises(ConfigError) as e:
        RecurrentEncoder(4, **kwargs)
    assert e.value.key == key


def test_gradients_flow_through_packing():
    enc = RecurrentEncoder(3, hidden_size=4, cell="lstm")
    x = torch.randn(2, 5, 3, requires_grad=True)
    enc(x, torch.tensor([5, 2])).final.sum().backward()
    assert x.grad[1, 2:].abs().sum() == 0 and x.grad[1, :2].abs().sum() > 0
