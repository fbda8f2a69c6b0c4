"""Sentiment / text classification (many-to-one): embeddings -> recurrent encoder -> pooling -> classes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from nlpseq.data.collate import lengths_to_mask
from nlpseq.models.base import TaskModule
from nlpseq.nn.embeddings import TokenEmbedding
from nlpseq.nn.encoders import RecurrentEncoder
from nlpseq.nn.heads import PoolingClassifier
from nlpseq.text.tokenizer import PAD_ID, TextTokenizer
from nlpseq.utils.build import build


class SentimentClassifier(TaskModule):
    task = "sentiment"
    monitor = "val/acc"

    def __init__(self, tokenizer: str, labels: list[str], embedding: dict | None = None, encoder: dict | None = None,
                 head: dict | None = None, optim: dict | None = None, scheduler: dict | None = None):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.tokenizer = TextTokenizer.from_json(tokenizer)
        self.labels = list(labels)
        self.embedding = build(TokenEmbedding, embedding, "model.embedding",
                               vocab_size=self.tokenizer.vocab_size, padding_idx=PAD_ID)
        self.encoder = build(RecurrentEncoder, encoder, "model.encoder", input_size=self.embedding.dim)
        self.head = build(PoolingClassifier, head, "model.head", input_size=self.encoder.output_size,
                          num_classes=len(self.labels))
        n = len(self.labels)
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": metric
            for stage in ("val", "test")
            for name, metric in (("acc", MulticlassAccuracy(n, average="micro")),
                                 ("f1", MulticlassF1Score(n, average="macro")))
        })

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes]."""
        out = self.encoder(self.embedding(input_ids), lengths)
        mask = lengths_to_mask(lengths.to(input_ids.device), input_ids.size(1))
        return self.head(out.states, mask, out.final)

    def train_flops_per_token(self) -> int:
        """Training FLOPs per token: forward + backward ~ 3x the encoder's forward (head and lookup are negligible)."""
        return 3 * self.encoder.flops_per_token()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["input_ids"], batch["lengths"]), batch["labels"])
        self.log_train_step("train/loss", loss, batch["labels"].numel())
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        logits = self(batch["input_ids"], batch["lengths"])
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
