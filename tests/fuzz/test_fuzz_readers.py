"""Fuzzing every data reader with malformed and odd files (hypothesis).

Each example writes one file (bytes: mixed line endings, BOMs, blank and huge lines, NUL bytes,
invalid UTF-8, lone surrogates as CESU bytes or JSON escapes, emoji, RTL, combining and zero-width
characters, wrong column counts, mixed separators) and hands it to the readers of that format. The
property: the file loads, with consistent content (tokens and tags of equal length, labels non-empty,
every string valid Unicode ...), or the reader raises an NlpseqError with a one-line message.

N_INPUTS examples per reader (each test feeds one generated file to several readers of that format);
the data modules (vocabulary building and encoding on top of the readers) get N_DATAMODULE.
Set NLPSEQ_FUZZ_RANDOM=1 to draw new examples instead of the fixed (derandomized) ones, and
NLPSEQ_FUZZ_SCALE=N for N times as many.
"""
from __future__ import annotations

import gzip
import json
import os
import random

import pytest
from fuzz_helpers import (SUPPRESS, TAGS, TEXTS, TEXTS_S, file_bytes, json_line_maker, outcome, pool,
                          print_stats, rand_cell, temp_dir, utf8_ok, write)
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpseq.data.conll import read_conll, read_jsonl
from nlpseq.data.lm import Documents, read_documents
from nlpseq.data.parallel import read_aligned, read_pair_table
from nlpseq.data.tables import load_table
from nlpseq.metrics.schemes import tag_error

SCALE = int(os.environ.get("NLPSEQ_FUZZ_SCALE", "1"))  # e.g. 20 for a long exploration run
N_INPUTS = 1000 * SCALE      # generated files per reader
N_DATAMODULE = 60 * SCALE    # generated training files per data module (each builds a vocabulary)
FUZZ = settings(max_examples=N_INPUTS, deadline=None, suppress_health_check=SUPPRESS, database=None,
                derandomize=os.environ.get("NLPSEQ_FUZZ_RANDOM") != "1")
TMP = temp_dir("nlpseq_fuzz_files_")  # rewritten by every example


# ---------------------------------------------------------------- checks of what loaded

def check_rows_in_order(lines) -> None:
    assert all(isinstance(n, int) and n >= 1 for n in lines) and list(lines) == sorted(lines)


# (ds[:] reads the columns at once: iterating a Dataset column formats row by row and is slow)
def check_tagged(ds, scheme: str, no_space=None) -> None:
    cols = ds[:]
    assert len(ds) >= 1
    for tokens, tags in zip(cols["tokens"], cols["tags"]):
        assert len(tokens) == len(tags) >= 1
        for tok in tokens:
            assert isinstance(tok, str) and tok and utf8_ok(tok)
            assert no_space is None or not no_space(tok), repr(tok)
        for tag in tags:
            assert tag_error(tag, "BIOES" if scheme == "auto" else scheme) is None
    check_rows_in_order(cols["line"])


def check_table(ds, labelled: bool) -> None:
    cols = ds[:]
    assert len(ds) >= 1
    for text in cols["text"]:
        assert isinstance(text, str) and utf8_ok(text)
    if labelled:
        assert all(isinstance(x, str) and x and x == x.strip() and utf8_ok(x) for x in cols["label"])
    check_rows_in_order(cols["line"])


def check_pairs(ds, tsv: bool) -> None:
    cols = ds[:]
    assert len(ds) >= 1
    for s, t in zip(cols["src"], cols["tgt"]):
        assert isinstance(s, str) and isinstance(t, str) and utf8_ok(s) and utf8_ok(t)
        assert not tsv or ("\t" not in s and "\t" not in t)
    check_rows_in_order(cols["line"])


def check_documents(docs: Documents, conditions: bool = False) -> None:
    assert isinstance(docs, Documents) and len(docs) >= 1 and len(docs.where) == len(docs)
    assert all(isinstance(t, str) and utf8_ok(t) for t in docs.texts)
    if conditions:
        assert len(docs.conditions) == len(docs) and all(c and c == c.strip() for c in docs.conditions)
    else:
        assert docs.conditions is None


# ---------------------------------------------------------------- column files (CoNLL)

SPECIAL_LINES = ["-DOCSTART- -X- O O", "-DOCSTART-", " ", "\t", "x\t", "\tO", "a b c d e f", "O"]


def _column_line(r: random.Random) -> str:
    if r.random() < 0.06:
        return r.choice(SPECIAL_LINES)
    n = r.choice([1, 2, 2, 2, 3, 4])
    parts = [rand_cell(r) for _ in range(n - 1)] + [r.choice(TAGS)]
    sep = r.choice(["\t", " "]) if r.random() < 0.8 else None  # None: mixed separators
    seps = [sep or r.choice([" ", "\t", "  ", " \t", "\u00a0", "\t\t", "\u3000"]) for _ in parts]
    return "".join(p + q for p, q in zip(parts, seps))[: -len(seps[-1])]


COLUMN_LINE = pool(_column_line, 10)


@FUZZ
@given(data=file_bytes(COLUMN_LINE), separator=st.sampled_from(["auto", "auto", "space", "tab"]),
       scheme=st.sampled_from(["IOB2", "IOB1", "BIOES", "auto"]), docstart=st.booleans(),
       columns=st.sampled_from([(0, -1), (0, -1), (0, 1), (1, 0), (-2, -1), (0, 2)]))
def test_column_files(data, separator, scheme, docstart, columns):
    path = write(TMP, "data.conll", data)
    ds = outcome(read_conll, path, columns[0], columns[1], separator, scheme, docstart)
    if ds is not None:
        spaces = {"auto": str.isspace, "space": lambda c: c == " ", "tab": lambda c: c == "\t"}[separator]
        check_tagged(ds, scheme, lambda tok: any(spaces(c) for c in tok))


# ---------------------------------------------------------------- TSV: tables, parallel text, LM tables

HEADERS = ["text\tlabel", "label\ttext", "text", "id\ttext\tlabel", "sentence\tlabel", "src\ttgt",
           "text\tlabel\t", "\ufefftext\tlabel", "text,label", "TEXT\tLABEL", "text\ttext\tlabel"]


def _tsv_line(r: random.Random) -> str:
    n = r.choice([1, 2, 2, 2, 2, 3, 4])
    sep = "\t" if r.random() < 0.85 else r.choice([",", " \t", "\t\t"])
    return sep.join(rand_cell(r) for _ in range(n))


TSV_LINE = pool(_tsv_line, 11)
TSV_FILE = st.builds(lambda head, end, body: head.encode("utf-8", "surrogatepass") + end + body,
                     st.one_of(st.sampled_from(HEADERS[:3]), st.sampled_from(HEADERS), TSV_LINE),
                     st.sampled_from([b"\n", b"\r\n", b"\n", b""]), file_bytes(TSV_LINE))


@FUZZ
@given(data=TSV_FILE, text_column=st.sampled_from(["text", ["sentence", "text"], "label"]), labelled=st.booleans())
def test_tsv_files(data, text_column, labelled):
    path = write(TMP, "data.tsv", data)
    ds = outcome(load_table, path, text_column, "label" if labelled else None, "tsv")
    if ds is not None:
        check_table(ds, labelled)
    ds = outcome(read_pair_table, path, "text", "label", "tsv")  # parallel text: TSV pairs
    if ds is not None:
        check_pairs(ds, tsv=True)
    docs = outcome(read_documents, path, "tsv", text_column, "label" if labelled else None)
    if docs is not None:
        check_documents(docs, labelled)


# ---------------------------------------------------------------- CSV tables

def _csv_line(r: random.Random) -> str:
    def cell() -> str:
        text, how = rand_cell(r), r.randrange(8)
        return ['"' + text.replace('"', '""') + '"', '"' + text, text + '"x'][how] if how < 3 else text

    sep = "," if r.random() < 0.85 else r.choice([";", "\t", ", "])
    return sep.join(cell() for _ in range(r.choice([1, 2, 2, 2, 3, 4])))


CSV_FILE = st.builds(lambda head, body: head.encode() + b"\n" + body,
                     st.sampled_from(["text,label", "label,text", '"text","label"', "text", "id,text,label",
                                      "text;label", "text\tlabel", "text,label,"]), file_bytes(pool(_csv_line, 12)))


@FUZZ
@given(data=CSV_FILE, labelled=st.booleans())
def test_csv_files(data, labelled):
    path = write(TMP, "data.csv", data)
    ds = outcome(load_table, path, "text", "label" if labelled else None, "csv")
    if ds is not None:
        check_table(ds, labelled)
    docs = outcome(read_documents, path, "csv", "text", "label" if labelled else None)
    if docs is not None:
        check_documents(docs, labelled)


# ---------------------------------------------------------------- JSON lines: tables, tagged tokens, pairs, LM

def _tokens(r: random.Random) -> list[str]:
    return [rand_cell(r) for _ in range(r.randint(0, 5))]


def _tagged(r: random.Random) -> str:
    """Equal-length tokens and well-formed tags, so that read_jsonl's deep checks run."""
    tokens = _tokens(r)
    return json.dumps({"tokens": tokens, "tags": [r.choice(TAGS[:7]) for _ in tokens], "text": "x", "label": "pos"})


JSONL_LINE = st.one_of(pool(_tagged, 13), pool(json_line_maker({
    "text": rand_cell, "label": lambda r: r.choice(["pos", "neg", " pos ", ""]) if r.random() < 0.5 else rand_cell(r),
    "tokens": _tokens, "tags": lambda r: [r.choice(TAGS) for _ in range(r.randint(0, 5))],
    "src": rand_cell, "tgt": rand_cell, "translation": lambda r: {"de": rand_cell(r), "en": rand_cell(r)}}), 14))


@FUZZ
@given(data=file_bytes(JSONL_LINE), scheme=st.sampled_from(["IOB2", "BIOES", "auto"]),
       src_key=st.sampled_from(["src", "translation.de"]), labelled=st.booleans())
def test_jsonl_files(data, scheme, src_key, labelled):
    path = write(TMP, "data.jsonl", data)
    ds = outcome(load_table, path, "text", "label" if labelled else None, "jsonl")
    if ds is not None:
        check_table(ds, labelled)
    ds = outcome(read_jsonl, path, "tokens", "tags", scheme)
    if ds is not None:  # read_jsonl keeps sentences without tokens (the data module skips them)
        cols = ds[:]
        for tokens, tags in zip(cols["tokens"], cols["tags"]):
            assert len(tokens) == len(tags) and all(t and utf8_ok(t) for t in tokens)
            assert all(tag_error(t, "BIOES" if scheme == "auto" else scheme) is None for t in tags)
    ds = outcome(read_pair_table, path, src_key, "tgt" if src_key == "src" else "translation.en", "jsonl")
    if ds is not None:
        check_pairs(ds, tsv=False)
    docs = outcome(read_documents, path, "jsonl", "text", "label" if labelled else None)
    if docs is not None:
        check_documents(docs, labelled)


# ---------------------------------------------------------------- plain text: LM documents, aligned files

TEXT_FILE = file_bytes(TEXTS_S)


@FUZZ
@given(src=TEXT_FILE, tgt=TEXT_FILE)
def test_plain_text_files(src, tgt):
    a, b = write(TMP, "src.txt", src), write(TMP, "tgt.txt", tgt)
    for fmt in ("text", "lines"):
        docs = outcome(read_documents, a, fmt)
        if docs is not None:
            check_documents(docs)
            assert fmt == "lines" or len(docs) == 1
    ds = outcome(read_aligned, a, b)
    if ds is not None:
        check_pairs(ds, tsv=False)


# ---------------------------------------------------------------- gzip: every reader reads .gz files

GZ_TAILS = [b"x", b"\x00" * 3, gzip.compress(b"more\n", mtime=0), b"\x1f\x8b"]


def _gz(data: bytes, flags: int) -> bytes:
    """gzip-compressed `data`, or (flags decide) plain, truncated, with a trailing tail, or a flipped byte."""
    flags, how = divmod(flags, 7)
    flags, tail = divmod(flags, len(GZ_TAILS))
    at = flags % 1001 / 1000
    packed = gzip.compress(data, mtime=0)
    if how == 1:
        return data  # not compressed at all
    if how == 2:
        return packed[:int(at * len(packed))]  # truncated
    if how == 3:
        return packed + GZ_TAILS[tail]  # trailing garbage or a second member
    if how == 4:  # a flipped byte: bad header, bad deflate data or bad CRC
        i = int(at * (len(packed) - 1))
        return packed[:i] + bytes([packed[i] ^ 0x55]) + packed[i + 1:]
    return packed


GZ_FILE = st.builds(_gz, file_bytes(st.one_of(TSV_LINE, TEXTS, COLUMN_LINE)), st.integers(0, 2**24))


@FUZZ
@given(data=GZ_FILE, other=GZ_FILE)
def test_gzip_files(data, other):
    tsv, txt = write(TMP, "pairs.tsv.gz", data), write(TMP, "src.txt.gz", data)
    conll, upper = write(TMP, "data.conll.gz", data), write(TMP, "TGT.TXT.GZ", other)
    ds = outcome(read_pair_table, tsv)
    if ds is not None:
        check_pairs(ds, tsv=True)
    ds = outcome(read_aligned, txt, upper)
    if ds is not None:
        check_pairs(ds, tsv=False)
    docs = outcome(read_documents, txt, "lines")
    if docs is not None:
        check_documents(docs)
    ds = outcome(read_conll, conll)
    if ds is not None:
        check_tagged(ds, "IOB2", lambda tok: any(c.isspace() for c in tok))


# ---------------------------------------------------------------- the full data-module path (fewer examples)

DM = settings(FUZZ, max_examples=N_DATAMODULE)


def _prepare(cls, **kw):
    dm = outcome(cls, **kw)
    if dm is not None:
        outcome(dm.prepare)


@DM
@given(data=TSV_FILE)
def test_classification_datamodule(data):
    from nlpseq.data.classification import ClassificationDataModule

    _prepare(ClassificationDataModule, train=str(write(TMP, "train.tsv", data)), val_fraction=0.5)


@DM
@given(data=file_bytes(COLUMN_LINE, max_lines=14), scheme=st.sampled_from(["IOB2", "auto"]))
def test_tagging_datamodule(data, scheme):
    from nlpseq.data.tagging import TaggingDataModule

    _prepare(TaggingDataModule, train=str(write(TMP, "train.conll", data)), scheme=scheme, val_fraction=0.5)


@DM
@given(data=TSV_FILE)
def test_translation_datamodule(data):
    from nlpseq.data.parallel import TranslationDataModule

    _prepare(TranslationDataModule, train=str(write(TMP, "train.tsv", data)), val_fraction=0.5,
             tokenizer={"kind": "bpe", "vocab_size": 60})


@DM
@given(data=file_bytes(TEXTS), mode=st.sampled_from(["stream", "lines"]))
def test_language_model_datamodule(data, mode):
    from nlpseq.data.lm import LanguageModelDataModule

    _prepare(LanguageModelDataModule, train=str(write(TMP, "train.txt", data)), mode=mode,
             format="lines" if mode == "lines" else "text", seq_len=4, batch_size=2, eval_batch_size=2)


def test_counts_are_what_the_report_says():
    assert N_INPUTS >= 1000 and FUZZ.max_examples == N_INPUTS and DM.max_examples == N_DATAMODULE


@pytest.fixture(autouse=True, scope="module")
def _stats():
    yield
    if os.environ.get("NLPSEQ_FUZZ_STATS") == "1":
        print_stats()
