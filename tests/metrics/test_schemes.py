"""Tag schemes: parsing, validation, spans and exact conversion between IOB1, IOB2 and BIOES."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from nlpseq.errors import ConfigError, DataError
from nlpseq.metrics.schemes import SCHEMES, convert, from_spans, split_tag, to_spans, validate_tags


@pytest.mark.parametrize("tag,expected", [
    ("B-PER", ("B", "PER")), ("O", ("O", "")), ("I-ORG-X", ("I", "ORG-X")), ("B", ("B", "")),
    ("S-LOC", ("S", "LOC")), ("[-NP", ("[", "NP")),
])
def test_split_tag(tag, expected):
    assert split_tag(tag) == expected


def test_validate_accepts_scheme_tags():
    validate_tags(["O", "B-PER", "I-PER", "I-ORG-X", "B", "I"], "IOB1")
    validate_tags(["O", "B-PER", "I-PER"], "IOB2")
    validate_tags(["O", "B-PER", "I-PER", "E-PER", "S-LOC"], "BIOES")
    validate_tags([], "IOB2")


@pytest.mark.parametrize("tag,scheme", [
    ("E-PER", "IOB2"), ("S-PER", "IOB1"), ("X-PER", "BIOES"), ("", "IOB2"), ("B-", "IOB2"),
    ("O-PER", "IOB2"), ("B PER", "IOB2"), ("b-PER", "IOB2"), (None, "BIOES"), ("L-PER", "BIOES"),
])
def test_validate_rejects_bad_tags_naming_them(tag, scheme):
    with pytest.raises(DataError) as err:
        validate_tags(["O", "B-PER", tag], scheme, path="dev.txt", line=12)
    assert str(err.value).startswith("dev.txt:12: ") and repr(tag) in str(err.value)
    assert "token 3" in str(err.value) and err.value.line == 12


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="scheme"):
        validate_tags(["O"], "IOBES")
    with pytest.raises(ConfigError, match="scheme"):
        from_spans([], 3, "BILOU")


@pytest.mark.parametrize("tags,scheme,spans", [
    ("I-PER I-PER B-PER O I-LOC", "IOB1", [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]),
    ("I-PER I-LOC B-LOC", "IOB1", [("PER", 0, 1), ("LOC", 1, 2), ("LOC", 2, 3)]),
    ("B-PER I-PER B-PER O B-LOC", "IOB2", [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]),
    ("B-PER E-PER S-PER O B-ORG I-ORG E-ORG S-LOC", "BIOES",
     [("PER", 0, 2), ("PER", 2, 3), ("ORG", 4, 7), ("LOC", 7, 8)]),
    ("O O", "IOB2", []),
    # ill-formed: read as conlleval reads them
    ("O I-PER I-LOC", "IOB2", [("PER", 1, 2), ("LOC", 2, 3)]),
    ("B-PER I-LOC", "IOB2", [("PER", 0, 1), ("LOC", 1, 2)]),
    ("B-PER O E-PER", "BIOES", [("PER", 0, 1), ("PER", 2, 3)]),
    ("B-PER I-PER", "BIOES", [("PER", 0, 2)]),
    ("S-PER I-PER E-PER", "BIOES", [("PER", 0, 1), ("PER", 1, 3)]),
])
def test_to_spans(tags, scheme, spans):
    assert to_spans(tags.split(), scheme) == spans


@pytest.mark.parametrize("tags,scheme", [("B-PER E-PER", "IOB2"), ("S-PER", "IOB1"), ("Z", "BIOES")])
def test_to_spans_validates(tags, scheme):
    with pytest.raises(DataError):
        to_spans(tags.split(), scheme)


def test_from_spans():
    spans = [("LOC", 5, 6), ("PER", 0, 2), ("PER", 2, 3), ("ORG", 3, 5)]
    assert from_spans(spans, 7, "IOB1") == "I-PER I-PER B-PER I-ORG I-ORG I-LOC O".split()
    assert from_spans(spans, 7, "IOB2") == "B-PER I-PER B-PER B-ORG I-ORG B-LOC O".split()
    assert from_spans(spans, 7, "BIOES") == "B-PER E-PER S-PER B-ORG E-ORG S-LOC O".split()
    assert from_spans([("", 0, 3)], 3, "BIOES") == ["B", "I", "E"]
    for bad in ([("PER", 1, 1)], [("PER", 2, 5)], [("PER", -1, 1)], [("PER", 0, 2), ("LOC", 1, 3)]):
        with pytest.raises(DataError):
            from_spans(bad, 4, "IOB2")


def test_converting_ill_formed_tags_follows_conlleval():
    assert convert("O I-PER I-LOC".split(), "IOB2", "IOB2") == "O B-PER B-LOC".split()
    assert convert("O I-PER I-PER".split(), "IOB2", "BIOES") == "O B-PER E-PER".split()
    assert convert("B-PER O".split(), "BIOES", "IOB1") == "I-PER O".split()
    assert convert("O B-PER B-PER".split(), "IOB1", "IOB1") == "O I-PER B-PER".split()


@st.composite
def sentences(draw) -> tuple[list[tuple[str, int, int]], int]:
    """Random non-overlapping spans (adjacent ones of one type included) and a sentence length."""
    spans, pos = [], 0
    for gap, size, type_ in draw(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4),
                                                    st.sampled_from(["PER", "LOC", "ORG-X", ""])),
                                          max_size=6)):
        spans.append((type_, pos + gap, pos + gap + size))
        pos += gap + size
    return spans, pos + draw(st.integers(0, 2))


@settings(max_examples=300, deadline=None)
@given(sentences())
def test_round_trips_between_schemes(sentence):
    spans, length = sentence
    for src in SCHEMES:
        tags = from_spans(spans, length, src)
        assert to_spans(tags, src) == spans
        for dst in SCHEMES:
            there = convert(tags, src, dst)
            assert to_spans(there, dst) == spans
            assert convert(there, dst, src) == tags


@settings(max_examples=200, deadline=None)
@given(sentences())
def test_spans_agree_with_seqeval_on_well_formed_tags(sentence):
    spans, length = sentence
    spans = [s for s in spans if s[0]]  # seqeval names the empty type "_"
    for scheme in SCHEMES:
        tags = from_spans(spans, length, scheme)
        assert [(t, a, b + 1) for t, a, b in get_entities(tags)] == spans


def test_every_short_sequence_converts_consistently():
    # any valid tags, well-formed or not: converting keeps the spans conlleval sees
    labels = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B"]
    for length in range(1, 4):
        for tags in itertools.product(labels, repeat=length):
            spans = to_spans(tags, "BIOES")
            for dst in SCHEMES:
                assert to_spans(convert(tags, "BIOES", dst), dst) == spans


def test_validation_cache_never_lets_a_bad_tag_through():
    """Tags found valid are remembered per scheme; a new or invalid tag is still checked and named."""
    validate_tags(["O", "B-PER", "I-PER"], "IOB2")
    validate_tags(["O", "B-PER", "I-PER"], "IOB2")  # from the cache
    with pytest.raises(DataError, match="'S-PER' is not valid in the IOB2 scheme"):
        validate_tags(["B-PER", "S-PER"], "IOB2")  # valid in BIOES, not in IOB2
    validate_tags(["S-PER"], "BIOES")
    with pytest.raises(DataError, match="'S-PER' is not valid in the IOB2 scheme"):
        validate_tags(["S-PER"], "IOB2")  # BIOES's cache does not leak into IOB2
    with pytest.raises(DataError, match="not a string"):
        validate_tags(["O", ["B-PER"]], "IOB2")  # unhashable: the slow path names it
