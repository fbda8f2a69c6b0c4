"""NER ensembles: CRF members decode one CRF with their averaged scores, softmax members average probabilities.

Checked by brute force over every tagging of short sentences, each member scoring paths with its own CRF."""
import itertools

import pytest
import torch

import nlpseq
from nlpseq.bench import save_checkpoint
from nlpseq.errors import CheckpointError
from nlpseq.models.tagger import SequenceTagger
from nlpseq.predictors.ner import NerPredictor
from nlpseq.text.tokenizer import TextTokenizer

LABELS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
SENTENCES = [["John", "lives", "in", "Paris"], ["Mary", "met", "Bob"], ["Zed", "."]]


def tagger(seed: int, corpus: str = "John lives in Paris . Mary met Bob", output: str = "crf",
           labels: list[str] = LABELS) -> SequenceTagger:
    torch.manual_seed(seed)
    chars = ["<pad>", "<unk>", *sorted(set(corpus.replace(" ", "")))]
    model = SequenceTagger(TextTokenizer.train([corpus], kind="word").to_json(), labels, chars, output=output,
                           embedding={"dim": 8, "case_dim": 2, "dropout": 0.0},
                           char_encoder={"kind": "cnn", "dim": 4, "hidden_size": 4}, encoder={"hidden_size": 8},
                           head={"dropout": 0.0})
    with torch.no_grad():  # scores large enough that members disagree and constraints matter
        for p in model.parameters():
            p.mul_(4.0)
    return model.double().eval()


def member_view(model: SequenceTagger, tokens: list[str]) -> torch.Tensor:
    """One member alone: its emissions [T, K] for the sentence."""
    emissions, _, _ = NerPredictor(model)._emissions([model.featurizer.encode([tokens])], [0])
    return emissions[0]


@torch.no_grad()
def brute_force(models, tokens):
    """Every tagging of the sentence with the members' mean path score: (paths, log-probabilities)."""
    n, k = len(tokens), len(LABELS)
    paths = torch.tensor(list(itertools.product(range(k), repeat=n)))
    mask = torch.ones(len(paths), n, dtype=torch.bool)
    scores = torch.stack([m.crf.path_score(member_view(m, tokens).expand(len(paths), n, k), paths, mask)
                          for m in models]).mean(0)
    return paths, scores.log_softmax(0)


@torch.no_grad()
def test_crf_ensemble_decodes_the_averaged_crf():
    models = [tagger(0), tagger(1), tagger(2, corpus="Paris is big . Bob met Zed")]  # another vocabulary too
    ensemble = NerPredictor.ensemble(models, ["a", "b", "c"])
    tagged = ensemble._tag(SENTENCES, batch_size=2)
    for tokens, (ids, conf) in zip(SENTENCES, tagged):
        paths, log_p = brute_force(models, tokens)
        best = int(log_p.argmax())
        assert ids == paths[best].tolist()
        probs = log_p.exp()
        for t, tag in enumerate(ids):  # confidence = the averaged CRF's marginal of the chosen tag
            assert conf[t] == pytest.approx(float(probs[paths[:, t] == tag].sum()), abs=1e-6)  # float32 out
        # n-best: the most probable taggings and their probabilities
        top = log_p.topk(3)
        nbest = ensemble.nbest(tokens, n=3, scheme="BIOES")
        assert [tags for tags, _ in nbest] == [[LABELS[i] for i in paths[j]] for j in top.indices.tolist()]
        assert [p for _, p in nbest] == pytest.approx(top.values.exp().tolist(), abs=1e-6)
    alone = [NerPredictor(m)._tag(SENTENCES, 2) for m in models]
    assert any(a != tagged for a in alone)  # the ensemble is not one of its members


@torch.no_grad()
def test_softmax_ensemble_averages_probabilities():
    models = [tagger(s, output="softmax") for s in (0, 1, 2)]
    tagged = NerPredictor.ensemble(models, ["a", "b", "c"])._tag(SENTENCES, batch_size=64)
    for tokens, (ids, conf) in zip(SENTENCES, tagged):
        mean = torch.stack([member_view(m, tokens).softmax(-1) for m in models]).mean(0)
        assert ids == mean.argmax(-1).tolist()
        assert conf == pytest.approx(mean.max(-1).values.tolist(), abs=1e-6)


def test_a_model_twice_tags_as_the_model_alone(tmp_path):
    model = tagger(0).float()
    path = tmp_path / "m.ckpt"
    save_checkpoint(model, path)
    texts = ["John lives in Paris .", "", "Mary met Bob in Paris and Zed"]
    alone = nlpseq.load(path).predict(texts)
    twice = nlpseq.load([path, path]).predict(texts)
    assert [p.tags for p in alone] == [p.tags for p in twice]
    for a, b in zip(alone, twice):
        assert a.confidences == pytest.approx(b.confidences, abs=2e-6)


def test_members_that_do_not_fit_are_one_line_errors(tmp_path):
    paths = {}
    for name, model in (("a", tagger(0)), ("softmax", tagger(1, output="softmax")),
                        ("other", tagger(2, labels=["O", "B-ORG", "I-ORG", "E-ORG", "S-ORG"]))):
        paths[name] = tmp_path / f"{name}.ckpt"
        save_checkpoint(model.float(), paths[name])
    with pytest.raises(CheckpointError, match=r"softmax\.ckpt: its output \(softmax\) does not match that of "
                                              r".*a\.ckpt \(crf\)"):
        nlpseq.load([paths["a"], paths["softmax"]])
    with pytest.raises(CheckpointError, match=r"other\.ckpt: its labels .* does not match"):
        nlpseq.load([paths["a"], paths["other"]])
