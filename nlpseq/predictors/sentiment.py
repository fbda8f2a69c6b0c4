"""Sentiment inference: text -> label and class probabilities.

Odd input: an empty or whitespace-only text is read as one <unk> token and gets an ordinary prediction
(whatever the model says about an unknown word); a text that is not valid Unicode (a lone surrogate)
is an NlpseqError. Big input: texts are batched by length, at most `batch_size` texts and
MAX_BATCH_TOKENS padded tokens per batch, so a 100,000-character text or 10,000 texts in one call
run in bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nlpseq.data.classification import encode_texts
from nlpseq.data.collate import pad_ids
from nlpseq.errors import check_int
from nlpseq.predictors.base import Predictor, batches_by_length

MAX_BATCH_TOKENS = 64 * 1024  # padded tokens per batch, on top of batch_size


@dataclass
class SentimentPrediction:
    text: str
    label: str
    probabilities: dict[str, float]


class SentimentPredictor(Predictor):
    task = "sentiment"

    @torch.inference_mode()
    def predict(self, texts, batch_size: int = 64):
        """One `SentimentPrediction` per text (a single one for a single string). Empty text is allowed."""
        check_int("batch_size", batch_size, minimum=1)
        texts, single = self.check_texts(texts)
        model = self.model
        ids = encode_texts(model.tokenizer, texts)
        probs = torch.empty(len(texts), len(model.labels))
        for batch in batches_by_length(ids.lengths.tolist(), batch_size, MAX_BATCH_TOKENS):
            tokens, lengths = pad_ids([ids[i] for i in batch])
            logits = model(tokens.to(self.device), lengths)
            probs[batch] = torch.softmax(logits.float(), -1).cpu()
        best = probs.argmax(-1).tolist()
        rows = probs.tolist()
        results = [SentimentPrediction(text, model.labels[b], {lab: round(p, 6) for lab, p in zip(model.labels, row)})
                   for text, b, row in zip(texts, best, rows)]
        return results[0] if single else results
