import pytest

from nlpseq.data.tables import load_table
from nlpseq.errors import ConfigError, DataError


def write(tmp_path, name, content, mode="w"):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8", newline="")
    return p


def test_tsv_with_crlf_quotes_and_alternative_column_names(tmp_path):
    p = write(tmp_path, "a.tsv", 'label\tsentence\r\n1\tsays "hi" , twice\r\n0\tno\r\n\r\n')
    ds = load_table(p, text_column=["content", "sentence"], label_column="label")
    assert ds["text"] == ['says "hi" , twice', "no"] and ds["label"] == ["1", "0"] and ds["line"] == [2, 3]


def test_csv_and_jsonl(tmp_path):
    csv_p = write(tmp_path, "a.csv", 'text,label\n"a, quoted",pos\nplain,neg\n')
    assert load_table(csv_p)["text"] == ["a, quoted", "plain"]
    js = write(tmp_path, "a.jsonl", '{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    ds = load_table(js)
    assert ds["text"] == ["x", "y"] and ds["label"] == ["1", "0"] and ds["line"] == [1, 3]


@pytest.mark.parametrize("name,content,match", [
    ("e.tsv", "", r"e.tsv: file is empty"),
    ("h.tsv", "text\tlabel\n", r"header but no examples"),
    ("c.tsv", "text\tlabel\na\t1\nb\n", r"c.tsv:3: expected 2 columns"),
    ("u.tsv", b"text\tlabel\nok\t1\n\xff\xfe bad\t0\n", r"u.tsv:3: bytes that are not UTF-8"),
    ("n.tsv", "text\tlabel\na\x00b\t1\n", r"n.tsv:2: NUL byte"),
    ("j.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n', r"j.jsonl:2: invalid JSON"),
    ("l.tsv", "text\tlabel\na\t\n", r"l.tsv:2: missing or invalid label"),
    ("k.jsonl", '{"text": "a"}\n', r"no column 'label'"),
])
def test_malformed_files_name_file_and_line(tmp_path, name, content, match):
    p = write(tmp_path, name, content)
    with pytest.raises(DataError, match=match):
        load_table(p)


def test_missing_file_wrong_column_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: file not found"):
        load_table(tmp_path / "nope.tsv")
    p = write(tmp_path, "a.tsv", "text\tlabel\nx\t1\n")
    with pytest.raises(DataError, match=r"no column 'sentence' \(option data.text_column\)"):
        load_table(p, text_column="sentence")
    q = write(tmp_path, "a.data", "text\tlabel\nx\t1\n")
    with pytest.raises(DataError, match="set data.format"):
        load_table(q)
    with pytest.raises(ConfigError, match="data.format"):
        load_table(p, fmt="xml")


def test_hub_loader_path_works_offline_on_a_local_dataset_folder(tmp_path):
    # `data.hub.name` goes through datasets.load_dataset; a local folder exercises the same code offline
    from nlpseq.data.tables import load_hub_table

    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.csv").write_text("sentence,label\ngood film,1\nbad film,0\n")
    ds = load_hub_table(str(folder), "train", None, "sentence", "label")
    assert ds["text"] == ["good film", "bad film"] and ds["label"] == ["1", "0"]
    with pytest.raises(DataError, match="could not load hub dataset"):
        load_hub_table(str(tmp_path / "missing_dataset_name"), "train", None, "text", "label")
