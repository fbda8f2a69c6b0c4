"""Sentiment inference: text -> label and class probabilities.

Odd input: an empty or whitespace-only text is read as one <unk> token and gets an ordinary prediction
(whatever the model says about an unknown word); a text that is not valid Unicode (a lone surrogate)
is an NlpseqError. Big input: texts are batched by length, at most `batch_size` texts and
MAX_BATCH_TOKENS padded tokens per batch, so a 100,000-character text or 10,000 texts in one call
run in bounded memory.

Ensembles: `nlpseq.load([a, b, c])` averages the class probabilities of several sentiment checkpoints
(e.g. the same recipe trained with different seeds). The members must have the same labels (in any
order); each reads the text with its own tokenizer (and characters), and members whose tokenizers and
character lists are identical share one encoding of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from nlpseq.data.classification import classification_batch, encode_classification
from nlpseq.errors import CheckpointError, check_int
from nlpseq.predictors.base import Predictor, batches_by_length

MAX_BATCH_TOKENS = 64 * 1024  # padded tokens per batch, on top of batch_size


@dataclass
class SentimentPrediction:
    text: str
    label: str
    probabilities: dict[str, float]


class SentimentPredictor(Predictor):
    task = "sentiment"

    def __init__(self, model: torch.nn.Module, others: Sequence[torch.nn.Module] = ()):
        super().__init__(model, others)
        labels = self.model.labels
        # per member, where each of the first member's labels sits in its own output; members grouped by
        # tokenizer and characters so that a batch is encoded and padded once per distinct pair
        groups: dict[tuple, list[tuple[torch.nn.Module, list[int]]]] = {}
        for m in self.members:
            key = (m.tokenizer.to_json(), tuple(getattr(m, "chars", None) or ()))
            groups.setdefault(key, []).append((m, [m.labels.index(lab) for lab in labels]))
        self._groups = list(groups.values())

    @classmethod
    def ensemble(cls, models: Sequence[torch.nn.Module], paths: Sequence[str]) -> "SentimentPredictor":
        first = models[0]
        for model, path in zip(models[1:], paths[1:]):
            if sorted(model.labels) != sorted(first.labels):
                raise CheckpointError(f"{path}: labels {model.labels} differ from those of {paths[0]} "
                                      f"({first.labels}); an ensemble's members must predict the same labels")
        return cls(first, models[1:])

    @torch.inference_mode()
    def predict(self, texts, batch_size: int = 64):
        """One `SentimentPrediction` per text (a single one for a single string). Empty text is allowed.
        An ensemble's probabilities are the mean of its members'."""
        check_int("batch_size", batch_size, minimum=1)
        texts, single = self.check_texts(texts)
        labels = self.model.labels
        probs = torch.zeros(len(texts), len(labels))
        for group in self._groups:
            first = group[0][0]
            enc = encode_classification(first.tokenizer, texts, chars=getattr(first, "chars", None))
            for batch in batches_by_length(enc.ids.lengths.tolist(), batch_size, MAX_BATCH_TOKENS):
                inputs = {k: v.to(self.device) if k != "lengths" else v
                          for k, v in classification_batch(enc, batch).items()}
                for model, order in group:
                    logits = model(inputs["input_ids"], inputs["lengths"], inputs)
                    member = torch.softmax(logits.float(), -1).cpu()
                    probs[batch] += member[:, order] if len(self.members) > 1 else member
        if len(self.members) > 1:
            probs /= len(self.members)
        best = probs.argmax(-1).tolist()
        rows = probs.tolist()
        results = [SentimentPrediction(text, labels[b], {lab: round(p, 6) for lab, p in zip(labels, row)})
                   for text, b, row in zip(texts, best, rows)]
        return results[0] if single else results
