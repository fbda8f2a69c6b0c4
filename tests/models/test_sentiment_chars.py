"""Character features for sentiment: batches spell the right words, a spelling rule is learned only with them,
and a checkpoint carries its characters through training, loading and prediction."""
import random
import string

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from nlpseq.data.classification import (ClassificationDataModule, classification_batch, encode_classification,
                                        text_chars)
from nlpseq.errors import ConfigError
from nlpseq.models.classifier import SentimentClassifier
from nlpseq.text.tokenizer import TextTokenizer
from tests.conftest import QUIET

CHAR_CNN = {"kind": "cnn", "dim": 16, "hidden_size": 32}


def write_suffix_data(path, n, rng):
    """Each text has filler words and one made-up word seen nowhere else: '...ful' is positive, '...less'
    negative. The made-up words all share <unk>, so only their spelling tells the label."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for _ in range(n):
            stem = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 7)))
            positive = rng.random() < 0.5
            words = rng.choices(["the", "film", "was", "quite", "a", "very"], k=rng.randint(2, 5))
            words.insert(rng.randint(0, len(words)), stem + ("ful" if positive else "less"))
            f.write(f"{' '.join(words).capitalize()}\t{'pos' if positive else 'neg'}\n")


def slow_surfaces(tokenizer: TextTokenizer, text: str) -> list[str]:
    """Reference: each token's surface, lower-cased as the tokenizer's normaliser does."""
    words = [w.strip() for w, _ in tokenizer.tokenize_with_offsets(text)]
    norm = tokenizer.hf.normalizer
    return [norm.normalize_str(w) if norm is not None else w for w in words] or [""]


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_batches_spell_each_token_of_each_text(kind):
    texts = ["A good film!", "", "Zyxq was bad, truly BAD.", "good good good", "naïve café"]
    tokenizer = TextTokenizer.train(texts * 3, kind=kind, lowercase=True, vocab_size=60 if kind == "bpe" else 100)
    chars = text_chars(tokenizer, texts[:3])  # 'ï', 'é', 'y' ... of the last text are unknown characters
    assert chars[:2] == ["<pad>", "<unk>"] and " " not in chars and "A" not in chars and "a" in chars
    enc = encode_classification(tokenizer, texts, chars=chars)
    assert [list(r) for r in (enc.ids[i] for i in range(len(texts)))] == \
        [s or [tokenizer.unk_id] for s in tokenizer.encode_batch(texts)]
    rows = [4, 0, 2, 1]
    batch = classification_batch(enc, rows)
    spelled = ["".join(chars[c] if c != 1 else "?" for c in row if c) for row in batch["char_ids"].tolist()]
    distinct = {w for i in rows for w in slow_surfaces(tokenizer, texts[i])}
    assert len(spelled) == len(distinct)  # each distinct surface spelled once per batch
    for b, i in enumerate(rows):
        n = int(batch["lengths"][b])
        got = [spelled[j] for j in batch["word_chars"][b, :n].tolist()]
        want = ["".join(c if c in chars[2:] else "?" for c in w) or "?" for w in slow_surfaces(tokenizer, texts[i])]
        assert got == want, (texts[i], got, want)
    assert batch["char_lengths"].tolist() == [max(len(s), 1) for s in spelled]


def test_max_length_truncates_tokens_and_their_characters():
    tokenizer = TextTokenizer.train(["one two three four five"], kind="word")
    enc = encode_classification(tokenizer, ["one two three four five"], max_length=3, chars=["<pad>", "<unk>", "o"])
    assert len(enc.ids[0]) == len(enc.types[0]) == 3


def _fit(tmp_path, char_encoder, epochs=6):
    pl.seed_everything(0, verbose=False)
    dm = ClassificationDataModule(train=str(tmp_path / "train.tsv"), validation=str(tmp_path / "dev.tsv"),
                                  batch_size=32, tokenizer={"kind": "word", "lowercase": True, "min_frequency": 2},
                                  char_features=char_encoder["kind"] if char_encoder else "none")
    dm.prepare()
    model = SentimentClassifier(**dm.model_inputs(), embedding={"dim": 16}, char_encoder=char_encoder,
                                encoder={"cell": "gru", "hidden_size": 32, "bidirectional": True},
                                head={"pooling": "max"}, optim={"lr": 0.01})
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    return dm, model, trainer.validate(model, datamodule=dm, verbose=False)[0]["val/acc"]


def test_learns_a_spelling_rule_only_with_character_features(tmp_path):
    rng = random.Random(0)
    write_suffix_data(tmp_path / "train.tsv", 1200, rng)
    write_suffix_data(tmp_path / "dev.tsv", 300, rng)
    dm, model, with_chars = _fit(tmp_path, CHAR_CNN)
    _, _, without = _fit(tmp_path, None, epochs=3)
    assert with_chars >= 0.95, with_chars
    assert without <= 0.65, without  # every made-up word is <unk>: chance without the spelling

    # the predictor reads new text the way the trained batches did: same probabilities as the model on a batch
    from nlpseq.predictors.sentiment import SentimentPredictor

    predictor = SentimentPredictor(model.eval())
    texts = ["The film was joyful", "a hopeless film", "Bleakless", ""]
    preds = predictor.predict(texts)
    assert [p.label for p in preds[:3]] == ["pos", "neg", "neg"]
    enc = encode_classification(model.tokenizer, texts, chars=model.chars)
    batch = classification_batch(enc, range(len(texts)))
    with torch.no_grad():
        probs = torch.softmax(model(batch["input_ids"], batch["lengths"], batch), -1)
    for p, row in zip(preds, probs.tolist()):
        assert np.allclose([p.probabilities[label] for label in model.labels], row, atol=1e-5)


def test_settings_that_cannot_work_are_one_line_errors(tmp_path):
    write_suffix_data(tmp_path / "train.tsv", 20, random.Random(1))
    with pytest.raises(ConfigError, match="data.char_features"):
        ClassificationDataModule(train=str(tmp_path / "train.tsv"), char_features="cnnn")
    tokenizer = TextTokenizer.train(["a b"], kind="word").to_json()
    with pytest.raises(ConfigError, match="model.char_encoder.*character list"):
        SentimentClassifier(tokenizer, ["x", "y"], char_encoder=CHAR_CNN)


def test_cli_run_with_character_features_loads_and_predicts_alone(tmp_path, cli):
    import nlpseq

    run = tmp_path / "run"
    proc = cli(["task=sentiment", f"hydra.run.dir={run}", "trainer.max_epochs=1", "model.char_encoder.kind=lstm",
                "model.char_encoder.hidden_size=8", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictor = nlpseq.load(run / "checkpoints" / "best.ckpt")
    assert predictor.model.char_encoder.kind == "lstm" and "<unk>" in predictor.model.chars
    pred = predictor.predict("An unheard-of masterpiecey film")
    assert pred.label in predictor.model.labels and abs(sum(pred.probabilities.values()) - 1) < 1e-4
