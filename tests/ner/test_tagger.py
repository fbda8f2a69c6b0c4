"""The tagger end to end in-process: a learning test only a working tagger passes, batching/padding
invariance of emissions and decoding, softmax and subword variants, and a checkpoint round trip."""
from __future__ import annotations

import random

import pytest
import pytorch_lightning as pl
import torch

import nlpseq
from nlpseq.data.tagging import TaggingDataModule
from nlpseq.errors import ConfigError
from nlpseq.models.tagger import SequenceTagger

FILLER = ["the", "a", "said", "on", "today", "that", "it", "was", "good", "report", "for", "with", "and", "new",
          "old", "very", "some", "many", "week", "after"]
TRIGGERS = {"met": "PER", "in": "LOC", "joined": "ORG"}
SYL = ["ka", "lo", "mi", "ra", "tu", "ve", "zo", "ni", "pe", "su", "do", "ga"]


def _names(rng: random.Random, n: int) -> list[str]:
    return sorted({"".join(rng.choice(SYL) for _ in range(rng.randint(2, 3))).capitalize() for _ in range(n)})


def _sentence(rng: random.Random, names: list[str]) -> list[tuple[str, str]]:
    """Fillers, a capitalised filler at the start, and 1-2 entities whose type is set only by the
    trigger word before them; names come from one pool shared by all types, entities span 1-3 words."""
    out = [(w, "O") for w in rng.choices(FILLER, k=rng.randint(1, 3))]
    out[0] = (out[0][0].capitalize(), "O")
    for _ in range(rng.randint(1, 2)):
        trigger = rng.choice(list(TRIGGERS))
        out.append((trigger, "O"))
        words = rng.choices(names, k=rng.randint(1, 3))
        out += [(w, ("B-" if i == 0 else "I-") + TRIGGERS[trigger]) for i, w in enumerate(words)]
        out += [(w, "O") for w in rng.choices(FILLER, k=rng.randint(0, 2))]
    return out + [(".", "O")]


def _write(path, sentences) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for sent in sentences:
            f.write("".join(f"{w}\t{t}\n" for w, t in sent) + "\n")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    rng = random.Random(0)
    names = _names(rng, 120)
    seen, unseen = names[:90], names[90:]
    base = tmp_path_factory.mktemp("synthetic")
    _write(base / "train.conll", [_sentence(rng, seen) for _ in range(800)])
    _write(base / "dev.conll", [_sentence(rng, unseen) for _ in range(200)])  # names never seen in training
    return base


def _trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)


def _datamodule(base, **kw) -> TaggingDataModule:
    dm = TaggingDataModule(train=str(base / "train.conll"), validation=str(base / "dev.conll"), separator="tab",
                           batch_size=16, **kw)
    dm.prepare()
    return dm


SMALL = dict(embedding={"dim": 32, "case_dim": 4, "dropout": 0.2, "rare_word_dropout": 0.3},
             char_encoder={"kind": "cnn", "dim": 16, "hidden_size": 24}, encoder={"hidden_size": 48},
             head={"dropout": 0.2}, optim={"lr": 0.01})


def test_learns_context_dependent_entities_with_unseen_names(synthetic):
    pl.seed_everything(0, verbose=False)
    dm = _datamodule(synthetic)
    model = SequenceTagger(**dm.model_inputs(), **SMALL)
    trainer = _trainer(6)
    trainer.fit(model, datamodule=dm)
    f1 = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/f1"]
    assert f1 >= 0.95, f1


def test_padding_and_batching_do_not_change_emissions_or_tags(synthetic):
    torch.manual_seed(0)
    dm = _datamodule(synthetic)
    for cfg in ({"kind": "cnn"}, {"kind": "lstm", "hidden_size": 8}):
        model = SequenceTagger(**dm.model_inputs(), **{**SMALL, "char_encoder": cfg}).eval()
        ds = dm.splits["validation"]
        rows = list(range(12))
        with torch.no_grad():
            emissions, mask = model(ds.collate(rows))
            paths, conf = model.decode(emissions, mask, confidence=True)
            for r in rows:
                single, m1 = model(ds.collate([r]))
                n = int(m1.sum())
                assert torch.allclose(single[0, :n], emissions[r, :n], atol=1e-5)
                p1, c1 = model.decode(single, m1, confidence=True)
                assert p1[0, :n].tolist() == paths[r, :n].tolist()
                assert torch.allclose(c1[0, :n], conf[r, :n], atol=1e-5)
                assert not paths[r, n:].any()


def test_softmax_output_trains_and_crf_only_options_fail_clearly(synthetic):
    pl.seed_everything(0, verbose=False)
    dm = _datamodule(synthetic)
    model = SequenceTagger(**dm.model_inputs(), **SMALL, output="softmax")
    trainer = _trainer(2)
    trainer.fit(model, datamodule=dm)
    assert trainer.validate(model, datamodule=dm, verbose=False)[0]["val/f1"] > 0.5
    emissions, mask = model(dm.splits["validation"].collate([0]))
    with pytest.raises(ConfigError, match="model.output"):
        model.nbest(emissions, mask, 2)
    with pytest.raises(ConfigError, match="model.output"):
        SequenceTagger(**dm.model_inputs(), output="hmm")
    with pytest.raises(ConfigError, match="model.char_encoder.kind"):
        SequenceTagger(**dm.model_inputs(), char_encoder={"kind": "gru"})
    with pytest.raises(ConfigError, match="model.embedding.dimm"):
        SequenceTagger(**dm.model_inputs(), embedding={"dimm": 3})


def test_constraints_forbid_invalid_sequences(synthetic):
    dm = _datamodule(synthetic)
    model = SequenceTagger(**dm.model_inputs(), **SMALL).eval()
    torch.manual_seed(1)
    emissions = torch.randn(64, 9, len(model.labels)) * 5  # random scores: unconstrained argmax is ill-formed
    mask = torch.ones(64, 9, dtype=torch.bool)
    paths, _ = model.decode(emissions, mask)
    from nlpseq.metrics.schemes import convert

    for row in model.ids_to_tags(paths, mask.sum(1)):
        assert convert(row, "BIOES", "BIOES") == row  # already well-formed BIOES


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_subword_tokenizer_aligns_labels_to_first_piece_and_trains(synthetic, tmp_path, kind):
    pl.seed_everything(0, verbose=False)
    dm = _datamodule(synthetic, tokenizer={"kind": kind, "vocab_size": 120, "min_frequency": 1})
    batch = dm.splits["train"].collate([0, 1, 2])
    # every word's first piece is inside its sentence and pieces map back to their word
    for b in range(3):
        n, s = int(batch["lengths"][b]), int(batch["piece_lengths"][b])
        first = batch["first_piece"][b, :n]
        assert first[0] == 0 and (first[1:] > first[:-1]).all() and first[-1] < s
        assert batch["piece_word"][b, first].tolist() == list(range(n))
    assert batch["input_ids"].size(1) > batch["case_ids"].size(1)  # names split into several pieces
    # piece dropout makes the model read the context, not memorise the training names' pieces
    model = SequenceTagger(**dm.model_inputs(), **{**SMALL, "embedding": {**SMALL["embedding"], "word_dropout": 0.3}})
    trainer = _trainer(4)
    trainer.fit(model, datamodule=dm)
    assert trainer.validate(model, datamodule=dm, verbose=False)[0]["val/f1"] > 0.3  # unseen names: hard for pieces
    trainer.save_checkpoint(tmp_path / "sub.ckpt")
    pred = nlpseq.load(tmp_path / "sub.ckpt").predict(["Yesterday met Kalomi Rave in Tuzo ."])[0]
    assert len(pred.tags) == len(pred.tokens) == 7  # one tag per word, not per piece


def test_checkpoint_round_trip_gives_identical_spans(synthetic, tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = _datamodule(synthetic)
    model = SequenceTagger(**dm.model_inputs(), **SMALL)
    trainer = _trainer(1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    from nlpseq.predictors.ner import NerPredictor

    texts = ["The report met Kalo Mira and joined Tuzo in Vesu .", "", "in Kamira Lodo said"]
    before = NerPredictor(model).predict(texts)
    after = nlpseq.load(tmp_path / "m.ckpt").predict(texts)
    assert [p.entities for p in before] == [p.entities for p in after]
    assert [p.tags for p in before] == [p.tags for p in after]
    assert after[1].tokens == [] and after[1].entities == []


def test_pretrained_vectors_fill_known_words(synthetic, tmp_path):
    dm = _datamodule(synthetic)
    model = SequenceTagger(**dm.model_inputs(), **{**SMALL, "embedding": {"dim": 4, "pretrained": "vectors.txt"}})
    (tmp_path / "vectors.txt").write_text("2 4\nmet 1 2 3 4\nZzz 9 9 9 9\nThe 5 6 7 8\n")  # word2vec header
    found = model.load_pretrained(str(tmp_path / "vectors.txt"))
    assert found == 2  # 'met' and 'The'; 'Zzz' is not in the vocabulary
    weight = model.word_embedding.weight
    assert weight[model.featurizer.word_id("met")].tolist() == [1, 2, 3, 4]
    assert weight[model.featurizer.word_id("The")].tolist() == [5, 6, 7, 8]
    (tmp_path / "bad.txt").write_text("met 1 2\n")
    from nlpseq.errors import DataError

    with pytest.raises(DataError, match=r"bad.txt:1: expected a word and 4 numbers"):
        model.load_pretrained(str(tmp_path / "bad.txt"))


@pytest.mark.parametrize("overrides", [["task=ner"], ["experiment=ner_conll2003"],
                                       ["task=ner", "data/tokenizer=bpe", "model.char_encoder.kind=lstm"]])
def test_configs_compose_and_match_the_constructors(overrides):
    from hydra import compose, initialize_config_dir

    from nlpseq.config import conf_dir, register_resolvers
    from nlpseq.data.tagging import TaggingDataModule
    from nlpseq.nn.char_encoder import CharEncoder
    from nlpseq.nn.encoders import RecurrentEncoder
    from nlpseq.utils.build import check_keys

    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.task_name == "ner" and cfg.monitor.metric == "val/f1" and cfg.monitor.mode == "max"
    data = {k: v for k, v in cfg.data.items() if k != "_target_"}
    check_keys(TaggingDataModule, data, "data")
    model = {k: v for k, v in cfg.model.items() if k != "_target_"}
    check_keys(SequenceTagger, model, "model", {"tokenizer": 0, "labels": 0, "chars": 0, "scheme": 0,
                                                 "data_scheme": 0, "text": 0, "reader": 0})
    check_keys(RecurrentEncoder, dict(cfg.model.encoder), "model.encoder", {"input_size": 0})
    check_keys(CharEncoder, dict(cfg.model.char_encoder), "model.char_encoder", {"num_chars": 0})


def test_train_flops_count_words_and_the_real_characters_of_distinct_words(synthetic):
    dm = _datamodule(synthetic)
    ds = dm.splits["train"]
    batch = ds.collate(list(range(16)))
    for cfg, per_char in (({"kind": "cnn", "dim": 16, "hidden_size": 24}, 2 * 16 * 24 * 3),
                          ({"kind": "lstm", "dim": 16, "hidden_size": 8}, 2 * 2 * 4 * 8 * (16 + 8))):
        model = SequenceTagger(**dm.model_inputs(), **{**SMALL, "char_encoder": cfg})
        words = int(batch["lengths"].sum())
        chars = int(batch["char_lengths"].sum())
        assert 0 < chars < int(batch["char_ids"].numel())  # real characters only, each distinct word once
        assert model.train_flops(batch) == model.train_flops_per_token() * words + 3 * per_char * chars
    plain = SequenceTagger(**dm.model_inputs(), **{**SMALL, "char_encoder": None})
    assert plain.train_flops(batch) == plain.train_flops_per_token() * int(batch["lengths"].sum())
