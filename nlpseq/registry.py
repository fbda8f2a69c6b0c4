"""The one explicit table from a checkpoint's task name to its model and predictor classes.

Entries are import strings so that loading one task never imports the others.
"""
from __future__ import annotations

import importlib

TASKS: dict[str, tuple[str, str]] = {
    "sentiment": ("nlpseq.models.classifier:SentimentClassifier", "nlpseq.predictors.sentiment:SentimentPredictor"),
    "ner": ("nlpseq.models.tagger:SequenceTagger", "nlpseq.predictors.ner:NerPredictor"),
    "translation": ("nlpseq.models.seq2seq:Translator", "nlpseq.predictors.translation:TranslationPredictor"),
    "generation": ("nlpseq.models.language_model:LanguageModel", "nlpseq.predictors.generation:GenerationPredictor"),
}


def _import(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def model_class(task: str):
    return _import(TASKS[task][0])


def predictor_class(task: str):
    return _import(TASKS[task][1])
