"""Readers on tricky files, scheme conversion on read, the data module's errors and encodings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nlpseq.data.conll import detect_scheme, read_conll, read_jsonl, read_tagged
from nlpseq.data.tagging import TaggingDataModule, TaggingFeaturizer, case_class, tokenize_text, train_tokenizer
from nlpseq.errors import ConfigError, DataError

CONLL_IOB1 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O


Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
Smith NNP I-NP B-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O
"""


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_column_file_with_docstart_blank_runs_and_no_final_blank(tmp_path):
    ds = read_conll(write(tmp_path, "a.conll", CONLL_IOB1), scheme="IOB1")
    assert ds["tokens"] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn", "Smith"],
                            ["BRUSSELS", "1996-08-22"]]
    assert ds["tags"][1] == ["I-PER", "I-PER", "B-PER"]
    assert ds["line"] == [3, 10, 14]  # line of each sentence's first token
    assert detect_scheme(ds["tags"]) == "IOB1"


def test_tabs_crlf_bom_trailing_spaces_and_columns(tmp_path):
    text = "\ufeffNew York\tNNP\tB-LOC\r\nis\tVBZ\tO\r\n\r\nhe\tPRP\tO \r\n"
    p = write(tmp_path, "t.tsv", text.encode("utf-8"), "wb")
    ds = read_conll(p, separator="tab", tag_column=2)
    assert ds["tokens"] == [["New York", "is"], ["he"]]  # tab mode: tokens may hold spaces
    assert ds["tags"] == [["B-LOC", "O"], ["O"]]  # trailing spaces after the last cell are dropped
    with pytest.raises(DataError, match=r"t.tsv:2: expected 4 columns \(like line 1\), found 3"):
        read_conll(write(tmp_path, "t.tsv", "a\tb\tO\t\nb\tc\tO\n"), separator="tab")
    ds = read_conll(write(tmp_path, "s.txt", "a  x  O\nb y B-PER   \n"), separator="space", token_column=0, tag_column=2)
    assert ds["tokens"] == [["a", "b"]] and ds["tags"] == [["O", "B-PER"]]


@pytest.mark.parametrize("text,match", [
    ("EU NNP I-ORG\nrejects O\n", r"bad.conll:2: expected 3 columns \(like line 1\), found 2"),
    ("EU B-ORG\nrejects B-\n", r"bad.conll:2: tag 'B-' is not valid in the IOB2 scheme"),
    ("EU S-ORG\n", r"bad.conll:1: tag 'S-ORG' is not valid in the IOB2 scheme"),
    ("EU\n", r"bad.conll:1: option data.tag_column=-1 is out of range|is the token column"),
    ("\n\n-DOCSTART- O\n\n", r"bad.conll: no sentences found"),
    ("", r"bad.conll: file is empty"),
])
def test_bad_column_files_name_file_and_line(tmp_path, text, match):
    with pytest.raises((DataError, ConfigError), match=match):
        read_conll(write(tmp_path, "bad.conll", text))


def test_binary_file_is_refused_with_line(tmp_path):
    with pytest.raises(DataError, match=r"b.conll:2: bytes that are not UTF-8"):
        read_conll(write(tmp_path, "b.conll", b"a O\n\xff\xfe O\n", "wb"))


def test_jsonl_reader(tmp_path):
    lines = [{"tokens": ["Angela", "Merkel"], "tags": ["B-PER", "I-PER"]}, {"tokens": [], "tags": []}]
    p = write(tmp_path, "a.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = read_tagged(p)
    assert ds["tokens"] == [["Angela", "Merkel"], []] and ds["line"] == [1, 2]
    for bad, match in [({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags"),
                       ({"tokens": ["a"]}, "no key 'tags'"),
                       ({"tokens": ["a"], "tags": [3]}, "'tags' must be a list of strings"),
                       ({"tokens": [""], "tags": ["O"]}, "token 1 is empty"),
                       ({"tokens": ["a"], "tags": ["X-PER"]}, "tag 'X-PER' is not valid")]:
        q = write(tmp_path, "b.jsonl", json.dumps(lines[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError, match=rf"b.jsonl:2: .*{match}"):
            read_jsonl(q)
    with pytest.raises(DataError, match=r"c.jsonl:1: invalid JSON"):
        read_jsonl(write(tmp_path, "c.jsonl", "{nope\n"))


def test_detect_scheme():
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "IOB2"
    assert detect_scheme([["I-PER", "B-PER", "O"]]) == "IOB1"
    assert detect_scheme([["S-PER", "O"]]) == "BIOES"
    assert detect_scheme([["O", "I-LOC"]]) == "IOB1"


def _dm(tmp_path, train, dev=None, test=None, **kw):
    paths = {"train": str(write(tmp_path, "train.conll", train))}
    if dev is not None:
        paths["validation"] = str(write(tmp_path, "dev.conll", dev))
    if test is not None:
        paths["test"] = str(write(tmp_path, "test.conll", test))
    dm = TaggingDataModule(**paths, **kw)
    dm.prepare()
    return dm


TRAIN = "Peter I-PER\nBlackburn I-PER\nSmith B-PER\nvisited O\nBonn I-LOC\n\nEU I-ORG\nsaid O\n"


def test_iob1_is_converted_to_the_training_scheme_on_read(tmp_path):
    dm = _dm(tmp_path, TRAIN, dev=TRAIN, scheme="IOB1", train_scheme="BIOES")
    assert dm.raw["train"]["tags"][0] == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
    assert dm.labels == ["O"] + [f"{p}-{t}" for t in ("LOC", "ORG", "PER") for p in "BIES"]
    inputs = dm.model_inputs()
    assert inputs["scheme"] == "BIOES" and inputs["data_scheme"] == "IOB1"
    dm2 = _dm(tmp_path, TRAIN, dev=TRAIN, scheme="auto", train_scheme="IOB2")
    assert dm2.model_inputs()["data_scheme"] == "IOB1"
    assert dm2.raw["train"]["tags"][0] == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]


def test_scheme_names_are_case_insensitive(tmp_path):
    dm = _dm(tmp_path, TRAIN, dev=TRAIN, scheme="iob1", train_scheme="bioes")
    inputs = dm.model_inputs()
    assert inputs["scheme"] == "BIOES" and inputs["data_scheme"] == "IOB1"
    assert dm.raw["train"]["tags"][0] == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]


def test_ill_formed_gold_becomes_well_formed_as_conlleval_reads_it(tmp_path):
    dm = _dm(tmp_path, "a O\nb I-PER\nc I-LOC\n", dev="a O\n", scheme="IOB2")
    assert dm.raw["train"]["tags"][0] == ["O", "S-PER", "S-LOC"]


def test_unknown_type_at_test_time_names_file_and_line(tmp_path):
    test = "x O\n\nParis B-LOC\nand O\nAcme B-FOO\n"
    with pytest.raises(DataError, match=r"test.conll:5: entity type 'FOO' \(token 'Acme'\) was never seen in training"):
        _dm(tmp_path, TRAIN, dev=TRAIN, test=test, scheme="IOB1")


def test_max_length_and_long_sentences(tmp_path):
    long = "".join(f"w{i} O\n" for i in range(40))
    with pytest.raises(DataError, match=r"dev.conll:1: sentence has 40 tokens, more than data.max_length=10"):
        _dm(tmp_path, TRAIN, dev=long, scheme="IOB1", max_length=10)
    dm = _dm(tmp_path, TRAIN, dev=long, scheme="IOB1")  # default: a recurrent tagger reads any length
    assert dm.splits["validation"].lengths.tolist() == [40]


def test_held_out_validation_and_empty_jsonl_sentences(tmp_path):
    rows = [{"tokens": ["a", "Bonn"], "tags": ["O", "B-LOC"]}] * 9 + [{"tokens": [], "tags": []}]
    p = write(tmp_path, "t.jsonl", "\n".join(json.dumps(r) for r in rows))
    dm = TaggingDataModule(train=str(p), val_fraction=0.25)
    dm.prepare()
    assert dm.num_examples == {"train": 7, "validation": 2}


def test_data_module_settings_fail_with_their_key(tmp_path):
    p = str(write(tmp_path, "train.conll", TRAIN))
    for kw, key in [({"scheme": "IOB3"}, "data.scheme"), ({"train_scheme": "auto"}, "data.train_scheme"),
                    ({"separator": "comma"}, "data.separator"), ({"format": "xml"}, "data.format"),
                    ({"hub": {"nam": "x"}}, "data.hub")]:
        with pytest.raises(ConfigError, match=key):
            TaggingDataModule(train=p, **kw)
    with pytest.raises(DataError, match="no entities"):
        _dm(tmp_path, "a O\nb O\n", dev="a O\n")


def test_vocabulary_is_cached_and_reused_by_the_run_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    paths = {"train": str(write(tmp_path, "train.conll", TRAIN)), "validation": str(tmp_path / "train.conll")}
    a = TaggingDataModule(**paths, scheme="IOB1")
    a.prepare(run)
    b = TaggingDataModule(**paths, scheme="IOB1")
    b.prepare(run)
    assert a.model_inputs() == b.model_inputs()


def test_featurizer_batches_distinct_words_and_case():
    tok = train_tokenizer([["The", "cat", "sat", "0000"]], kind="word", lowercase=True)
    f = TaggingFeaturizer(tok, ["<pad>", "<unk>", "a", "t", "c"], zero_digits=True)
    enc = f.encode([["The", "cat", "the"], ["cat", "1999"], []])
    batch = f.collate(enc, [0, 1])
    assert batch["lengths"].tolist() == [3, 2]
    assert batch["word_ids"][0, 0] == batch["word_ids"][0, 2]  # lower-cased: The == the
    assert batch["word_ids"][1, 1] == f.word_id("2024") != 1  # digits -> 0: 1999 and 2024 are 0000
    assert batch["char_ids"].size(0) == 4  # distinct words: The, cat, the, 1999
    rows = batch["char_ids"][batch["word_chars"][0, 1]]
    assert rows.tolist()[:3] == [4, 2, 3]  # c a t
    assert batch["case_ids"][0].tolist() == [case_class("The"), case_class("cat"), case_class("the")]
    assert case_class("IBM") != case_class("Ibm") != case_class("ibm") != case_class("1-0")


def test_raw_text_tokenizer_offsets():
    text = "Angela Merkel's U.S. trip cost $3,000.50 in 1996-08-22, didn't it? O'Neill agreed."
    pairs = tokenize_text(text)
    assert all(text[s:e] == t for t, (s, e) in pairs)
    assert [t for t, _ in pairs] == ["Angela", "Merkel", "'s", "U.S.", "trip", "cost", "$", "3,000.50", "in",
                                     "1996-08-22", ",", "did", "n't", "it", "?", "O'Neill", "agreed", "."]
    assert tokenize_text("  ") == []
    assert np.array_equal(np.array([s for _, (s, _) in tokenize_text("a  b")]), [0, 3])
