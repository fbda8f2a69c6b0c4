"""Ensemble decoding: several translators search together with the mean of their next-token probabilities.

Checked against a slow reference that teacher-forces each hypothesis through every member separately."""
import math

import pytest
import torch

import nlpseq
from nlpseq.bench import save_checkpoint
from nlpseq.errors import CheckpointError
from nlpseq.models.seq2seq import Translator, search
from nlpseq.nn.search import length_penalty_factor
from nlpseq.predictors.translation import TranslationPredictor
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, TextTokenizer

from test_seq2seq import DECODERS, encode, sentences, tiny, tokenizer_json

pytestmark = pytest.mark.usefixtures("one_thread")


def ensemble_log_probs(models, src, lengths, prefix: list[int]) -> torch.Tensor:
    """Log of the members' mean next-token probability after `prefix`, each member run from scratch."""
    tgt_in = torch.tensor([[BOS_ID, *prefix]])
    each = []
    for m in models:
        logits, _ = m(src, lengths, tgt_in)
        each.append(torch.log_softmax(logits[0, -1].masked_fill(m.banned, float("-inf")), -1))
    return torch.logsumexp(torch.stack(each), 0) - math.log(len(models))


def reference_greedy(models, src, lengths, max_len: int) -> tuple[list[int], float]:
    out, score = [], 0.0
    for _ in range(max_len):
        lp = ensemble_log_probs(models, src, lengths, out)
        best = int(lp.argmax())
        score += float(lp[best])
        if best == EOS_ID:
            break
        out.append(best)
    return out, score


def reference_score(models, src, lengths, hyp: list[int], ended: bool, alpha: float) -> float:
    targets = hyp + ([EOS_ID] if ended else [])
    total = sum(float(ensemble_log_probs(models, src, lengths, hyp[:t])[tok]) for t, tok in enumerate(targets))
    return total / length_penalty_factor(len(targets), alpha)


@pytest.mark.parametrize("name", ["bahdanau-gru", "luong-feed-lstm", "none-gru"])
@torch.no_grad()
def test_ensemble_search_matches_the_reference(name):
    models = [tiny(DECODERS[name], seed=s) for s in (0, 1, 2)]
    texts = sentences(4, 5)
    src, lengths = encode(models[0], texts)
    greedy_out, _ = search(models, src, lengths, beam_size=1, max_len_ratio=1.0, max_len_offset=3)
    beam_out, _ = search(models, src, lengths, beam_size=4, n_best=3, length_penalty=1.0)
    for i in range(len(texts)):
        s, n = src[i:i + 1, :int(lengths[i])], lengths[i:i + 1]
        max_len = int(models[0].max_lengths(n, 1.0, 3)[0])
        ref_tokens, ref_score = reference_greedy(models, s, n, max_len)
        assert greedy_out.tokens[i][0] == ref_tokens
        assert float(greedy_out.scores[i, 0]) == pytest.approx(ref_score, rel=1e-6)
        for k in range(3):  # every n-best hypothesis carries the ensemble's own score of it
            hyp = beam_out.tokens[i][k]
            expected = reference_score(models, s, n, hyp, bool(beam_out.ended[i, k]), 1.0)
            assert float(beam_out.scores[i, k]) == pytest.approx(expected, rel=1e-6)
        # beam search finds at least as good a hypothesis as greedy, by the same (length-penalised) score
        greedy_lp = reference_score(models, s, n, ref_tokens, len(ref_tokens) < max_len, 1.0)
        assert float(beam_out.scores[i, 0]) >= greedy_lp - 1e-5 or len(ref_tokens) >= max_len
    # the members really differ: the ensemble is not one of them
    alone = [search([m], src, lengths, beam_size=4)[0].scores for m in models]
    ens = search(models, src, lengths, beam_size=4)[0].scores
    assert all(not torch.allclose(a, ens) for a in alone)


@torch.no_grad()
def test_a_model_twice_decodes_as_the_model_alone():
    model = tiny(DECODERS["bahdanau-gru"])
    src, lengths = encode(model, sentences(6, 7))
    for beam in (1, 3):
        one, w1 = search([model], src, lengths, beam_size=beam, n_best=beam, attention=True)
        two, w2 = search([model, model], src, lengths, beam_size=beam, n_best=beam, attention=True)
        assert one.tokens == two.tokens
        torch.testing.assert_close(one.scores, two.scores)
        torch.testing.assert_close(w1, w2)


def test_load_and_cli_ensemble(tmp_path, cli):
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"t{seed}.ckpt"
        save_checkpoint(tiny(DECODERS["bahdanau-gru"], seed=seed).float(), path)
        paths.append(path)
    texts = sentences(5, 9)
    predictor = nlpseq.load(paths)
    assert isinstance(predictor, TranslationPredictor) and len(predictor.members) == 2
    out = predictor.predict(texts, beam_size=3, attention=True)
    models = [nlpseq.load(p).model for p in paths]
    src, lengths = encode(models[0], texts[:1])
    expected, _ = search(models, src, lengths, beam_size=3)
    assert out[0].translation == models[0].detokenize(expected.tokens[0])[0]
    assert len(out[0].attention) == len(out[0].output_tokens)
    src_file = tmp_path / "src.txt"
    src_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    proc = cli([f"ckpt={paths[0]},{paths[1]}", f"input={src_file}", "output_format=text", "beam_size=3"],
               cwd=tmp_path, module="nlpseq.predict")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [o.translation for o in predictor.predict(texts, beam_size=3)]
    # members must read and write the same tokens
    other_tok = TextTokenizer.train(["a b c d e f g h i j k l m n"], kind="word").to_json()
    torch.manual_seed(0)
    other = Translator(other_tok, other_tok, embedding={"dim": 16}, encoder={"cell": "gru", "hidden_size": 8},
                       decoder={"hidden_size": 16})
    save_checkpoint(other, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"other\.ckpt: its source tokenizer differs from that of .*t0\.ckpt"):
        nlpseq.load([paths[0], tmp_path / "other.ckpt"])
    assert tokenizer_json() != other_tok
