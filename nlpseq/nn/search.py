"""Decoding: greedy, sampling (temperature, top-k, top-p) and beam search, batched over sentences and beams.

The model is abstracted as a step function

    step_fn(tokens: LongTensor [N], state) -> (log_probs [N, V], new_state)

that consumes the previous token of each row and returns normalised log-probabilities of the next one.
`state` is any nesting of tuples/lists/dicts/NamedTuples of batch-first tensors (or None); search
reorders and expands it with `select_state`.

Conventions shared by all searches:
- `bos` is an int or a LongTensor [B]: the first token fed to step_fn. To continue a prompt, feed all
  but its last token through the model (e.g. the decoder's `forward` with lengths), pass the resulting
  state, and pass each prompt's last token as `bos` [B]. The prompt is not part of the output.
- `max_len` (int or LongTensor [B]) bounds the number of steps, eos included: a hypothesis still
  open after max_len steps ends there, without eos.
- Output tokens exclude bos and eos. Scores are summed model log-probabilities, eos included
  (beam search divides by the length penalty).
- Finished items leave the batch: once at least a quarter of the rows still searched are finished,
  their results are written out and the state shrinks to the open ones (`select_state`), so later
  steps compute fewer rows. Until then finished rows keep being fed (eos) and change nothing.
  Rows never interact, so results do not depend on when this happens. One host sync per step (how
  many rows finished), none per sentence. Sampling keeps every row (its random draws depend on the
  number of rows, and seeded samples stay as they were).
- State tensors that are equal for all beams of an item (an encoder memory, its mask, projected keys)
  can be wrapped in `Shared`: they keep one row per item (beam search neither expands nor reorders them,
  it only drops the rows of finished items).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from nlpseq.errors import ConfigError, check_float, check_int

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass
class SearchResult:
    """tokens[b][k]: the k-th best hypothesis of item b (no bos/eos); scores [B, n_best]; ended [B, n_best]:
    whether the hypothesis ended with eos (False = cut at max_len).

    Beam search returns no attention or back-pointers: to get attention matrices, teacher-force the
    chosen tokens through the decoder's `forward` (it agrees with `step`), which is one batched call.
    """

    tokens: list[list[list[int]]]
    scores: torch.Tensor
    ended: torch.Tensor


class Shared:
    """Batch-first state tensors with one row per item, the same for all of its beams (e.g. the encoder memory).

    Beam search expands the rest of its state to item x beam rows (item a's beams are rows a * K .. a * K + K - 1)
    and reorders it at every step; `Shared` tensors stay one row per item and are only selected when finished
    items leave the batch (`select_state(..., items=...)`). So the step function sees A * K state rows and A
    shared rows and can broadcast the memory over each item's K beams instead of copying it K times.
    Entries may be None (an absent part of the state).
    """

    __slots__ = ("tensors",)

    def __init__(self, *tensors: torch.Tensor | None):
        self.tensors = tensors


def map_state(state: Any, fn: Callable[[torch.Tensor], torch.Tensor], shared: bool = False) -> Any:
    """Apply fn to every tensor in a nesting of tuples, NamedTuples, lists and dicts; other leaves pass through,
    and so do `Shared` tensors unless `shared`."""
    return _map(state, fn, fn if shared else None)


def _map(state: Any, fn: Callable | None, shared_fn: Callable | None) -> Any:
    """fn on plain tensors, shared_fn on those inside `Shared` (None: leave them)."""
    if isinstance(state, torch.Tensor):
        return state if fn is None else fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple
        return type(state)(*(_map(s, fn, shared_fn) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map(s, fn, shared_fn) for s in state)
    if isinstance(state, dict):
        return {k: _map(v, fn, shared_fn) for k, v in state.items()}
    if shared_fn is not None and isinstance(state, Shared):
        return Shared(*(None if t is None else shared_fn(t) for t in state.tensors))
    return state


def select_state(state: Any, index: torch.Tensor, items: torch.Tensor | None = None) -> Any:
    """Rows `index` (LongTensor [N]) of every batch-first tensor in state: reorders, expands or shrinks it.
    `Shared` tensors take rows `items` instead (None: they stay as they are)."""
    def pick(rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: t.index_select(0, rows)
    return _map(state, pick(index), None if items is None else pick(items))


def _should_compact(n_done: int, rows: int) -> bool:
    """Drop finished rows once they are a quarter of the batch: each drop copies the state (memory
    included), each kept finished row costs a row of every later step."""
    return n_done > 0 and 4 * n_done >= rows


def top_k_top_p_filter(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf all logits [N, V] outside each row's top_k, then outside its nucleus: the smallest set of most
    likely tokens whose probability sums to >= top_p. At least one token is kept. top_k None/0 and top_p
    None/1 disable the filters. Tokens tied with the k-th logit are kept; ties at the nucleus edge are
    broken by sort order, as in Hugging Face's TopPLogitsWarper.
    """
    if top_k is not None:
        check_int("top_k", top_k, minimum=0)
    if top_p is not None:
        check_float("top_p", top_p, 0.0, 1.0, low_open=True)
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = before >= top_p                   # the best token has before == 0 < top_p: always kept
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# ---- greedy and sampling ----

def _setup(state: Any, bos: int | torch.Tensor, max_len: int | torch.Tensor, batch_size: int
           ) -> tuple[torch.device, torch.Tensor, torch.Tensor]:
    """Device, bos [B] and max_len [B] as tensors."""
    check_int("batch_size", batch_size, minimum=1)
    device = _device(state, bos, max_len)
    bos_t = torch.as_tensor(bos, dtype=torch.long, device=device).expand(batch_size).clone()
    max_t = torch.as_tensor(max_len, dtype=torch.long, device=device).expand(batch_size).clone()
    return device, bos_t, max_t


def _tensors(state: Any) -> Iterator[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, (tuple, list, dict)):
        for child in state.values() if isinstance(state, dict) else state:
            yield from _tensors(child)


def _device(*things: Any) -> torch.device:
    """The device of the first tensor found in things, else the CPU."""
    return next((t.device for t in _tensors(things)), torch.device("cpu"))


def _to_lists(tokens: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """tokens [N, T], lengths [N] -> N lists (one device-to-host copy)."""
    return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]


def _decode(step_fn: StepFn, state: Any, bos: int | torch.Tensor, eos: int, max_len: int | torch.Tensor,
            batch_size: int, choose: Callable[[torch.Tensor], torch.Tensor], compact: bool = True) -> SearchResult:
    """The loop shared by greedy and sampling: choose(log_probs [A, V]) -> next tokens [A] for the A rows
    still searched (`alive` holds their item ids; with `compact`, finished rows leave)."""
    device, tokens, max_t = _setup(state, bos, max_len, batch_size)
    T = int(max_t.max())
    out = torch.full((batch_size, max(T, 0)), eos, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
    ended = torch.zeros(batch_size, dtype=torch.bool, device=device)
    alive = torch.arange(batch_size, device=device)
    finished = max_t <= 0
    a_scores, a_lengths, a_ended = scores.clone(), lengths.clone(), ended.clone()

    def write(rows: torch.Tensor) -> None:
        ids = alive[rows]
        scores[ids], lengths[ids], ended[ids] = a_scores[rows], a_lengths[rows], a_ended[rows]

    for t in range(T):
        n_done = int(finished.sum())
        if n_done == alive.numel():
            break
        if compact and _should_compact(n_done, alive.numel()):
            write(finished.nonzero().squeeze(1))
            keep = (~finished).nonzero().squeeze(1)
            state = select_state(state, keep, items=keep)
            alive, tokens, max_t, finished = alive[keep], tokens[keep], max_t[keep], finished[keep]
            a_scores, a_lengths, a_ended = a_scores[keep], a_lengths[keep], a_ended[keep]
        log_probs, state = step_fn(tokens, state)
        chosen = choose(log_probs)
        open_ = ~finished
        a_scores = a_scores + torch.where(open_, log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1).float(), 0.0)
        is_eos = chosen == eos
        a_ended = a_ended | (open_ & is_eos)
        a_lengths = a_lengths + (open_ & ~is_eos)
        out[:, t].index_copy_(0, alive, torch.where(open_, chosen, eos))
        finished = finished | is_eos | (t + 1 >= max_t)
        tokens = torch.where(finished, eos, chosen)
    write(torch.arange(alive.numel(), device=device))
    return SearchResult([[seq] for seq in _to_lists(out, lengths)], scores.unsqueeze(1), ended.unsqueeze(1))


def greedy(step_fn: StepFn, state: Any, bos: int | torch.Tensor, eos: int, max_len: int | torch.Tensor,
           batch_size: int) -> SearchResult:
    """The most likely next token at each step."""
    return _decode(step_fn, state, bos, eos, max_len, batch_size, lambda log_probs: log_probs.argmax(-1))


def sample(step_fn: StepFn, state: Any, bos: int | torch.Tensor, eos: int, max_len: int | torch.Tensor,
           batch_size: int, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> SearchResult:
    """Ancestral sampling from softmax(log_probs / temperature), filtered by top_k then top_p.

    temperature 0 is greedy. Scores are the model's own log-probabilities of the drawn tokens (unscaled,
    unfiltered). `generator` (on the step function's device) makes draws reproducible.
    """
    check_float("temperature", temperature, 0.0)
    if top_k is not None:
        check_int("top_k", top_k, minimum=0)
    if top_p is not None:
        check_float("top_p", top_p, 0.0, 1.0, low_open=True)
    if temperature == 0.0:
        return greedy(step_fn, state, bos, eos, max_len, batch_size)

    def draw(log_probs: torch.Tensor) -> torch.Tensor:
        logits = top_k_top_p_filter(log_probs.float() / temperature, top_k, top_p)
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)

    return _decode(step_fn, state, bos, eos, max_len, batch_size, draw, compact=False)


def ensemble_step(steps: list[StepFn]) -> StepFn:
    """The step function of several models searching together (an ensemble): each member advances its own
    state (the search's state is the tuple of theirs) and the search reads the log of their mean next-token
    probability. Members must share one output vocabulary."""
    if len(steps) == 1:
        return steps[0]
    log_n = math.log(len(steps))

    def step(tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        outs = [f(tokens, st) for f, st in zip(steps, state)]
        log_probs = torch.logsumexp(torch.stack([lp for lp, _ in outs]), 0) - log_n
        return log_probs, tuple(st for _, st in outs)

    return step


# ---- beam search ----

def length_penalty_factor(length: torch.Tensor | float, alpha: float) -> torch.Tensor | float:
    """GNMT's lp = ((5 + length) / 6) ** alpha; scores are divided by it. alpha = 0 gives 1."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(step_fn: StepFn, state: Any, bos: int | torch.Tensor, eos: int, max_len: int | torch.Tensor,
                batch_size: int, beam_size: int, length_penalty: float = 1.0, n_best: int = 1) -> SearchResult:
    """Beam search over all batch items at once (rows flattened to [B * beam_size]).

    Each step ranks the beam_size * V extensions of every item and keeps the best 2 * beam_size.
    Of these, eos extensions ranked within the top beam_size finish (as in Hugging Face's beam search),
    and the best beam_size others stay open, so open beams never shrink because of finished ones.
    Finished hypotheses go to a per-item buffer of the n_best best, scored sum-log-prob / lp(length)
    (length counts eos). An item stops once its n_best-th finished score beats any score its open beams
    could still reach (a sound bound: log-probs only fall and lp peaks at max_len), or at max_len, where
    the open beams finish without eos. Consequences: beam_size 1 with length_penalty 0 is exactly
    greedy; a beam wide enough to keep every extension (beam_size >= V * (V - 1) ** (max_len - 1))
    returns the exact n_best.
    """
    check_int("beam_size", beam_size, minimum=1)
    check_float("length_penalty", length_penalty, 0.0)
    check_int("n_best", n_best, minimum=1)
    if n_best > beam_size:
        raise ConfigError("n_best", f"must be <= beam_size ({beam_size}), got {n_best}")
    device, bos_t, max_t = _setup(state, bos, max_len, batch_size)
    B, K, N = batch_size, beam_size, n_best
    T = max(int(max_t.max()), 0)
    neg_inf = float("-inf")
    beams = torch.arange(K, device=device)

    # results of all items, written as items leave the search
    out_scores = torch.full((B, N), neg_inf, device=device)   # length-penalised
    out_seqs = torch.zeros(B, N, T, dtype=torch.long, device=device)
    out_lens = torch.zeros(B, N, dtype=torch.long, device=device)
    out_ended = torch.zeros(B, N, dtype=torch.bool, device=device)

    # the A items still searched (alive: their ids), each with K open beams (rows a * K + k) and N finished
    alive = torch.arange(B, device=device)
    state = select_state(state, alive.repeat_interleave(K))
    tokens = bos_t.repeat_interleave(K)
    # only beam 0 is open at first, so the K copies of bos don't yield K identical hypotheses
    open_scores = torch.full((B, K), neg_inf, device=device)
    open_scores[:, 0] = 0.0
    open_seqs = torch.zeros(B, K, T, dtype=torch.long, device=device)
    fin_scores = torch.full((B, N), neg_inf, device=device)
    fin_seqs = torch.zeros(B, N, T, dtype=torch.long, device=device)
    fin_lens = torch.zeros(B, N, dtype=torch.long, device=device)
    fin_ended = torch.zeros(B, N, dtype=torch.bool, device=device)
    done = max_t <= 0
    fin_scores[:, 0] = torch.where(done, 0.0, neg_inf)  # max_len 0: the empty hypothesis
    max_lp = length_penalty_factor(max_t.clamp(min=1).float(), length_penalty)

    def write(items: torch.Tensor) -> None:
        ids = alive[items]
        out_scores[ids], out_seqs[ids], out_lens[ids], out_ended[ids] = (
            fin_scores[items], fin_seqs[items], fin_lens[items], fin_ended[items])

    for t in range(T):
        A = alive.numel()
        n_done = int(done.sum())
        if n_done == A:
            break
        if _should_compact(n_done, A):  # finished items leave: their rows are never computed again
            write(done.nonzero().squeeze(1))
            keep = (~done).nonzero().squeeze(1)
            state = select_state(state, (keep.unsqueeze(1) * K + beams).view(-1), items=keep)
            tokens = tokens.view(A, K)[keep].view(-1)
            alive, max_t, max_lp, done = alive[keep], max_t[keep], max_lp[keep], done[keep]
            open_scores, open_seqs = open_scores[keep], open_seqs[keep]
            fin_scores, fin_seqs, fin_lens, fin_ended = fin_scores[keep], fin_seqs[keep], fin_lens[keep], fin_ended[keep]
            A = alive.numel()
        log_probs, state = step_fn(tokens, state)
        V = log_probs.size(-1)
        open_scores = open_scores.masked_fill(done.unsqueeze(1), neg_inf)  # finished items propose nothing
        cand = (open_scores.unsqueeze(2) + log_probs.float().view(A, K, V)).view(A, K * V)
        top_scores, top_idx = torch.topk(cand, min(2 * K, K * V), dim=1)   # [A, C], best first
        top_beam, top_tok = top_idx // V, top_idx % V
        is_eos = top_tok == eos
        last = (t + 1 >= max_t).unsqueeze(1)                                  # at max_len everything finishes
        rank = torch.arange(top_scores.size(1), device=device)
        finite = top_scores > neg_inf

        # the candidates' sequences: their parent's tokens plus the new one (left out if eos)
        cand_seqs = open_seqs.gather(1, top_beam.unsqueeze(2).expand(-1, -1, T))  # [A, C, T]
        cand_seqs[:, :, t] = torch.where(is_eos, 0, top_tok)

        # finishing: eos within the top K, or the best K non-eos ones at max_len
        non_eos_rank = torch.cumsum(~is_eos, dim=1) - 1
        finishing = finite & ((is_eos & (rank < K)) | (~is_eos & last & (non_eos_rank < K)))
        lp = length_penalty_factor(float(t + 1), length_penalty)
        new_scores = torch.where(finishing, top_scores / lp, neg_inf)
        fin_scores, pick = torch.topk(torch.cat([fin_scores, new_scores], 1), N, dim=1)
        fin_seqs = torch.cat([fin_seqs, cand_seqs], 1).gather(1, pick.unsqueeze(2).expand(-1, -1, T))
        cand_lens = torch.full_like(top_tok, t + 1) - is_eos.long()
        fin_lens = torch.cat([fin_lens, cand_lens], 1).gather(1, pick)
        fin_ended = torch.cat([fin_ended, is_eos], 1).gather(1, pick)

        # staying open: the best K non-eos candidates
        keep_scores, keep_idx = torch.topk(top_scores.masked_fill(is_eos, neg_inf), K, dim=1)
        open_scores = keep_scores.masked_fill(last, neg_inf)
        open_seqs = cand_seqs.gather(1, keep_idx.unsqueeze(2).expand(-1, -1, T))
        parents = top_beam.gather(1, keep_idx)
        tokens = top_tok.gather(1, keep_idx).view(-1)
        state = select_state(state, (torch.arange(A, device=device).unsqueeze(1) * K + parents).view(-1))

        best_open = open_scores.max(dim=1).values
        bound = best_open / max_lp  # max_lp is 1 without length penalty
        done = done | last.squeeze(1) | (fin_scores[:, -1] >= bound)
    write(torch.arange(alive.numel(), device=device))

    seqs = _to_lists(out_seqs.view(B * N, T), out_lens.view(-1))
    valid = (out_scores > neg_inf).tolist()
    tokens_out = [[seqs[b * N + k] for k in range(N) if valid[b][k]] for b in range(B)]
    return SearchResult(tokens_out, out_scores, out_ended)
