"""Out-of-core training splits for the sentence-level tasks (nlpseq.data.example_store): the same vocabulary,
labels and batches as the in-memory path, memmapped ids, the run directory's cache, DDP workers, one-line errors."""
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from nlpseq.data import example_store
from nlpseq.data.base import RaggedArray
from nlpseq.data.classification import ClassificationDataModule
from nlpseq.data.lm import LanguageModelDataModule
from nlpseq.data.parallel import TranslationDataModule, iter_split
from nlpseq.data.tagging import TaggingDataModule
from nlpseq.errors import ConfigError, DataError

ROOT = Path(__file__).parents[2]
SENT = ROOT / "tasks" / "sentiment" / "sample"
TRANS = ROOT / "tasks" / "translation" / "sample"


def sentiment(out_of_core, run_dir=None, **kw):
    kw.setdefault("train", str(SENT / "train.tsv"))
    kw.setdefault("validation", str(SENT / "dev.tsv"))
    d = ClassificationDataModule(out_of_core=out_of_core, batch_size=16, **kw)
    d.prepare(run_dir)
    return d


def translation(out_of_core, run_dir=None, **kw):
    kw.setdefault("train", {"src": str(TRANS / "train.de"), "tgt": str(TRANS / "train.en")})
    kw.setdefault("validation", {"src": str(TRANS / "dev.de"), "tgt": str(TRANS / "dev.en")})
    d = TranslationDataModule(out_of_core=out_of_core, batch_size=32, **kw)
    d.prepare(run_dir)
    return d


def same_batches(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k], k


def epochs(dm, n=2):
    out = []
    for epoch in range(n):
        loader = dm.train_dataloader()
        loader.batch_sampler.set_epoch(epoch)
        out.extend(loader)
    return out


@pytest.mark.parametrize("kw", [
    {},
    {"validation": None, "val_fraction": 0.2},
    {"max_length": 5, "tokenizer": {"kind": "bpe", "vocab_size": 300}},
    {"tokenizer": {"kind": "char", "lowercase": True}},
    {"char_features": "cnn", "tokenizer": {"kind": "word", "lowercase": True, "min_frequency": 2}},
    {"char_features": "cnn", "validation": None, "max_length": 5, "tokenizer": {"kind": "bpe", "vocab_size": 300}},
])
def test_sentiment_same_vocabulary_labels_and_batches_as_in_memory(kw, monkeypatch):
    monkeypatch.setattr(example_store, "BATCH_ROWS", 97)  # many chunks even for the sample
    mem, ooc = sentiment(False, **kw), sentiment(True, **kw)
    assert "train" in mem.raw and "train" not in ooc.raw
    assert ooc.tokenizer.to_json() == mem.tokenizer.to_json() and ooc.labels.labels == mem.labels.labels
    assert ooc.chars == mem.chars and (ooc.chars is not None) == ("char_features" in kw)
    assert ooc.num_examples == mem.num_examples
    store = example_store.open_store(ooc.cache_dir, "train.examples", _key_of(ooc))
    assert isinstance(store.ragged["text"].flat, np.memmap) and store.ragged["text"].flat.dtype in (np.uint8, np.uint16)
    # the sampler indexes the int32 lengths memmap without a copy
    lengths = ooc.train_dataloader().batch_sampler.lengths
    assert lengths.dtype == np.int32 and np.shares_memory(lengths, ooc.splits["train"].lengths)
    assert isinstance(ooc.splits["train"].lengths, np.memmap)
    same_batches(epochs(mem), epochs(ooc))
    same_batches(mem.val_dataloader(), ooc.val_dataloader())
    assert ooc.bench_inputs(5) == mem.bench_inputs(5)


def _key_of(dm):
    """The key the data module wrote (read back from its manifest)."""
    import json

    return json.loads((Path(dm.cache_dir) / "train.examples.json").read_text())["key"]


@pytest.mark.parametrize("kw", [
    {},
    {"validation": None, "val_fraction": 0.1},
    {"max_length": 12},
    {"joint_vocab": False, "tgt_vocab_size": 400},
    {"tokenizer": {"kind": "word"}},
])
def test_translation_same_vocabulary_and_batches_as_in_memory(kw, monkeypatch):
    monkeypatch.setattr(example_store, "BATCH_ROWS", 113)
    mem, ooc = translation(False, **kw), translation(True, **kw)
    assert "train" not in ooc.raw
    assert ooc.src_tokenizer.to_json() == mem.src_tokenizer.to_json()
    assert ooc.tgt_tokenizer.to_json() == mem.tgt_tokenizer.to_json()
    assert ooc.model_inputs() == mem.model_inputs()  # longest source, target ids seen
    assert ooc.num_examples == mem.num_examples
    same_batches(epochs(mem), epochs(ooc))
    same_batches(mem.val_dataloader(), ooc.val_dataloader())  # held-out pairs keep their text (BLEU)


def test_translation_tables_stream_like_aligned_files(tmp_path):
    src = (TRANS / "train.de").read_text(encoding="utf-8").splitlines()[:300]
    tgt = (TRANS / "train.en").read_text(encoding="utf-8").splitlines()[:300]
    tsv = tmp_path / "train.tsv"
    tsv.write_text("src\ttgt\n" + "".join(f"{s}\t{t}\n" for s, t in zip(src, tgt)), encoding="utf-8")
    mem, ooc = translation(False, train=str(tsv)), translation(True, train=str(tsv))
    assert ooc.src_tokenizer.to_json() == mem.src_tokenizer.to_json()
    same_batches(epochs(mem, 1), epochs(ooc, 1))


def test_store_is_reused_and_encoded_again_when_the_file_changes(tmp_path, monkeypatch):
    train = tmp_path / "train.tsv"
    train.write_text((SENT / "train.tsv").read_text(encoding="utf-8"), encoding="utf-8")
    first = sentiment(True, tmp_path / "run", train=str(train))
    cache = tmp_path / "run" / "cache"
    assert {p.name for p in cache.iterdir()} == {"train.examples.json", "train.examples.text.ids",
                                                  "train.examples.text.offsets", "train.examples.text.lengths",
                                                  "train.examples.labels.values"}

    def fail(*a, **k):
        raise AssertionError("encoded again")

    with monkeypatch.context() as m:  # a resumed run / DDP worker reads the cache
        m.setattr(example_store.StoreWriter, "add", fail)
        again = sentiment(True, tmp_path / "run", train=str(train))
        same_batches(epochs(first, 1), epochs(again, 1))
    with open(train, "a", encoding="utf-8") as f:
        f.write("a brand new example\tpositive\n")
    changed = sentiment(True, tmp_path / "run", train=str(train))  # same vocabulary (vocab.json), new store
    assert changed.num_examples["train"] == first.num_examples["train"] + 1
    assert example_store.open_store(cache, "train.examples", _key_of(changed)) is not None
    assert example_store.open_store(cache, "train.examples", {**_key_of(changed), "files": "other"}) is None
    os.utime(train, ns=(1, 1))  # the same size with a new time also counts as a change
    assert example_store.file_key(train) != _key_of(changed)["files"]
    with open(train, "a", encoding="utf-8") as f:  # a label training never saw: named with its line
        f.write("another one\tneutral\n")
    with pytest.raises(DataError, match=r"train.tsv:2003: label 'neutral' was never seen in training"):
        sentiment(True, tmp_path / "run", train=str(train))


def test_store_round_trip_incomplete_files_and_abort(tmp_path):
    seqs = [[5, 6, 7], [8], [], [300, 4]]
    writer = example_store.StoreWriter(tmp_path, "s", {"x": np.uint16}, {"y": np.int64})
    writer.add({"x": example_store.flatten(seqs[:2], np.uint16)}, {"y": np.array([1, 2])})
    writer.add({"x": example_store.flatten(seqs[2:], np.uint16)}, {"y": np.array([3, 4])})
    writer.finish({"k": 1}, {"longest": 3})
    store = example_store.open_store(tmp_path, "s", {"k": 1})
    assert store.n == 4 and store.meta == {"longest": 3}
    assert [store.ragged["x"][i].tolist() for i in range(4)] == seqs
    assert store.fixed["y"].tolist() == [1, 2, 3, 4] and store.ragged["x"].lengths.tolist() == [3, 1, 0, 2]
    assert example_store.open_store(tmp_path, "s", {"k": 2}) is None  # another key
    with open(tmp_path / "s.x.ids", "r+b") as f:  # a truncated file: not a store
        f.truncate(4)
    assert example_store.open_store(tmp_path, "s", {"k": 1}) is None
    with pytest.raises(ValueError, match="differ in length"):
        writer = example_store.StoreWriter(tmp_path, "t", {"x": np.uint8}, {"y": np.int64})
        writer.add({"x": example_store.flatten([[1]], np.uint8)}, {"y": np.array([1, 2])})
    writer.abort()
    assert not list(tmp_path.glob(".t.*")) and not (tmp_path / "t.json").exists()
    assert example_store.id_dtype(256) == np.uint8 and example_store.id_dtype(257) == np.uint16
    assert example_store.id_dtype(70000) == np.uint32


def test_a_failed_encoding_leaves_no_store(tmp_path):
    bad = tmp_path / "train.tsv"
    lines = (SENT / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    bad.write_text("".join(lines[:1500]) + "only one column\n" + "".join(lines[1500:]), encoding="utf-8")
    with pytest.raises(DataError, match=r"train.tsv:1501: expected 2 columns like the header, found 1"):
        sentiment(True, tmp_path / "run", train=str(bad))
    assert not (tmp_path / "run" / "cache").exists() or not list((tmp_path / "run" / "cache").iterdir())


def test_a_ddp_worker_waits_for_the_first_process_store(tmp_path, monkeypatch):
    first = sentiment(True, tmp_path / "run")  # writes vocab.json and the store
    key = _key_of(first)
    (tmp_path / "run" / "cache" / "train.examples.json").rename(tmp_path / "manifest")
    later = threading.Timer(1.0, lambda: (tmp_path / "manifest").rename(tmp_path / "run" / "cache" / "train.examples.json"))
    later.start()  # the first process finishes a moment later
    with monkeypatch.context() as m:
        m.setenv("LOCAL_RANK", "1")
        m.setattr(example_store.StoreWriter, "add", lambda *a, **k: pytest.fail("a worker encoded the data"))
        worker = sentiment(True, tmp_path / "run")
    later.join()
    assert _key_of(worker) == key
    same_batches(epochs(first, 1), epochs(worker, 1))
    # nobody writing: a worker gives up after `patience` and writes the store itself
    store = example_store.build_store(tmp_path / "alone", "s", {"k": 1}, {"x": np.uint8}, {},
                                      lambda w: w.add({"x": example_store.flatten([[1, 2]], np.uint8)}, {}),
                                      wait=True, patience=0.2)
    assert store.ragged["x"][0].tolist() == [1, 2]


def test_auto_switches_on_for_large_local_files(monkeypatch):
    assert "train" in sentiment("auto").raw and "train" in translation("auto").raw  # the samples are small
    monkeypatch.setattr(example_store, "AUTO_BYTES", 1000)
    assert "train" not in sentiment("auto").raw and "train" not in translation("auto").raw


@pytest.mark.parametrize("make,kw,match", [
    (ClassificationDataModule, {"out_of_core": "yes"}, "data.out_of_core: expected auto, true or false"),
    (ClassificationDataModule, {"out_of_core": True, "hub": {"name": "glue"}}, "data.out_of_core: streams local"),
    (TranslationDataModule, {"out_of_core": 1.5}, "data.out_of_core: expected auto, true or false"),
    (TranslationDataModule, {"out_of_core": True, "hub": {"name": "x"}}, "data.out_of_core: streams local"),
    (TaggingDataModule, {"out_of_core": "no"}, "data.out_of_core: expected auto, true or false"),
    (TaggingDataModule, {"out_of_core": True, "hub": {"name": "conll2003"}}, "data.out_of_core: streams local"),
    (LanguageModelDataModule, {"out_of_core": "on"}, "data.out_of_core: expected auto, true or false"),
    (LanguageModelDataModule, {"out_of_core": True, "hub": {"name": "x"}}, "data.out_of_core: needs a plain-text"),
    # data.hub keys, checked by the same base class for every module (NER adds its column names)
    (ClassificationDataModule, {"hub": {"nmae": "glue"}}, r"data.hub: unknown option\(s\) \['nmae'\]"),
    (TranslationDataModule, {"hub": {"subsets": "x"}}, r"data.hub: unknown option\(s\) \['subsets'\]"),
    (LanguageModelDataModule, {"hub": {"split": "x"}}, r"data.hub: unknown option\(s\) \['split'\]"),
    (TaggingDataModule, {"hub": {"text_column": "x"}}, r"expected \['name', 'splits', 'subset', 'tags_column'"),
])
def test_bad_settings(make, kw, match):
    kw.setdefault("train", "x.tsv")
    with pytest.raises(ConfigError, match=match):
        make(**kw)


def test_translation_errors_name_the_file_and_line(tmp_path):
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    tgt.write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(DataError, match="the source has 3 lines but the target .*a.en has 2"):
        translation(True, train={"src": str(src), "tgt": str(tgt)})
    with pytest.raises(DataError, match="the source has 2 lines but the target .*a.de has 3"):
        list(iter_split({"src": str(tgt), "tgt": str(src)}))
    tgt.write_text("one\n\nthree\n", encoding="utf-8")
    src.write_text("\n\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="every training pair has an empty side"):
        translation(True, train={"src": str(src), "tgt": str(tgt)})
    with pytest.raises(DataError, match="every training pair is longer than data.max_length=2"):
        translation(True, max_length=2)


def test_ragged_array_over_memmaps_pads_like_in_memory(tmp_path):
    seqs = [[1, 2, 3], [4], [5, 6]]
    flat, lengths = example_store.flatten(seqs, np.uint8)
    flat_path = tmp_path / "f"
    flat_path.write_bytes(flat.tobytes())
    mapped = RaggedArray(flat=np.memmap(flat_path, dtype=np.uint8, mode="r"),
                         offsets=np.concatenate([[0], np.cumsum(lengths)]))
    from nlpseq.data.collate import pad_ids

    a, b = pad_ids([mapped[i] for i in range(3)]), pad_ids([np.asarray(s) for s in seqs])
    assert torch.equal(a[0], b[0]) and a[0].dtype == torch.long and torch.equal(a[1], b[1])


def test_cli_trains_out_of_core_and_the_checkpoint_predicts(tmp_path, cli):
    from conftest import QUIET

    import nlpseq

    run = tmp_path / "run"
    proc = cli(["task=sentiment", f"hydra.run.dir={run}", "data.out_of_core=true", "data.validation=null",
                "trainer.max_epochs=1", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "cache" / "train.examples.json").is_file()
    log = (run / "__main__.log").read_text()
    assert "held out 200 of 2000 training examples" in log and "encoded 1800 examples" in log
    model = nlpseq.load(run / "checkpoints" / "best.ckpt")
    assert {p.label for p in model.predict(["a wonderful , moving film", "dull and lifeless"])} <= {"negative", "positive"}


# ---------------------------------------------------------------- NER

NER = ROOT / "tasks" / "ner" / "sample"


def ner(out_of_core, run_dir=None, **kw):
    from nlpseq.data.tagging import TaggingDataModule

    kw.setdefault("train", str(NER / "train.conll"))
    kw.setdefault("validation", str(NER / "dev.conll"))
    d = TaggingDataModule(out_of_core=out_of_core, batch_size=16, **kw)
    d.prepare(run_dir)
    return d


@pytest.mark.parametrize("kw", [
    {},
    {"validation": None},
    {"scheme": "auto", "train_scheme": "IOB2"},
    {"tokenizer": {"kind": "bpe", "vocab_size": 300}},
    {"max_length": 200, "zero_digits": False, "char_min_frequency": 2},
])
def test_ner_same_vocabulary_and_batches_as_in_memory(kw, monkeypatch):
    monkeypatch.setattr(example_store, "BATCH_ROWS", 101)
    mem, ooc = ner(False, **kw), ner(True, **kw)
    assert "train" not in ooc.raw and ooc.vocab == mem.vocab and ooc.model_inputs() == mem.model_inputs()
    assert ooc.num_examples == mem.num_examples
    for a, b in zip(epochs(mem), epochs(ooc), strict=True):  # the same tensors, dtypes included
        assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    same_batches(mem.val_dataloader(), ooc.val_dataloader())
    assert ooc.bench_inputs(4) == mem.bench_inputs(4)
    names = {p.name for p in Path(ooc.cache_dir).iterdir()}
    assert {"train.examples.json", "train.types.json", "train.examples.words.ids", "train.types.chars.ids"} <= names


def test_ner_held_out_validation_is_disjoint_from_training():
    """Regression: with datasets >= 4 a split's columns are lazy Columns, and the hold-out kept the whole
    training file on both sides (validation scored on training sentences)."""
    mem = ner(False, validation=None, val_fraction=0.2)
    assert mem.num_examples == {"train": 480, "validation": 120}
    train, held = set(mem.raw["train"]["line"]), set(mem.raw["validation"]["line"])  # sentences by first line
    assert not train & held and len(train | held) == 600


def test_ner_errors_name_the_file_and_line(tmp_path):
    lines = (NER / "train.conll").read_text(encoding="utf-8").splitlines(keepends=True)
    bad = tmp_path / "train.conll"
    bad.write_text("".join(lines[:1000]) + "Oops B-PER extra\n" + "".join(lines[1000:]), encoding="utf-8")
    with pytest.raises(DataError, match=r"train.conll:1001: expected \d columns"):
        ner(True, train=str(bad))
    with pytest.raises(DataError, match=r"train.conll:\d+: sentence has \d+ tokens, more than data.max_length=3"):
        ner(True, max_length=3, validation=None)


def test_ner_store_is_reused_and_the_table_rebuilt_with_it(tmp_path, monkeypatch):
    first = ner(True, tmp_path / "run")
    cache = tmp_path / "run" / "cache"
    with monkeypatch.context() as m:
        m.setattr(example_store.StoreWriter, "add", lambda *a, **k: pytest.fail("encoded again"))
        again = ner(True, tmp_path / "run")
    same_batches(epochs(first, 1), epochs(again, 1))
    (cache / "train.types.json").unlink()  # a run stopped between the two stores: both are written again
    third = ner(True, tmp_path / "run")
    assert (cache / "train.types.json").is_file()
    same_batches(epochs(first, 1), epochs(third, 1))


def test_cli_ner_out_of_core_and_the_checkpoint_predicts(tmp_path, cli):
    from conftest import QUIET

    import nlpseq

    run = tmp_path / "run"
    proc = cli(["task=ner", f"hydra.run.dir={run}", "data.out_of_core=true", "trainer.max_epochs=1", *QUIET],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "cache" / "train.types.json").is_file()
    tagger = nlpseq.load(run / "checkpoints" / "best.ckpt")
    assert len(tagger.predict([["John", "lives", "in", "Berlin", "."]])[0].tags) == 5


def test_pin_memory_only_with_an_accelerator(monkeypatch):
    # data.pin_memory=true page-locks batches for asynchronous GPU copies; without CUDA it is ignored
    assert sentiment(False).train_dataloader().pin_memory is False  # the default
    pinned = sentiment(False, pin_memory=True)
    assert pinned.train_dataloader().pin_memory is False and pinned.val_dataloader().pin_memory is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pinned.train_dataloader().pin_memory is True and pinned.val_dataloader().pin_memory is True
    assert sentiment(False).train_dataloader().pin_memory is False
    with pytest.raises(ConfigError, match="data.pin_memory"):
        ClassificationDataModule(train="x.tsv", pin_memory="sometimes")
