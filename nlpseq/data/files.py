"""Reading local text files line by line with errors that name the file and line.

Every reader goes through `read_lines`, so missing files, empty files, bytes that are not UTF-8 and
NUL bytes all fail the same clear way. `.gz` files are read transparently.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator

from nlpseq.errors import DataError


def resolve(path) -> Path:
    """An existing local file, or a DataError naming it (relative paths are relative to the launch dir)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        p = Path(_original_cwd()) / p
    if not p.exists():
        raise DataError("file not found", path)
    if not p.is_file():
        raise DataError("not a regular file", path)
    return p


def _original_cwd() -> str:
    # Hydra may change the working directory (hydra.job.chdir=true); data paths stay relative to launch
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if HydraConfig.initialized():
            return get_original_cwd()
    except ImportError:  # pragma: no cover
        pass
    return os.getcwd()


def format_from_name(path) -> str | None:
    """The data format a file name implies (jsonl, tsv, csv or text), `.gz` ignored; None if it implies none."""
    name = str(path).lower().removesuffix(".gz")
    for ext, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".tsv", "tsv"), (".csv", "csv"), (".txt", "text")):
        if name.endswith(ext):
            return fmt
    return None


def read_lines(path, allow_empty: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line_number, line) with the line ending removed ('\\n', '\\r\\n' or '\\r\\n')."""
    p = resolve(path)
    opener = gzip.open if p.suffix == ".gz" else open
    empty = True
    with opener(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            empty = False
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"bytes that are not UTF-8 at column {e.start + 1}", path, lineno) from None
            if "\x00" in line:
                raise DataError("NUL byte in line (is this a binary file?)", path, lineno)
            if line.startswith("\ufeff") and lineno == 1:
                line = line[1:]  # byte order mark
            yield lineno, line.rstrip("\r\n")
    if empty and not allow_empty:
        raise DataError("file is empty", path)


def read_json_lines(path) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line of a JSON-lines file; each line must be an object."""
    import json

    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg} at column {e.colno})", path, lineno) from None
        if not isinstance(obj, dict):
            raise DataError("each JSON line must be an object", path, lineno)
        yield lineno, obj
