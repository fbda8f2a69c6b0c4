"""The NER predictor's per-sentence fast paths against the per-token code they replace: token-list
validation (one join + search + encode per sentence) and confidences rounded as tensors."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpseq.errors import NlpseqError
from nlpseq.predictors.ner import _check_tokens, _round6, _valid_tokens


def _valid_tokens_reference(tokens) -> bool:
    """The per-token checks `_inputs` falls back on to name a bad token."""
    try:
        _check_tokens(tokens, 0)
    except NlpseqError:
        return False
    return True


@pytest.mark.parametrize("tokens,valid", [
    ([], True),
    (["Angela", "Merkel", "."], True),
    (["a\x00b", "c"], True),                # NUL is no space: the separator cannot hide a token
    (["a", ""], False),
    (["a", "b c"], False),
    (["a", "b\u00a0c"], False),            # a Unicode space
    (["a\n"], False),
    (["\ud83d", "\ude00"], False),         # two halves of a pair, each a lone surrogate
    (["ok", 3], False),
    ([None], False),
])
def test_valid_tokens_cases(tokens, valid):
    assert _valid_tokens(tokens) is valid
    assert _valid_tokens_reference(tokens) == valid


TOKEN = st.one_of(st.text(max_size=6), st.sampled_from(["", " ", "\x00", "\ud800", "a b", "\u2003"]),
                  st.integers(), st.none())


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKEN, max_size=8))
def test_valid_tokens_agrees_with_the_per_token_checks(tokens):
    assert bool(_valid_tokens(tokens)) == _valid_tokens_reference(tokens)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=64))
def test_tensor_rounding_equals_python_round(values):
    """`_tag` rounds confidences as float64 tensors; each must equal Python's round(c, 6) of the float32."""
    conf = torch.tensor(values, dtype=torch.float32)
    fast = _round6(conf).tolist()
    assert fast == [round(c, 6) for c in conf.tolist()]


def test_tensor_rounding_on_halfway_values():
    k = torch.arange(0, 10**6, 7, dtype=torch.float64)
    conf = ((k + 0.5) / 1e6).float()  # as close to a tie as float32 gets
    fast = _round6(conf).tolist()
    assert fast == [round(c, 6) for c in conf.tolist()]


def test_predict_confidences_are_the_models_marginals_rounded():
    """End to end: `predict` gives round(marginal, 6) of each word's tag, computed the slow way here."""
    import pytorch_lightning as pl
    from conftest import ROOT

    from nlpseq.data.tagging import TaggingDataModule
    from nlpseq.models.tagger import SequenceTagger
    from nlpseq.predictors.ner import NerPredictor

    pl.seed_everything(0, verbose=False)
    dm = TaggingDataModule(train=str(ROOT / "tasks" / "ner" / "sample" / "train.conll"), batch_size=8)
    dm.prepare()
    model = SequenceTagger(**dm.model_inputs(), encoder={"hidden_size": 16}).eval()
    predictor = NerPredictor(model)
    sentences = [["Hollen", "met", "Vikdal", "in", "Paris", "."], ["Boris"], ["a", "b", "c"]]
    # batch size 1, as computed below: a batch's other rows may move a float32's last bit (and its 6th decimal)
    preds = predictor.predict(sentences, batch_size=1)
    for tokens, pred in zip(sentences, preds):
        enc = model.featurizer.encode([tokens])
        with torch.inference_mode():
            emissions, mask = model(model.featurizer.collate(enc, [0]))
            paths, conf = model.decode(emissions, mask, confidence=True)
        assert pred.confidences == [round(c, 6) for c in conf[0].tolist()]
        for ent in pred.entities:
            assert ent.confidence == min(pred.confidences[ent.token_start:ent.token_end])
