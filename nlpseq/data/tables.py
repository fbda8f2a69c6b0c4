"""Tabular examples (TSV, CSV, JSON lines) from local files or the HF hub, as HF `datasets.Dataset`s.

Local files are parsed here, so every error names the file and line, then held as an in-memory
Arrow table; `iter_table` streams the rows of a file larger than memory (example_store, out of core).
"""
from __future__ import annotations

import csv
from typing import Sequence

import datasets

from nlpseq.data.files import format_from_name, read_json_lines, read_lines, resolve
from nlpseq.errors import ConfigError, DataError

FORMATS = ("auto", "tsv", "csv", "jsonl")
# a CSV field may be as long as a line (the csv module's default caps fields at 131072 characters)
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def detect_format(path, fmt: str = "auto") -> str:
    if fmt not in FORMATS:
        raise ConfigError("data.format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    found = format_from_name(path)
    if found in ("tsv", "csv", "jsonl"):
        return found
    raise DataError("cannot tell the format from the file name; set data.format to tsv, csv or jsonl", path)


def _pick(names: Sequence[str], wanted: str | Sequence[str], option: str, path) -> str:
    """The first of `wanted` (a name or a list of alternatives) that is among the file's columns."""
    for w in [wanted] if isinstance(wanted, str) else list(wanted):
        if w in names:
            return w
    raise DataError(f"no column {wanted!r} (option {option}); the file has columns {list(names)}", path)


def iter_rows(path, columns: dict[str, str | Sequence[str]], fmt: str = "auto"):
    """Yield (line_number, {key: value}) where `columns` maps our keys to the file's column name(s)."""
    fmt = detect_format(path, fmt)
    if fmt == "jsonl":
        yield from _iter_jsonl(path, columns)
        return
    delimiter = "\t" if fmt == "tsv" else ","
    lines = read_lines(path)
    header_line = None
    for lineno, line in lines:
        if line.strip():
            header_line = (lineno, line)
            break
    if header_line is None:
        raise DataError("file has no header line (only blank lines)", path)
    names = _split(header_line[1], delimiter, fmt, path, header_line[0])
    picked = {key: _pick(names, wanted, opt, path) for key, (wanted, opt) in columns.items()}
    index = {key: names.index(col) for key, col in picked.items()}
    for lineno, line in lines:
        if not line.strip():
            continue
        cells = _split(line, delimiter, fmt, path, lineno)
        if len(cells) != len(names):
            raise DataError(f"expected {len(names)} columns like the header, found {len(cells)}", path, lineno)
        yield lineno, {key: cells[i] for key, i in index.items()}


def _split(line: str, delimiter: str, fmt: str, path, lineno: int) -> list[str]:
    if fmt == "tsv":  # TSV has no quoting convention: quotes are text (SST-2 has them)
        return line.split("\t")
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration) as e:
        why = "a carriage return (\\r) in an unquoted field" if "new-line character" in str(e) else e
        raise DataError(f"malformed CSV line ({why})", path, lineno) from None


def _iter_jsonl(path, columns):
    for lineno, obj in read_json_lines(path):
        row = {}
        for key, (wanted, opt) in columns.items():
            col = _pick(list(obj), wanted, opt, f"{path}:{lineno}")
            row[key] = obj[col]
        yield lineno, row


def _table_rows(path: str, columns, fmt: str, label_key: str | None):
    for lineno, row in iter_rows(path, columns, fmt):
        text = row["text"]
        if not isinstance(text, str):
            raise DataError(f"text must be a string, got {type(text).__name__}", path, lineno)
        out = {"text": text, "line": lineno}
        if label_key:
            label = row["label"]
            if isinstance(label, (bool, dict, list)) or label is None or str(label).strip() == "":
                raise DataError(f"missing or invalid label {label!r}", path, lineno)
            out["label"] = str(label).strip()
        yield out


def iter_table(path, text_column: str | Sequence[str] = "text", label_column: str | Sequence[str] | None = "label",
               fmt: str = "auto"):
    """Rows {text, line, label?} one at a time (a file larger than memory is never held whole)."""
    p = resolve(path)
    columns = {"text": (text_column, "data.text_column")}
    if label_column is not None:
        columns["label"] = (label_column, "data.label_column")
    empty = True
    for row in _table_rows(str(p), columns, fmt, label_column):
        empty = False
        yield row
    if empty:
        raise DataError("file has a header but no examples", path)


def load_table(path, text_column: str | Sequence[str] = "text", label_column: str | Sequence[str] | None = "label",
               fmt: str = "auto") -> datasets.Dataset:
    """A Dataset with columns `text`, `line` (source line number) and, if labelled, `label` (as string)."""
    # parse once eagerly so errors surface here, not inside datasets' worker machinery
    return to_dataset(list(iter_table(path, text_column, label_column, fmt)))


def to_dataset(rows: list[dict]) -> datasets.Dataset:
    features = datasets.Features({"text": datasets.Value("string"), "line": datasets.Value("int64"),
                                  **({"label": datasets.Value("string")} if "label" in rows[0] else {})})
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def load_hub_table(name: str, split: str, subset: str | None, text_column, label_column) -> datasets.Dataset:
    """A split of a hub dataset (needs the network, or a populated HF cache), renamed to text/label."""
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # the hub raises many types; the user needs one line
        raise DataError(f"could not load hub dataset {name!r} split {split!r}: {type(e).__name__}: {e}".splitlines()[0])
    names = ds.column_names
    text_col = _pick(names, text_column, "data.text_column", f"hub:{name}/{split}")
    cols = {"text": ds[text_col], "line": list(range(1, len(ds) + 1))}
    if label_column is not None:
        label_col = _pick(names, label_column, "data.label_column", f"hub:{name}/{split}")
        feat = ds.features[label_col]
        names_of = getattr(feat, "names", None)  # ClassLabel: use its names, not the ids
        cols["label"] = [names_of[v] if names_of else str(v) for v in ds[label_col]]
        if any(v == -1 for v in ds[label_col]) if names_of else False:
            raise DataError(f"hub split {split!r} has no labels (label -1); use another split for evaluation")
    return datasets.Dataset.from_dict(cols)
