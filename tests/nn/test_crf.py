"""LinearChainCRF against brute-force enumeration of all tag paths on tiny tag sets."""
from __future__ import annotations

import itertools

import pytest
import torch

from nlpseq.errors import ConfigError
from nlpseq.metrics.schemes import convert
from nlpseq.nn.crf import LinearChainCRF, transition_constraints


def make_crf(k: int, seed: int, allowed=None, allowed_start=None, allowed_end=None) -> LinearChainCRF:
    torch.manual_seed(seed)
    crf = LinearChainCRF(k, allowed, allowed_start, allowed_end).double()
    with torch.no_grad():  # larger than the default init so paths differ clearly
        for p in crf.parameters():
            p.normal_()
    return crf


def random_batch(k: int, batch: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Emissions, tags (-100 at padding) and a right-padded mask with lengths 1..steps (one full row)."""
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, steps, k, generator=g, dtype=torch.float64) * 2
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    lengths[0] = steps
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    tags = torch.randint(0, k, (batch, steps), generator=g).masked_fill(~mask, -100)
    return emissions, tags, mask


def all_paths(crf: LinearChainCRF, emissions: torch.Tensor, allowed_only: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every tag path over one unpadded sentence [L, K] and its score from the raw parameters,
    best first; `allowed_only` drops paths that use a forbidden transition."""
    length, k = emissions.shape
    paths = torch.tensor(list(itertools.product(range(k), repeat=length)), dtype=torch.long)
    scores = (crf.start[paths[:, 0]] + crf.end[paths[:, -1]]
              + emissions[torch.arange(length), paths].sum(1)
              + crf.transitions[paths[:, :-1], paths[:, 1:]].sum(1))
    if allowed_only:
        ok = ((crf.start_penalty[paths[:, 0]] == 0) & (crf.end_penalty[paths[:, -1]] == 0)
              & (crf.transition_penalty[paths[:, :-1], paths[:, 1:]] == 0).all(1))
        paths, scores = paths[ok], scores[ok]
    order = scores.argsort(descending=True)
    return paths[order], scores[order].detach()


CASES = [(k, seed) for k in (3, 4) for seed in range(4)]


@pytest.mark.parametrize("k,seed", CASES)
def test_likelihood_and_partition_match_brute_force(k, seed):
    crf = make_crf(k, seed)
    emissions, tags, mask = random_batch(k, batch=5, steps=5, seed=seed)
    log_z = crf.log_partition(emissions, mask)
    ll = crf.log_likelihood(emissions, tags, mask)
    for b in range(5):
        n = int(mask[b].sum())
        paths, scores = all_paths(crf, emissions[b, :n])
        brute_z = torch.logsumexp(scores, 0)
        assert log_z[b].item() == pytest.approx(brute_z.item(), abs=1e-9)
        gold = (paths == tags[b, :n]).all(1)
        assert ll[b].item() == pytest.approx((scores[gold][0] - brute_z).item(), abs=1e-9)
        assert crf.path_score(emissions, tags, mask)[b].item() == pytest.approx(scores[gold][0].item(), abs=1e-9)


@pytest.mark.parametrize("k,seed", CASES)
def test_viterbi_matches_brute_force(k, seed):
    crf = make_crf(k, seed)
    emissions, _, mask = random_batch(k, batch=5, steps=5, seed=100 + seed)
    best, score = crf.decode(emissions, mask)
    assert best.dtype == torch.long and best.shape == mask.shape
    for b in range(5):
        n = int(mask[b].sum())
        paths, scores = all_paths(crf, emissions[b, :n])
        assert best[b, :n].tolist() == paths[0].tolist()
        assert (best[b, n:] == 0).all()
        assert score[b].item() == pytest.approx(scores[0].item(), abs=1e-9)


@pytest.mark.parametrize("k,seed", CASES)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_nbest_matches_brute_force(k, seed, n):
    crf = make_crf(k, seed)
    emissions, _, mask = random_batch(k, batch=5, steps=4, seed=200 + seed)
    mask[1, 1:] = False  # a one-token sentence: only k paths, so n=5 needs -inf fillers
    top, top_scores = crf.nbest(emissions, mask, n)
    assert top.shape == (5, n, 4) and top_scores.shape == (5, n)
    for b in range(5):
        length = int(mask[b].sum())
        paths, scores = all_paths(crf, emissions[b, :length])
        m = min(n, len(paths))
        assert top[b, :m, :length].tolist() == paths[:m].tolist()
        assert torch.allclose(top_scores[b, :m], scores[:m], atol=1e-9)
        assert (top[b, :, length:] == 0).all()
        # impossible extras: -inf and an all-zero path
        assert torch.isneginf(top_scores[b, m:]).all() and (top[b, m:] == 0).all()
    best, score = crf.decode(emissions, mask)
    assert torch.equal(top[:, 0], best) and torch.allclose(top_scores[:, 0], score)


@pytest.mark.parametrize("k,seed", CASES)
def test_marginals_match_brute_force(k, seed):
    crf = make_crf(k, seed)
    emissions, _, mask = random_batch(k, batch=4, steps=5, seed=300 + seed)
    marg = crf.marginals(emissions, mask)
    for b in range(4):
        n = int(mask[b].sum())
        paths, scores = all_paths(crf, emissions[b, :n])
        probs = torch.softmax(scores, 0)
        brute = torch.zeros(n, k, dtype=torch.float64)
        for t in range(n):
            brute[t].index_add_(0, paths[:, t], probs)
        assert torch.allclose(marg[b, :n], brute, atol=1e-9)
        assert (marg[b, n:] == 0).all()
    assert torch.allclose(marg.sum(2), mask.double())


def test_marginals_are_the_gradient_of_the_log_partition():
    crf = make_crf(4, 0)
    emissions, _, mask = random_batch(4, batch=3, steps=6, seed=1)
    emissions.requires_grad_(True)
    crf.log_partition(emissions, mask).sum().backward()
    assert torch.allclose(emissions.grad, crf.marginals(emissions, mask).detach(), atol=1e-9)


@pytest.mark.parametrize("constrained", [False, True])
def test_log_partition_gradients_match_autograd_through_brute_force(constrained):
    """The hand-written backward of log Z (posteriors and expected transition counts) against autograd
    through logsumexp over every path, for all four inputs, with padding, an empty row and constraints."""
    k = 4
    allowed = transition_constraints(["O", "B-X", "I-X", "B-Y"], "IOB2") if constrained else (None, None, None)
    crf = make_crf(k, 5, *allowed)
    emissions, _, mask = random_batch(k, batch=5, steps=5, seed=11)
    mask[3] = False  # an empty sentence: log Z = 0, no gradient
    weights = torch.tensor([0.5, -1.0, 2.0, 3.0, 1.5], dtype=torch.float64)  # a non-uniform upstream gradient
    params = [crf.transitions, crf.start, crf.end]

    emissions.requires_grad_(True)
    (crf.log_partition(emissions, mask) * weights).sum().backward()
    fast = [emissions.grad.clone()] + [q.grad.clone() for q in params]

    emissions.grad = None
    for q in params:
        q.grad = None
    total = 0.0
    trans, start, end = (crf.transitions + crf.transition_penalty, crf.start + crf.start_penalty,
                         crf.end + crf.end_penalty)
    for b in range(5):
        n = int(mask[b].sum())
        if n == 0:
            continue
        paths = torch.tensor(list(itertools.product(range(k), repeat=n)), dtype=torch.long)
        scores = (start[paths[:, 0]] + end[paths[:, -1]] + emissions[b, torch.arange(n), paths].sum(1)
                  + trans[paths[:, :-1], paths[:, 1:]].sum(1))
        total = total + weights[b] * torch.logsumexp(scores, 0)
    total.backward()
    slow = [emissions.grad] + [q.grad for q in params]
    for name, a, b in zip(("emissions", "transitions", "start", "end"), fast, slow):
        assert torch.allclose(a, b, atol=1e-9), name
    assert (fast[0][3] == 0).all() and (fast[0][~mask] == 0).all()


def test_padding_does_not_change_results():
    k = 4
    crf = make_crf(k, 3)
    emissions, tags, mask = random_batch(k, batch=6, steps=7, seed=9)
    emissions = emissions.masked_fill(~mask.unsqueeze(2), 1e3)  # loud garbage in the padding
    batched = (crf.log_likelihood(emissions, tags, mask), *crf.decode(emissions, mask),
               *crf.nbest(emissions, mask, 3), crf.marginals(emissions, mask))
    for b in range(6):
        n = int(mask[b].sum())
        one = (emissions[b:b + 1, :n], tags[b:b + 1, :n], mask[b:b + 1, :n])
        alone = (crf.log_likelihood(*one), *crf.decode(one[0], one[2]),
                 *crf.nbest(one[0], one[2], 3), crf.marginals(one[0], one[2]))
        ll, path, score, top, top_scores, marg = (x[b] for x in batched)
        assert ll.item() == pytest.approx(alone[0].item(), abs=1e-9)
        assert path[:n].tolist() == alone[1][0].tolist()
        assert score.item() == pytest.approx(alone[2].item(), abs=1e-9)
        assert top[:, :n].tolist() == alone[3][0].tolist()
        assert torch.allclose(top_scores, alone[4][0])
        assert torch.allclose(marg[:n], alone[5][0], atol=1e-9)


def test_empty_sentences():
    crf = make_crf(3, 0)
    emissions, tags, mask = random_batch(3, batch=3, steps=4, seed=0)
    mask[2] = False
    nll = crf(emissions, tags, mask, reduction="none")
    assert nll[2].item() == 0.0 and (nll[:2] > 0).all()
    path, score = crf.decode(emissions, mask)
    assert (path[2] == 0).all() and score[2].item() == 0.0
    top, top_scores = crf.nbest(emissions, mask, 2)
    assert top_scores[2].tolist() == [0.0, float("-inf")] and (top[2] == 0).all()
    assert (crf.marginals(emissions, mask)[2] == 0).all()
    # no time steps at all
    none = torch.zeros(2, 0, 3, dtype=torch.float64)
    no_mask = torch.zeros(2, 0, dtype=torch.bool)
    assert crf(none, torch.zeros(2, 0, dtype=torch.long), no_mask, reduction="none").tolist() == [0.0, 0.0]
    assert crf.decode(none, no_mask)[0].shape == (2, 0)
    assert crf.marginals(none, no_mask).shape == (2, 0, 3)


def test_gradient_flows_and_reductions():
    crf = make_crf(4, 1)
    emissions, tags, mask = random_batch(4, batch=4, steps=5, seed=2)
    emissions.requires_grad_(True)
    nll = crf(emissions, tags, mask, reduction="none")
    assert (nll > 0).all()
    assert crf(emissions, tags, mask).item() == pytest.approx(nll.mean().item())
    assert crf(emissions, tags, mask, reduction="sum").item() == pytest.approx(nll.sum().item())
    crf(emissions, tags, mask).backward()
    for grad in (emissions.grad, crf.transitions.grad, crf.start.grad, crf.end.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert (emissions.grad[~mask] == 0).all()  # padding gets no gradient
    with pytest.raises(ConfigError, match="reduction"):
        crf(emissions, tags, mask, reduction="avg")


def test_half_precision_inputs_are_scored_in_float32():
    crf = LinearChainCRF(5)
    emissions, tags, mask = random_batch(5, batch=3, steps=6, seed=4)
    emissions = emissions.float()
    for dtype in (torch.float16, torch.bfloat16):
        low = emissions.to(dtype)
        ll = crf.log_likelihood(low, tags, mask)
        assert ll.dtype == torch.float32
        assert torch.allclose(ll, crf.log_likelihood(low.float(), tags, mask))
        assert torch.equal(crf.decode(low, mask)[0], crf.decode(low.float(), mask)[0])


def test_shape_errors():
    crf = LinearChainCRF(3)
    with pytest.raises(ValueError, match="emissions"):
        crf.decode(torch.zeros(2, 4, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        crf.decode(torch.zeros(2, 4, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="num_tags"):
        LinearChainCRF(0)
    with pytest.raises(ConfigError, match="allowed"):
        LinearChainCRF(3, allowed=torch.ones(3, 2, dtype=torch.bool))


# ---- constraints ----

LABELS = {
    "IOB1": ["O", "B-A", "I-A", "B-B", "I-B"],
    "IOB2": ["O", "B-A", "I-A", "B-B", "I-B"],
    "BIOES": ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"],
}


def is_allowed(path: list[int], allowed, allowed_start, allowed_end) -> bool:
    return (bool(allowed_start[path[0]]) and bool(allowed_end[path[-1]])
            and all(allowed[a, b] for a, b in zip(path, path[1:])))


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "BIOES"])
def test_constraints_allow_exactly_the_well_formed_sequences(scheme):
    # a sequence is well-formed iff re-tagging its spans gives it back (checked by the schemes module)
    labels = LABELS[scheme]
    constraints = transition_constraints(labels, scheme)
    for length in range(1, 4 if scheme == "BIOES" else 5):
        for path in itertools.product(range(len(labels)), repeat=length):
            tags = [labels[i] for i in path]
            assert is_allowed(list(path), *constraints) == (convert(tags, scheme, scheme) == tags), tags


def test_constraint_examples():
    allowed, start, end = transition_constraints(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], "IOB2")
    assert not allowed[0, 2] and not allowed[1, 4] and allowed[1, 2] and allowed[2, 2] and allowed[2, 3]
    assert start.tolist() == [True, True, False, True, False] and end.all()
    allowed, start, end = transition_constraints(["O", "I-PER", "B-PER", "I-LOC"], "IOB1")
    assert allowed[0, 1] and allowed[3, 1] and allowed[1, 2] and not allowed[0, 2] and not allowed[3, 2]
    assert start.tolist() == [True, True, False, True]
    _, start, end = transition_constraints(["O", "B-X", "I-X", "E-X", "S-X"], "BIOES")
    assert start.tolist() == [True, True, False, False, True]
    assert end.tolist() == [True, False, False, True, True]


@pytest.mark.parametrize("labels,scheme", [
    (["O", "E-PER"], "IOB2"), (["O", "X-PER"], "IOB1"), (["O", ""], "BIOES"), (["O", "B-"], "IOB2"),
    (["O", "O"], "IOB2"), ([], "IOB2"), (["O", "B-PER"], "IOE"),
])
def test_bad_labels_or_scheme(labels, scheme):
    with pytest.raises(ConfigError):
        transition_constraints(labels, scheme)


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "BIOES"])
def test_constrained_decoding_matches_brute_force_over_allowed_paths(scheme):
    labels = LABELS[scheme]
    k, steps = len(labels), 3
    constraints = transition_constraints(labels, scheme)
    unconstrained = make_crf(k, 5)
    crf = make_crf(k, 5, *constraints)
    assert len(list(crf.parameters())) == 3 and "transition_penalty" in crf.state_dict()
    emissions, _, mask = random_batch(k, batch=6, steps=steps, seed=6)
    emissions = emissions * 3  # strong emissions, so unconstrained paths do break the rules
    best, score = crf.decode(emissions, mask)
    top, top_scores = crf.nbest(emissions, mask, 4)
    broken = 0
    for b in range(6):
        n = int(mask[b].sum())
        paths, scores = all_paths(crf, emissions[b, :n], allowed_only=True)
        assert best[b, :n].tolist() == paths[0].tolist()
        assert score[b].item() == pytest.approx(scores[0].item(), abs=1e-9)
        m = min(4, len(paths))
        assert top[b, :m, :n].tolist() == paths[:m].tolist()
        assert torch.allclose(top_scores[b, :m], scores[:m], atol=1e-9)
        for path in (best[b, :n], *top[b, :m, :n]):
            assert is_allowed(path.tolist(), *constraints)
        broken += not is_allowed(unconstrained.decode(emissions, mask)[0][b, :n].tolist(), *constraints)
    assert broken > 0  # the constraints did change something


# ---- the probability-space forward-backward against a log-space reference on long sentences ----

def log_space_reference(crf: LinearChainCRF, emissions: torch.Tensor, mask: torch.Tensor):
    """log Z [B] and marginals [B, T, K] by the textbook log-space forward-backward (float64, one row at a time)."""
    trans = (crf.transitions + crf.transition_penalty).double()
    start, end = (crf.start + crf.start_penalty).double(), (crf.end + crf.end_penalty).double()
    log_z, marginals = [], torch.zeros(emissions.shape, dtype=torch.float64)
    for b in range(emissions.size(0)):
        n = int(mask[b].sum())
        em = emissions[b, :n].double()
        alpha, beta = [start + em[0]], [end]
        for t in range(1, n):
            alpha.append(torch.logsumexp(alpha[-1].unsqueeze(1) + trans + em[t].unsqueeze(0), 0))
        for t in range(n - 2, -1, -1):
            beta.append(torch.logsumexp(trans + (em[t + 1] + beta[-1]).unsqueeze(0), 1))
        z = torch.logsumexp(alpha[-1] + end, 0)
        log_z.append(z)
        marginals[b, :n] = torch.exp(torch.stack(alpha) + torch.stack(beta[::-1]) - z)
    return torch.stack(log_z), marginals


@pytest.mark.parametrize("dtype,scale", [(torch.float64, 3.0), (torch.float32, 3.0), (torch.float32, 40.0)])
def test_partition_and_marginals_match_log_space_on_long_constrained_sentences(dtype, scale):
    labels = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    crf = make_crf(len(labels), 5, *transition_constraints(labels, "BIOES")).to(dtype)
    g = torch.Generator().manual_seed(3)
    emissions = (torch.randn(4, 120, len(labels), generator=g) * scale).to(dtype)  # sharp, long: scaling matters
    lengths = torch.tensor([120, 77, 1, 40])
    mask = torch.arange(120).unsqueeze(0) < lengths.unsqueeze(1)
    ref_z, ref_marg = log_space_reference(crf, emissions, mask)
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(crf.log_partition(emissions, mask).double(), ref_z, rtol=1e-6 if dtype == torch.float32
                               else 1e-12, atol=tol)
    marg = crf.marginals(emissions, mask)
    assert marg.dtype == dtype and not torch.isnan(marg).any()
    torch.testing.assert_close(marg.double(), ref_marg, rtol=0, atol=tol)
    nll = crf(emissions.requires_grad_(True), torch.zeros(4, 120, dtype=torch.long), mask, reduction="sum")
    nll.backward()  # forbidden gold paths give a huge but finite loss, and finite gradients
    assert torch.isfinite(nll) and torch.isfinite(emissions.grad).all()


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES"])
def test_viterbi_equals_the_best_of_nbest_with_constraints_and_padding(scheme):
    labels = ["O", "B-X", "I-X", "B-Y", "I-Y"] if scheme == "IOB2" else ["O", "B-X", "I-X", "E-X", "S-X"]
    crf = make_crf(5, 1, *transition_constraints(labels, scheme))
    emissions, _, mask = random_batch(5, batch=8, steps=9, seed=4)
    mask[3] = False  # an empty sentence
    paths, scores = crf.decode(emissions, mask)
    top, top_scores = crf.nbest(emissions, mask, 1)
    assert torch.equal(paths, top[:, 0]) and torch.allclose(scores, top_scores[:, 0])
    assert scores[3].item() == 0.0 and (paths[3] == 0).all()
