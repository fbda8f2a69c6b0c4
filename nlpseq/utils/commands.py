"""What the key=value commands (`python -m nlpseq.predict`, `python -m nlpseq.evaluate`) share around their
work: --help, and errors as one line with exit status 2 (an NlpseqError; running out of memory, with the sizes
to lower), never a traceback; a closed pipe (`| head`) ends quietly."""
from __future__ import annotations

import sys
from typing import Callable

from nlpseq.errors import NlpseqError


def out_of_memory(e: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's CPU allocator or CUDA out of memory."""
    text = str(e)
    return isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def run_command(argv: list[str] | None, doc: str, usage: str, body: Callable[[list[str], dict], int], doing: str,
                size_keys: tuple[str, ...], lower: str) -> int:
    """`body(argv, args)` with the shared handling; body puts the options it parsed into `args`, so that an
    out-of-memory message can name the sizes given (`size_keys`) and what to `lower`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(doc.strip() + "\n\n" + usage)
        return 0
    args: dict = {}
    try:
        return body(argv, args)
    except NlpseqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not out_of_memory(e):
            raise
        sizes = ", ".join(f"{k}={args[k]}" for k in size_keys if k in args)
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: out of memory while {doing} ({sizes or 'default options'}); lower {lower}. {first}".rstrip(),
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
