"""Parallel readers (aligned files, TSV, JSONL, gzip, hub) and the translation DataModule."""
import gzip
import json

import pytest
from conftest import SHARED_DATA

from nlpseq.data.parallel import TranslationDataModule, load_hub_pairs, read_aligned, read_pair_table, read_split
from nlpseq.errors import ConfigError, DataError
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, PAD_ID

SRC = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Park.", "Eine Frau liest ein Buch.", "Ein Kind lacht."]
TGT = ["A man rides a bike.", "Two dogs play in the park.", "A woman reads a book.", "A child laughs."]


def write(path, lines, gz=False):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


@pytest.mark.parametrize("gz", [False, True])
def test_aligned_files_plain_and_gzip(tmp_path, gz):
    ext = ".gz" if gz else ""
    ds = read_aligned(write(tmp_path / f"a.de{ext}", SRC, gz), write(tmp_path / f"a.en{ext}", TGT, gz))
    assert ds["src"] == SRC and ds["tgt"] == TGT and ds["line"] == [1, 2, 3, 4]


def test_misaligned_files_give_both_counts(tmp_path):
    src, tgt = write(tmp_path / "a.de", SRC), write(tmp_path / "a.en", TGT[:3])
    with pytest.raises(DataError, match=r"a\.de: misaligned parallel files: the source has 4 lines but the target "
                                        r".*a\.en has 3"):
        read_aligned(src, tgt)


@pytest.mark.parametrize("gz", [False, True])
def test_tsv_without_and_with_header(tmp_path, gz):
    ext = ".gz" if gz else ""
    plain = write(tmp_path / f"p.tsv{ext}", [f"{s}\t{t}" for s, t in zip(SRC, TGT)], gz)
    ds = read_pair_table(plain)
    assert ds["src"] == SRC and ds["tgt"] == TGT
    # a header naming the columns picks them out of more columns, in any order
    rows = ["id\ten\tde"] + [f"{i}\t{t}\t{s}" for i, (s, t) in enumerate(zip(SRC, TGT))]
    ds = read_pair_table(write(tmp_path / f"h.tsv{ext}", rows, gz), src_key="de", tgt_key="en")
    assert ds["src"] == SRC and ds["tgt"] == TGT and ds["line"] == [2, 3, 4, 5]


def test_tsv_bad_column_count_names_line(tmp_path):
    path = write(tmp_path / "bad.tsv", ["a\tb", "c\td\te"])
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected 2 tab-separated columns \(source, target\), found 3"):
        read_pair_table(path)


@pytest.mark.parametrize("gz", [False, True])
def test_jsonl_with_nested_keys(tmp_path, gz):
    ext = ".gz" if gz else ""
    lines = [json.dumps({"id": i, "translation": {"de": s, "en": t}}, ensure_ascii=False)
             for i, (s, t) in enumerate(zip(SRC, TGT))]
    ds = read_pair_table(write(tmp_path / f"p.jsonl{ext}", lines, gz), "translation.de", "translation.en")
    assert ds["src"] == SRC and ds["tgt"] == TGT
    with pytest.raises(DataError, match=r"p\.jsonl.*:1: no field 'translation.fr' \(option data.tgt_key\)"):
        read_pair_table(str(tmp_path / f"p.jsonl{ext}"), "translation.de", "translation.fr")


def test_split_spec_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.validation: aligned files are given as \{src: PATH, tgt: PATH\}"):
        read_split({"src": "a"}, option="data.validation")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_split(write(tmp_path / "pairs.dat", ["a\tb"]))
    with pytest.raises(DataError, match="missing.de: file not found"):
        read_split({"src": str(tmp_path / "missing.de"), "tgt": str(tmp_path / "missing.en")})


def test_hub_dataset_offline_is_one_line_error():
    with pytest.raises(DataError) as err:
        load_hub_pairs("no-such-user/no-such-dataset", "train", None, "de", "en")
    assert "could not load hub dataset 'no-such-user/no-such-dataset'" in str(err.value)
    assert "\n" not in str(err.value)


def make_dm(tmp_path, **kw):
    train = {"src": write(tmp_path / "train.de", SRC * 5 + ["", "Nur Quelle."]),
             "tgt": write(tmp_path / "train.en", TGT * 5 + ["Only target.", ""])}
    val = {"src": write(tmp_path / "val.de", ["", "Ein Hund."]), "tgt": write(tmp_path / "val.en", ["", "A dog."])}
    kw.setdefault("tokenizer", {"kind": "bpe", "vocab_size": 200, "min_frequency": 1})
    return TranslationDataModule(train=train, validation=val, **kw)


def test_datamodule_batches_and_empty_lines(tmp_path):
    dm = make_dm(tmp_path, batch_size=4)
    dm.prepare()
    # training pairs with an empty side are skipped; evaluation keeps every line (for aligned BLEU)
    assert dm.num_examples == {"train": 20, "validation": 2}
    assert dm.src_tokenizer is dm.tgt_tokenizer  # joint
    batch = dm.splits["validation"].collate([0, 1])
    assert batch["sources"] == ["", "Ein Hund."] and batch["references"] == ["", "A dog."]
    assert batch["src"][0, 0] == EOS_ID and batch["lengths"][0] == 1  # an empty source is just </s>
    b = dm.splits["train"].collate([0, 1, 2])
    n = b["tgt_lengths"]
    assert b["tgt_in"][:, 0].eq(BOS_ID).all() and int(n.sum()) == b["num_tokens"]
    for i in range(3):
        assert b["tgt_out"][i, n[i] - 1] == EOS_ID and b["tgt_out"][i, n[i]:].eq(PAD_ID).all()
        assert b["tgt_in"][i, 1:n[i]].tolist() == b["tgt_out"][i, :n[i] - 1].tolist()
        assert b["src"][i, b["lengths"][i] - 1] == EOS_ID
    assert dm.tgt_tokenizer.decode(b["tgt_out"][0, :n[0]].tolist()) == TGT[0]  # detokenizes exactly
    assert "sources" not in b  # training batches carry ids only
    loader = dm.train_dataloader()
    assert sum(len(x["index"]) for x in loader) == 20
    inputs = dm.model_inputs()
    assert set(inputs) == {"src_tokenizer", "tgt_tokenizer", "max_src_length", "tgt_output_ids", "reader"} and inputs["max_src_length"] >= 5


def test_separate_vocabularies_sizes_and_lowercase(tmp_path):
    dm = make_dm(tmp_path, joint_vocab=False, tgt_vocab_size=60,
                 tokenizer={"kind": "bpe", "vocab_size": 80, "min_frequency": 1, "lowercase": True})
    dm.prepare()
    assert dm.src_tokenizer is not dm.tgt_tokenizer
    assert dm.src_tokenizer.vocab_size <= 80 and dm.tgt_tokenizer.vocab_size <= 60
    assert dm.tgt_tokenizer.decode(dm.tgt_tokenizer.encode("A Man.")) == "a man."
    with pytest.raises(ConfigError, match="data.tgt_vocab_size: applies to separate vocabularies only"):
        make_dm(tmp_path, tgt_vocab_size=60)


def test_vocabulary_is_cached_in_the_run_directory(tmp_path):
    run = tmp_path / "run"
    first = make_dm(tmp_path)
    first.prepare(run)
    again = make_dm(tmp_path)
    again.prepare(run)  # loads run/vocab.json instead of training again
    assert again.src_tokenizer.to_json() == first.src_tokenizer.to_json()
    assert again.tgt_tokenizer is again.src_tokenizer
    with pytest.raises(ConfigError, match="settings differ from the vocabulary saved"):
        make_dm(tmp_path, joint_vocab=False).prepare(run)


def test_max_length_filter_and_held_out_validation(tmp_path):
    long_src = " ".join(["Wort"] * 50) + "."
    train = {"src": write(tmp_path / "t.de", SRC * 10 + [long_src]), "tgt": write(tmp_path / "t.en", TGT * 10 + ["Word."])}
    dm = TranslationDataModule(train=train, max_length=20, val_fraction=0.1,
                               tokenizer={"kind": "word", "vocab_size": 100})
    dm.prepare()
    assert dm.num_examples["validation"] == 4
    assert dm.num_examples["train"] in (36, 37) and dm.max_src_length <= 20
    assert not dm.has_test


def test_no_training_data_is_a_config_error():
    with pytest.raises(ConfigError, match="data.train: no training data"):
        TranslationDataModule()


@pytest.mark.skipif(not (SHARED_DATA / "translation" / "multi30k" / "train.de").is_file(), reason="no shared Multi30k")
def test_reads_multi30k():
    root = SHARED_DATA / "translation" / "multi30k"
    ds = read_aligned(root / "test_2016_flickr.de", root / "test_2016_flickr.en")
    assert len(ds) == 1000 and ds["tgt"][0].startswith("A man in an orange hat")
