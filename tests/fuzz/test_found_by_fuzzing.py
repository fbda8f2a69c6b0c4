"""The escapes fuzzing found, pinned as plain regression tests (each used to raise a foreign
exception or a misleading message)."""
from __future__ import annotations

import gzip
import io
import json
import sys

import pytest
from fuzz_helpers import predictor

from nlpseq.data.conll import read_conll, read_jsonl
from nlpseq.data.lm import read_documents
from nlpseq.data.parallel import read_aligned, read_pair_table
from nlpseq.data.tables import load_table
from nlpseq.errors import ConfigError, DataError, NlpseqError


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def one_line(e) -> str:
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    return msg


@pytest.mark.parametrize("data,match", [
    (b"src\ttgt\n", r"p.tsv.gz: not a valid gzip file \(Not a gzipped file"),            # was BadGzipFile
    (gzip.compress(b"".join(b"%d\t%d\n" % (i, i * i) for i in range(500)))[:300],        # was EOFError
     r"p.tsv.gz:\d+: not a valid gzip file \(Compressed file ended"),
], ids=["not-gzip", "truncated"])
def test_broken_gzip_is_a_data_error(tmp_path, data, match):
    with pytest.raises(DataError) as e:
        read_pair_table(write(tmp_path / "p.tsv.gz", data))
    assert __import__("re").match(match, one_line(e).replace(str(tmp_path) + "/", ""))


def test_upper_case_gz_is_decompressed(tmp_path):
    src = write(tmp_path / "S.TXT.GZ", gzip.compress(b"ein Mann\n"))
    tgt = write(tmp_path / "t.txt", b"a man\n")
    assert read_aligned(src, tgt)[:]["src"] == ["ein Mann"]


@pytest.mark.parametrize("line,match", [
    ("[" * 5000, "nested too deeply"),                                   # was RecursionError
    ('{"text": ' + "1" * 5000 + ', "label": "a"}', "Exceeds the limit"),  # was ValueError (int digits)
    ('{"text": "a\\ud800", "label": "x"}', r"\\ud800 escape is half"),   # was UnicodeEncodeError in Arrow
], ids=["deep", "digits", "surrogate"])
def test_bad_json_lines_name_file_and_line(tmp_path, line, match):
    first = '{"text": "ok", "label": "x", "tokens": ["ok"], "tags": ["O"]}\n'
    path = write(tmp_path / "d.jsonl", (first + line + "\n").encode())
    for read in (lambda: load_table(path), lambda: read_jsonl(path), lambda: read_pair_table(path, "text", "label"),
                 lambda: read_documents(path)):
        with pytest.raises(DataError, match=match) as e:
            read()
        assert one_line(e).startswith(f"{path}:2: invalid JSON")


def test_a_csv_field_longer_than_131072_characters_loads(tmp_path):
    path = write(tmp_path / "d.csv", b"text,label\n" + b"a" * 200_000 + b",pos\n")  # was "field larger than field limit"
    assert len(load_table(path)[0]["text"]) == 200_000


def test_a_carriage_return_in_a_csv_field_is_named(tmp_path):
    with pytest.raises(DataError, match=r"d.csv:2: malformed CSV line \(a carriage return"):
        load_table(write(tmp_path / "d.csv", b"text,label\na\rb,pos\n"))


def test_a_one_column_file_is_a_data_error_with_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"c.conll:2: the line has 1 column\(s\)"):  # was a ConfigError without a file
        read_conll(write(tmp_path / "c.conll", b"\nEU\n"))


def test_a_utf16_file_is_named(tmp_path):
    with pytest.raises(DataError, match="the file is UTF-16"):
        read_documents(write(tmp_path / "u.txt", "text\n".encode("utf-16")))


@pytest.mark.parametrize("task,kwargs,key", [
    ("generation", {"temperature": float("nan")}, "temperature"),  # was RuntimeError from torch.multinomial
    ("generation", {"temperature": float("inf")}, "temperature"),
    ("translation", {"max_len_ratio": float("nan")}, "max_len_ratio"),
    ("translation", {"length_penalty": float("inf")}, "length_penalty"),
])
def test_non_finite_options_are_config_errors(task, kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}: must be a finite number"):
        predictor(task).predict("a", **kwargs)


def test_ner_nbest_of_an_empty_token_list():
    assert predictor("ner").nbest([]) == [([], 1.0)]  # was "pretokenized=True needs token lists"


def test_predict_cli_checks_stdin_bytes(monkeypatch, capsys):
    from nlpseq import predict

    p = predictor("sentiment")
    monkeypatch.setattr(predict, "load", lambda path, **kw: p)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"good\n\xff bad\n")))
    assert predict.main(["ckpt=x.ckpt", "input=-"]) == 2  # was a traceback (decode error, or surrogates in tokenizers)
    assert capsys.readouterr().err.strip() == "error: <stdin>:2: bytes that are not UTF-8 at column 1"


def test_generation_input_file_errors_name_the_line(tmp_path, capsys):
    from nlpseq.predict import _run

    src = write(tmp_path / "p.txt", b'KING:\n{"prompt": 3}\n')
    with pytest.raises(DataError, match=r'p.txt:2: "prompt" must be a string, got int'):
        _run(predictor("generation"), str(src), str(tmp_path / "o.jsonl"), {"max_new_tokens": 2})
    # a JSON-looking prompt that is not JSON (or nests too deeply) is a plain prompt
    src = write(tmp_path / "q.txt", b"{" + b"[" * 5000 + b"\n")
    assert _run(predictor("generation"), str(src), str(tmp_path / "o.jsonl"), {"max_new_tokens": 2}) == 0
    assert json.loads((tmp_path / "o.jsonl").read_text())["prompt"].startswith("{[[[")


def test_lone_surrogate_in_pretokenized_ner_input():
    with pytest.raises(NlpseqError, match=r"sentence 0, token 1 is not valid Unicode"):  # was UnicodeEncodeError
        predictor("ner").predict([["EU", "\udc80"]])
