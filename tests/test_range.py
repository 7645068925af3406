"""``parse_range`` (the gateway's ``Range`` header, RFC 9110 section 14) against a plain
reference on arbitrary headers, and on the hostile ones of issue 17 (long runs of
whitespace or digits that a backtracking regular expression took seconds over)."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from cachelayer.server.gateway import MAX_RANGE_HEADER, parse_range

# the reference's grammar: the single-range subset of RFC 9110's ranges-specifier, with
# optional whitespace (SP / HTAB) around each token; ASCII only (re.ASCII: no Unicode
# digits or whitespace, and no case folding of non-ASCII letters onto "bytes")
_REFERENCE = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.I | re.ASCII)


def reference(header: str | None, size: int) -> tuple[int, int] | str | None:
    """What a ``Range`` header asks, read the obvious way (only ever run on short input)."""
    if not header:
        return None
    if len(header) > MAX_RANGE_HEADER:
        return "unsatisfiable"
    m = _REFERENCE.fullmatch(header)
    if m is None or not (m[1] or m[2]):
        return None
    if not m[1]:
        n = int(m[2])
        return "unsatisfiable" if n == 0 or size == 0 else (max(0, size - n), size - 1)
    first = int(m[1])
    last = int(m[2]) if m[2] else size - 1
    if m[2] and last < first:
        return None
    return "unsatisfiable" if first >= size else (first, min(last, size - 1))


# headers arrive decoded as Latin-1: every character is one byte of the request
_LATIN1 = st.characters(max_codepoint=255)
_PIECES = st.sampled_from(
    ["bytes", "BYTES", "Bytes", "=", "-", ",", " ", "\t", "0", "1", "9", "42", "\xa0", "\x85"]
)
headers = st.one_of(
    st.text(_LATIN1, max_size=40),
    st.lists(st.one_of(_PIECES, st.text(_LATIN1, max_size=2)), max_size=12).map("".join),
    st.builds(
        lambda a, b, ws: f"{ws}bytes{ws}={ws}{a}{ws}-{ws}{b}{ws}",
        st.one_of(st.just(""), st.integers(0, 10**12).map(str)),
        st.one_of(st.just(""), st.integers(0, 10**12).map(str)),
        st.sampled_from(["", " ", "\t", "  "]),
    ),
)


@given(headers, st.integers(0, 10**10))
@example("bytes=0-", 10)
@example("bytes=-0", 10)
@example("bytes=\xa00-1", 10)  # NBSP is not optional whitespace
@example("bytes=\u0663-", 10)  # an Arabic-Indic digit is not a digit here
@example("bytes=0-1,5-9", 10)
@example("byte\u017f=0-1", 10)  # the long s must not fold onto "s"
def test_parse_range_agrees_with_the_reference(header, size):
    assert parse_range(header, size) == reference(header, size)


def test_hostile_headers_are_refused_or_ignored_whole():
    # each of these took a backtracking regular expression seconds to minutes (issue 17)
    for filler in (" ", "\t", "0", "1 "):
        for n in (MAX_RANGE_HEADER, 32_000, 128_000):
            header = "bytes=0-" + filler * (n // len(filler)) + "x"
            expected = "unsatisfiable" if len(header) > MAX_RANGE_HEADER else None
            assert parse_range(header, 100) == expected
    assert parse_range("bytes=" + "9" * 1000 + "-", 100) == "unsatisfiable"  # past the end
    assert parse_range("bytes=0-" + "9" * 1000, 100) == (0, 99)
    assert parse_range("bytes=-" + "9" * 1000, 100) == (0, 99)
