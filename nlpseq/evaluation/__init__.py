"""The task scorers behind `python -m nlpseq.evaluate` (nlpseq/evaluate.py): each reads its task's labelled
files with the project's own readers and scores a predictor (one checkpoint or an ensemble) on them."""
from __future__ import annotations

from nlpseq.evaluation.base import Task
from nlpseq.evaluation.generation import Generation
from nlpseq.evaluation.ner import Ner
from nlpseq.evaluation.sentiment import Sentiment
from nlpseq.evaluation.translation import Translation

TASKS: dict[str, type[Task]] = {"sentiment": Sentiment, "ner": Ner, "translation": Translation,
                                "generation": Generation}
