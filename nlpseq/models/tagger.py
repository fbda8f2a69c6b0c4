"""NER / sequence tagging (many-to-many, aligned): word features -> bidirectional encoder -> per-token scores
-> linear-chain CRF (or softmax).

Word features: an embedding of the word (or of its subword pieces), an optional case (word shape)
embedding, and optional character-level features (char CNN or char BiLSTM over the distinct words of
the batch). With a subword tokenizer the encoder reads the pieces and each word is scored at its
first piece; the word-level features are repeated on every piece of their word.

Everything the model needs at inference (vocabularies, label list, scheme, text settings) arrives as
plain constructor values, so the checkpoint alone rebuilds it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from nlpseq.data.collate import lengths_to_mask
from nlpseq.data.tagging import CASES, SpanReader, TaggingFeaturizer
from nlpseq.errors import ConfigError, check_bool, check_choice, check_float, check_int
from nlpseq.metrics.schemes import SCHEMES, from_spans, split_tag
from nlpseq.metrics.spans import SpanF1, format_table
from nlpseq.models.base import TaskModule
from nlpseq.nn.char_encoder import CharEncoder
from nlpseq.nn.crf import LinearChainCRF, transition_constraints
from nlpseq.nn.dropout import Dropout
from nlpseq.nn.embeddings import TokenEmbedding
from nlpseq.nn.encoders import RecurrentEncoder
from nlpseq.nn.heads import TaggingHead
from nlpseq.text.tokenizer import PAD_ID, SPECIALS, UNK_ID
from nlpseq.utils.build import build

log = logging.getLogger(__name__)
OUTPUTS = ("crf", "softmax")


@dataclass
class EmbeddingOptions:
    """model.embedding: word (or subword) embedding and the dropout on the concatenated word features."""

    dim: int = 100
    dropout: float = 0.5            # on [word; case; chars] before the encoder
    word_dropout: float = 0.0       # training: any word -> <unk> with this probability
    rare_word_dropout: float = 0.0  # training: words seen once in training -> <unk> with this probability
    case_dim: int = 0               # > 0: a case/shape embedding (useful with data.tokenizer.lowercase=true)
    pretrained: str | None = None   # GloVe-style text file (word v1 ... v_dim), read when training starts

    def __post_init__(self) -> None:
        check_int("dim", self.dim, minimum=1)
        for key in ("dropout", "word_dropout", "rare_word_dropout"):
            check_float(key, getattr(self, key), 0.0, 1.0, high_open=True)
        check_int("case_dim", self.case_dim, minimum=0)
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise ConfigError("pretrained", f"expected a file path, got {self.pretrained!r}")


@dataclass
class TextOptions:
    """Settings the data module hands over (not configured here)."""

    zero_digits: bool = True
    rare_from: int | None = None    # first word id seen only once in training (ids are ordered by count)
    max_length: int | None = None


class SequenceTagger(TaskModule):
    task = "ner"
    monitor = "val/f1"

    def __init__(self, tokenizer: str, labels: list[str], chars: list[str], scheme: str = "BIOES",
                 data_scheme: str = "IOB2", text: dict | None = None, reader: dict | None = None,
                 embedding: dict | None = None, char_encoder: dict | None = None, encoder: dict | None = None,
                 head: dict | None = None, output: str = "crf", constraints: bool = True,
                 optim: dict | None = None, scheduler: dict | None = None):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.scheme = check_choice("model.scheme", scheme, SCHEMES)
        self.data_scheme = check_choice("model.data_scheme", data_scheme, SCHEMES)
        self.text = build(TextOptions, text, "model.text")
        self.reader = dict(reader or {})
        self.featurizer = TaggingFeaturizer(tokenizer, chars, self.text.zero_digits)
        self.labels = list(labels)
        self.emb = build(EmbeddingOptions, embedding, "model.embedding")
        self.word_embedding = TokenEmbedding(self.featurizer.vocab_size, self.emb.dim, 0.0, PAD_ID)
        self.case_embedding = nn.Embedding(len(CASES), self.emb.case_dim, padding_idx=0) if self.emb.case_dim else None
        char_cfg = dict(char_encoder) if char_encoder else None
        if char_cfg is not None and char_cfg.get("kind") in ("none", None):
            char_cfg = None
        self.char_encoder = build(CharEncoder, char_cfg, "model.char_encoder", num_chars=len(chars)) \
            if char_cfg is not None else None
        self.word_feature_size = (self.emb.case_dim + (self.char_encoder.output_size if self.char_encoder else 0))
        self.input_dropout = Dropout(self.emb.dropout)
        self.encoder = build(RecurrentEncoder, encoder, "model.encoder",
                             input_size=self.emb.dim + self.word_feature_size)
        self.head = build(TaggingHead, head, "model.head", input_size=self.encoder.output_size,
                          num_tags=len(self.labels))
        self.output = check_choice("model.output", output, OUTPUTS)
        check_bool("model.constraints", constraints)
        self.crf = None
        if output == "crf":
            try:
                allowed = transition_constraints(self.labels, scheme) if constraints else (None, None, None)
            except ConfigError as e:
                raise e.under("model") from None
            self.crf = LinearChainCRF(len(self.labels), *allowed)
        self.entity_types = sorted({split_tag(label)[1] for label in self.labels if label != "O"})
        self.span_reader = SpanReader(self.labels)
        self.metrics = nn.ModuleDict({stage: SpanF1(self.entity_types) for stage in ("val", "test")})
        self._pretrained_loaded = False

    # ---------------------------------------------------------------- model
    def _drop_words(self, ids: torch.Tensor) -> torch.Tensor:
        """Training-time word dropout: replace word ids by <unk> (all words, and more often rare ones)."""
        p_all, p_rare, rare_from = self.emb.word_dropout, self.emb.rare_word_dropout, self.text.rare_from
        if not self.training or (p_all == 0 and (p_rare == 0 or rare_from is None or self.featurizer.subword)):
            return ids
        r = torch.rand(ids.shape, device=ids.device)
        drop = r < p_all
        if p_rare > 0 and rare_from is not None and not self.featurizer.subword:
            drop |= (ids >= rare_from) & (r < p_rare)
        return ids.masked_fill(drop & (ids >= len(SPECIALS)), UNK_ID)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Emissions [B, T, num_tags] (T = longest sentence in words) and the word mask [B, T]."""
        lengths = batch["lengths"]
        case_ids = batch["case_ids"]
        mask = lengths_to_mask(lengths.to(case_ids.device), case_ids.size(1))
        parts = []
        if self.case_embedding is not None:
            parts.append(self.case_embedding(case_ids))
        if self.char_encoder is not None:
            per_word = self.char_encoder(batch["char_ids"], batch["char_lengths"])  # [U, C]
            parts.append(per_word[batch["word_chars"]])                             # [B, T, C]
        if self.featurizer.subword:
            x = self.word_embedding(self._drop_words(batch["input_ids"]))
            if parts:
                words = torch.cat(parts, -1)
                index = batch["piece_word"].unsqueeze(-1).expand(-1, -1, words.size(-1))
                x = torch.cat([x, words.gather(1, index)], -1)
            states = self.encoder(self.input_dropout(x), batch["piece_lengths"]).states
            index = batch["first_piece"].unsqueeze(-1).expand(-1, -1, states.size(-1))
            states = states.gather(1, index)
        else:
            x = torch.cat([self.word_embedding(self._drop_words(batch["word_ids"])), *parts], -1)
            states = self.encoder(self.input_dropout(x), lengths).states
        return self.head(states), mask

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """CRF: negative log-likelihood per sentence, averaged; softmax: cross-entropy per word."""
        if self.crf is not None:
            return self.crf(emissions, tags, mask, reduction="mean")
        return F.cross_entropy(emissions[mask], tags[mask])

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor, confidence: bool = False,
               crf: LinearChainCRF | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Best tag ids [B, T] (Viterbi for the CRF, argmax for softmax) and, if asked, each word's
        probability of its tag [B, T] (CRF marginals, or softmax probabilities). `crf` replaces the model's
        own (an ensemble's averaged one)."""
        crf = crf if crf is not None else self.crf
        if crf is not None:
            paths, _ = crf.decode(emissions, mask)
            if not confidence:
                return paths, None
            marginals = crf.marginals(emissions, mask)
            return paths, marginals.gather(2, paths.unsqueeze(2)).squeeze(2)
        probs = torch.softmax(emissions.float(), -1)
        conf, paths = probs.max(-1)
        return paths.masked_fill(~mask, 0), (conf * mask) if confidence else None

    def nbest(self, emissions: torch.Tensor, mask: torch.Tensor, n: int, crf: LinearChainCRF | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The n best tag paths [B, n, T] and their probabilities [B, n] (CRF only; `crf` as in `decode`)."""
        crf = crf if crf is not None else self.crf
        if crf is None:
            raise ConfigError("model.output", "n-best decoding needs the CRF output (model.output=crf)")
        paths, scores = crf.nbest(emissions, mask, n)
        log_z = crf.log_partition(emissions, mask)
        return paths, torch.exp(scores - log_z.unsqueeze(1))

    # ---------------------------------------------------------------- pretrained vectors
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.emb.pretrained and not self._pretrained_loaded:
            self.load_pretrained(self.emb.pretrained)

    def load_pretrained(self, path: str) -> int:
        """Copy vectors from a GloVe-style file into the word embedding; returns how many words were found."""
        from nlpseq.data.files import resolve
        from nlpseq.nn.embeddings import load_vectors

        if self.featurizer.subword:
            raise ConfigError("model.embedding.pretrained", "pretrained word vectors need data.tokenizer.kind=word")
        vocab = {w: i for w, i in self.featurizer.vocab.items() if i >= len(SPECIALS)}
        vectors, found = load_vectors(resolve(path), vocab, self.emb.dim)
        rows = ~torch.isnan(vectors[:, 0])
        with torch.no_grad():
            weight = self.word_embedding.weight
            weight[: vectors.size(0)][rows] = vectors[rows].to(weight.dtype).to(weight.device)
        self._pretrained_loaded = True
        log.info("pretrained vectors: %d of %d words initialised from %s", found, len(vocab), path)
        return found

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        emissions, mask = self(batch)
        loss = self.loss(emissions, batch["tags"], mask)
        self.log_train_step("train/loss", loss, mask.size(0))
        return loss

    def train_flops_per_token(self) -> float:
        """Analytic training FLOPs per word (forward + backward ~ 3x forward) of the matrix products that
        dominate: the recurrent encoder and the output layer (char features and the CRF are smaller)."""
        enc = self.encoder
        size, forward = enc.rnn.input_size, 0.0
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[enc.cell]
        for _ in range(enc.num_layers):
            forward += enc.num_directions * 2 * gates * enc.hidden_size * (size + enc.hidden_size)
            size = enc.output_size
        forward += 2 * enc.output_size * len(self.labels)
        return 3 * forward

    def train_flops(self, batch: dict) -> float:
        """Training FLOPs of one batch: `train_flops_per_token` per real word, plus the character encoder (3x its
        forward) over the real characters of the batch's distinct words, which it encodes once each."""
        from nlpseq.callbacks import batch_tokens

        flops = self.train_flops_per_token() * batch_tokens(batch)
        if self.char_encoder is not None and "char_lengths" in batch:
            flops += 3 * self.char_encoder.flops_per_char() * int(batch["char_lengths"].sum())
        return flops

    # ---------------------------------------------------------------- evaluation
    def ids_to_tags(self, ids: torch.Tensor, lengths: torch.Tensor, scheme: str | None = None) -> list[list[str]]:
        """Tag strings per sentence: the labels themselves, or re-tagged in `scheme` (through the chunks
        conlleval reads, so scores do not change)."""
        rows = [row[:n] for row, n in zip(ids.tolist(), lengths.tolist())]
        if scheme is None or scheme == self.scheme:
            return [[self.labels[i] for i in row] for row in rows]
        return [from_spans(self.span_reader.spans(row), len(row), scheme) for row in rows]

    def _eval_step(self, batch: dict, stage: str) -> None:
        emissions, mask = self(batch)
        loss = self.loss(emissions, batch["tags"], mask)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=mask.size(0))
        paths, _ = self.decode(emissions, mask)
        lengths = batch["lengths"]
        # scored in the data's scheme: span counts are the same in any scheme, and the token accuracy is
        # then exactly conlleval's on the file `nlpseq.predict` writes
        self.metrics[stage].update(self.ids_to_tags(paths, lengths, self.data_scheme),
                                   self.ids_to_tags(batch["tags"], lengths, self.data_scheme))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_spans(self, stage: str) -> None:
        metric = self.metrics[stage]
        scores = metric.compute()  # synced across processes: every rank holds the same values, so the
        # sync_dist mean below changes nothing (it only tells Lightning these are whole-run figures)
        for name in ("f1", "precision", "recall"):
            self.log(f"{stage}/{name}", scores[name], prog_bar=name == "f1", sync_dist=True)
        self.log(f"{stage}/acc", scores["accuracy"], sync_dist=True)
        if stage == "test":
            summary = metric.summary()
            for t, s in summary["per_type"].items():
                self.log(f"test/f1_{t}", float(s["f1"]), sync_dist=True)
            self._print_table(summary)
        metric.reset()

    @rank_zero_only
    def _print_table(self, summary: dict) -> None:
        print("\nspan scores (conlleval):\n" + format_table(summary), flush=True)

    def on_validation_epoch_end(self) -> None:
        self._log_spans("val")

    def on_test_epoch_end(self) -> None:
        self._log_spans("test")
