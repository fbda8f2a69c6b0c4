"""Label vocabularies: a fixed, ordered list of label strings that travels inside the checkpoint."""
from __future__ import annotations

from typing import Iterable, Sequence

from nlpseq.errors import DataError


class LabelVocab:
    def __init__(self, labels: Sequence[str]):
        labels = [str(x) for x in labels]
        if not labels:
            raise DataError("no labels found in the training data")
        if len(set(labels)) != len(labels):
            raise DataError(f"duplicate labels in {labels}")
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}

    @classmethod
    def from_data(cls, values: Iterable) -> "LabelVocab":
        """Labels seen in the training data, sorted (numerically when they all are numbers)."""
        seen = {str(v) for v in values}
        try:
            ordered = sorted(seen, key=float)
        except ValueError:
            ordered = sorted(seen)
        return cls(ordered)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label) -> bool:
        return str(label) in self.index

    def encode(self, label, where: str = "") -> int:
        try:
            return self.index[str(label)]
        except KeyError:
            known = ", ".join(self.labels[:20]) + (" ..." if len(self.labels) > 20 else "")
            raise DataError(f"label {label!r} was never seen in training (known: {known})" +
                            (f" [{where}]" if where else "")) from None

    def decode(self, i: int) -> str:
        return self.labels[i]
