"""nlpseq.nn.dropout against torch's dropout, and the decoder's layer-by-layer RNN against nn.LSTM/GRU/RNN."""
import pytest
import torch
from torch import nn

from nlpseq.nn import decoders
from nlpseq.nn.decoders import RecurrentDecoder, layerwise
from nlpseq.nn.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.2, 0.35, 0.5, 0.9])
def test_mask_has_dropouts_distribution(p):
    torch.manual_seed(0)
    n = 400_000
    mask = keep_mask((n,), p)
    kept = mask > 0
    # Bernoulli(1 - p): the kept share within 5 standard deviations
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sd
    # two values only: 0 and the inverse of the (rounded) keep probability, so E[mask] = 1 exactly
    drop = round(p * 65536)
    values = mask.unique().tolist()
    assert values[0] == 0.0 and len(values) == 2 and values[1] == pytest.approx(65536 / (65536 - drop))
    assert abs(mask.mean().item() - 1.0) < 5 * sd / (1 - p)


def test_every_16_bit_lane_is_uniform_and_neighbours_independent():
    """Each 64-bit draw feeds four neighbouring elements: each lane keeps at rate 1 - p, independently."""
    torch.manual_seed(1)
    mask = (keep_mask((200_000, 4), 0.5) > 0).float()
    sd = (0.25 / 200_000) ** 0.5
    for lane in range(4):
        assert abs(mask[:, lane].mean().item() - 0.5) < 5 * sd
    both = (mask[:, :-1] * mask[:, 1:]).mean(0)  # P(kept, next kept) = 0.25 when independent
    assert torch.all((both - 0.25).abs() < 5 * (0.1875 / 200_000) ** 0.5)


def test_dropout_matches_torch_in_expectation_and_gradient():
    torch.manual_seed(2)
    x = torch.randn(64, 50, 32, requires_grad=True)
    y = dropout(x, 0.3)
    zeroed = y == 0
    assert abs(zeroed.float().mean().item() - 0.3) < 0.01
    scale = 65536 / (65536 - round(0.3 * 65536))
    assert torch.allclose(y[~zeroed], x[~zeroed] * scale)
    y.sum().backward()
    assert torch.allclose(x.grad, (~zeroed).float() * scale)  # d/dx of x * mask is the mask


def test_identity_outside_training_and_at_zero():
    x = torch.randn(3, 4)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    module = Dropout(0.5).eval()
    assert module(x) is x


def test_seeded_and_generator_reproducible():
    torch.manual_seed(3)
    a = keep_mask((1000,), 0.4)
    torch.manual_seed(3)
    b = keep_mask((1000,), 0.4)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(keep_mask((5, 7), 0.4, generator=g1), keep_mask((5, 7), 0.4, generator=g2))


def test_keeps_dtype_and_shape():
    x = torch.randn(2, 3, 5, dtype=torch.bfloat16)
    y = dropout(x, 0.5)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    x = torch.randn(7)[::2]  # not contiguous
    assert dropout(x, 0.5).shape == x.shape


def test_module_has_no_state_and_checks_p():
    assert Dropout(0.2).state_dict() == {}
    assert "p=0.2" in repr(Dropout(0.2))
    with pytest.raises(ValueError):
        Dropout(1.5)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_layerwise_is_the_stacked_rnn_without_dropout(cls):
    torch.manual_seed(4)
    rnn = cls(6, 5, num_layers=3, batch_first=True).train()
    x = torch.randn(4, 7, 6, requires_grad=True)
    h0 = torch.randn(3, 4, 5)
    hx = (h0, torch.randn(3, 4, 5)) if cls is nn.LSTM else h0
    want, want_hx = rnn(x, hx)
    got, got_hx = layerwise(rnn, x, hx)  # rnn.dropout == 0: no masks
    assert torch.allclose(got, want, atol=1e-6)
    for g, w in zip(got_hx if cls is nn.LSTM else [got_hx], want_hx if cls is nn.LSTM else [want_hx]):
        assert torch.allclose(g, w, atol=1e-6)
    grad_want = torch.autograd.grad(want.sum(), x)[0]
    grad_got = torch.autograd.grad(got.sum(), x)[0]
    assert torch.allclose(grad_got, grad_want, atol=1e-6)


def test_layerwise_applies_the_mask_between_layers(monkeypatch):
    """With dropout, each layer after the first reads the previous layer's output times a mask: rebuilt here
    from one-layer modules and the masks layerwise drew."""
    torch.manual_seed(5)
    rnn = nn.LSTM(6, 5, num_layers=2, batch_first=True, dropout=0.4).train()
    masks = []

    def recording(x, p, training=True):
        y = dropout(x, p, training)
        masks.append(y / x)
        return y

    monkeypatch.setattr(decoders, "dropout", recording)
    x = torch.randn(3, 8, 6)
    hx = (torch.zeros(2, 3, 5), torch.zeros(2, 3, 5))
    got, _ = layerwise(rnn, x, hx)
    assert len(masks) == 1
    first, second = nn.LSTM(6, 5, batch_first=True), nn.LSTM(5, 5, batch_first=True)
    for k, layer in enumerate((first, second)):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{k}"))
    want = second(first(x)[0] * masks[0])[0]
    assert torch.allclose(got, want, atol=1e-6)


def test_decoder_takes_the_layerwise_path_only_to_train_on_cpu(monkeypatch):
    calls = []
    real = decoders.layerwise
    monkeypatch.setattr(decoders, "layerwise", lambda *a: calls.append(1) or real(*a))
    dec = RecurrentDecoder(input_size=4, hidden_size=6, cell="lstm", num_layers=2, dropout=0.3, attention="none")
    state = dec.init_state(2)
    x = torch.randn(2, 5, 4)
    dec.train()(x, state)
    assert calls == [1]
    dec.eval()(x, state)
    assert calls == [1]
