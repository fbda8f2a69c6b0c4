"""Text generation (one-to-many): a unidirectional recurrent language model over the shared decoder.

embeddings -> RecurrentDecoder (no attention: a stacked RNN/LSTM/GRU) -> dropout -> vocabulary projection,
optionally tied to the input embeddings. A condition (a label id: sentiment class, style, ...) can be
embedded and mapped by the decoder's bridge to its initial state, so one label yields a whole sequence.

Training on a stream (see nlpseq.data.lm) is truncated BPTT: the state left by one window is detached
and carried into the next training step, reset at the start of every epoch; validation and test carry
their own state the same way, reset at their start. Lightning 2.x has no `truncated_bptt_steps`, so
`training_step` does it: each window is one optimizer step.

Metrics: loss (nats per token), perplexity, and bits per character for character models.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from nlpseq.data.collate import pad_ids
from nlpseq.errors import CheckpointError, ConfigError, check_bool, check_float, check_int
from nlpseq.models.base import TaskModule
from nlpseq.nn.decoders import DecoderState, RecurrentDecoder
from nlpseq.nn.embeddings import TokenEmbedding
from nlpseq.nn.search import SearchResult, beam_search, ensemble_step, map_state, sample, select_state
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextTokenizer
from nlpseq.utils.build import build

IGNORE = -100
PROMPT_WINDOW = 4096  # prompt tokens read per decoder call when generating
SAMPLE_KEYS = ("prompts", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "max_conditions")


def check_decoding(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                   num_samples: int, beam_size: int, length_penalty: float) -> None:
    """One-line errors, named like the options, before any work."""
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    check_float("temperature", temperature, 0.0)
    if top_k is not None:
        check_int("top_k", top_k, minimum=0)
    if top_p is not None:
        check_float("top_p", top_p, 0.0, 1.0, low_open=True)
    check_int("num_samples", num_samples, minimum=1)
    check_int("beam_size", beam_size, minimum=1)
    check_float("length_penalty", length_penalty, 0.0)
    if beam_size > 1 and num_samples > beam_size:
        raise ConfigError("num_samples", f"beam search returns at most beam_size ({beam_size}) hypotheses, "
                                         f"got num_samples={num_samples}")


class LanguageModel(TaskModule):
    task = "generation"
    monitor = "val/loss"

    def __init__(self, tokenizer: str, conditions: list[str] | None = None, embedding: dict | None = None,
                 decoder: dict | None = None, tie_weights: bool = False, condition_dim: int = 32,
                 optim: dict | None = None, scheduler: dict | None = None, samples: dict | None = None,
                 reader: dict | None = None):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.reader = dict(reader or {})  # how the training text was read (mode, text and condition columns)
        self.tokenizer = TextTokenizer.from_json(tokenizer)
        self.conditions = list(conditions) if conditions else None
        vocab = self.tokenizer.vocab_size
        self.embedding = build(TokenEmbedding, embedding, "model.embedding", vocab_size=vocab, padding_idx=PAD_ID)
        self.condition_embedding = None
        if self.conditions:
            check_int("model.condition_dim", condition_dim, minimum=1)
            self.condition_embedding = nn.Embedding(len(self.conditions), condition_dim)
        decoder = {"hidden_size": 256, **(decoder or {})}  # the decoder's one required size
        self.decoder = build(RecurrentDecoder, decoder, "model.decoder", input_size=self.embedding.dim,
                             attention=None, memory_size=None, input_feeding=False, attention_hidden_size=None,
                             encoder_final_size=condition_dim if self.conditions else None)
        self.output = nn.Linear(self.decoder.output_size, vocab)
        if check_bool("model.tie_weights", tie_weights):
            if self.embedding.dim != self.decoder.output_size:
                raise ConfigError("model.tie_weights", f"needs model.embedding.dim ({self.embedding.dim}) equal to "
                                                       f"model.decoder.hidden_size ({self.decoder.output_size})")
            self.output.weight = self.embedding.weight  # one Parameter: shared, saved once per module path
        self.samples = self._check_samples(samples)
        self.nll = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self._carried: dict[str, DecoderState | None] = {"train": None, "val": None, "test": None}

    @staticmethod
    def _check_samples(samples: dict | None) -> dict:
        cfg = {"prompts": [""], "max_new_tokens": 200, "temperature": 0.8, "top_k": None, "top_p": 0.95,
               "seed": 0, "max_conditions": 4}
        for key, value in dict(samples or {}).items():
            if key not in SAMPLE_KEYS:
                raise ConfigError(f"model.samples.{key}", f"unknown option (known: {', '.join(SAMPLE_KEYS)})")
            cfg[key] = value
        prompts = cfg["prompts"]
        if prompts is None:
            prompts = []
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError("model.samples.prompts", f"expected a list of strings, got {prompts!r}")
        cfg["prompts"] = list(prompts)
        try:
            check_decoding(cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], cfg["top_p"], 1, 1, 0.0)
            check_int("max_conditions", cfg["max_conditions"], minimum=1)
            if cfg["seed"] is not None:
                check_int("seed", cfg["seed"])
        except ConfigError as e:
            raise e.under("model.samples") from None
        return cfg

    # ---------------------------------------------------------------- the network
    @property
    def is_char_level(self) -> bool:
        return self.tokenizer.kind == "char"

    def initial_state(self, batch_size: int, conditions: torch.Tensor | None = None) -> DecoderState:
        """The state before the first token: zero, or mapped from the condition's embedding."""
        if self.condition_embedding is None:
            return self.decoder.init_state(batch_size)
        if conditions is None:
            raise ConfigError("condition", f"this model was trained with conditions ({', '.join(self.conditions)}): "
                                           f"pass one")
        return self.decoder.init_state(batch_size, self.condition_embedding(conditions))

    def forward(self, input_ids: torch.Tensor, state: DecoderState | None = None,
                lengths: torch.Tensor | None = None, conditions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, DecoderState]:
        """input_ids [B, T] -> (logits [B, T, V], state after each row's last real token).

        `state` continues an earlier call (truncated BPTT: pass it detached); None starts fresh
        (from `conditions` [B] when the model has them). `lengths` [B] (CPU) marks padding.
        """
        if state is None:
            state = self.initial_state(input_ids.size(0), conditions)
        out, state, _ = self.decoder(self.embedding(input_ids), state, lengths)
        return self.output(out), state

    def train_flops_per_token(self) -> float:
        """Analytic training FLOPs per token (forward + backward ~ 3x forward) of the matrix products:
        the recurrent layers and the vocabulary projection (nlpseq.bench)."""
        rnn = sum(2 * p.numel() for name, p in self.decoder.rnn.named_parameters() if name.startswith("weight"))
        return 3.0 * (rnn + 2 * self.output.in_features * self.output.out_features)

    # ---------------------------------------------------------------- training and evaluation
    def _loss(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss over scored tokens, and their count. Stream batches carry the state of `stage`."""
        targets = batch["targets"]
        if "lengths" in batch:  # lines: every example starts fresh
            logits, _ = self(batch["input_ids"], lengths=batch["lengths"], conditions=batch.get("conditions"))
        else:
            state = self._carried[stage]
            if state is not None and state.hidden.size(0) != targets.size(0):
                state = None
            logits, state = self(batch["input_ids"], state)
            self._carried[stage] = map_state(state, torch.Tensor.detach)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        total = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                ignore_index=IGNORE, reduction="sum")
        count = (targets != IGNORE).sum()
        return total / count.clamp(min=1), count

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch, "train")
        self.log_train_step("train/loss", loss, batch["targets"].size(0))
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        loss, count = self._loss(batch, stage)
        self.nll[stage].update(loss, count.to(loss.dtype))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_train_epoch_start(self) -> None:
        self._carried["train"] = None

    # exact mid-epoch resume: the carried training state goes into checkpoints and comes back (Lightning does
    # not call on_train_epoch_start when it resumes mid-epoch; an epoch-end resume starts fresh as usual)
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self._carried["train"]
        if state is not None:
            checkpoint["carried_state"] = {k: v for k, v in state._asdict().items() if v is not None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        carried = checkpoint.get("carried_state")
        self._carried["train"] = DecoderState(**carried) if carried else None

    def on_train_start(self) -> None:
        self._carried["train"] = map_state(self._carried["train"], lambda t: t.to(self.device))

    def on_validation_epoch_start(self) -> None:
        self._carried["val"] = None
        self.nll["val"].reset()

    def on_test_epoch_start(self) -> None:
        self._carried["test"] = None
        self.nll["test"].reset()

    def _log_epoch(self, stage: str) -> float:
        loss = self.nll[stage].compute()  # synced over DDP ranks, weighted by token counts
        self.nll[stage].reset()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        self.log(f"{stage}/ppl", torch.exp(loss.clamp(max=80.0)))
        if self.is_char_level:
            self.log(f"{stage}/bpc", loss / math.log(2.0), prog_bar=True)
        return float(loss)

    def on_validation_epoch_end(self) -> None:
        loss = self._log_epoch("val")
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        self._print_samples(loss)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _print_samples(self, loss: float) -> None:
        cfg = self.samples
        if not cfg["prompts"] or cfg["max_new_tokens"] == 0:
            return
        conds: list[int | None] = [None]
        if self.conditions:
            conds = list(range(min(len(self.conditions), cfg["max_conditions"])))
        prompts = [(p, c) for p in cfg["prompts"] for c in conds]
        enc = [self.tokenizer.encode(p) for p, _ in prompts]
        cond_t = torch.tensor([c for _, c in prompts], device=self.device) if self.conditions else None
        was_training = self.training
        self.eval()
        with torch.no_grad():
            result = self.generate_ids(enc, cond_t, cfg["max_new_tokens"], temperature=cfg["temperature"],
                                       top_k=cfg["top_k"], top_p=cfg["top_p"], seed=cfg["seed"])
        self.train(was_training)
        bpc = f", {loss / math.log(2.0):.3f} bpc" if self.is_char_level else ""
        lines = [f"\n---- samples at epoch {self.current_epoch}, step {self.global_step} "
                 f"(val/loss {loss:.4f}{bpc}; temperature {cfg['temperature']}, top_p {cfg['top_p']}) ----"]
        for (prompt, c), ids, hyps in zip(prompts, enc, result.tokens):
            label = f" [{self.conditions[c]}]" if c is not None else ""
            lines.append(f"> prompt {prompt!r}{label}:")
            lines.append(prompt + continuation_text(self.tokenizer, ids, hyps[0]))
        lines.append("-" * 40)
        self.print("\n".join(lines))

    # ---------------------------------------------------------------- decoding
    def cell_step(self, inputs: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One decoder step (the decoder's fused per-layer cell path) without attention weights."""
        out, state, _ = self.decoder.step(inputs, state)
        return out, state

    def step_fn(self, banned: Sequence[int]):
        """The search step: previous tokens [N] and state -> (log-probs [N, V], new state)."""
        banned_t = torch.tensor(list(banned), dtype=torch.long, device=self.device)

        def step(tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
            out, state = self.cell_step(self.embedding(tokens), state)
            logits = self.output(out).float()
            logits.index_fill_(1, banned_t, float("-inf"))
            return torch.log_softmax(logits, dim=-1), state

        return step

    def generate_ids(self, prompts: Sequence[Sequence[int]], conditions: torch.Tensor | None = None,
                     max_new_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, seed: int | None = None, num_samples: int = 1,
                     beam_size: int = 1, length_penalty: float = 1.0, stop_at_eos: bool = True,
                     generator: torch.Generator | None = None) -> SearchResult:
        """Continue each prompt (token ids, may be empty = start symbol alone): tokens[b][k] = k-th continuation.

        Every sequence starts with <s>, as in training; <pad>, <s> and <unk> are never generated, and
        neither is </s> when `stop_at_eos` is false. temperature 0 is greedy; beam_size > 1 is beam
        search (the sampling options do not apply) returning the num_samples best. `seed` (or a
        `generator`) makes samples reproducible for the same inputs and batch.
        """
        return generate_ids([self], prompts, conditions, max_new_tokens, temperature, top_k, top_p, seed,
                            num_samples, beam_size, length_penalty, stop_at_eos, generator)


def continuation_text(tokenizer: TextTokenizer, prompt_ids: Sequence[int], continuation: Sequence[int]) -> str:
    """The text the continuation adds after the prompt (decoding both together keeps BPE/word spacing right)."""
    if not continuation:
        return ""
    if not prompt_ids:
        return tokenizer.decode(continuation)
    head = tokenizer.decode(prompt_ids)
    full = tokenizer.decode([*prompt_ids, *continuation])
    if full.startswith(head):
        return full[len(head):]
    return (" " if tokenizer.kind == "word" else "") + tokenizer.decode(continuation)



def check_ensemble(models: Sequence[LanguageModel], paths: Sequence[str]) -> None:
    """Language models can generate together when they share their tokenizer and their conditions."""
    first = models[0]
    for model, path in zip(models[1:], paths[1:]):
        if model.tokenizer.to_json() != first.tokenizer.to_json():
            raise CheckpointError(f"{path}: its tokenizer differs from that of {paths[0]}; language models in an "
                                  f"ensemble must share their tokenizer (train them on the same data)")
        if model.conditions != first.conditions:
            raise CheckpointError(f"{path}: its conditions {model.conditions} differ from those of {paths[0]} "
                                  f"({first.conditions})")


@torch.no_grad()
def generate_ids(models: Sequence[LanguageModel], prompts: Sequence[Sequence[int]],
                 conditions: torch.Tensor | None = None, max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 num_samples: int = 1, beam_size: int = 1, length_penalty: float = 1.0, stop_at_eos: bool = True,
                 generator: torch.Generator | None = None) -> SearchResult:
    """`LanguageModel.generate_ids` for one model or an ensemble (`check_ensemble`): each member reads the
    prompts into its own state, and the search samples from (or ranks by) the mean of the members'
    next-token probabilities (temperature, top-k and top-p apply to that mean)."""
    check_decoding(max_new_tokens, temperature, top_k, top_p, num_samples, beam_size, length_penalty)
    check_bool("stop_at_eos", stop_at_eos)
    if seed is not None:
        check_int("seed", seed)
    B = len(prompts)
    if B == 0:
        return SearchResult([], torch.zeros(0, num_samples), torch.zeros(0, num_samples, dtype=torch.bool))
    device = models[0].device
    seqs = [[BOS_ID, *map(int, p)] for p in prompts]
    banned = [PAD_ID, BOS_ID, UNK_ID] + ([] if stop_at_eos else [EOS_ID])
    # all but each prompt's last token (its last token is the search's first input), read in windows that
    # carry the state, so a long prompt costs bounded memory; a row whose prompt is done keeps its state
    heads = [s[:-1] for s in seqs]
    states, steps = [], []
    for model in models:
        state = model.initial_state(B, conditions)
        for start in range(0, max(map(len, heads)), PROMPT_WINDOW):
            ids, lengths = pad_ids([h[start:start + PROMPT_WINDOW] for h in heads], PAD_ID)
            _, state, _ = model.decoder(model.embedding(ids.to(device)), state, lengths)
        states.append(state)
        steps.append(model.step_fn(banned))
    state, step = (states[0] if len(models) == 1 else tuple(states)), ensemble_step(steps)
    last = torch.tensor([s[-1] for s in seqs], dtype=torch.long, device=device)
    if beam_size > 1:
        return beam_search(step, state, last, EOS_ID, max_new_tokens, B, beam_size,
                           length_penalty=length_penalty, n_best=num_samples)
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    rows = torch.arange(B, device=device).repeat_interleave(num_samples)
    result = sample(step, select_state(state, rows), last[rows], EOS_ID, max_new_tokens, B * num_samples,
                    temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    n = num_samples  # regroup: one list of num_samples continuations per prompt
    tokens = [[result.tokens[b * n + k][0] for k in range(n)] for b in range(B)]
    return SearchResult(tokens, result.scores.view(B, n), result.ended.view(B, n))
