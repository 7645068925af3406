"""Output formats of the catalog commands: ``table``, ``json``, ``jsonl``, ``csv``.

Conventions (clig.dev, and what ``docker ps`` / ``kubectl get`` do):

* **The default is ``table`` whether or not stdout is a terminal**, so ``cachelayer ls |
  grep``, ``| less`` and ``| head`` show what the terminal shows; scripts ask for a stable
  machine format explicitly with ``--format json|jsonl|csv``. Output never switches shape
  silently because it is piped.
* ``table`` on a terminal is drawn with rich (bold headers, colors unless ``NO_COLOR`` is
  set to a non-empty value or ``TERM=dumb``); anywhere else it is plain aligned text, one
  row per line, columns separated by at least two spaces, no color, no truncation. Unknown
  values print as ``-``.
* ``json`` is one JSON document (an array of records, or an object where a command says
  so); ``jsonl`` one compact JSON object per line; ``csv`` RFC 4180 with a header row.
  Field names are the records' stable names (``FileRecord.to_dict()`` keys and the extra
  fields a command documents); times are ISO 8601 UTC with ``Z``
  (``2026-11-20T23:05:16.760091Z``); sizes are integers in bytes; unknown values are
  ``null`` in JSON and empty in CSV; nested values (a prediction's input) are JSON in CSV.
* Only data goes to stdout; counts, progress and next-page hints go to stderr.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TextIO

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "Column",
    "jsonable",
    "use_rich",
    "write_fields",
    "write_json",
    "write_records",
]

FORMATS = ("table", "json", "jsonl", "csv")
DEFAULT_FORMAT = "table"


@dataclass(frozen=True)
class Column:
    """A table column: the record ``key`` it shows, its ``header``, whether numbers
    right-align (``numeric``) and whether a terminal table may wrap it (``wrap``: long
    values such as URLs; the other columns are never wrapped)."""

    key: str
    header: str
    numeric: bool = False
    wrap: bool = False


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


def _cell(value: Any) -> str:
    """Text of one table cell."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _dumps(value, separators=(",", ":"))
    if isinstance(value, datetime):
        return str(jsonable(value))
    return str(value)


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
) -> int:
    """Write ``records`` (dicts) in ``fmt`` to ``out`` (default stdout); returns how many.

    ``columns`` choose what a ``table`` shows; ``json``/``jsonl``/``csv`` carry every
    field, in the order of ``fields`` (default: the first record's keys). ``jsonl``,
    ``csv`` and ``json`` stream (constant memory); ``table`` holds the rows to align them.
    Raises ``ValueError`` for an unknown format.
    """
    out = out or sys.stdout
    if fmt == "table":
        rows = [[_cell(r.get(c.key)) for c in columns] for r in records]
        _table(columns, rows, out)
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
        writer: Any = None
        for r in records:
            if writer is None:
                names = list(fields) if fields is not None else list(r.keys())
                writer = csv.writer(out, lineterminator="\r\n")
                writer.writerow(names)
            writer.writerow([_csv_cell(r.get(k)) for k in names])
            n += 1
        if writer is None and fields is not None:
            csv.writer(out, lineterminator="\r\n").writerow(list(fields))
        return n
    raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def write_json(document: Any, *, out: TextIO | None = None, compact: bool = False) -> None:
    """One JSON document (indented unless ``compact``) and a newline."""
    out = out or sys.stdout
    if compact:
        out.write(_dumps(document, separators=(",", ":")) + "\n")
    else:
        out.write(_dumps(document, indent=2) + "\n")


def write_fields(pairs: Sequence[tuple[str, Any]], *, out: TextIO | None = None) -> None:
    """A ``name  value`` block (a record shown vertically), aligned; rich on a terminal."""
    out = out or sys.stdout
    cells = [(name, _cell(value)) for name, value in pairs]
    if use_rich(out):
        from rich.console import Console
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(overflow="fold")
        for name, value in cells:
            grid.add_row(name, value)
        Console(file=out, no_color=_no_color(), highlight=False).print(grid)
        return
    width = max((len(name) for name, _ in cells), default=0)
    for name, value in cells:
        out.write(f"{name.ljust(width)}  {value}".rstrip() + "\n")


def _table(columns: Sequence[Column], rows: list[list[str]], out: TextIO) -> None:
    if use_rich(out):
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
                      show_edge=False)
        for i, c in enumerate(columns):
            # short columns keep their full width; only ``wrap`` columns (URLs) fold
            widest = max([len(c.header), *(len(row[i]) for row in rows)])
            table.add_column(c.header, justify="right" if c.numeric else "left",
                             overflow="fold", no_wrap=not c.wrap,
                             min_width=None if c.wrap else widest)
        for row in rows:
            table.add_row(*row)
        Console(file=out, no_color=_no_color(), highlight=False).print(table)
        return
    widths = [len(c.header) for c in columns]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if c.numeric else v.ljust(w)
                 for c, v, w in zip(columns, values, widths, strict=True)]
        return "  ".join(parts).rstrip() + "\n"

    out.write(line([c.header for c in columns]))
    for row in rows:
        out.write(line(row))
