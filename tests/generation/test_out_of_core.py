"""Out-of-core stream data (nlpseq.data.token_store): the same vocabulary, ids and batches as the in-memory
path, chunk boundaries anywhere, the run directory's id cache, DDP slices of the memmap, one-line errors."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from gen_helpers import write

from nlpseq.data import token_store
from nlpseq.data.lm import LanguageModelDataModule, batchify, read_documents
from nlpseq.errors import ConfigError, DataError
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, build_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = Path(__file__).parents[2] / "tasks" / "generation" / "sample"
# multi-byte characters (2, 3 and 4 bytes), a decomposed é, Hangul jamo that NFC composes, CRLF, a BOM
ODD = "\ufeffZoë e\u0301 café\r\n  ΣΑΣ σας\r\r\nx  y\t\tz 日本語 \u1100\u1161 🙂\n\nlast line\r"


def dm(out_of_core, run_dir=None, **kw):
    kw.setdefault("train", str(SAMPLE / "train.txt"))
    kw.setdefault("validation", str(SAMPLE / "valid.txt"))
    kw.setdefault("tokenizer", {"kind": "char"})
    d = LanguageModelDataModule(out_of_core=out_of_core, seq_len=50, batch_size=4, eval_batch_size=3, **kw)
    d.prepare(run_dir)
    return d


def batches(loader, epoch=0):
    loader.sampler.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("kw", [
    {},
    {"validation": None, "split_fractions": [0.8, 0.1, 0.1]},
    {"tokenizer": {"kind": "bpe", "vocab_size": 200, "min_frequency": 2}},
    {"tokenizer": {"kind": "word", "lowercase": True}},
])
def test_same_vocabulary_ids_and_batches_as_in_memory(kw, monkeypatch):
    monkeypatch.setattr(token_store, "CHUNK_BYTES", 4096)  # many chunks even for the small sample
    monkeypatch.setattr(token_store, "PIECE_CHARS", 500)
    mem, ooc = dm(False, **kw), dm(True, **kw)
    assert ooc.sources and not mem.sources
    assert ooc.tokenizer.to_json() == mem.tokenizer.to_json()
    assert sorted(ooc.streams) == sorted(mem.streams)
    for split, ids in ooc.streams.items():
        assert isinstance(ids, np.memmap) and ids.dtype == (np.uint8 if ooc.tokenizer.vocab_size <= 256 else np.uint16)
        assert np.array_equal(ids, mem.streams[split])
    for epoch in (0, 1):  # random_offset: a different window start each epoch
        for a, b in zip(batches(mem.train_dataloader(), epoch), batches(ooc.train_dataloader(), epoch), strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]
                                                for k in a)
    for a, b in zip(mem.val_dataloader(), ooc.val_dataloader(), strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["targets"], b["targets"])
    assert ooc.bench_inputs(3) == mem.bench_inputs(3)


@pytest.mark.parametrize("mode", ["stream", "lines"])
@pytest.mark.parametrize("tokenizer", [{"kind": "char"}, {"kind": "bpe", "vocab_size": 200, "min_frequency": 2},
                                       {"kind": "word", "lowercase": True}])
def test_in_memory_path_equals_the_tokenizer_on_whole_documents(tokenizer, mode, tmp_path, monkeypatch):
    """The in-memory path trains and encodes in bounded pieces (memory); the result is what the HF tokenizer
    gives on the whole documents: the same vocabulary and the same ids, <s> ... </s> per document."""
    monkeypatch.setattr(token_store, "PIECE_CHARS", 300)  # cut the long documents into many pieces
    docs = [(SAMPLE / "train.txt").read_text(encoding="utf-8")[:5000], "", ODD.replace("\ufeff", ""), "short one",
            " ".join(["word"] * 400)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    d = LanguageModelDataModule(train=str(path), validation=str(path), tokenizer=tokenizer, mode=mode,
                                seq_len=20, batch_size=2, out_of_core=False)
    d.prepare(None)
    reference = build_tokenizer(docs, **tokenizer)
    assert d.tokenizer.to_json() == reference.to_json()
    expected = [[BOS_ID, *ids, EOS_ID] for ids in reference.encode_batch(docs)]
    got = d._encode(read_documents(str(path)))
    assert [list(map(int, g)) for g in got] == expected


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64])
@pytest.mark.parametrize("cfg", [{"kind": "char"}, {"kind": "char", "lowercase": True}, {"kind": "word"},
                                 {"kind": "bpe", "vocab_size": 120}])
def test_chunk_boundaries_inside_characters_and_words(tmp_path, monkeypatch, chunk_bytes, cfg):
    path = write(tmp_path / "odd.txt", "")
    path.write_bytes((ODD * 20).encode("utf-8"))  # no newline translation: the \r\n stay
    whole = read_documents(path).texts[0]
    assert "".join(token_store.read_chunks(path, chunk_bytes)) == whole
    monkeypatch.setattr(token_store, "PIECE_CHARS", 3)  # pieces of a few characters: cuts in every word
    ref = build_tokenizer([whole], **cfg)
    source = token_store.TextSource(str(path), chunk_bytes=chunk_bytes)
    assert token_store.train_tokenizer(source, cfg).to_json() == ref.to_json()
    ids = np.concatenate(list(token_store.Encoder(ref).stream(source)))
    assert ids.tolist() == [BOS_ID, *ref.encode(whole), EOS_ID]


def test_pieces_are_cut_only_where_encoding_is_additive():
    text = "ab cd\nef  gh\n" * 3
    for kind, ok in (("char", lambda p: p.endswith("\n")), ("bpe", lambda p: p.startswith(" "))):
        parts = list(token_store.pieces([text[:4], text[4:9], text[9:]], kind, size=4))
        assert "".join(parts) == text and len(parts) > 3
        assert all(ok(p) for p in (parts[:-1] if kind == "char" else parts[1:]))


def test_id_cache_is_reused_and_encoded_again_when_the_file_changes(tmp_path, monkeypatch):
    train = write(tmp_path / "train.txt", (SAMPLE / "train.txt").read_text(encoding="utf-8"))
    first = dm(True, tmp_path / "run", train=str(train))
    ids = tmp_path / "run" / "cache" / "train.ids"
    assert ids.is_file() and (tmp_path / "run" / "cache" / "validation.json").is_file()
    assert len(first.streams["train"]) == ids.stat().st_size  # a byte per id: a character vocabulary

    def fail(*a, **k):
        raise AssertionError("encoded again")

    with monkeypatch.context() as m:  # resumed run / DDP worker: the cached ids, not a new encoding
        m.setattr(token_store.Encoder, "stream", fail)
        again = dm(True, tmp_path / "run", train=str(train))
        assert np.array_equal(again.streams["train"], first.streams["train"])
    with open(train, "a", encoding="utf-8") as f:
        f.write("KING:\nA new line.\n")
    changed = dm(True, tmp_path / "run", train=str(train))  # same vocabulary (vocab.json), new ids
    assert len(changed.streams["train"]) == len(first.streams["train"]) + len("KING:\nA new line.\n")
    assert changed.tokenizer.decode(changed.streams["train"][-19:].tolist()) == "KING:\nA new line.\n"
    # the same size but a new modification time also counts as a change
    os.utime(train, ns=(1, 1))
    assert token_store.open_ids(ids.parent, "train", token_store.cache_key(changed.sources["train"],
                                                                           changed.tokenizer)) is None


def test_ddp_slices_of_the_memmap_equal_the_in_memory_slices_and_copy_nothing():
    mem, ooc = dm(False), dm(True)
    for rank in (0, 1, 2):
        a = batchify(mem.streams["train"], 4, num_replicas=3, rank=rank)
        b = batchify(ooc.streams["train"], 4, num_replicas=3, rank=rank)
        assert np.array_equal(a, b) and np.shares_memory(b, ooc.streams["train"])
        assert np.shares_memory(a, mem.streams["train"])


def test_auto_switches_on_for_large_plain_text_only(monkeypatch):
    assert not dm("auto").sources  # the sample is small
    monkeypatch.setattr(token_store, "AUTO_BYTES", 1000)
    assert sorted(dm("auto").sources) == ["train", "validation"]
    styles = str(SAMPLE / "styles_train.jsonl")
    assert not dm("auto", train=styles, validation=None).sources  # a table: read as before


@pytest.mark.parametrize("kw,match", [
    ({"out_of_core": "yes"}, "data.out_of_core: expected auto, true or false"),
    ({"out_of_core": True, "mode": "lines"}, "data.out_of_core: needs a plain-text training file"),
    ({"out_of_core": True, "train": "x.jsonl"}, "data.out_of_core: needs a plain-text training file"),
])
def test_bad_settings(kw, match):
    kw.setdefault("train", "x.txt")
    with pytest.raises(ConfigError, match=match):
        LanguageModelDataModule(**kw)


@pytest.mark.parametrize("data,where", [
    (b"good line\n" * 3 + b"caf\xc3\n", "bad.txt:4: bytes that are not UTF-8 at column 4"),
    (b"good\n" * 2 + b"\xe6\x97\xa5 \xff x\nmore\n", "bad.txt:3: bytes that are not UTF-8 at column 5"),
    (b"ok\nN\x00L\n\xff\n", "bad.txt:2: NUL byte in line"),
    (b"ok\nok\n\xff N\x00L\n", "bad.txt:3: bytes that are not UTF-8 at column 1"),
    (b"", "bad.txt: file is empty"),
    ("hi\n".encode("utf-16"), "bad.txt: the file is UTF-16"),
])
def test_bad_input_names_file_and_line_as_the_in_memory_reader(tmp_path, data, where):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(DataError) as in_memory:
        read_documents(path)
    for chunk_bytes in (1, 4, 1 << 20):  # the bad byte in a later chunk than the line's start, or not
        with pytest.raises(DataError) as chunked:
            list(token_store.read_chunks(path, chunk_bytes))
        assert str(chunked.value) == str(in_memory.value) and where in str(chunked.value)
    with pytest.raises(DataError, match="bad.txt"):
        dm(True, train=str(path))


def test_a_ddp_worker_waits_for_the_first_process_ids(tmp_path):
    import threading

    source = token_store.TextSource(str(SAMPLE / "valid.txt"))
    tok = build_tokenizer([(SAMPLE / "valid.txt").read_text(encoding="utf-8")], kind="char")
    writer = threading.Timer(1.0, token_store.encode_to_file, (source, tok, tmp_path, "validation"))
    writer.start()  # the first process, a moment later
    ids = token_store.encode_to_file(source, tok, tmp_path, "validation", wait=True, patience=30)
    writer.join()
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    # nobody writing: a worker gives up waiting after `patience` and encodes the ids itself
    other = token_store.encode_to_file(source, tok, tmp_path / "alone", "validation", wait=True, patience=0.2)
    assert np.array_equal(other, ids)


def test_ids_beyond_a_byte_are_stored_as_uint16(tmp_path):
    text = "".join(chr(0x400 + i) + " " for i in range(300)) * 3 + "\n"  # 301 characters + 4 specials
    train = write(tmp_path / "big_vocab.txt", text)
    mem, ooc = (dm(flag, train=str(train), validation=str(train)) for flag in (False, True))
    assert ooc.streams["train"].dtype == np.uint16 and ooc.tokenizer.vocab_size > 256
    assert np.array_equal(ooc.streams["train"], mem.streams["train"])
    assert torch.equal(next(iter(ooc.train_dataloader()))["input_ids"], next(iter(mem.train_dataloader()))["input_ids"])
