"""The sacreBLEU adapter scores exactly as sacreBLEU does, in corpus order whatever the batching."""
import pytest
import sacrebleu

from nlpseq.metrics.bleu import CorpusScores, corpus_scores

HYPS = ["A man rides a bike.", "Two dogs are playing in a park.", "a woman reads.", ""]
REFS = ["A man is riding a bike.", "Two dogs play in the park.", "A woman is reading a book.", "Nothing."]


def test_matches_sacrebleu():
    s = corpus_scores(HYPS, REFS)
    assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    lower = corpus_scores(HYPS, REFS, lowercase=True)
    assert lower["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score)
    assert lower["bleu"] >= s["bleu"]
    assert corpus_scores(REFS, REFS)["bleu"] == pytest.approx(100.0)
    assert corpus_scores([], []) == {"bleu": 0.0, "chrf": 0.0}
    with pytest.raises(ValueError):
        corpus_scores(HYPS, REFS[:2])


def test_accumulator_restores_corpus_order():
    acc = CorpusScores()
    acc.update([3, 1], [HYPS[3], HYPS[1]], [REFS[3], REFS[1]])  # evaluation batches come longest first
    acc.update([0, 2], [HYPS[0], HYPS[2]], [REFS[0], REFS[2]])
    assert [i for i, _, _ in acc.gathered()] == [0, 1, 2, 3]
    assert acc.compute() == corpus_scores(HYPS, REFS)
    acc.reset()
    assert acc.compute()["bleu"] == 0.0
