"""Reading local text files line by line with errors that name the file and line.

Every reader goes through `read_lines`, so missing files, empty files, bytes that are not UTF-8 (a
UTF-16 file is named as such), NUL bytes and broken gzip data all fail the same clear way: a
DataError naming the file and line. `.gz` files are read transparently. JSON goes through
`parse_json`, which turns every failure (deep nesting, huge integers, a `\\ud800` escape that decodes
to a lone surrogate no UTF-8 writer accepts) into one line.
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Iterator

from nlpseq.errors import DataError


def resolve(path) -> Path:
    """An existing local file, or a DataError naming it (relative paths are relative to the launch dir)."""
    try:
        p = Path(os.path.expanduser(str(path)))
        if not p.is_absolute():
            p = Path(_original_cwd()) / p
        if not p.exists():
            raise DataError("file not found", path)
        if not p.is_file():
            raise DataError("not a regular file", path)
    except (OSError, ValueError) as e:  # a NUL in the path, a name too long ...
        if isinstance(e, DataError):
            raise
        raise DataError(f"not a usable file path ({_first_line(e)})", repr(str(path))) from None
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
    """Yield (line_number, line) with the line ending removed ('\\n' or '\\r\\n'; a lone '\\r' is text)."""
    p = resolve(path)
    gz = p.name.lower().endswith(".gz")
    empty = True
    lineno = 0
    try:
        with (gzip.open if gz else open)(p, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1:
                    empty = False
                    try:
                        line = decode_line(raw, path, lineno)
                    except DataError:
                        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
                            raise DataError("the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                                            "save it as UTF-8", path) from None
                        raise
                    yield lineno, line
                    continue
                # decode_line inlined: this loop runs once per line of every corpus
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = decode_line(raw, path, lineno)  # raises with the column
                if "\x00" in line:
                    decode_line(raw, path, lineno)  # raises
                yield lineno, line.rstrip("\r\n")
    except (EOFError, zlib.error, OSError) as e:
        raise read_error(e, path, lineno + 1 if lineno else None) from None
    if empty and not allow_empty:
        raise DataError("file is empty", path)


def decode_line(raw: bytes | str, path, lineno: int) -> str:
    """One line as every reader takes it: UTF-8 (if bytes), no NUL byte, a first-line byte order mark dropped,
    the line ending removed; a DataError naming the file and line otherwise."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"bytes that are not UTF-8 at column {e.start + 1}", path, lineno) from None
    if "\x00" in raw:
        raise DataError("NUL byte in line (is this a binary file?)", path, lineno)
    if lineno == 1 and raw.startswith("\ufeff"):
        raw = raw[1:]
    return raw.rstrip("\r\n")


def read_error(e: BaseException, path, lineno: int | None = None) -> DataError:
    """The one-line DataError for an exception raised while reading a (maybe gzip) file."""
    if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)):  # only gzip raises these while reading
        return DataError(f"not a valid gzip file ({_first_line(e)})", path, lineno)
    return DataError(f"cannot read the file ({getattr(e, 'strerror', None) or _first_line(e)})", path)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# JSON escapes of UTF-16 surrogates (\ud800-\udfff): a lone one decodes to a str that no UTF-8 writer accepts
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def parse_json(text: str):
    """json.loads, with every failure a ValueError whose message is one line (deep nesting and integers
    of more than 4300 digits raise RecursionError / a plain ValueError in the json module)."""
    import json

    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"invalid JSON ({_first_line(e).split(';')[0]})") from None
    if _SURROGATE_ESCAPE.search(text):
        bad = _lone_surrogate(obj)
        if bad is not None:
            raise ValueError(f"invalid JSON (\\u{ord(bad):04x} escape is half of a UTF-16 surrogate pair, "
                             f"not a character)")
    return obj


def _lone_surrogate(obj) -> str | None:
    """The first lone surrogate in any string (key or value) of a parsed JSON value, or None."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            bad = surrogate_in(x)
            if bad is not None:
                return x[bad]
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return None


def surrogate_in(text: str) -> int | None:
    """Index of the first lone surrogate in `text` (a str that cannot be written as UTF-8), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return e.start


def read_json_lines(path) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line of a JSON-lines file; each line must be an object."""
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = parse_json(line)
        except ValueError as e:
            raise DataError(str(e), path, lineno) from None
        if not isinstance(obj, dict):
            raise DataError("each JSON line must be an object", path, lineno)
        yield lineno, obj
