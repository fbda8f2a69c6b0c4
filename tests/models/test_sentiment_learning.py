"""A rule only a working sequence model learns: the label says whether 'good' comes before 'bad'.

Both words are in every example, so a bag of words is at chance (50%); order must be read.
"""
import random

import pytorch_lightning as pl
import torch

from nlpseq.data.classification import ClassificationDataModule
from nlpseq.models.classifier import SentimentClassifier

FILLER = [f"w{i}" for i in range(20)]


def make(path, n, rng):
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for _ in range(n):
            words = rng.choices(FILLER, k=rng.randint(3, 10))
            i, j = sorted(rng.sample(range(len(words) + 2), 2))
            first, second = rng.choice([("good", "bad"), ("bad", "good")])
            words.insert(i, first)
            words.insert(j, second)
            f.write(f"{' '.join(words)}\t{'pos' if first == 'good' else 'neg'}\n")


def test_learns_word_order_rule(tmp_path):
    rng = random.Random(0)
    for split, n in (("train", 3000), ("dev", 400)):
        make(tmp_path / f"{split}.tsv", n, rng)
    pl.seed_everything(0, verbose=False)
    dm = ClassificationDataModule(train=str(tmp_path / "train.tsv"), validation=str(tmp_path / "dev.tsv"),
                                  batch_size=32, tokenizer={"kind": "word"})
    dm.prepare()
    model = SentimentClassifier(**dm.model_inputs(), embedding={"dim": 32},
                                encoder={"cell": "gru", "hidden_size": 48, "bidirectional": True},
                                head={"pooling": "max"}, optim={"lr": 0.005})
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    acc = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/acc"]
    assert acc >= 0.95, acc


def test_unseen_label_in_dev_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("text\tlabel\na\tpos\nb\tneg\n")
    (tmp_path / "dev.tsv").write_text("text\tlabel\na\tpos\nb\tneutral\n")
    dm = ClassificationDataModule(train=str(tmp_path / "train.tsv"), validation=str(tmp_path / "dev.tsv"))
    import pytest

    from nlpseq.errors import DataError

    with pytest.raises(DataError, match=r"dev.tsv:3: label 'neutral' was never seen in training"):
        dm.prepare()


def test_held_out_validation_when_none_given(tmp_path):
    make(tmp_path / "train.tsv", 100, random.Random(1))
    dm = ClassificationDataModule(train=str(tmp_path / "train.tsv"), val_fraction=0.2)
    dm.prepare()
    assert dm.num_examples == {"train": 80, "validation": 20}
    assert not dm.has_test
