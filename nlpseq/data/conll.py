"""Tagged sentences from CoNLL-style column files, JSON lines or a hub dataset, as HF `datasets.Dataset`s.

Every reader returns a Dataset with the columns `tokens` (list of str), `tags` (list of str, in the
file's scheme) and `line` (the line number of the sentence's first token; in a column file token i of
a sentence is on line `line + i`, in a JSONL file the whole sentence is on `line`).

Column files (CoNLL-2003 and the like): one token per line, columns split on whitespace (`separator=
auto`), on runs of spaces (`space`) or on single tabs (`tab`, so tokens may hold spaces; trailing
spaces after the last cell are dropped); a blank line
ends a sentence; `-DOCSTART-` lines (when `docstart`) end a sentence and are skipped. Every token line
of a file must have the same number of columns as its first one, and every tag must be a tag of the
declared scheme: otherwise a DataError names the file and line. Nothing is ever realigned silently.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

import datasets

from nlpseq.data.files import format_from_name, read_json_lines, read_lines, resolve
from nlpseq.errors import DataError, check_choice
from nlpseq.metrics.schemes import SCHEMES, convert, first_invalid, split_tag

SEPARATORS = ("auto", "space", "tab")
FORMATS = ("auto", "conll", "jsonl")
INPUT_SCHEMES = (*SCHEMES, "auto")
DOCSTART = "-DOCSTART-"
_SPACES = re.compile(" +")


def detect_format(path, fmt: str = "auto") -> str:
    """'jsonl' for .jsonl/.json files, 'conll' otherwise (column files have many extensions)."""
    check_choice("data.format", fmt, FORMATS)
    if fmt != "auto":
        return fmt
    return "jsonl" if format_from_name(path) == "jsonl" else "conll"


def split_columns(line: str, separator: str) -> list[str]:
    """The cells of one token line (`separator` is auto, space or tab)."""
    if separator == "tab":
        return line.rstrip(" ").split("\t")
    if separator == "space":
        return [c for c in _SPACES.split(line.strip(" ")) if c]
    return line.split()


def _column_index(column: int, ncols: int, key: str, path, lineno: int) -> int:
    if not -ncols <= column < ncols:
        raise DataError(f"option {key}={column} is out of range: the line has {ncols} column(s)", path, lineno)
    return column % ncols


def iter_column_sentences(lines, path, token_column: int = 0, tag_column: int | None = -1,
                          separator: str = "auto", docstart: bool = True
                          ) -> Iterator[tuple[int, list[str], list[str] | None]]:
    """(first line number, tokens, tags or None) per sentence of numbered column-file lines.

    Tags are returned as written (not checked against a scheme). Lines hold (lineno, text) pairs."""
    check_choice("data.separator", separator, SEPARATORS)
    ncols = first = None
    tok_i = tag_i = None
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    auto = separator == "auto"
    for lineno, line in lines:
        cells = line.split() if auto else split_columns(line, separator) if line.strip() else []
        if not cells or (docstart and cells[0] == DOCSTART):
            if tokens:
                yield start, tokens, tags if tag_column is not None else None
                tokens, tags = [], []
            continue
        if ncols is None:
            ncols, first = len(cells), lineno
            tok_i = _column_index(token_column, ncols, "data.token_column", path, lineno)
            if tag_column is not None:
                tag_i = _column_index(tag_column, ncols, "data.tag_column", path, lineno)
                if tag_i == tok_i:  # e.g. a file of one column with the default token 0 / tag -1
                    raise DataError(f"the line has {ncols} column(s): option data.tag_column={tag_column} "
                                    f"is the token column (data.token_column={token_column})", path, lineno)
        elif len(cells) != ncols:
            raise DataError(f"expected {ncols} columns (like line {first}), found {len(cells)}", path, lineno)
        token = cells[tok_i]
        if not token:
            raise DataError(f"empty token in column {tok_i + 1}", path, lineno)
        if not tokens:
            start = lineno
        tokens.append(token)
        if tag_i is not None:
            tags.append(cells[tag_i])
    if tokens:
        yield start, tokens, tags if tag_column is not None else None


def _check_tags(tags: Sequence[Any], scheme: str, path, line_of) -> None:
    bad = first_invalid(tags, "BIOES" if scheme == "auto" else scheme)
    if bad is not None:
        raise DataError(bad[1], path, line_of(bad[0]))


def read_conll(path, token_column: int = 0, tag_column: int = -1, separator: str = "auto",
               scheme: str = "IOB2", docstart: bool = True) -> datasets.Dataset:
    """Sentences of a column file with their tags (checked against `scheme`; `auto` allows any prefix)."""
    return _rows_dataset(iter_conll(path, token_column, tag_column, separator, scheme, docstart))


def iter_conll(path, token_column: int = 0, tag_column: int = -1, separator: str = "auto",
               scheme: str = "IOB2", docstart: bool = True) -> Iterator[tuple[int, list[str], list[str]]]:
    """(first line, tokens, tags) per sentence of a column file, streamed; tags checked as in `read_conll`."""
    check_choice("data.scheme", scheme, INPUT_SCHEMES)
    resolve(path)
    found = False
    for start, tokens, tags in iter_column_sentences(read_lines(path), path, token_column, tag_column,
                                                     separator, docstart):
        _check_tags(tags, scheme, path, lambda i, s=start: s + i)
        found = True
        yield start, tokens, tags
    if not found:
        raise DataError("no sentences found (only blank or -DOCSTART- lines)", path)


def _rows_dataset(sentences) -> datasets.Dataset:
    rows: dict[str, list] = {"tokens": [], "tags": [], "line": []}
    for line, tokens, tags in sentences:
        rows["tokens"].append(tokens)
        rows["tags"].append(tags)
        rows["line"].append(line)
    return _to_dataset(rows)


def read_jsonl(path, tokens_key: str = "tokens", tags_key: str = "tags", scheme: str = "IOB2") -> datasets.Dataset:
    """One JSON object per line with a list of tokens and a list of as many tags (strings)."""
    return _rows_dataset(iter_jsonl(path, tokens_key, tags_key, scheme))


def iter_jsonl(path, tokens_key: str = "tokens", tags_key: str = "tags", scheme: str = "IOB2"
               ) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line, tokens, tags) per object of a JSON-lines file, streamed; checked as in `read_jsonl`."""
    check_choice("data.scheme", scheme, INPUT_SCHEMES)
    found = False
    for lineno, obj in read_json_lines(path):
        for key, option in ((tokens_key, "data.tokens_key"), (tags_key, "data.tags_key")):
            if key not in obj:
                raise DataError(f"no key {key!r} (option {option}); the object has keys {sorted(obj)}", path, lineno)
        tokens, tags = obj[tokens_key], obj[tags_key]
        for value, key in ((tokens, tokens_key), (tags, tags_key)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"{key!r} must be a list of strings", path, lineno)
        if len(tokens) != len(tags):
            raise DataError(f"{len(tokens)} tokens but {len(tags)} tags", path, lineno)
        for i, tok in enumerate(tokens):
            if not tok:
                raise DataError(f"token {i + 1} is empty", path, lineno)
        _check_tags(tags, scheme, path, lambda i: lineno)
        found = True
        yield lineno, tokens, tags
    if not found:
        raise DataError("no sentences found", path)


def read_tagged(path, fmt: str = "auto", token_column: int = 0, tag_column: int = -1, separator: str = "auto",
                scheme: str = "IOB2", docstart: bool = True, tokens_key: str = "tokens",
                tags_key: str = "tags") -> datasets.Dataset:
    """A column or JSONL file (by `fmt`, or by extension when `auto`)."""
    return _rows_dataset(iter_tagged(path, fmt, token_column, tag_column, separator, scheme, docstart, tokens_key,
                                     tags_key))


def iter_tagged(path, fmt: str = "auto", token_column: int = 0, tag_column: int = -1, separator: str = "auto",
                scheme: str = "IOB2", docstart: bool = True, tokens_key: str = "tokens",
                tags_key: str = "tags") -> Iterator[tuple[int, list[str], list[str]]]:
    """(line, tokens, tags) per sentence of a column or JSONL file, streamed (a file larger than memory)."""
    if detect_format(path, fmt) == "jsonl":
        return iter_jsonl(path, tokens_key, tags_key, scheme)
    return iter_conll(path, token_column, tag_column, separator, scheme, docstart)


def load_hub_tagged(name: str, split: str, subset: str | None = None, tokens_column: str = "tokens",
                    tags_column: str = "ner_tags", scheme: str = "IOB2") -> datasets.Dataset:
    """A split of a hub dataset (e.g. conll2003, whose tags are IOB2 class ids); needs the network or the HF cache."""
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # the hub raises many types; the user needs one line
        raise DataError(f"could not load hub dataset {name!r} split {split!r}: {type(e).__name__}: {e}".splitlines()[0])
    where = f"hub:{name}/{split}"
    for col, option in ((tokens_column, "data.hub.tokens_column"), (tags_column, "data.hub.tags_column")):
        if col not in ds.column_names:
            raise DataError(f"no column {col!r} (option {option}); the dataset has columns {ds.column_names}", where)
    feature = ds.features[tags_column]
    names = getattr(getattr(feature, "feature", None), "names", None)  # Sequence(ClassLabel)
    rows: dict[str, list] = {"tokens": [], "tags": [], "line": []}
    for i, (tokens, tags) in enumerate(zip(ds[tokens_column], ds[tags_column]), 1):
        tags = [names[t] if names is not None and isinstance(t, int) else str(t) for t in tags]
        if len(tokens) != len(tags):
            raise DataError(f"{len(tokens)} tokens but {len(tags)} tags", where, i)
        _check_tags(tags, scheme, where, lambda _: i)
        rows["tokens"].append(list(tokens))
        rows["tags"].append(tags)
        rows["line"].append(i)
    return _to_dataset(rows)


def _to_dataset(rows: dict[str, list]) -> datasets.Dataset:
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "tags": datasets.Sequence(datasets.Value("string")),
                                  "line": datasets.Value("int64")})
    return datasets.Dataset.from_dict(rows, features=features)


def detect_scheme(tag_seqs: Sequence[Sequence[str]]) -> str:
    """The scheme tags are written in: BIOES if any E-/S- tag; IOB2 if a B-X starts a chunk after
    anything but X (IOB1 writes B only between two chunks of one type); IOB1 otherwise."""
    iob2 = False
    for tags in tag_seqs:
        prev = ("O", "")
        for tag in tags:
            cur = split_tag(tag)
            if cur[0] in ("E", "S"):
                return "BIOES"
            if cur[0] == "B" and not (prev[0] in ("B", "I") and prev[1] == cur[1]):
                iob2 = True
            prev = cur
    return "IOB2" if iob2 else "IOB1"


def convert_all(tag_seqs: Sequence[Sequence[str]], src: str, dst: str) -> list[list[str]]:
    """Re-tag every sentence from `src` to `dst` through conlleval's chunks: exact for well-formed tags,
    and ill-formed ones (e.g. IOB2 "O I-PER") come out well-formed, read the way conlleval reads them."""
    return [convert(tags, src, dst) for tags in tag_seqs]
