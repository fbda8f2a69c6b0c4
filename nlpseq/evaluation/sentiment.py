"""Sentiment scoring: a labelled table -> accuracy and macro-F1 (over the labels found in the file or predicted,
as `val/f1`)."""
from __future__ import annotations

import time
from typing import Sequence

from nlpseq.errors import DataError, check_choice
from nlpseq.evaluation.base import Data, Task, WARMUP, columns, one_file, spec_name, with_fallbacks

SENTIMENT_TEXT_COLUMNS = ["text", "sentence", "content"]  # as tasks/sentiment/ensemble.py


class Sentiment(Task):
    name = "sentiment"
    metrics = ("accuracy", "macro_f1")
    labels = {"accuracy": "accuracy", "macro_f1": "macro F1"}

    def defaults(self, model, run):
        """The checkpoint's reader settings (newer checkpoints carry them), else the run config's; a column
        given there comes first, the usual names after it."""
        given = {**run, **getattr(model, "reader", {})}
        return {"format": "auto",  # the training file's format says nothing of this one's
                "text_column": with_fallbacks(given["text_column"], SENTIMENT_TEXT_COLUMNS)
                if "text_column" in given else list(SENTIMENT_TEXT_COLUMNS),
                "label_column": with_fallbacks(given["label_column"], ["label"]) if "label_column" in given else "label"}

    def check(self, opts, model):
        from nlpseq.data.tables import FORMATS

        check_choice("format", opts["format"], FORMATS)
        return {**opts, "text_column": columns("text_column", opts["text_column"]),
                "label_column": columns("label_column", opts["label_column"])}

    def read(self, spec, opts, model):
        from nlpseq.data.tables import iter_table

        path = one_file(spec, self.name)
        known = set(model.labels)
        texts, gold = [], []
        for row in iter_table(path, opts["text_column"], opts["label_column"], opts["format"]):
            if row["label"] not in known:
                raise DataError(f"label {row['label']!r} was never seen in training (known: {list(model.labels)})",
                                path, row["line"])
            texts.append(row["text"])
            gold.append(row["label"])
        return Data(spec_name(spec), len(texts), (texts, gold))

    def warmup(self, predictor, data, batch_size, options):
        predictor.predict(data.payload[0][:WARMUP], batch_size=batch_size)

    def score(self, predictor, data, batch_size, options):
        texts, gold = data.payload
        start = time.perf_counter()
        predicted = [p.label for p in predictor.predict(texts, batch_size=batch_size)]
        seconds = time.perf_counter() - start
        return {"accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(gold),
                "macro_f1": macro_f1(gold, predicted), "seconds": seconds}


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean F1 over the labels that occur in `gold` or `predicted` (torchmetrics' MulticlassF1Score(average=
    "macro"), the training `val/f1`, leaves out classes that are neither). A label's F1 is 2 tp / (gold + found)."""
    from collections import Counter

    correct = Counter(g for g, p in zip(gold, predicted) if g == p)
    n_gold, n_found = Counter(gold), Counter(predicted)
    labels = set(n_gold) | set(n_found)
    return sum(2 * correct[label] / (n_gold[label] + n_found[label]) for label in labels) / len(labels)
