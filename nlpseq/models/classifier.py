"""Sentiment / text classification (many-to-one): embeddings -> recurrent encoder -> pooling -> classes.

Optional character features (`char_encoder`, as in NER): each token's vector is its word embedding next to
a character CNN/BiLSTM reading of its surface form, so the words that share <unk> keep their spelling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from nlpseq.data.collate import lengths_to_mask
from nlpseq.errors import ConfigError
from nlpseq.models.base import TaskModule
from nlpseq.nn.char_encoder import CharEncoder
from nlpseq.nn.dropout import Dropout
from nlpseq.nn.embeddings import TokenEmbedding
from nlpseq.nn.encoders import RecurrentEncoder
from nlpseq.nn.heads import PoolingClassifier
from nlpseq.text.tokenizer import PAD_ID, TextTokenizer
from nlpseq.utils.build import build


class SentimentClassifier(TaskModule):
    task = "sentiment"
    monitor = "val/acc"

    def __init__(self, tokenizer: str, labels: list[str], embedding: dict | None = None, encoder: dict | None = None,
                 head: dict | None = None, optim: dict | None = None, scheduler: dict | None = None,
                 chars: list[str] | None = None, char_encoder: dict | None = None, reader: dict | None = None):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.tokenizer = TextTokenizer.from_json(tokenizer)
        self.labels = list(labels)
        self.reader = dict(reader or {})  # the training files' text and label columns
        self.embedding = build(TokenEmbedding, embedding, "model.embedding",
                               vocab_size=self.tokenizer.vocab_size, padding_idx=PAD_ID)
        char_cfg = dict(char_encoder) if char_encoder else None
        if char_cfg is not None and char_cfg.get("kind") in ("none", None):
            char_cfg = None
        if char_cfg is not None and not chars:
            raise ConfigError("model.char_encoder", "character features need the data's character list "
                                                    "(data.char_features=cnn|lstm, set from model.char_encoder.kind)")
        self.chars = list(chars) if char_cfg is not None else None
        self.char_encoder = build(CharEncoder, char_cfg, "model.char_encoder", num_chars=len(chars)) \
            if char_cfg is not None else None
        self.char_dropout = Dropout(self.embedding.dropout.p if self.char_encoder is not None else 0.0)
        char_size = self.char_encoder.output_size if self.char_encoder is not None else 0
        self.encoder = build(RecurrentEncoder, encoder, "model.encoder", input_size=self.embedding.dim + char_size)
        self.head = build(PoolingClassifier, head, "model.head", input_size=self.encoder.output_size,
                          num_classes=len(self.labels))
        n = len(self.labels)
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": metric
            for stage in ("val", "test")
            for name, metric in (("acc", MulticlassAccuracy(n, average="micro")),
                                 ("f1", MulticlassF1Score(n, average="macro")))
        })

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, chars: dict | None = None) -> torch.Tensor:
        """Class logits [B, num_classes]. `chars` (the batch's char_ids, char_lengths, word_chars) is needed
        when the model has a character encoder."""
        x = self.embedding(input_ids)
        if self.char_encoder is not None:
            per_word = self.char_encoder(chars["char_ids"], chars["char_lengths"])  # [U, C]
            x = torch.cat([x, self.char_dropout(per_word[chars["word_chars"]])], -1)
        out = self.encoder(x, lengths)
        mask = lengths_to_mask(lengths.to(input_ids.device), input_ids.size(1))
        return self.head(out.states, mask, out.final)

    def train_flops_per_token(self) -> int:
        """Training FLOPs per token: forward + backward ~ 3x the encoder's forward (head and lookup are negligible)."""
        return 3 * self.encoder.flops_per_token()

    def train_flops(self, batch: dict) -> int:
        """Training FLOPs of a batch: the encoder's per token, plus the character encoder's per spelled
        character (each distinct surface is read once per batch)."""
        flops = self.train_flops_per_token() * int(batch["lengths"].sum())
        if self.char_encoder is not None and "char_lengths" in batch:
            flops += 3 * self.char_encoder.flops_per_char() * int(batch["char_lengths"].sum())
        return flops

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["input_ids"], batch["lengths"], batch), batch["labels"])
        self.log_train_step("train/loss", loss, batch["labels"].numel())
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        logits = self(batch["input_ids"], batch["lengths"], batch)
        labels = batch["labels"]
        loss = F.cross_entropy(logits, labels)
        preds = logits.argmax(-1)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=labels.numel())
        for name in ("acc", "f1"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(preds, labels)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "acc")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")
