"""Chunk tagging schemes (IOB1, IOB2, BIOES): tag parsing, validation and exact conversion via spans.

A span is `(type, start, end)` with `end` exclusive. Tags are "O" or "<prefix>-<type>"; as in conlleval,
the prefix is everything before the first hyphen (so types may contain hyphens) and a bare prefix such
as "B" is a chunk tag with the empty type.
"""
from __future__ import annotations

from typing import Any, Sequence

from nlpseq.errors import DataError, check_choice

SCHEMES = ("IOB1", "IOB2", "BIOES")
PREFIXES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}

Span = tuple[str, int, int]


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER", ("O", "") for "O", ("B", "") for a bare "B" -- conlleval's parse
    (`^([^-]*)-(.*)$`), which splits at the first hyphen only: "B-ORG-X" -> ("B", "ORG-X")."""
    prefix, _, type_ = tag.partition("-")
    return prefix, type_


def tag_error(tag: Any, scheme: str) -> str | None:
    """Why `tag` is not a tag of `scheme`, or None when it is."""
    if not isinstance(tag, str):
        return f"tag {tag!r} is not a string"
    if tag == "O":
        return None
    prefix, type_ = split_tag(tag)
    prefixes = PREFIXES[scheme]
    # "B-" (a hyphen and no type) and "O-PER" are typos, not conlleval forms; blanks would split a column
    if prefix not in prefixes or (not type_ and tag != prefix) or any(c.isspace() for c in tag):
        return f"tag {tag!r} is not valid in the {scheme} scheme (expected O or {'/'.join(prefixes)}-TYPE)"
    return None


# tags already found valid, per scheme: a corpus has a few dozen distinct tags, and reading one checks
# every tag of every sentence in each pass (per-tag Python was ~20% of an out-of-core NER preparation)
_VALID: dict[str, set[str]] = {}
_VALID_MAX = 100_000


def first_invalid(tags: Sequence[Any], scheme: str) -> tuple[int, str] | None:
    """(index, why) of the first tag of `tags` that `scheme` does not allow, or None. Tags found valid are
    remembered, so a sentence of known tags costs one set operation."""
    valid = _VALID.setdefault(scheme, set())
    try:
        if valid.issuperset(tags):
            return None
    except TypeError:  # an unhashable tag (a list from JSON): the check below names it
        pass
    for i, tag in enumerate(tags):
        problem = tag_error(tag, scheme)
        if problem is not None:
            return i, problem
    if len(valid) < _VALID_MAX:  # bounded: a file of endless distinct types cannot grow it without limit
        valid.update(tags)
    return None


def validate_tags(tags: Sequence[str], scheme: str, path: Any = None, line: int | None = None) -> None:
    """Raise DataError naming the first tag of `tags` that `scheme` does not allow (prefixes only:
    ill-formed transitions such as "O I-PER" are accepted and read the way conlleval reads them)."""
    check_choice("scheme", scheme, SCHEMES)
    bad = first_invalid(tags, scheme)
    if bad is not None:
        raise DataError(f"{bad[1]} at token {bad[0] + 1}", path=path, line=line)


def to_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """The chunks of `tags` as conlleval finds them: exact for well-formed input, and for ill-formed
    input the same spans the scorer counts, so converting never disagrees with scoring."""
    # imported here because spans.py builds on split_tag from this module
    from nlpseq.metrics.spans import conll_chunks

    validate_tags(tags, scheme)
    return conll_chunks(tags)


def from_spans(spans: Sequence[Span], length: int, scheme: str) -> list[str]:
    """Well-formed tags of `scheme` for non-overlapping spans over `length` tokens (others are O)."""
    check_choice("scheme", scheme, SCHEMES)
    tags = ["O"] * length
    prev: Span | None = None
    for span in sorted(spans, key=lambda s: s[1]):
        type_, start, end = span
        if not 0 <= start < end <= length:
            raise DataError(f"span {span!r} is empty or outside a sentence of {length} tokens")
        if prev is not None and start < prev[2]:
            raise DataError(f"spans {prev!r} and {span!r} overlap")
        if scheme == "IOB1":
            # IOB1 marks B only where a chunk directly follows one of the same type
            follows_same = prev is not None and prev[2] == start and prev[0] == type_
            prefixes = ["B" if follows_same else "I"] + ["I"] * (end - start - 1)
        elif scheme == "IOB2":
            prefixes = ["B"] + ["I"] * (end - start - 1)
        else:
            prefixes = ["S"] if end - start == 1 else ["B"] + ["I"] * (end - start - 2) + ["E"]
        tags[start:end] = [f"{p}-{type_}" if type_ else p for p in prefixes]
        prev = span
    return tags


def convert(tags: Sequence[str], src_scheme: str, dst_scheme: str) -> list[str]:
    """Re-tag `tags` from one scheme to another; exact (and reversible) for well-formed input."""
    return from_spans(to_spans(tags, src_scheme), len(tags), dst_scheme)


def canonical_scheme(value):
    """A tag scheme as a user wrote it (any case: iob2, Bioes) -> its canonical spelling; "auto" stays lower-case
    and anything else is returned as is, for the caller's check to name."""
    if isinstance(value, str):
        return "auto" if value.lower() == "auto" else value.upper()
    return value

