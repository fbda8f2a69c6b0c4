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


@pytest.mark.parametrize("bidirectional,layers", list(itertools.product([False, True], [1, 2])))
def test_cpu_lstm_path_equals_the_packed_path_with_gradients(bidirectional, layers):
    # the CPU LSTM path runs unpacked (each direction alone, the backward one over rows reversed within
    # their lengths); return_hidden=True takes the packed nn.LSTM path: both must agree, gradients included
    torch.manual_seed(0)
    enc = RecurrentEncoder(8, hidden_size=6, cell="lstm", num_layers=layers, bidirectional=bidirectional).double()
    x = torch.randn(4, 7, 8, dtype=torch.double)
    lengths = torch.tensor([7, 3, 5, 1])
    results = []
    for return_hidden in (False, True):
        xi = x.clone().requires_grad_(True)
        enc.zero_grad()
        out = enc(xi, lengths, return_hidden=return_hidden)
        assert (out.hidden is None) != return_hidden
        (out.states.sin().sum() + out.final.cos().sum()).backward()
        results.append((out.states, out.final, xi.grad, [p.grad.clone() for p in enc.parameters()]))
    (fast_s, fast_f, fast_gx, fast_gp), (ref_s, ref_f, ref_gx, ref_gp) = results
    torch.testing.assert_close(fast_s, ref_s, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast_f, ref_f, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast_gx, ref_gx, rtol=0, atol=1e-12)
    for a, b in zip(fast_gp, ref_gp):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_cpu_lstm_path_equal_lengths_and_inter_layer_dropout():
    torch.manual_seed(0)
    enc = RecurrentEncoder(5, hidden_size=4, cell="lstm", num_layers=2, dropout=0.5)
    x = torch.randn(3, 6, 5)
    full = torch.tensor([6, 6, 6])
    torch.testing.assert_close(enc.eval()(x, full).states, enc(x, full, return_hidden=True).states)
    enc.train()  # dropout between the layers is on in training, off in eval, on both paths
    ragged = torch.tensor([6, 2, 4])
    assert not torch.equal(enc(x, ragged).states, enc(x, ragged).states)
    enc.eval()
    torch.testing.assert_close(enc(x, ragged).states, enc(x, ragged, return_hidden=True).states)
