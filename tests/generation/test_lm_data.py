"""Language-model data: readers, contiguous splits, stream windows (batchify, order, DDP), lines batches."""
import json

import numpy as np
import pytest
import torch
from gen_helpers import datamodule, write

from nlpseq.data.lm import IGNORE, StreamWindows, WindowSampler, batchify, read_documents
from nlpseq.errors import ConfigError, DataError
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, PAD_ID

pytestmark = pytest.mark.usefixtures("one_thread")


def windows(data: np.ndarray, seq_len: int, **kw):
    sampler = WindowSampler(data.shape[1], seq_len, **kw)
    ds = StreamWindows(data, seq_len)
    return [ds[s] for s in sampler], sampler


def test_batchify_rows_are_contiguous_and_windows_cover_them_in_order():
    tokens = np.arange(10, 10 + 103)
    data = batchify(tokens, 4)
    assert data.shape == (4, 25) and (data[1] == tokens[25:50]).all()
    batches, sampler = windows(data, 7)
    assert len(batches) == len(sampler) == 4  # ceil(24 / 7)
    inputs = torch.cat([b["input_ids"] for b in batches], 1)
    targets = torch.cat([b["targets"] for b in batches], 1)
    assert torch.equal(inputs, torch.from_numpy(data[:, :-1]))  # every position once, in order
    assert torch.equal(targets, torch.from_numpy(data[:, 1:]))  # next token
    assert [b["input_ids"].shape[1] for b in batches] == [7, 7, 7, 3]


def test_ddp_ranks_take_equal_disjoint_contiguous_slices():
    tokens = np.arange(10, 10 + 101)
    r0, r1 = batchify(tokens, 2, num_replicas=2, rank=0), batchify(tokens, 2, num_replicas=2, rank=1)
    assert r0.shape == r1.shape == (2, 25)
    assert (r0.reshape(-1) == tokens[:50]).all() and (r1.reshape(-1) == tokens[50:100]).all()


def test_random_offset_moves_window_boundaries_but_not_their_count():
    data = batchify(np.arange(10, 10 + 400), 2)
    starts = []
    for epoch in range(6):
        sampler = WindowSampler(data.shape[1], 10, random_offset=True, seed=3)
        sampler.set_epoch(epoch)
        starts.append(list(sampler))
        assert len(starts[-1]) == len(sampler) == 19
        assert starts[-1][-1] + 10 + 1 <= data.shape[1]  # full windows with their targets
    assert len({s[0] for s in starts}) > 1


def test_target_after_end_symbol_is_not_scored():
    data = np.array([[BOS_ID, 5, 6, EOS_ID, BOS_ID, 7, 8, EOS_ID]])
    batch = StreamWindows(data, 10)[0]
    assert batch["targets"].tolist() == [[5, 6, EOS_ID, IGNORE, 7, 8, EOS_ID]] and batch["num_tokens"] == 6


def test_readers(tmp_path):
    text = write(tmp_path / "a.txt", "First line\r\n\nthird\n")
    docs = read_documents(text)
    assert docs.texts == ["First line\n\nthird\n"]
    lines = read_documents(text, "lines")
    assert lines.texts == ["First line", "third"] and lines.where[1][1] == 3
    rows = write(tmp_path / "b.jsonl", '{"text": "hi", "mood": "up"}\n\n{"text": "ho", "mood": 2}\n')
    docs = read_documents(rows, condition_column="mood")
    assert docs.texts == ["hi", "ho"] and docs.conditions == ["up", "2"]
    tsv = write(tmp_path / "c.tsv", "sentence\tx\nhello there\t1\n")
    assert read_documents(tsv, text_column=["text", "sentence"]).texts == ["hello there"]


def test_single_document_is_cut_by_characters(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(999)) + "\n"
    dm = datamodule(tmp_path, text, split_fractions=[0.9, 0.1])
    assert dm.raw["train"].texts[0] == text[:900] and dm.raw["validation"].texts[0] == text[900:]
    # the stream is <s> text </s>, and the character vocabulary comes from the training part only
    assert dm.streams["train"][0] == BOS_ID and dm.streams["train"][-1] == EOS_ID
    assert len(dm.streams["train"]) == 902
    assert dm.tokenizer.decode(dm.streams["validation"].tolist()) == text[900:-1]  # "\n" only in validation: <unk>
    dm3 = datamodule(tmp_path, text, split_fractions=[0.8, 0.1, 0.1])
    assert dm3.has_test and dm3.raw["test"].texts[0] == text[900:]


def test_lines_mode_batches_with_conditions(tmp_path):
    rows = "".join(json.dumps({"text": t, "style": s}) + "\n" for t, s in
                   [("ab", "x"), ("abcd", "y"), ("c", "x"), ("dd", "y")])
    dm = datamodule(tmp_path, rows, rows, name="t.jsonl", mode="lines", condition_column="style", batch_size=4)
    assert dm.model_inputs()["conditions"] == ["x", "y"]
    batch = next(iter(dm.train_dataloader()))
    for inputs, targets, n, cond in zip(batch["input_ids"], batch["targets"], batch["lengths"], batch["conditions"]):
        n = int(n)
        assert inputs[0] == BOS_ID and targets[n - 1] == EOS_ID
        assert torch.equal(inputs[1:n], targets[:n - 1])
        assert (inputs[n:] == PAD_ID).all() and (targets[n:] == IGNORE).all()
        text = dm.tokenizer.decode(inputs[1:n].tolist())
        assert {"ab": 0, "abcd": 1, "c": 0, "dd": 1}[text] == int(cond)


@pytest.mark.parametrize("kwargs,match", [
    ({"condition_column": "style"}, "data.condition_column: conditions start each example's state, so they need"),
    ({"split_fractions": [0.5, 0.6]}, "data.split_fractions: must sum to 1"),
    ({"split_fractions": [1.0]}, "data.split_fractions: expected 2"),
    ({"mode": "windows"}, "data.mode: 'windows' is not one of stream, lines"),
    ({"seq_len": 0}, "data.seq_len: must be >= 1"),
])
def test_bad_settings_name_the_key(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        datamodule(tmp_path, "some text\n", **kwargs)


def test_bad_data_names_the_file(tmp_path):
    with pytest.raises(DataError, match="file is empty"):
        datamodule(tmp_path, "")
    with pytest.raises(ConfigError, match="needs a table"):
        datamodule(tmp_path, "abc\n", mode="lines", condition_column="style")
    rows = json.dumps({"text": "a", "style": "x"}) + "\n"
    with pytest.raises(DataError, match=r"valid.jsonl:1: condition 'zzz' was never seen in training"):
        datamodule(tmp_path, rows, json.dumps({"text": "a", "style": "zzz"}) + "\n", name="t.jsonl", mode="lines",
                   condition_column="style")
    with pytest.raises(DataError, match="no column 'txt'"):
        datamodule(tmp_path, rows, name="t.jsonl", text_column="txt")
    dm = datamodule(tmp_path, "abcdefgh" * 3, "abc\n", batch_size=64)
    with pytest.raises(ConfigError, match="data.batch_size: 64 rows"):
        dm.train_dataloader()


def test_hub_dataset_splits_are_read_through_the_hub_loader(monkeypatch):
    import datasets

    import nlpseq.data.lm as lm

    calls = []

    def fake_hub(name, split, subset, text_column, label_column):
        calls.append((name, split, subset, text_column, label_column))
        texts = {"train": ["First Citizen:\nBefore we proceed\n"], "validation": ["Citizen:\nwe proceed\n"]}[split]
        return datasets.Dataset.from_dict({"text": texts, "line": list(range(1, len(texts) + 1))})

    monkeypatch.setattr(lm, "load_hub_table", fake_hub)
    dm = lm.LanguageModelDataModule(hub={"name": "tiny_shakespeare", "splits": {"test": None}},
                                    tokenizer={"kind": "char"}, seq_len=4, batch_size=2)
    dm.prepare(None)
    assert [c[:2] for c in calls] == [("tiny_shakespeare", "train"), ("tiny_shakespeare", "validation")]
    assert dm.tokenizer.decode(dm.streams["validation"].tolist()) == "Citizen:\nwe proceed\n"
    assert not dm.has_test and next(iter(dm.train_dataloader()))["input_ids"].shape == (2, 4)
