import pytest
import torch

from nlpseq.errors import ConfigError
from nlpseq.nn.attention import BahdanauAttention, LuongAttention, build_attention

Q, K = 6, 6  # equal sizes, so luong_dot is buildable too
KINDS = ("bahdanau", "luong_dot", "luong_general")


def make(kind: str, query_size: int = Q, key_size: int = K) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_attention(kind, query_size, key_size, hidden_size=5).double()


def lengths_mask(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_single_and_many_queries(kind):
    att = make(kind)
    keys, mask = torch.randn(3, 7, K).double(), lengths_mask([7, 4, 1], 7)
    context, weights = att(torch.randn(3, Q).double(), keys, mask)
    assert context.shape == (3, K) and weights.shape == (3, 7)
    context, weights = att(torch.randn(3, 5, Q).double(), keys, mask)
    assert context.shape == (3, 5, K) and weights.shape == (3, 5, 7)


@pytest.mark.parametrize("kind", KINDS)
def test_many_queries_equal_one_at_a_time_and_precomputed_keys(kind):
    att = make(kind)
    queries, keys, mask = torch.randn(2, 4, Q).double(), torch.randn(2, 5, K).double(), lengths_mask([5, 3], 5)
    context, weights = att(queries, keys, mask, att.project_keys(keys))
    for t in range(4):
        c, w = att(queries[:, t], keys, mask)
        torch.testing.assert_close(c, context[:, t], rtol=0, atol=1e-12)
        torch.testing.assert_close(w, weights[:, t], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_weights_sum_to_one_and_are_zero_on_padding(kind):
    att = make(kind)
    mask = lengths_mask([6, 3, 1], 6)
    _, weights = att(torch.randn(3, 4, Q).double(), torch.randn(3, 6, K).double(), mask)
    m = mask.unsqueeze(1).expand_as(weights)
    assert torch.all(weights[~m] == 0)
    assert torch.all(weights[m] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, dtype=torch.double))


@pytest.mark.parametrize("kind", KINDS)
def test_extra_padded_positions_change_nothing(kind):
    att = make(kind)
    query, keys = torch.randn(2, 3, Q).double(), torch.randn(2, 4, K).double()
    mask = lengths_mask([4, 2], 4)
    context, weights = att(query, keys, mask)
    # junk (even huge) values in masked positions must not leak into the result
    padded_keys = torch.cat([keys, 1e3 * torch.randn(2, 5, K).double()], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    context2, weights2 = att(query, padded_keys, padded_mask)
    torch.testing.assert_close(context2, context, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights2[..., :4], weights, rtol=0, atol=1e-12)
    assert torch.all(weights2[..., 4:] == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_fully_masked_row_gives_no_nan(kind):
    att = make(kind).float()
    query = torch.randn(2, Q, requires_grad=True)
    keys = torch.randn(2, 3, K, requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    context, weights = att(query, keys, mask)
    assert not torch.isnan(context).any() and not torch.isnan(weights).any()
    assert torch.all(weights[1] == 0) and torch.all(context[1] == 0)
    context.sum().backward()
    assert not torch.isnan(query.grad).any() and not torch.isnan(keys.grad).any()


def test_dot_needs_equal_sizes():
    with pytest.raises(ConfigError) as err:
        LuongAttention(4, 6, kind="dot")
    assert err.value.key == "kind" and "query_size == key_size" in str(err.value)
    with pytest.raises(ConfigError):
        build_attention("luong_dot", 4, 6, 8)
    assert isinstance(build_attention("luong_general", 4, 6, 8), LuongAttention)  # general maps keys to 4


def test_build_attention_kinds_and_bad_settings():
    assert build_attention(None, 4, 4, 4) is None and build_attention("none", 4, 4, 4) is None
    assert isinstance(build_attention("bahdanau", 3, 5, 7), BahdanauAttention)
    assert build_attention("luong_dot", 4, 4, 4).kind == "dot"
    with pytest.raises(ConfigError) as err:
        build_attention("additive", 4, 4, 4)
    assert err.value.key == "kind"
    with pytest.raises(ConfigError) as err:
        LuongAttention(4, 4, kind="concat")
    assert err.value.key == "kind"
    with pytest.raises(ConfigError) as err:
        BahdanauAttention(4, 4, hidden_size=0)
    assert err.value.key == "hidden_size"


def test_bahdanau_matches_formula():
    att = BahdanauAttention(3, 4, 5).double()
    q, keys = torch.randn(1, 3).double(), torch.randn(1, 2, 4).double()
    _, weights = att(q, keys, torch.ones(1, 2, dtype=torch.bool))
    scores = [att.energy_layer(torch.tanh(att.query_layer(q[0]) + att.key_layer(keys[0, s]))) for s in range(2)]
    torch.testing.assert_close(weights[0], torch.softmax(torch.cat(scores), 0))


def test_luong_matches_formula():
    att = LuongAttention(3, 4, "general").double()
    q, keys = torch.randn(1, 3).double(), torch.randn(1, 2, 4).double()
    _, weights = att(q, keys, torch.ones(1, 2, dtype=torch.bool))
    scores = torch.stack([q[0] @ att.key_layer.weight @ keys[0, s] for s in range(2)])
    torch.testing.assert_close(weights[0], torch.softmax(scores, 0))
