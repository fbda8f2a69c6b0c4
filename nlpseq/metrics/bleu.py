"""Corpus BLEU and chrF with sacreBLEU on detokenized text, gathered over DDP processes.

`CorpusScores` collects (hypothesis, reference) strings during an epoch; `compute()` gathers them from
every process (evaluation batches cover each example exactly once) and scores the whole corpus once,
exactly as `sacrebleu hyps -r refs` would (13a tokenization, default chrF).
"""
from __future__ import annotations

from typing import Sequence

import sacrebleu
import torch.distributed as dist


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False) -> dict[str, float]:
    """{'bleu': sacreBLEU, 'chrf': chrF} of detokenized hypotheses against one raw reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        return {"bleu": 0.0, "chrf": 0.0}
    hyps, refs = list(hypotheses), [list(references)]
    # force: our hypotheses are detokenized by construction; sacreBLEU's tokenized-looking-text warning
    # (e.g. on data with spaces before periods) would repeat at every validation
    bleu = sacrebleu.corpus_bleu(hyps, refs, lowercase=lowercase, force=True)
    chrf = sacrebleu.corpus_chrf([h.lower() for h in hyps] if lowercase else hyps,
                                 [[r.lower() for r in refs[0]]] if lowercase else refs)
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


class CorpusScores:
    """Accumulates strings over an epoch; `compute()` scores the corpus of all processes."""

    def __init__(self, lowercase: bool = False):
        self.lowercase = lowercase
        self.reset()

    def reset(self) -> None:
        self.items: list[tuple[int, str, str]] = []  # (example index, hypothesis, reference)

    def update(self, indices: Sequence[int], hypotheses: Sequence[str], references: Sequence[str]) -> None:
        self.items.extend(zip(indices, hypotheses, references))

    def gathered(self) -> list[tuple[int, str, str]]:
        """All processes' items in example order (the corpus order, whatever the batching)."""
        items = self.items
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, items)
            items = [x for part in parts for x in part]
        return sorted(items, key=lambda x: x[0])

    def compute(self) -> dict[str, float]:
        items = self.gathered()
        return corpus_scores([h for _, h, _ in items], [r for _, _, r in items], self.lowercase)
