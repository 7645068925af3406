"""Output formats of the catalog commands: ``table``, ``json``, ``jsonl``, ``csv``.

Conventions (clig.dev, and what ``docker ps`` / ``kubectl get`` do):

* **The default is ``table`` whether or not stdout is a terminal**, so ``cachelayer ls |
  grep``, ``| less`` and ``| head`` show what the terminal shows; scripts ask for a stable
  machine format explicitly with ``--format json|jsonl|csv``. Output never switches shape
  silently because it is piped.
* ``table`` anywhere but a terminal is plain aligned text, one row per line, columns
  separated by at least two spaces, no color, no truncation. Unknown values print as ``-``;
  control characters in a value print escaped (``\\n``, ``\\x1b``), so a row stays one line.
* ``table`` on a terminal (bold headers unless ``NO_COLOR`` is set to a non-empty value or
  ``TERM=dumb``) never cuts, folds or drops a value, and never breaks a URL over lines: at
  the terminal's width it is the same aligned table when that fits; otherwise the short
  columns stay a table and each long value (a ``Column(long=True)``: URLs, keys, errors)
  goes on its own line under its row, ``  URL  https://...``; when even the short columns
  do not fit, each record is a block of ``NAME  value`` lines. A value wider than the
  terminal is written as one line (the terminal soft-wraps it; copying it gives the URL).
* ``json`` is one JSON document (an array of records, or an object where a command says
  so); ``jsonl`` one compact JSON object per line; ``csv`` RFC 4180 with a header
  row, except that lines end with ``\\n``, not CRLF (a last field taken with ``awk -F,``
  or ``cut`` must not end in ``\\r``).
  Field names are the records' stable names (``FileRecord.to_dict()`` keys and the extra
  fields a command documents); times are ISO 8601 UTC with ``Z``
  (``2026-11-20T23:05:16.760091Z``); sizes are integers in bytes; unknown values are
  ``null`` in JSON and empty in CSV; nested values (a prediction's input) are JSON in CSV.
* Only data goes to stdout; counts, progress and next-page hints go to stderr.
* **Every text prints**, whatever it holds and whatever stdout's encoding (``LANG=C``,
  ``PYTHONIOENCODING=ascii``, a pipe): each writer escapes what the stream cannot encode,
  lone surrogates (``\\ud800``, which no UTF-8 stream takes) included. In ``json``/``jsonl``
  as ``\\uXXXX`` escapes (valid JSON that parses back to the same strings: nothing is
  lost); in ``table`` and ``csv`` as backslash escapes (``\\ud800``, ``\\xe9``). Table cells
  also escape what could drive a terminal or break a row: C0 and C1 control characters,
  DEL, line and paragraph separators and bidirectional overrides (``\\x1b``, ``\\x9b``,
  ``\\u202e``); ``csv`` keeps control characters (quoted) as data. One place:
  :func:`escaping`.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TextIO, cast

from rich.cells import cell_len

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "Column",
    "escaping",
    "jsonable",
    "use_rich",
    "write_fields",
    "write_json",
    "write_records",
    "write_text",
]

FORMATS = ("table", "json", "jsonl", "csv")
DEFAULT_FORMAT = "table"


@dataclass(frozen=True)
class Column:
    """A table column: the record ``key`` it shows, its ``header``, whether numbers
    right-align (``numeric``) and whether its values are long (``long``: URLs, keys,
    errors), which on a narrow terminal go on their own line under the row instead of in
    a column. No value is ever cut or wrapped."""

    key: str
    header: str
    numeric: bool = False
    long: bool = False


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 UTC strings ending in ``Z`` (recursively)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False, **kwargs)


def use_rich(out: TextIO) -> bool:
    """Whether ``out`` is an interactive terminal that should get a rich table."""
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


#: Table-cell escapes: C0, DEL and C1 controls (ESC and CSI drive terminals), line and
#: paragraph separators, bidirectional embeddings/overrides/isolates (they reorder what is
#: shown), and lone surrogates (no encoding takes them).
_ESCAPES: dict[int, str] = {i: f"\\x{i:02x}" for i in [*range(32), *range(127, 160)]}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({i: f"\\u{i:04x}" for i in [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]})
_ESCAPES.update({i: f"\\u{i:04x}" for i in range(0xD800, 0xE000)})


def _json_escape(err: UnicodeError) -> tuple[str, int]:
    """Codec error handler: what a stream cannot encode, as JSON ``\\uXXXX`` escapes
    (UTF-16 surrogate pairs above U+FFFF). Valid only inside JSON strings, which is where
    every non-ASCII character of a JSON document is."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    parts = []
    for ch in err.object[err.start : err.end]:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            parts.append(f"\\u{0xD800 | (cp >> 10):04x}\\u{0xDC00 | (cp & 0x3FF):04x}")
        else:
            parts.append(f"\\u{cp:04x}")
    return "".join(parts), err.end


codecs.register_error("cachelayer-json", _json_escape)


class _Escaping:
    """``out`` whose ``write`` first escapes what ``out``'s encoding cannot take (see
    :func:`escaping`); every other attribute is ``out``'s."""

    def __init__(self, out: TextIO, errors: str) -> None:
        self._out = out
        self._errors = errors
        encoding = getattr(out, "encoding", None) or "utf-8"
        try:
            self._encoding = codecs.lookup(encoding).name
        except LookupError:
            self._encoding = "utf-8"

    def write(self, text: str) -> int:
        if not text.isascii():
            text = text.encode(self._encoding, self._errors).decode(self._encoding)
        return self._out.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


def escaping(out: TextIO | None = None, *, json_text: bool = False) -> TextIO:
    """``out`` (default stdout) wrapped so that every text written to it prints: characters
    its encoding cannot take (lone surrogates always; ``é`` on an ASCII stream) are written
    as ``\\uXXXX`` escapes when ``json_text`` (the text is JSON: escapes inside its strings
    keep it valid and lossless) and as backslash escapes (``backslashreplace``) otherwise.
    Never raises ``UnicodeEncodeError``."""
    out = out if out is not None else sys.stdout
    return cast(TextIO, _Escaping(out, "cachelayer-json" if json_text else "backslashreplace"))


def _cell(value: Any) -> str:
    """Text of one table cell: one line, control characters escaped."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _dumps(value, separators=(",", ":")).translate(_ESCAPES)
    if isinstance(value, datetime):
        return str(jsonable(value))
    return str(value).translate(_ESCAPES)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _dumps(value, separators=(",", ":"))
    if isinstance(value, datetime):
        return jsonable(value)
    return value


def write_records(
    records: Iterable[Mapping[str, Any]],
    fmt: str,
    *,
    columns: Sequence[Column],
    fields: Sequence[str] | None = None,
    out: TextIO | None = None,
    console: Console | None = None,
) -> int:
    """Write ``records`` (dicts) in ``fmt`` to ``out`` (default stdout); returns how many.

    ``columns`` choose what a ``table`` shows; ``json``/``jsonl``/``csv`` carry every
    field, in the order of ``fields`` (default: the first record's keys). ``jsonl``,
    ``csv`` and ``json`` stream (constant memory); ``table`` holds the rows to align them.
    ``console``: draw the table on this rich console (its width decides the layout)
    instead of choosing by ``out``. Raises ``ValueError`` for an unknown format.
    """
    out = escaping(out, json_text=fmt in ("json", "jsonl"))
    if fmt == "table":
        rows = [[_cell(r.get(c.key)) for c in columns] for r in records]
        _table(columns, rows, out, console)
        return len(rows)
    n = 0
    if fmt == "jsonl":
        for r in records:
            out.write(_dumps(r) + "\n")
            n += 1
        return n
    if fmt == "json":
        out.write("[")
        for r in records:
            out.write(("," if n else "") + "\n  " + _dumps(r))
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
    if fmt == "csv":
        # Lines end in "\n"; the csv module then quotes cells holding "\n" but not a lone
        # "\r", which readers take for a line end: such a row is written fully quoted.
        plain = csv.writer(out, lineterminator="\n")
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)

        def write(row: list[Any]) -> None:
            (quoted if any(isinstance(c, str) and "\r" in c for c in row) else plain).writerow(row)

        names: list[str] | None = list(fields) if fields is not None else None
        header = False
        for r in records:
            if names is None:
                names = list(r.keys())
            if not header:
                write(list(names))
                header = True
            write([_csv_cell(r.get(k)) for k in names])
            n += 1
        if not header and names is not None:
            write(list(names))
        return n
    raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def write_json(document: Any, *, out: TextIO | None = None, compact: bool = False) -> None:
    """One JSON document (indented unless ``compact``) and a newline."""
    out = escaping(out, json_text=True)
    if compact:
        out.write(_dumps(document, separators=(",", ":")) + "\n")
    else:
        out.write(_dumps(document, indent=2) + "\n")


def write_text(text: str, *, out: TextIO | None = None) -> None:
    """One line of plain text (e.g. a durable URL), what the stream cannot take escaped."""
    escaping(out).write(f"{text}\n")


def write_fields(
    pairs: Sequence[tuple[str, Any]], *, out: TextIO | None = None, console: Console | None = None
) -> None:
    """A ``name  value`` block (a record shown vertically), aligned, one line per field
    (bold names on a terminal; values never wrapped or cut)."""
    out = escaping(out)
    cells = [(name, _cell(value)) for name, value in pairs]
    if console is not None or use_rich(out):
        _block(console or _console(out), cells)
        return
    width = max((len(name) for name, _ in cells), default=0)
    for name, value in cells:
        out.write(f"{name.ljust(width)}  {value}".rstrip() + "\n")


def _console(out: TextIO) -> Console:
    from rich.console import Console

    return Console(file=out, no_color=_no_color(), highlight=False)


def _print(console: Console, parts: Sequence[tuple[str, str]]) -> None:
    """One physical line from ``(text, style)`` parts; never wrapped, cut or highlighted."""
    from rich.text import Text

    line = Text(no_wrap=True, overflow="ignore", end="\n")
    for text, style in parts:
        line.append(text, style=style or None)
    line.rstrip()
    console.print(line, soft_wrap=True, highlight=False, markup=False, emoji=False)


def _block(console: Console, cells: Sequence[tuple[str, str]]) -> None:
    width = max((cell_len(name) for name, _ in cells), default=0)
    for name, value in cells:
        _print(console, [*_padded(name, width, "bold"), ("  " + value, "")])


def _padded(text: str, width: int, style: str, right: bool = False) -> list[tuple[str, str]]:
    """``text`` (styled) and the spaces that pad it to ``width`` cells (unstyled)."""
    room = (" " * max(0, width - cell_len(text)), "")
    return [room, (text, style)] if right else [(text, style), room]


def _table(columns: Sequence[Column], rows: list[list[str]], out: TextIO, console: Console | None) -> None:
    if console is not None or use_rich(out):
        _terminal_table(columns, rows, console or _console(out))
        return
    widths = [len(c.header) for c in columns]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if c.numeric else v.ljust(w) for c, v, w in zip(columns, values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip() + "\n"

    out.write(line([c.header for c in columns]))
    for row in rows:
        out.write(line(row))


def _terminal_table(columns: Sequence[Column], rows: list[list[str]], console: Console) -> None:
    """The layout that shows every value whole at ``console.width`` (see the module doc)."""
    widths = [max([cell_len(c.header), *(cell_len(row[i]) for row in rows)]) for i, c in enumerate(columns)]

    def span(idx: Sequence[int]) -> int:
        return sum(widths[i] for i in idx) + 2 * max(0, len(idx) - 1)

    every = list(range(len(columns)))
    short = [i for i in every if not columns[i].long]
    long = [i for i in every if columns[i].long]
    if span(every) <= console.width:
        short, long = every, []
    elif not short or span(short) > console.width:
        for n, row in enumerate(rows):
            if n:
                console.print()
            _block(console, [(c.header, row[i]) for i, c in enumerate(columns)])
        return

    def line(values: Sequence[str], style: str) -> list[tuple[str, str]]:
        parts: list[tuple[str, str]] = []
        for k, i in enumerate(short):
            parts.append(("  " if k else "", ""))
            parts += _padded(values[i], widths[i], style, right=columns[i].numeric)
        return parts

    _print(console, line([c.header for c in columns], "bold"))
    name_width = max((cell_len(columns[i].header) for i in long), default=0)
    for row in rows:
        _print(console, line(row, ""))
        for i in long:
            if row[i] != "-":
                name = _padded(columns[i].header, name_width, "bold")
                _print(console, [("  ", ""), *name, ("  " + row[i], "")])
