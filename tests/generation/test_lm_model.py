"""The language model: carried state (truncated BPTT), tied weights, decoding options and their errors."""
import pytest
import torch
import torch.nn.functional as F
from gen_helpers import TEXT, tiny_model

from nlpseq.errors import ConfigError
from nlpseq.models.language_model import IGNORE, LanguageModel
from nlpseq.predictors.generation import Generation, GenerationPredictor
from nlpseq.text.tokenizer import BOS_ID, EOS_ID

pytestmark = pytest.mark.usefixtures("one_thread")


def stream_ids(model, rows=3, length=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, model.tokenizer.vocab_size, (rows, length), generator=g)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_windows_with_carried_state_equal_one_pass(cell):
    model = tiny_model(cell=cell).double()
    ids = stream_ids(model)
    with torch.no_grad():
        whole, end = model(ids)
        first, mid = model(ids[:, :11])
        second, end2 = model(ids[:, 11:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(end2.hidden, end.hidden, rtol=0, atol=1e-12)


def test_eval_steps_carry_state_across_windows_like_one_pass():
    """The module's own stream path (validation): windows in order give the loss of one pass over the whole."""
    model = tiny_model().double()
    data = stream_ids(model, length=31)
    inputs, targets = data[:, :-1], data[:, 1:]
    model.on_validation_epoch_start()
    for s in range(0, 30, 7):
        model.validation_step({"input_ids": inputs[:, s:s + 7], "targets": targets[:, s:s + 7]}, 0)
    with torch.no_grad():
        logits, _ = model(inputs)
        expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    torch.testing.assert_close(model.nll["val"].compute().double(), expected, rtol=0, atol=1e-6)


def test_training_step_carries_the_state_detached_and_resets_each_epoch():
    model = tiny_model().train()
    data = stream_ids(model, length=21)
    batch = lambda s: {"input_ids": data[:, s:s + 10], "targets": data[:, s + 1:s + 11]}  # noqa: E731
    model.log = lambda *a, **k: None  # no trainer attached
    model.on_train_epoch_start()
    model.training_step(batch(0), 0).backward()
    carried = model._carried["train"]
    assert carried is not None and not carried.hidden.requires_grad and not carried.cell.requires_grad
    with torch.no_grad():
        _, state = model(data[:, :10])
        expected = F.cross_entropy(model(data[:, 10:20], state)[0].reshape(-1, model.tokenizer.vocab_size),
                                   data[:, 11:21].reshape(-1))
    loss = model.training_step(batch(10), 1)
    torch.testing.assert_close(loss, expected)  # the second window started from the first's final state
    model.on_train_epoch_start()
    assert model._carried["train"] is None


def test_lines_batches_ignore_padding_and_start_fresh():
    model = tiny_model().double()
    ids = stream_ids(model, rows=2, length=6)
    targets = ids.roll(-1, 1).masked_fill(torch.tensor([[False] * 6, [False] * 3 + [True] * 3]), IGNORE)
    batch = {"input_ids": ids, "targets": targets, "lengths": torch.tensor([6, 3])}
    loss, count = model._loss(batch, "val")
    with torch.no_grad():
        a = F.cross_entropy(model(ids[:1])[0][0], targets[0], reduction="sum")
        b = F.cross_entropy(model(ids[1:, :3])[0][0], targets[1, :3], reduction="sum")
    assert int(count) == 9
    torch.testing.assert_close(loss, (a + b) / 9)


def test_tied_weights_are_one_parameter():
    model = tiny_model(dim=16, hidden=16, tie_weights=True)
    assert model.output.weight is model.embedding.weight
    untied = tiny_model(dim=16, hidden=16)
    n_tied, n_untied = (sum(p.numel() for p in m.parameters()) for m in (model, untied))
    assert n_untied - n_tied == model.embedding.weight.numel()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    loss = F.cross_entropy(model(stream_ids(model))[0].reshape(-1, model.tokenizer.vocab_size),
                           stream_ids(model, seed=1).reshape(-1))
    loss.backward()
    opt.step()
    assert torch.equal(model.output.weight, model.embedding.embed.weight)
    reloaded = LanguageModel(**model.hparams)
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.output.weight is reloaded.embedding.weight and torch.equal(reloaded.output.weight,
                                                                               model.output.weight)
    with pytest.raises(ConfigError, match=r"model.tie_weights: needs model.embedding.dim \(8\) equal to "
                                          r"model.decoder.hidden_size \(16\)"):
        tiny_model(dim=8, hidden=16, tie_weights=True)


def test_sampling_is_reproducible_under_a_seed_and_many_samples_come_in_one_batch():
    gen = GenerationPredictor(tiny_model())
    a = gen.predict(["To be", ""], max_new_tokens=30, seed=7, num_samples=4, stop_at_eos=False)
    b = gen.predict(["To be", ""], max_new_tokens=30, seed=7, num_samples=4, stop_at_eos=False)
    c = gen.predict(["To be", ""], max_new_tokens=30, seed=8, num_samples=4, stop_at_eos=False)
    assert [r.texts for r in a] == [r.texts for r in b] != [r.texts for r in c]
    assert all(len(r.texts) == 4 and all(len(t) == 30 for t in r.texts) for r in a)
    assert len(set(a[0].texts)) > 1  # four different samples of one prompt
    # greedy: temperature 0 == top_k 1 == beam 1, and its scores are the model's log-probabilities
    greedy = gen.predict("To be", max_new_tokens=20, temperature=0.0)
    assert gen.predict("To be", max_new_tokens=20, top_k=1, seed=3).texts == greedy.texts
    assert gen.predict("To be", max_new_tokens=20, beam_size=1, temperature=0.0).texts == greedy.texts
    assert gen.generate("To be", max_new_tokens=20, temperature=0) == "To be" + greedy.texts[0]


def test_greedy_continuation_matches_step_by_step_argmax():
    model = tiny_model()
    prompt = model.tokenizer.encode("be, or")
    with torch.no_grad():
        ids = [BOS_ID, *prompt]
        for _ in range(12):
            logits, _ = model(torch.tensor([ids]))
            nxt = logits[0, -1]
            nxt[:3] = float("-inf")  # pad, unk, bos are never generated
            ids.append(int(nxt.argmax()))
            if ids[-1] == EOS_ID:
                ids.pop()
                break
    out = model.generate_ids([prompt], max_new_tokens=12, temperature=0.0)
    assert out.tokens[0][0] == ids[1 + len(prompt):]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_long_prompts_are_read_in_windows_that_carry_the_state(cell, monkeypatch):
    """Prompts of different lengths (one empty) read 7 tokens per decoder call continue exactly as when read in
    one call; no call sees more than the window."""
    import nlpseq.models.language_model as lm

    model = tiny_model(cell=cell)
    prompts = [model.tokenizer.encode(t) for t in (TEXT[:40], "", TEXT[5:23], TEXT[:3])]
    whole = model.generate_ids(prompts, max_new_tokens=15, temperature=0.0)
    widths = []
    forward = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda x, *a, **k: widths.append(x.size(1)) or forward(x, *a, **k))
    monkeypatch.setattr(lm, "PROMPT_WINDOW", 7)
    windowed = model.generate_ids(prompts, max_new_tokens=15, temperature=0.0)
    assert windowed.tokens == whole.tokens
    assert torch.allclose(windowed.scores, whole.scores, atol=1e-5)
    assert len(widths) == 6 and max(widths) == 7  # 40 tokens (<s> + 40 - 1 read): ceil(40 / 7) calls


def test_beam_search_returns_n_best_sorted():
    gen = GenerationPredictor(tiny_model())
    res = gen.predict("To", max_new_tokens=8, beam_size=4, num_samples=3, length_penalty=0.0)
    assert len(res.texts) == 3 and res.scores == sorted(res.scores, reverse=True)
    assert res.texts[0] == gen.predict("To", max_new_tokens=8, beam_size=4, length_penalty=0.0).texts[0]


def test_prompt_edge_cases_have_defined_behaviour():
    gen = GenerationPredictor(tiny_model())
    empty = gen.predict("", max_new_tokens=5, seed=0, stop_at_eos=False)
    assert isinstance(empty, Generation) and len(empty.texts[0]) == 5
    odd = gen.predict("To be Ω!", max_new_tokens=5, seed=0, stop_at_eos=False)
    assert odd.unknown == ["Ω", "!"] and odd.full_texts[0].startswith("To be Ω!")
    assert gen.predict([], max_new_tokens=5) == []
    assert gen.predict("To", max_new_tokens=0).texts == [""]


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": -0.5}, "temperature: must be >= 0.0, got -0.5"),
    ({"top_p": 0.0}, "top_p: must be > 0.0"),
    ({"top_p": 1.5}, "top_p: must be <= 1.0"),
    ({"top_k": -1}, "top_k: must be >= 0"),
    ({"max_new_tokens": -1}, "max_new_tokens: must be >= 0"),
    ({"num_samples": 3, "beam_size": 2}, r"num_samples: beam search returns at most beam_size \(2\)"),
    ({"condition": "happy"}, "condition: this model was trained without conditions"),
])
def test_bad_decoding_options_fail_with_one_line(kwargs, match):
    gen = GenerationPredictor(tiny_model())
    with pytest.raises(ConfigError, match=match):
        gen.predict("To", max_new_tokens=kwargs.pop("max_new_tokens", 5), **kwargs)


def test_conditions_are_checked():
    gen = GenerationPredictor(tiny_model(conditions=["happy", "sad"]))
    assert len(gen.predict(["To", "be"], max_new_tokens=4, condition=["happy", "sad"], seed=0)) == 2
    with pytest.raises(ConfigError, match=r"condition: 'angry' is not a condition this model knows \(happy, sad\)"):
        gen.predict("To", condition="angry")
    with pytest.raises(ConfigError, match="condition: this model was trained with conditions: pass one of happy, sad"):
        gen.predict("To")
    with pytest.raises(ConfigError, match="condition: got 1 conditions for 2 prompts"):
        gen.predict(["a", "b"], condition=["happy"])


def test_bad_model_settings_name_the_key():
    with pytest.raises(ConfigError, match="model.decoder.attention: is set from the data/model"):
        LanguageModel(tiny_model().hparams["tokenizer"], decoder={"attention": "bahdanau"})
    with pytest.raises(ConfigError, match="model.decoder.hiden_size: unknown option"):
        LanguageModel(tiny_model().hparams["tokenizer"], decoder={"hiden_size": 3})
    with pytest.raises(ConfigError, match="model.samples.temperature: must be >= 0.0"):
        LanguageModel(tiny_model().hparams["tokenizer"], samples={"temperature": -1})
    assert TEXT  # the helper text is what the tokenizer saw


@pytest.mark.parametrize("kind", ["bpe", "word", "char"])
def test_continuation_text_keeps_spacing_for_every_tokenizer(kind):
    from nlpseq.models.language_model import continuation_text
    from nlpseq.text.tokenizer import TextTokenizer

    tok = TextTokenizer.train([TEXT * 3], kind=kind, vocab_size=60 if kind == "bpe" else 1000)
    prompt, rest = tok.encode("To be"), tok.encode(" or not to be")
    assert continuation_text(tok, prompt, rest) == " or not to be"  # BPE/word: the space is not lost
    assert continuation_text(tok, [], rest).strip() == "or not to be"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_inference_cell_step_equals_the_decoder_step(cell):
    model = tiny_model(cell=cell, layers=3).double()
    state = model.decoder.init_state(4)
    state = state._replace(hidden=torch.randn_like(state.hidden),
                           cell=None if state.cell is None else torch.randn_like(state.cell))
    x = torch.randn(4, model.embedding.dim, dtype=torch.double)
    with torch.no_grad():
        fast, fast_state = model.cell_step(x, state)
        ref, ref_state, _ = model.decoder.step(x, state)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast_state.hidden, ref_state.hidden, rtol=0, atol=1e-12)
    if cell == "lstm":
        torch.testing.assert_close(fast_state.cell, ref_state.cell, rtol=0, atol=1e-12)
