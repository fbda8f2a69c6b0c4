"""The Translator: batched search (beam 1 = greedy), padding invariance, a reversal learning test, checkpoints,
bad input."""
import logging
import random

import pytest
import pytorch_lightning as pl
import torch

import nlpseq
from nlpseq.data.parallel import TranslationDataModule
from nlpseq.errors import ConfigError, NlpseqError
from nlpseq.models.seq2seq import Translator
from nlpseq.nn.search import beam_search, greedy
from nlpseq.predictors.translation import Translation, TranslationPredictor
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, TextTokenizer
from nlpseq.data.collate import pad_ids

pytestmark = pytest.mark.usefixtures("one_thread")


SYMBOLS = "a b c d e f g h i j k l".split()
DECODERS = {
    "bahdanau-gru": {"cell": "gru", "attention": "bahdanau"},
    "luong-feed-lstm": {"cell": "lstm", "attention": "luong_general", "input_feeding": True},
    "dot-gru": {"cell": "gru", "attention": "luong_dot"},
    "none-gru": {"cell": "gru", "attention": "none"},
    "bahdanau-restricted-tied": {"cell": "gru", "attention": "bahdanau"},
}


def tokenizer_json() -> str:
    return TextTokenizer.train([" ".join(SYMBOLS)], kind="word", vocab_size=50).to_json()


def tiny(decoder: dict, seed=0, **kw) -> Translator:
    torch.manual_seed(seed)
    tok = tokenizer_json()
    model = Translator(tok, tok, max_src_length=12, embedding={"dim": 16}, encoder={"cell": "gru", "hidden_size": 8},
                       decoder={"hidden_size": 16, **decoder}, **kw)
    return model.double().eval()


def sentences(n, seed, lo=1, hi=9):
    rng = random.Random(seed)
    return [" ".join(rng.choices(SYMBOLS, k=rng.randint(lo, hi))) for _ in range(n)]


def encode(model, texts):
    return pad_ids(model.src_tokenizer.encode_batch(texts, add_eos=True))


@pytest.mark.parametrize("name", list(DECODERS))
def test_beam_one_is_greedy_and_batched_search_ignores_padding(name):
    restricted = "restricted" in name
    if restricted:  # output vocabulary: the specials and the first six symbols only, tied to the embeddings
        allowed = TextTokenizer.from_json(tokenizer_json()).encode(" ".join(SYMBOLS[:6]))
        model = tiny(DECODERS[name], tgt_output_ids=allowed, tie_embeddings=True)
        assert model.output.out_features == 10 and model.output.tied
    else:
        model = tiny(DECODERS[name])
    texts = sentences(5, 1)
    src, lengths = encode(model, texts)
    with torch.no_grad():
        g, _ = model.generate(src, lengths, beam_size=1, max_len_ratio=2.0)
        # the raw beam search with one beam (no length penalty) makes exactly the greedy choices
        state = model.encode(src, lengths)
        max_len = model.max_lengths(lengths, 2.0, 10)
        b1 = beam_search(model.step, state, BOS_ID, EOS_ID, max_len, len(texts), beam_size=1, length_penalty=0.0)
        ref = greedy(model.step, state, BOS_ID, EOS_ID, max_len, len(texts))
    ids = model.output.ids_list or list(range(model.tgt_tokenizer.vocab_size))  # search speaks output indices
    as_vocab = lambda tokens: [[[ids[t] for t in hyp] for hyp in item] for item in tokens]  # noqa: E731
    assert as_vocab(b1.tokens) == g.tokens == as_vocab(ref.tokens)
    assert torch.equal(b1.scores, g.scores) and torch.equal(b1.ended, g.ended)
    assert any(len(h[0]) > 0 for h in g.tokens)
    if restricted:  # only the allowed tokens come out, as vocabulary ids
        produced = {t for item in g.tokens for hyp in item for t in hyp}
        assert produced and produced <= set(allowed) | {1}  # and <unk>
    # padding a batch never changes a translation: each sentence alone gives the same output
    beam, weights = model.generate(src, lengths, beam_size=3, n_best=2, attention=True)
    # generate keeps the encoder memory out of the search's reordering: same result as the plain state
    with torch.no_grad():
        plain = beam_search(model.step, state, BOS_ID, EOS_ID, model.max_lengths(lengths, 1.5, 10), len(texts),
                            beam_size=3, length_penalty=1.0, n_best=2)
    assert as_vocab(plain.tokens) == beam.tokens and torch.equal(plain.scores, beam.scores)
    for i, text in enumerate(texts):
        s, n = encode(model, [text])
        alone_g, _ = model.generate(s, n, beam_size=1, max_len_ratio=2.0)
        alone_b, alone_w = model.generate(s, n, beam_size=3, n_best=2, attention=True)
        assert alone_g.tokens[0] == g.tokens[i]
        assert alone_b.tokens[0] == beam.tokens[i]
        torch.testing.assert_close(alone_b.scores[0], beam.scores[i])
        if weights is not None:
            rows = alone_w.size(1)
            torch.testing.assert_close(alone_w[0], weights[i, :rows, :int(n[0])])
            assert torch.all(weights[i, :, int(n[0]):] == 0)  # padding gets no attention


def test_config_errors_name_the_option():
    tok = tokenizer_json()
    with pytest.raises(ConfigError, match=r"model.tie_embeddings: needs model.decoder.hidden_size \(16\) == "
                                          r"model.embedding.dim \(8\)"):
        Translator(tok, tok, embedding={"dim": 8}, decoder={"hidden_size": 16}, tie_embeddings=True)
    other = TextTokenizer.train(["x y z"], kind="word").to_json()
    with pytest.raises(ConfigError, match="model.share_embeddings: needs one joint vocabulary"):
        Translator(tok, other, share_embeddings=True)
    with pytest.raises(ConfigError, match=r"model.decoder.atention: unknown option"):
        Translator(tok, tok, decoder={"atention": "bahdanau"})
    with pytest.raises(ConfigError, match=r"model.decoder.attention: 'luong' is not one of"):
        Translator(tok, tok, decoder={"attention": "luong"})
    with pytest.raises(ConfigError, match=r"model.search.beam: unknown option"):
        Translator(tok, tok, search={"beam": 3})
    model = Translator(tok, tok, embedding={"dim": 8}, decoder={"hidden_size": 8}, tie_embeddings=True,
                       share_embeddings=True)
    assert model.output.weight is model.tgt_embed.weight is model.src_embed.weight


# ---------------------------------------------------------------- learning: reverse a random sequence

def write_pairs(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(f"{t}\t{' '.join(reversed(t.split()))}\n")


@pytest.fixture(scope="module")
def reverser(tmp_path_factory):
    """A model trained to reverse sequences of 3-8 symbols (and its checkpoint), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("reverse")
    write_pairs(tmp / "train.tsv", sentences(3000, 2, lo=3, hi=8))
    test_texts = sentences(200, 3, lo=3, hi=8)
    write_pairs(tmp / "val.tsv", test_texts[:100])
    pl.seed_everything(0, verbose=False)
    dm = TranslationDataModule(train=str(tmp / "train.tsv"), validation=str(tmp / "val.tsv"),
                               tokenizer={"kind": "word", "vocab_size": 50}, batch_size=50)
    dm.prepare()
    model = Translator(**dm.model_inputs(), embedding={"dim": 32}, encoder={"cell": "gru", "hidden_size": 48},
                       decoder={"cell": "gru", "hidden_size": 64, "attention": "luong_general", "dropout": 0.0},
                       label_smoothing=0.0, val_samples=0, optim={"lr": 0.01})
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         gradient_clip_val=1.0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp / "reverse.ckpt"
    trainer.save_checkpoint(ckpt)
    return model.eval(), ckpt, test_texts[100:], trainer.callback_metrics


def test_learns_to_reverse(reverser):
    model, _, texts, metrics = reverser
    predictor = TranslationPredictor(model)
    for beam in (1, 4):
        out = predictor.predict(texts, beam_size=beam)
        exact = sum(o.translation == " ".join(reversed(t.split())) for o, t in zip(out, texts)) / len(texts)
        assert exact >= 0.9, (beam, exact)
    assert float(metrics["val/bleu"]) > 80 and float(metrics["val/ppl"]) < 1.5


def test_checkpoint_round_trip_gives_identical_translations(reverser):
    model, ckpt, texts, _ = reverser
    hp = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert isinstance(hp["src_tokenizer"], str) and hp["decoder"]["attention"] == "luong_general"
    loaded = nlpseq.load(ckpt)
    assert isinstance(loaded, TranslationPredictor)
    here = TranslationPredictor(model)
    for kw in ({"beam_size": 1}, {"beam_size": 3, "n_best": 3}):
        assert loaded.predict(texts[:40], **kw) == here.predict(texts[:40], **kw)


def test_predict_api_nbest_and_attention(reverser):
    model, _, _, _ = reverser
    p = TranslationPredictor(model)
    r = p.predict("a b c d", beam_size=4, n_best=3, attention=True)
    assert isinstance(r, Translation) and r.translation == "d c b a"
    assert [h.translation for h in r.nbest][0] == r.translation and len(r.nbest) == 3
    assert all(a.score >= b.score for a, b in zip(r.nbest, r.nbest[1:])) and r.score == r.nbest[0].score
    assert r.source_tokens == ["a", "b", "c", "d", "</s>"] and r.output_tokens == ["d", "c", "b", "a", "</s>"]
    weights = torch.tensor(r.attention)
    assert weights.shape == (5, 5)
    torch.testing.assert_close(weights.sum(1), torch.ones(5), atol=1e-4, rtol=0)
    assert weights[:4].argmax(1).tolist() == [3, 2, 1, 0]  # it learned to look where it copies from
    assert p.predict([]) == []
    g = p.predict(["a b c", "d e f g"], beam_size=1)
    assert [x.translation for x in g] == ["c b a", "g f e d"] and g[0].nbest is None and g[0].attention is None


def test_bad_input_never_crashes_the_search(reverser, caplog):
    model, _, _, _ = reverser
    p = TranslationPredictor(model)
    long_line = " ".join(["a", "b", "c"] * 40)  # 120 tokens; training sources had at most 9
    with caplog.at_level(logging.WARNING, logger="nlpseq"):
        out = p.predict(["", "   ", long_line, "日本語 Ω ß", "a b zzz c"], beam_size=3, attention=True)
    assert [o.translation for o in out[:2]] == ["", ""] and out[0].attention == []
    assert out[2].truncated and len(out[2].source_tokens) == 2 * model.max_src_length
    assert "truncated" in caplog.text
    assert isinstance(out[3].translation, str) and "<unk>" in out[3].source_tokens  # unseen characters: unk
    assert not any(o.truncated for o in out[3:])
    with pytest.raises(ConfigError, match="n_best: must be <= beam_size"):
        p.predict("a b", beam_size=2, n_best=3)
    with pytest.raises(ConfigError, match="beam_size: must be >= 1"):
        p.predict("a b", beam_size=0)
    with pytest.raises(NlpseqError, match="text 1 is a int"):
        p.predict(["a", 3])


def test_bf16_decoding_and_attention_picture(reverser, tmp_path):
    model, _, texts, _ = reverser
    p = TranslationPredictor(model)
    fp32 = p.predict(texts[:50], beam_size=3)
    bf16 = p.predict(texts[:50], beam_size=3, precision="bf16")
    assert sum(a.translation == b.translation for a, b in zip(fp32, bf16)) >= 45
    with pytest.raises(ConfigError, match="precision: 'fp16' is not one of fp32, bf16"):
        p.predict("a b", precision="fp16")
    from nlpseq.plots import plot_attention

    path = plot_attention(p.predict("a b c d", attention=True), tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_attention(p.predict("", attention=True), tmp_path / "empty.png")  # an empty input draws a note
    with pytest.raises(NlpseqError, match="no attention to plot"):
        plot_attention(p.predict("a b"), tmp_path / "b.png")
