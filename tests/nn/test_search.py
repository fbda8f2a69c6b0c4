import itertools
import math
from typing import NamedTuple

import pytest
import torch

from nlpseq.errors import ConfigError
from nlpseq.nn.search import (SearchResult, beam_search, greedy, length_penalty_factor, sample, select_state,
                              top_k_top_p_filter)

EOS = 0


def markov(V: int, seed: int, sharp: float = 2.0) -> torch.Tensor:
    """A random table of next-token log-probs given the previous token: [V, V]."""
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharp * torch.randn(V, V, generator=g, dtype=torch.double), -1)


def markov_step(table: torch.Tensor):
    def step(tokens, state):
        return table[tokens], state
    return step


class ItemState(NamedTuple):
    item: torch.Tensor    # [N] which batch item the row belongs to
    time: torch.Tensor    # [N] steps taken
    before: torch.Tensor  # [N] the token fed one step earlier (0 at first): beams must carry their own


def item_table(B: int, T: int, V: int, seed: int) -> torch.Tensor:
    """Next-token log-probs given batch item, time and the two previous tokens: [B, T, V, V, V]."""
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(2 * torch.randn(B, T, V, V, V, generator=g, dtype=torch.double), -1)


def item_step(table: torch.Tensor):
    def step(tokens, state: ItemState):
        t = state.time.clamp(max=table.size(1) - 1)
        return table[state.item, t, state.before, tokens], ItemState(state.item, state.time + 1, tokens)
    return step


def item_state(B: int) -> ItemState:
    zeros = torch.zeros(B, dtype=torch.long)
    return ItemState(torch.arange(B), zeros, zeros)


def item_logp(table: torch.Tensor, b: int):
    """The same model for item b, one token at a time: logp(t, prefix, tok) -> float."""
    return lambda t, prefix, tok: table[b, min(t, table.size(1) - 1), prefix[-2] if len(prefix) > 1 else 0,
                                        prefix[-1], tok].item()


def markov_logp(table: torch.Tensor):
    return lambda t, prefix, tok: table[prefix[-1], tok].item()


def sequence_logp(logp, full: list[int]) -> float:
    return sum(logp(t, full[:t + 1], full[t + 1]) for t in range(len(full) - 1))


def exhaustive(logp, bos: int, V: int, max_len: int, alpha: float):
    """All hypotheses and their (length-penalised) scores, best first."""
    hyps = []
    for n in range(max_len + 1):
        for seq in itertools.product(range(1, V), repeat=n):
            ended = n < max_len
            full = [bos, *seq] + ([EOS] if ended else [])
            score = sequence_logp(logp, full) / length_penalty_factor(float(len(full) - 1), alpha)
            hyps.append((score, list(seq), ended))
    return sorted(hyps, key=lambda h: -h[0])


def check_against_exhaustive(result: SearchResult, b: int, expected, n_best: int):
    assert len(result.tokens[b]) == n_best
    for k in range(n_best):
        score, seq, ended = expected[k]
        assert result.tokens[b][k] == seq
        assert result.scores[b, k].item() == pytest.approx(score, abs=1e-5)
        assert bool(result.ended[b, k]) == ended


# ---- select_state ----

def test_select_state_nested():
    state = {"a": (torch.arange(3), None, [torch.arange(3) * 10]), "b": ItemState(torch.arange(3), torch.ones(3), torch.zeros(3)),
             "n": 7}
    out = select_state(state, torch.tensor([2, 2, 0]))
    assert out["a"][0].tolist() == [2, 2, 0] and out["a"][1] is None and out["a"][2][0].tolist() == [20, 20, 0]
    assert isinstance(out["b"], ItemState) and out["b"].item.tolist() == [2, 2, 0]
    assert out["n"] == 7 and select_state(None, torch.tensor([0])) is None


# ---- top-k / top-p ----

def slow_filter(row: list[float], top_k, top_p) -> list[bool]:
    """Which entries survive, one row in plain Python."""
    order = sorted(range(len(row)), key=lambda i: -row[i])
    keep = set(order)
    if top_k:
        kth = row[order[min(top_k, len(row)) - 1]]
        keep = {i for i in keep if row[i] >= kth}
    if top_p is not None and top_p < 1:
        finite = [i for i in order if i in keep]
        z = sum(math.exp(row[i] - row[finite[0]]) for i in finite)
        total, nucleus = 0.0, set()
        for i in finite:
            nucleus.add(i)
            total += math.exp(row[i] - row[finite[0]]) / z
            if total >= top_p:
                break
        keep = nucleus
    return [i in keep for i in range(len(row))]


def test_top_k_top_p_against_slow_reference():
    g = torch.Generator().manual_seed(0)
    for case in range(300):
        N, V = 1 + case % 4, 1 + case % 13
        logits = torch.randn(N, V, generator=g, dtype=torch.double) * (0.3 + case % 5)
        top_k = [None, 0, 1, 2, 3, V, V + 2][case % 7]
        top_p = [None, 1.0, float(torch.rand(1, generator=g)) * 0.999 + 0.001][case % 3]
        out = top_k_top_p_filter(logits, top_k, top_p)
        for n in range(N):
            kept = slow_filter(logits[n].tolist(), top_k, top_p)
            assert (out[n] > float("-inf")).tolist() == kept, (case, top_k, top_p)
            assert torch.equal(out[n][torch.tensor(kept)], logits[n][torch.tensor(kept)])


def test_top_k_keeps_ties_and_top_p_keeps_at_least_one():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert (top_k_top_p_filter(logits, top_k=1) > -1e9).tolist() == [[False, True, True, False]]
    peaked = torch.tensor([[10.0, 0.0, 0.0]])
    assert (top_k_top_p_filter(peaked, top_p=1e-6) > -1e9).tolist() == [[True, False, False]]
    # a nucleus reached exactly keeps no extra token: probs .5, .25, .25 with p = .75
    exact = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.double))
    assert (top_k_top_p_filter(exact, top_p=0.75) > -1e9).sum() == 2


@pytest.mark.parametrize("kwargs,key", [(dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                                        (dict(top_k=-1), "top_k")])
def test_filter_bad_settings(kwargs, key):
    with pytest.raises(ConfigError) as err:
        top_k_top_p_filter(torch.zeros(1, 3), **kwargs)
    assert err.value.key == key


# ---- greedy ----

def slow_greedy(logp, bos: int, max_len: int):
    tokens, score = [], 0.0
    for t in range(max_len):
        row = [logp(t, [bos, *tokens], v) for v in range(V_GREEDY)]
        best = max(range(V_GREEDY), key=lambda v: row[v])
        score += row[best]
        if best == EOS:
            return tokens, score, True
        tokens.append(best)
    return tokens, score, False


V_GREEDY = 6


def test_greedy_against_slow_reference():
    B, T = 7, 9
    table = item_table(B, T, V_GREEDY, seed=3)
    bos = torch.tensor([1, 2, 3, 4, 5, 1, 2])
    max_len = torch.tensor([9, 1, 5, 9, 0, 3, 8])
    result = greedy(item_step(table), item_state(B), bos, EOS, max_len, B)
    lengths = set()
    for b in range(B):
        tokens, score, ended = slow_greedy(item_logp(table, b), int(bos[b]), int(max_len[b]))
        assert result.tokens[b] == [tokens]
        assert result.scores[b, 0].item() == pytest.approx(score, abs=1e-5)
        assert bool(result.ended[b, 0]) == ended
        lengths.add(len(tokens))
    assert len(lengths) > 2  # items finished at different times
    assert result.scores.shape == (B, 1)


def test_max_len_per_item_and_early_stop():
    V = 5
    no_eos = markov(V, 1).clone()
    no_eos[:, EOS] = float("-inf")
    calls = []

    def step(tokens, state):
        calls.append(1)
        return torch.log_softmax(no_eos[tokens], -1), state

    max_len = torch.tensor([3, 0, 6, 1])
    for search in (lambda: greedy(step, None, 1, EOS, max_len, 4),
                   lambda: sample(step, None, 1, EOS, max_len, 4, generator=torch.Generator().manual_seed(0)),
                   lambda: beam_search(step, None, 1, EOS, max_len, 4, beam_size=3, n_best=2)):
        calls.clear()
        result = search()
        assert [len(hyps[0]) for hyps in result.tokens] == [3, 0, 6, 1]
        assert not result.ended[:, 0].any()
        assert len(calls) == 6
    # bos=1 -> 2 -> eos is certain: everything stops after step 2 of 50
    ends = torch.full((V, V), -1e9, dtype=torch.double)
    ends[1, 2] = ends[2, EOS] = 0.0
    for search in (greedy, lambda *a: beam_search(*a, beam_size=4)):
        calls.clear()
        result = search(lambda tok, s: (calls.append(1), (ends[tok], s))[1], None, 1, EOS, 50, 3)
        assert len(calls) == 2 and result.tokens == [[[2]]] * 3 and result.ended.all()


# ---- beam search ----

@pytest.mark.parametrize("V,max_len,alpha,n_best", [(4, 3, 0.0, 1), (4, 3, 0.0, 3), (5, 2, 0.0, 4),
                                                    (4, 3, 1.0, 2), (3, 4, 0.6, 3), (3, 4, 3.0, 1)])
def test_beam_search_finds_the_exhaustive_optimum_markov(V, max_len, alpha, n_best):
    beam = V * (V - 1) ** (max_len - 1)  # wide enough to keep every extension
    for seed in range(3):
        table = markov(V, seed)
        result = beam_search(markov_step(table), None, 1, EOS, max_len, 2, beam, alpha, n_best)
        expected = exhaustive(markov_logp(table), 1, V, max_len, alpha)
        for b in range(2):
            check_against_exhaustive(result, b, expected, n_best)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_beam_search_finds_the_exhaustive_optimum_per_item_state(alpha):
    V, B, T, n_best = 4, 3, 4, 3
    table = item_table(B, T, V, seed=5)
    bos = torch.tensor([1, 2, 3])
    max_len = torch.tensor([3, 4, 2])
    result = beam_search(item_step(table), item_state(B), bos, EOS, max_len, B, V * (V - 1) ** 3, alpha, n_best)
    for b in range(B):
        expected = exhaustive(item_logp(table, b), int(bos[b]), V, int(max_len[b]), alpha)
        check_against_exhaustive(result, b, expected, n_best)


def test_stopping_bound_is_sound_under_length_penalty():
    # from bos, eos is likely; the long path through token 1 is unlikely at first but then almost certain.
    # A strong length penalty makes the long one best, so stopping when eos first wins would be wrong.
    table = torch.log(torch.tensor([[0.4, 0.3, 0.3],
                                    [0.02, 0.97, 0.01],     # after token 1
                                    [0.6, 0.4, 1e-6]],      # after bos = 2
                                   dtype=torch.double))
    for beam in (1, 2, 12):
        result = beam_search(markov_step(table), None, 2, EOS, 4, 1, beam, length_penalty=3.0)
        expected = exhaustive(markov_logp(table), 2, 3, 4, 3.0)
        assert expected[0][1] == [1, 1, 1, 1]
        check_against_exhaustive(result, 0, expected, 1)


def test_narrow_beams_return_consistent_sorted_distinct_hypotheses():
    V, B, T = 7, 4, 8
    table = item_table(B, T, V, seed=11)
    for beam, n_best, alpha in [(2, 2, 0.0), (3, 3, 1.0), (5, 2, 0.7)]:
        result = beam_search(item_step(table), item_state(B), 1, EOS, T, B, beam, alpha, n_best)
        assert result.scores.shape == (B, n_best)
        for b in range(B):
            hyps = result.tokens[b]
            assert len(hyps) == n_best and len({tuple(h) for h in hyps}) == n_best
            assert torch.all(result.scores[b, :-1] >= result.scores[b, 1:])
            for k, seq in enumerate(hyps):
                ended = bool(result.ended[b, k])
                full = [1, *seq] + ([EOS] if ended else [])
                raw = sequence_logp(item_logp(table, b), full)
                lp = length_penalty_factor(float(len(full) - 1), alpha)
                assert result.scores[b, k].item() == pytest.approx(raw / lp, abs=1e-5)
                assert ended or len(seq) == T


def test_beam_one_is_greedy():
    V, B, T = 8, 6, 12
    for seed in range(5):
        table = item_table(B, T, V, seed=seed)
        # a likely eos, so items end at different times
        table = torch.log_softmax(table + torch.tensor([1.5] + [0.0] * (V - 1), dtype=torch.double), -1)
        max_len = torch.tensor([12, 3, 7, 12, 1, 10])
        bos = torch.arange(1, B + 1) % V
        g = greedy(item_step(table), item_state(B), bos, EOS, max_len, B)
        b1 = beam_search(item_step(table), item_state(B), bos, EOS, max_len, B, beam_size=1, length_penalty=0.0)
        assert b1.tokens == g.tokens
        assert torch.equal(b1.scores, g.scores) and torch.equal(b1.ended, g.ended)


def test_beam_search_bad_settings():
    step = markov_step(markov(4, 0))
    for kwargs, key in [(dict(beam_size=0), "beam_size"), (dict(beam_size=2, n_best=3), "n_best"),
                        (dict(beam_size=2, length_penalty=-1.0), "length_penalty")]:
        with pytest.raises(ConfigError) as err:
            beam_search(step, None, 1, EOS, 3, 2, **kwargs)
        assert err.value.key == key


# ---- sampling ----

def test_sampling_is_reproducible_and_seeds_differ():
    table = markov(6, 2, sharp=0.5)
    run = lambda seed, **kw: sample(markov_step(table), None, 1, EOS, 10, 16,
                                    generator=torch.Generator().manual_seed(seed), **kw)
    assert run(0).tokens == run(0).tokens
    assert run(0).tokens != run(1).tokens
    assert run(3, top_k=2, top_p=0.9).tokens == run(3, top_k=2, top_p=0.9).tokens
    a = run(0)
    for b, hyp in enumerate(a.tokens):  # scores are the model's log-probs of what was drawn
        full = [1, *hyp[0]] + ([EOS] if a.ended[b, 0] else [])
        raw = sum(table[full[t], full[t + 1]].item() for t in range(len(full) - 1))
        assert a.scores[b, 0].item() == pytest.approx(raw, abs=1e-5)


def test_temperature_zero_and_top_k_one_are_greedy():
    B, T, V = 5, 6, 7
    table = item_table(B, T, V, seed=4)
    g = greedy(item_step(table), item_state(B), 1, EOS, T, B)
    assert sample(item_step(table), item_state(B), 1, EOS, T, B, temperature=0.0).tokens == g.tokens
    assert sample(item_step(table), item_state(B), 1, EOS, T, B, top_k=1,
                  generator=torch.Generator().manual_seed(1)).tokens == g.tokens


def test_sampling_follows_the_filtered_distribution():
    probs = torch.tensor([0.1, 0.4, 0.3, 0.2], dtype=torch.double)
    step = lambda tokens, s: (probs.log().expand(tokens.size(0), -1), s)
    n = 20000
    result = sample(step, None, 1, EOS, 1, n, generator=torch.Generator().manual_seed(0))
    first = torch.tensor([h[0][0] if h[0] else EOS for h in result.tokens])
    freq = torch.bincount(first, minlength=4).double() / n
    assert torch.allclose(freq, probs, atol=0.02)
    result = sample(step, None, 1, EOS, 1, 2000, top_k=2, generator=torch.Generator().manual_seed(0))
    assert {h[0][0] for h in result.tokens} == {1, 2}
    result = sample(step, None, 1, EOS, 1, 2000, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert sum(h[0] == [1] for h in result.tokens) > 1990  # cold: almost always the mode


@pytest.mark.parametrize("kwargs,key", [(dict(temperature=-0.5), "temperature"), (dict(top_p=0.0), "top_p"),
                                        (dict(top_p=1.01), "top_p"), (dict(top_k=-2), "top_k")])
def test_sampling_bad_settings(kwargs, key):
    with pytest.raises(ConfigError) as err:
        sample(markov_step(markov(4, 0)), None, 1, EOS, 3, 2, **kwargs)
    assert err.value.key == key


# ---- with the real decoder: prompts, and attention for a beam result ----

def test_decoder_prompt_and_attention_recomputation():
    from nlpseq.nn.decoders import RecurrentDecoder

    torch.manual_seed(0)
    V, D, H, S, B = 9, 4, 5, 6, 3
    embed, proj = torch.nn.Embedding(V, D).double(), torch.nn.Linear(H, V).double()
    dec = RecurrentDecoder(D, H, attention="bahdanau", memory_size=H, input_feeding=True,
                           encoder_final_size=H).double().eval()
    memory = torch.randn(B, S, H, dtype=torch.double)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor([[6], [2], [4]])
    state = dec.init_state(B, torch.randn(B, H, dtype=torch.double), memory, mask)

    def step(tokens, st):
        out, st, _ = dec.step(embed(tokens), st)
        return torch.log_softmax(proj(out), -1), st

    with torch.no_grad():
        # prompt: feed all but its last token through forward (packed by length), pass the last one as bos
        prompt = torch.tensor([[3, 4, 5], [6, 7, 0], [8, 0, 0]])
        plen = torch.tensor([3, 2, 1])  # a one-token prompt feeds nothing: length 0 keeps the state
        _, prompted, _ = dec(embed(prompt[:, :-1]), state, plen - 1)
        bos = prompt[torch.arange(B), plen - 1]
        stepped = []
        for b in range(B):  # reference: step one sentence through its prompt, token by token
            st = select_state(state, torch.tensor([b]))
            for tok in prompt[b, :int(plen[b]) - 1]:
                _, st = step(tok.view(1), st)
            stepped.append(greedy(step, st, int(bos[b]), 1, 6, 1).tokens[0])
        assert greedy(step, prompted, bos, 1, 6, B).tokens == stepped

        # beam result -> attention matrices by teacher-forcing the chosen tokens
        result = beam_search(step, state, 2, 1, 6, B, beam_size=3, length_penalty=0.0)
        hyps = [h[0] for h in result.tokens]
        n = max(len(h) for h in hyps) + 1
        inputs = torch.tensor([[2, *h] + [0] * (n - 1 - len(h)) for h in hyps])
        targets = torch.tensor([h + [1] + [0] * (n - 1 - len(h)) for h in hyps])
        lengths = torch.tensor([len(h) + 1 if result.ended[b, 0] else len(h) for b, h in enumerate(hyps)])
        outputs, _, weights = dec(embed(inputs), state, lengths)
        logp = torch.log_softmax(proj(outputs), -1).gather(2, targets.unsqueeze(2)).squeeze(2)
        valid = torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1)
        torch.testing.assert_close((logp * valid).sum(1).float(), result.scores[:, 0], atol=1e-5, rtol=0)
        assert weights.shape == (B, n, S)
        torch.testing.assert_close(weights.sum(-1), valid.double())


# ---- finished items leave the batch ----

def test_shared_state_is_only_selected_when_asked():
    from nlpseq.nn.search import Shared

    state = (torch.arange(4), Shared(torch.arange(4) * 10))
    moved = select_state(state, torch.tensor([3, 3, 0]))
    assert moved[0].tolist() == [3, 3, 0] and moved[1] is state[1]
    shrunk = select_state(state, torch.tensor([1, 2]), items=torch.tensor([2]))
    assert shrunk[0].tolist() == [1, 2] and shrunk[1].tensors[0].tolist() == [20]
    # absent parts of a shared state pass through
    assert select_state(Shared(None, torch.arange(3)), torch.tensor([0]), items=torch.tensor([1])).tensors[0] is None


@pytest.fixture
def never_compact(monkeypatch):
    import nlpseq.nn.search as search

    def use(flag: bool):
        monkeypatch.setattr(search, "_should_compact", (lambda n, rows: n > 0) if flag else (lambda n, rows: False))
    return use


def test_dropping_finished_items_changes_no_result(never_compact):
    V, B, T = 8, 6, 12
    table = torch.log_softmax(item_table(B, T, V, seed=7) + torch.tensor([1.5] + [0.0] * (V - 1),
                                                                           dtype=torch.double), -1)
    max_len = torch.tensor([12, 3, 7, 12, 1, 10])
    bos = torch.arange(1, B + 1) % V
    searches = {"greedy": lambda: greedy(item_step(table), item_state(B), bos, EOS, max_len, B),
                "beam": lambda: beam_search(item_step(table), item_state(B), bos, EOS, max_len, B, 4, 0.8, 3)}
    for name, run in searches.items():
        never_compact(False)
        ref = run()
        never_compact(True)  # drop at every chance
        out = run()
        assert out.tokens == ref.tokens, name
        assert torch.equal(out.scores, ref.scores) and torch.equal(out.ended, ref.ended)


def test_finished_items_are_not_computed_again():
    # item 1 ends at once (max_len 1), the rest run 6 steps: later steps see fewer rows
    rows = []

    def step(tokens, state):
        rows.append(tokens.numel())
        return torch.log_softmax(torch.zeros(tokens.numel(), 5).index_fill_(1, torch.tensor([EOS]), -1e9), -1), state

    max_len = torch.tensor([6, 1, 6, 6])
    greedy(step, None, 1, EOS, max_len, 4)
    assert rows == [4, 3, 3, 3, 3, 3]
    rows.clear()
    beam_search(step, None, 1, EOS, max_len, 4, beam_size=2)
    assert rows == [8, 6, 6, 6, 6, 6]


def test_translator_style_shared_memory_beam_search_matches_without_dropping(never_compact):
    # a real decoder with its memory held in Shared, one row per sentence (as Translator does): dropping
    # finished sentences shrinks the memory along with the state, and the results stay the same
    from nlpseq.nn.decoders import RecurrentDecoder
    from nlpseq.nn.search import Shared

    torch.manual_seed(0)
    V, D, H, S, B, K = 9, 4, 5, 6, 5, 3
    embed, proj = torch.nn.Embedding(V, D).double(), torch.nn.Linear(H, V).double()
    with torch.no_grad():
        proj.bias[1] += 1.0  # eos (1) likely, so sentences end at different steps
    dec = RecurrentDecoder(D, H, attention="bahdanau", memory_size=H, encoder_final_size=H).double().eval()
    memory = torch.randn(B, S, H, dtype=torch.double)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor([[6], [2], [4], [5], [1]])
    state = dec.init_state(B, torch.randn(B, H, dtype=torch.double), memory, mask)
    state = dec.prepare_search(state)
    fields = ("memory", "memory_mask", "projected_keys", "memory_gates", "memory_combine")
    shared = Shared(*(getattr(state, f) for f in fields))
    light = state._replace(**dict.fromkeys(fields))

    def step(tokens, st):
        dyn, mem = st
        assert dyn.hidden.size(0) == mem.tensors[0].size(0) * K
        out, new, _ = dec.step(embed(tokens), dyn._replace(**dict(zip(fields, mem.tensors))))
        return torch.log_softmax(proj(out), -1), (new._replace(**dict.fromkeys(fields)), mem)

    with torch.no_grad():
        results = []
        for flag in (False, True):
            never_compact(flag)
            results.append(beam_search(step, (light, shared), 2, 1, torch.tensor([8, 3, 8, 5, 8]), B, K, 1.0, 2))
    assert results[0].tokens == results[1].tokens
    assert torch.equal(results[0].scores, results[1].scores)
    assert len({len(h[0]) for h in results[0].tokens}) > 1
