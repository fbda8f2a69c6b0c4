"""Translation (sequence to sequence): source embeddings -> recurrent encoder -> attentional recurrent decoder.

Training teacher-forces the target (cross-entropy with label smoothing, per target token). Validation
reports perplexity and decodes the whole validation split greedily (batched) for sacreBLEU and chrF on
detokenized text against the raw references; `val/bleu` drives checkpointing and early stopping. Test
decodes with beam search (the `search` settings). Decoding is nlpseq.nn.search over whole batches.

Checkpoints hold plain values only: both tokenizers as JSON strings and the sub-config dicts.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torchmetrics.aggregation import MeanMetric

from nlpseq.data.collate import lengths_to_mask
from nlpseq.errors import CheckpointError, ConfigError, check_bool, check_choice, check_float, check_int
from nlpseq.metrics.bleu import CorpusScores
from nlpseq.models.base import TaskModule
from nlpseq.nn.decoders import DecoderState, RecurrentDecoder
from nlpseq.nn.embeddings import TokenEmbedding
from nlpseq.nn.encoders import RecurrentEncoder
from nlpseq.nn.search import SearchResult, Shared, beam_search, ensemble_step, greedy
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextTokenizer
from nlpseq.utils.build import build

DECODER_DEFAULTS = {"hidden_size": 128, "attention": "bahdanau"}  # under the model.decoder config
PRECISIONS = ("fp32", "bf16")
SEARCH_DEFAULTS = {"beam_size": 5, "length_penalty": 1.0, "max_len_ratio": 1.5, "max_len_offset": 10}


def check_search(cfg: dict | None, prefix: str = "model.search") -> dict:
    """Search settings with defaults filled in; bad keys or values name the option."""
    cfg = dict(cfg or {})
    for key in cfg:
        if key not in SEARCH_DEFAULTS:
            raise ConfigError(f"{prefix}.{key}", f"unknown option (known: {', '.join(SEARCH_DEFAULTS)})")
    out = {**SEARCH_DEFAULTS, **cfg}
    check_int(f"{prefix}.beam_size", out["beam_size"], minimum=1)
    out["length_penalty"] = check_float(f"{prefix}.length_penalty", out["length_penalty"], 0.0)
    out["max_len_ratio"] = check_float(f"{prefix}.max_len_ratio", out["max_len_ratio"], 0.0, low_open=True)
    check_int(f"{prefix}.max_len_offset", out["max_len_offset"], minimum=1)
    return out


def is_lowercasing(tokenizer: TextTokenizer) -> bool:
    norm = tokenizer.hf.normalizer
    return norm is not None and norm.normalize_str("A") == "a"


class OutputLayer(nn.Module):
    """Decoder vectors -> logits over the output vocabulary.

    `ids` (optional) restricts the output to a subset of the target vocabulary: with a joint BPE about half
    of the subwords never occur on the target side, and leaving them out of the softmax saves their
    share of the largest matrix multiply in training and decoding. Output indices are then positions
    in `ids` (specials first, so <pad>, <unk>, <s>, </s> keep their ids); `to_output` / `to_vocab` map.
    `tie_to` (the target embedding matrix) shares its rows as the output weights.
    """

    def __init__(self, in_features: int, vocab_size: int, ids: list[int] | None = None,
                 tie_to: nn.Parameter | None = None):
        super().__init__()
        n = vocab_size if ids is None else len(ids)
        bound = in_features ** -0.5
        self.weight = tie_to if tie_to is not None else nn.Parameter(torch.empty(n, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n))
        self.in_features, self.out_features, self.tied = in_features, n, tie_to is not None
        self.ids_list = list(ids) if ids is not None else None
        if ids is not None:
            to_out = torch.full((vocab_size,), UNK_ID, dtype=torch.long)
            to_out[torch.tensor(ids)] = torch.arange(n)
            self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
            self.register_buffer("to_out", to_out, persistent=False)
        else:
            self.ids = self.to_out = None

    def matrix(self) -> torch.Tensor:
        """The [out_features, in_features] weight (rows gathered from the tied embeddings when restricted)."""
        if self.tied and self.ids is not None:
            return self.weight.index_select(0, self.ids)
        return self.weight

    def forward(self, x: torch.Tensor, matrix: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.matrix() if matrix is None else matrix, self.bias)

    def to_output(self, vocab_ids: torch.Tensor) -> torch.Tensor:
        return vocab_ids if self.to_out is None else self.to_out[vocab_ids]

    def to_vocab(self, output_ids: torch.Tensor) -> torch.Tensor:
        return output_ids if self.ids is None else self.ids[output_ids]


def output_ids(tgt_output_ids: list[int] | None, vocab_size: int) -> list[int] | None:
    """Sorted output vocabulary: the target-side training tokens plus the specials (None: everything)."""
    if tgt_output_ids is None:
        return None
    ids = sorted({int(i) for i in tgt_output_ids if 0 <= int(i) < vocab_size} | {PAD_ID, UNK_ID, BOS_ID, EOS_ID})
    return None if len(ids) == vocab_size else ids


class Translator(TaskModule):
    task = "translation"
    monitor = "val/bleu"

    def __init__(self, src_tokenizer: str, tgt_tokenizer: str, max_src_length: int | None = None,
                 tgt_output_ids: list[int] | None = None, restrict_output: bool = True,
                 embedding: dict | None = None, encoder: dict | None = None, decoder: dict | None = None,
                 tie_embeddings: bool = False, share_embeddings: bool = False, label_smoothing: float = 0.1,
                 search: dict | None = None, val_beam_size: int = 1, val_samples: int = 3,
                 optim: dict | None = None, scheduler: dict | None = None, reader: dict | None = None):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.reader = dict(reader or {})  # the training tables' source and target fields
        self.src_tokenizer = TextTokenizer.from_json(src_tokenizer)
        self.tgt_tokenizer = self.src_tokenizer if tgt_tokenizer == src_tokenizer else TextTokenizer.from_json(tgt_tokenizer)
        if max_src_length is not None:
            check_int("model.max_src_length", max_src_length, minimum=1)
        self.max_src_length = max_src_length
        check_bool("model.tie_embeddings", tie_embeddings)
        check_bool("model.restrict_output", restrict_output)
        check_bool("model.share_embeddings", share_embeddings)
        self.label_smoothing = check_float("model.label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        self.search_cfg = check_search(search)
        self.val_beam_size = check_int("model.val_beam_size", val_beam_size, minimum=1)
        self.val_samples = check_int("model.val_samples", val_samples, minimum=0)

        self.src_embed = build(TokenEmbedding, embedding, "model.embedding",
                               vocab_size=self.src_tokenizer.vocab_size, padding_idx=PAD_ID)
        if share_embeddings:
            if self.tgt_tokenizer is not self.src_tokenizer:
                raise ConfigError("model.share_embeddings", "needs one joint vocabulary (data.joint_vocab=true)")
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = build(TokenEmbedding, embedding, "model.embedding",
                                   vocab_size=self.tgt_tokenizer.vocab_size, padding_idx=PAD_ID)
        self.encoder = build(RecurrentEncoder, encoder, "model.encoder", input_size=self.src_embed.dim)
        self.decoder = build(RecurrentDecoder, {**DECODER_DEFAULTS, **(decoder or {})}, "model.decoder",
                             input_size=self.tgt_embed.dim, memory_size=self.encoder.output_size,
                             encoder_final_size=self.encoder.output_size)
        if tie_embeddings and self.decoder.output_size != self.tgt_embed.dim:
            raise ConfigError("model.tie_embeddings", f"needs model.decoder.hidden_size ({self.decoder.output_size}) "
                                                      f"== model.embedding.dim ({self.tgt_embed.dim})")
        self.output = OutputLayer(self.decoder.output_size, self.tgt_tokenizer.vocab_size,
                                  output_ids(tgt_output_ids, self.tgt_tokenizer.vocab_size) if restrict_output else None,
                                  self.tgt_embed.weight if tie_embeddings else None)
        # the search never proposes padding or a second <s>
        banned = torch.zeros(self.output.out_features, dtype=torch.bool)
        banned[[PAD_ID, BOS_ID]] = True
        self.register_buffer("banned", banned, persistent=False)

        self.lowercase = is_lowercasing(self.tgt_tokenizer)
        self.nll = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.scores = {stage: CorpusScores(lowercase=self.lowercase) for stage in ("val", "test")}
        self._samples: dict[int, tuple[str, str, str]] = {}

    # ---------------------------------------------------------------- model
    @property
    def attends(self) -> bool:
        return self.decoder.attention is not None

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> DecoderState:
        """src [B, S] ids, lengths [B] (CPU) -> the decoder's initial state (memory included with attention)."""
        out = self.encoder(self.src_embed(src), lengths)
        if not self.attends:
            return self.decoder.init_state(src.size(0), out.final)
        mask = lengths_to_mask(lengths.to(src.device), src.size(1))
        return self.decoder.init_state(src.size(0), out.final, out.states, mask)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor,
                tgt_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: (logits [B, T, V_out] over output indices, attention weights [B, T, S] or None).
        Targets map to output indices with `self.output.to_output` (the identity without restriction)."""
        outputs, _, weights = self.decoder(self.tgt_embed(tgt_in), self.encode(src, lengths), tgt_lengths)
        return self.output(outputs), weights

    def step(self, tokens: torch.Tensor, state: DecoderState, matrix: torch.Tensor | None = None,
             bias: torch.Tensor | None = None) -> tuple[torch.Tensor, DecoderState]:
        """The search's step function: previous tokens [N] -> (log-probabilities [N, V_out], new state).
        Tokens are output indices (= vocabulary ids for the specials and without restriction). `matrix` and
        `bias` (see `search_parameters`) save recomputing them at every step."""
        if matrix is None or bias is None:
            matrix, bias = self.search_parameters()
        out, state, _ = self.decoder.step(self.tgt_embed(self.output.to_vocab(tokens)), state)
        logits = torch.addmm(bias, out, matrix)
        if logits.dtype in (torch.float16, torch.bfloat16):  # search in at least single precision
            logits = logits.float()
        return torch.log_softmax(logits, dim=-1), state

    def search_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output weights transposed to a contiguous [in_features, out_features] (x @ W^T, the largest product
        of a decoding step, runs ~15% faster from this layout on the CPU than from nn.Linear's) and a bias of
        -inf for <pad> and <s>, so the search never proposes them."""
        return self.output.matrix().t().contiguous(), self.output.bias.masked_fill(self.banned, float("-inf"))

    def max_lengths(self, lengths: torch.Tensor, max_len_ratio: float, max_len_offset: int) -> torch.Tensor:
        """Per sentence: at most ceil(ratio * source length) + offset output tokens (eos included)."""
        return (lengths.float() * max_len_ratio).ceil().long() + max_len_offset

    def generate(self, src: torch.Tensor, lengths: torch.Tensor, beam_size: int | None = None, n_best: int = 1,
                 length_penalty: float | None = None, max_len_ratio: float | None = None,
                 max_len_offset: int | None = None, attention: bool = False, precision: str = "fp32"
                 ) -> tuple[SearchResult, torch.Tensor | None]:
        """Batched decoding: beam_size 1 is greedy search (scores: summed log-probabilities), larger is beam
        search (scores divided by the length penalty). Returns the SearchResult and, if `attention`, the
        best hypotheses' attention weights [B, T, S] (row t: output token t, eos included when produced).

        precision "bf16" runs the matrix multiplies and the attention in bfloat16 (autocast; several times
        faster on CPUs with AVX512-BF16/AMX and on GPUs); log-probabilities and scores stay float32."""
        return search([self], src, lengths, beam_size, n_best, length_penalty, max_len_ratio, max_len_offset,
                      attention, precision)

    def _beam_state(self, state: DecoderState, beam_size: int, matrix: torch.Tensor, bias: torch.Tensor):
        """The state and step function for beam search, with the encoder memory kept out of the reordering.

        The search expands its state to sentences x beams rows and reorders them at every step. The memory,
        its mask, its projected keys and its projections from `prepare_search` are the same for all beams of a
        sentence, so they stay one row per sentence in a `Shared` (which the search only shrinks, when finished
        sentences leave the batch), and each sentence's beams attend over its one copy.
        """
        if not self.attends:
            return state, lambda t, st: self.step(t, st, matrix, bias)
        state = self.decoder.prepare_search(state)
        fields = ("memory", "memory_mask", "projected_keys", "memory_gates", "memory_combine")
        shared = Shared(*(getattr(state, f) for f in fields))
        light = state._replace(**dict.fromkeys(fields))

        def step(tokens: torch.Tensor, st: tuple[DecoderState, Shared]):
            dyn, mem = st
            if dyn.hidden.size(0) != mem.tensors[0].size(0) * beam_size:
                raise RuntimeError("the decoder state and the Shared memory lost track of each other's rows")
            log_probs, new = self.step(tokens, dyn._replace(**dict(zip(fields, mem.tensors))), matrix, bias)
            return log_probs, (new._replace(**dict.fromkeys(fields)), mem)

        return (light, shared), step

    def attention_of(self, state: DecoderState, hyps: Sequence[Sequence[int]], ended: torch.Tensor) -> torch.Tensor:
        """Teacher-force chosen outputs to get their attention [B, T, S] (one batched decoder call)."""
        ended_list = ended.tolist()
        lengths = [len(h) + int(e) for h, e in zip(hyps, ended_list)]
        width = max(max(lengths), 1)
        inputs = torch.full((len(hyps), width), PAD_ID, dtype=torch.long)
        for i, h in enumerate(hyps):
            row = [BOS_ID, *h][:width]
            inputs[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        device = state.hidden.device
        _, _, weights = self.decoder(self.tgt_embed(inputs.to(device)), state, torch.tensor(lengths))
        return weights

    def detokenize(self, hyps: Sequence[Sequence[int]]) -> list[str]:
        return self.tgt_tokenizer.decode_batch(hyps)

    # ---------------------------------------------------------------- training
    def _loss_sum(self, batch: dict, smoothing: float) -> torch.Tensor:
        logits, _ = self(batch["src"], batch["lengths"], batch["tgt_in"])
        targets = self.output.to_output(batch["tgt_out"])  # <pad> stays PAD_ID
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=PAD_ID,
                               label_smoothing=smoothing, reduction="sum")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        ntok = batch["num_tokens"]  # predicted target tokens (eos included), counted on the CPU by collate
        loss = self._loss_sum(batch, self.label_smoothing) / max(ntok, 1)
        self.log_train_step("train/loss", loss, ntok)
        return loss

    def train_flops_per_token(self, src_per_tgt: float = 1.0) -> float:
        """Approximate training FLOPs (forward + backward = 3x forward) per target token, for nlpseq.bench.

        Counts the matrix multiplies: encoder RNN (src_per_tgt source tokens per target token), decoder RNN,
        attention, combine layer, output projection. Elementwise work is left out.
        """
        def rnn(module: nn.RNNBase) -> float:
            return sum(2 * p.numel() for name, p in module.named_parameters() if name.startswith("weight"))

        enc = rnn(self.encoder.rnn) * src_per_tgt
        dec = rnn(self.decoder.rnn)
        extra = 0.0
        if self.attends:
            mem, hid = self.encoder.output_size, self.decoder.hidden_size
            src_len = 12.0  # typical source length: attention scores cost per source position
            if self.decoder.attention_kind == "bahdanau":
                att_h = self.decoder.attention.key_layer.out_features
                extra += 2 * hid * att_h + src_len * (2 * att_h) + src_per_tgt * 2 * mem * att_h
            else:
                extra += src_len * 2 * hid + (src_per_tgt * 2 * mem * hid if self.decoder.attention_kind == "luong_general" else 0)
            extra += src_len * 2 * mem + 2 * (mem + hid) * hid  # context and combine
        out = 2 * self.output.in_features * self.output.out_features
        return 3.0 * (enc + dec + extra + out)

    # ---------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict, stage: str) -> None:
        ntok = batch["num_tokens"]
        nll = self._loss_sum(batch, 0.0)
        self.nll[stage].update(nll / max(ntok, 1), weight=ntok)
        beam = self.val_beam_size if stage == "val" else self.search_cfg["beam_size"]
        result, _ = self.generate(batch["src"], batch["lengths"], beam_size=beam,
                                  length_penalty=self.search_cfg["length_penalty"],
                                  max_len_ratio=self.search_cfg["max_len_ratio"],
                                  max_len_offset=self.search_cfg["max_len_offset"])
        hyps = self.detokenize([h[0] if h else [] for h in result.tokens])
        indices = batch["index"].tolist()
        self.scores[stage].update(indices, hyps, batch["references"])
        if stage == "val" and self.val_samples:  # the first sentences of the split that this process decoded
            self._samples.update((i, (src, ref, hyp))
                                 for i, src, ref, hyp in zip(indices, batch["sources"], batch["references"], hyps))
            self._samples = {i: self._samples[i] for i in sorted(self._samples)[:self.val_samples]}

    def _eval_epoch_end(self, stage: str) -> None:
        metric = self.nll[stage]
        if metric.update_count == 0 and not self.scores[stage].items:
            return
        nll = float(metric.compute())
        metric.reset()
        scores = self.scores[stage].compute()
        self.scores[stage].reset()
        # every process holds the same corpus-level values (gathered above): syncing them changes nothing
        self.log(f"{stage}/loss", nll, sync_dist=True)
        self.log(f"{stage}/ppl", math.exp(min(nll, 50.0)), sync_dist=True)
        self.log(f"{stage}/bleu", scores["bleu"], prog_bar=True, sync_dist=True)
        self.log(f"{stage}/chrf", scores["chrf"], sync_dist=True)
        if stage == "val" and not self.trainer.sanity_checking:
            self._print_samples(scores["bleu"])
        self._samples = {}

    @rank_zero_only
    def _print_samples(self, bleu: float) -> None:
        if not self._samples:
            return
        lines = [f"validation samples (epoch {self.current_epoch}, val/bleu {bleu:.2f}):"]
        for i in sorted(self._samples):
            src, ref, hyp = self._samples[i]
            lines += [f"  src: {src}", f"  ref: {ref}", f"  hyp: {hyp}"]
        self.print("\n".join(lines))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


def check_ensemble(models: Sequence[Translator], paths: Sequence[str]) -> None:
    """Translators can search together when they read and write the same tokens: identical source and target
    tokenizers and the same output vocabulary (e.g. one recipe trained with several seeds)."""
    first = models[0]
    for model, path in zip(models[1:], paths[1:]):
        for what, a, b in (("source tokenizer", model.src_tokenizer.to_json(), first.src_tokenizer.to_json()),
                           ("target tokenizer", model.tgt_tokenizer.to_json(), first.tgt_tokenizer.to_json()),
                           ("output vocabulary", model.output.ids_list, first.output.ids_list)):
            if a != b:
                raise CheckpointError(f"{path}: its {what} differs from that of {paths[0]}; translators in an "
                                      f"ensemble must share their tokenizers (train them on the same data)")


@torch.no_grad()
def search(models: Sequence[Translator], src: torch.Tensor, lengths: torch.Tensor, beam_size: int | None = None,
           n_best: int = 1, length_penalty: float | None = None, max_len_ratio: float | None = None,
           max_len_offset: int | None = None, attention: bool = False, precision: str = "fp32"
           ) -> tuple[SearchResult, torch.Tensor | None]:
    """`Translator.generate` for one model or an ensemble of them (`check_ensemble`). An ensemble decodes
    with the mean of its members' next-token probabilities at every step (each member keeps its own decoder
    state; log-space mean, as OpenNMT's ensembles); search settings, lengths and output ids come from the
    first member, and the attention returned is the members' mean."""
    first = models[0]
    cfg = check_search({k: v for k, v in (("beam_size", beam_size), ("length_penalty", length_penalty),
                                          ("max_len_ratio", max_len_ratio), ("max_len_offset", max_len_offset))
                        if v is not None}, prefix="search")
    check_int("n_best", n_best, minimum=1)
    check_choice("precision", precision, PRECISIONS)
    if n_best > cfg["beam_size"]:
        raise ConfigError("n_best", f"must be <= beam_size ({cfg['beam_size']}), got {n_best}")
    low = precision == "bf16"
    beam = cfg["beam_size"]
    with torch.autocast(src.device.type, dtype=torch.bfloat16, enabled=low):
        encoded, states, steps = [], [], []
        for model in models:
            state = model.encode(src, lengths)
            matrix, bias = model.search_parameters()  # once per search, not per step
            if low:  # cast once here rather than at every step
                matrix, bias = matrix.to(torch.bfloat16), bias.to(torch.bfloat16)
            if beam == 1:
                search_state = state
                step = (lambda m, w, b: lambda t, st: m.step(t, st, w, b))(model, matrix, bias)
            else:
                search_state, step = model._beam_state(state, beam, matrix, bias)
            encoded.append(state)
            states.append(search_state)
            steps.append(step)
        max_len = first.max_lengths(lengths, cfg["max_len_ratio"], cfg["max_len_offset"]).to(src.device)
        state, step = (states[0] if len(models) == 1 else tuple(states)), ensemble_step(steps)
        batch = src.size(0)
        if beam == 1:
            result = greedy(step, state, BOS_ID, EOS_ID, max_len, batch)
        else:
            result = beam_search(step, state, BOS_ID, EOS_ID, max_len, batch, beam, cfg["length_penalty"], n_best)
        if first.output.ids_list is not None:  # output indices -> vocabulary ids
            ids = first.output.ids_list
            result.tokens = [[[ids[t] for t in hyp] for hyp in item] for item in result.tokens]
        weights = None
        if attention and any(m.attends for m in models):
            best = [h[0] if h else [] for h in result.tokens]
            each = [m.attention_of(st, best, result.ended[:, 0]).float()
                    for m, st in zip(models, encoded) if m.attends]
            weights = torch.stack(each).mean(0) if len(each) > 1 else each[0]
    return result, weights

