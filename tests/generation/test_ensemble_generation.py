"""Ensemble generation: language models that continue prompts from the mean of their next-token probabilities.

Checked against a slow reference that runs every member over the whole sequence at each step."""
import math

import pytest
import torch
from gen_helpers import TEXT, tiny_model

import nlpseq
from nlpseq.bench import save_checkpoint
from nlpseq.errors import CheckpointError
from nlpseq.models.language_model import generate_ids
from nlpseq.predictors.generation import GenerationPredictor
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

pytestmark = pytest.mark.usefixtures("one_thread")


def mean_log_probs(models, seq: list[int]) -> torch.Tensor:
    each = []
    for m in models:
        logits, _ = m(torch.tensor([seq]))
        lp = logits[0, -1].float()
        lp[[PAD_ID, BOS_ID, UNK_ID]] = float("-inf")
        each.append(torch.log_softmax(lp, -1))
    return torch.logsumexp(torch.stack(each), 0) - math.log(len(models))


@torch.no_grad()
def test_greedy_and_beam_follow_the_members_mean():
    models = [tiny_model(seed=s).double() for s in (0, 1, 2)]
    tok = models[0].tokenizer
    prompts = [tok.encode("To be"), [], tok.encode("Whether")]
    greedy = generate_ids(models, prompts, max_new_tokens=12, temperature=0.0)
    beam = generate_ids(models, prompts, max_new_tokens=8, beam_size=3, num_samples=2, length_penalty=0.0)
    for b, prompt in enumerate(prompts):
        seq, score = [BOS_ID, *prompt], 0.0
        for _ in range(12):
            lp = mean_log_probs(models, seq)
            best = int(lp.argmax())
            score += float(lp[best])
            if best == EOS_ID:
                break
            seq.append(best)
        assert greedy.tokens[b][0] == seq[1 + len(prompt):]
        assert float(greedy.scores[b, 0]) == pytest.approx(score, rel=1e-6)
        for k in range(2):  # each beam hypothesis carries the ensemble's log-probability of it
            hyp, ended = beam.tokens[b][k], bool(beam.ended[b, k])
            full = [BOS_ID, *prompt, *hyp]
            targets = hyp + ([EOS_ID] if ended else [])
            expected = sum(float(mean_log_probs(models, full[:len(prompt) + 1 + t])[tok_id])
                           for t, tok_id in enumerate(targets))
            assert float(beam.scores[b, k]) == pytest.approx(expected, rel=1e-6)
    alone = generate_ids(models[:1], prompts, max_new_tokens=12, temperature=0.0)
    assert not torch.allclose(alone.scores, greedy.scores)  # the members differ


@torch.no_grad()
def test_a_model_twice_generates_as_the_model_alone():
    model = tiny_model()
    prompts = [model.tokenizer.encode("To be"), []]
    for options in ({"temperature": 0.0}, {"beam_size": 3, "num_samples": 2}):
        one = generate_ids([model], prompts, max_new_tokens=15, **options)
        two = generate_ids([model, model], prompts, max_new_tokens=15, **options)
        assert one.tokens == two.tokens
        torch.testing.assert_close(one.scores, two.scores)


def test_load_an_ensemble_and_its_errors(tmp_path, cli):
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"lm{seed}.ckpt")
        save_checkpoint(tiny_model(seed=seed), paths[-1])
    gen = nlpseq.load(paths)
    assert isinstance(gen, GenerationPredictor) and len(gen.members) == 2
    a = gen.predict(["To be", ""], max_new_tokens=20, seed=3, num_samples=2)
    assert [r.texts for r in a] == [r.texts for r in gen.predict(["To be", ""], max_new_tokens=20, seed=3,
                                                                  num_samples=2)]
    greedy = gen.predict("To be", max_new_tokens=20, temperature=0.0)
    model_ids = generate_ids(gen.members, [gen.model.tokenizer.encode("To be")], max_new_tokens=20, temperature=0.0)
    assert greedy.scores[0] == pytest.approx(float(model_ids.scores[0, 0]), abs=1e-4)
    proc = cli([f"ckpt={paths[0]},{paths[1]}", "input=-", "max_new_tokens=10", "temperature=0"], cwd=tmp_path,
               module="nlpseq.predict", input="To be\n")
    assert proc.returncode == 0, proc.stderr
    assert greedy.texts[0].startswith(__import__("json").loads(proc.stdout)["texts"][0])
    other = tmp_path / "other.ckpt"
    save_checkpoint(tiny_model(text=TEXT + "XYZ"), other)  # another character set
    with pytest.raises(CheckpointError, match=r"other\.ckpt: its tokenizer differs from that of .*lm0\.ckpt"):
        nlpseq.load([paths[0], other])
    conditioned = tmp_path / "cond.ckpt"
    save_checkpoint(tiny_model(conditions=["a", "b"]), conditioned)
    with pytest.raises(CheckpointError, match=r"cond\.ckpt: its conditions \['a', 'b'\] differ"):
        nlpseq.load([paths[0], conditioned])
