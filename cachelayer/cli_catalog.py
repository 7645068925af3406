"""Catalog commands: ``ls``, ``show``, ``resolve``, ``stats``, ``export``, ``verify``.

Thin over the library (``layer.catalog`` queries and :func:`cachelayer.verify.verify`):
parse, call, print. Output formats and their conventions are in
:mod:`cachelayer.formatting` (default ``table``; ``--format json|jsonl|csv`` for scripts;
only data on stdout, counts and hints on stderr).

Exit status: 0 on success; 1 when ``resolve`` met an unknown URL (every URL is still
answered, unknown ones as ``-``/``null``), when ``verify`` found a missing, corrupt or
unreadable object (even if ``--repair`` re-queued it), or when ``show`` gets an unknown
prediction; 2 for usage and configuration errors (bad ``--since``, bad ``--cursor``,
unreachable catalog).

``register(main)`` adds the commands to the ``cachelayer`` group; each also takes the
settings options of the other commands (``--database-url``, ``--storage-url``, ...).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from cachelayer.catalog.models import FILE_STATUSES
from cachelayer.catalog.records import FileRecord
from cachelayer.errors import CacheLayerError
from cachelayer.formatting import (
    DEFAULT_FORMAT,
    FORMATS,
    Column,
    write_fields,
    write_json,
    write_records,
)
from cachelayer.timeparse import WHEN

__all__ = ["register", "COMMANDS"]

#: Field names of a file in json/jsonl/csv output, in order (``FileRecord.to_dict()`` keys
#: plus ``durable_url``, the URL in the configured mode, ``null`` unless stored).
FILE_FIELDS = [*FileRecord.__dataclass_fields__, "durable_url"]
RESOLVE_FIELDS = ["url", "durable_url", "prediction_id", "output_path", "key"]
VERIFY_FIELDS = ["file_id", "prediction_id", "output_path", "model", "store", "key", "size",
                 "sha256", "problem", "detail", "action"]
STATS_NUMBERS = ["files", "stored", "pending", "expired", "failed", "stored_bytes"]
#: Source URLs resolved per catalog query when reading many (stdin).
RESOLVE_CHUNK = 1000

FILE_COLUMNS = [
    Column("created_at", "CREATED"), Column("prediction_id", "PREDICTION"),
    Column("output_path", "PATH"), Column("model", "MODEL"), Column("status", "STATUS"),
    Column("size", "SIZE", numeric=True), Column("durable_url", "URL", wrap=True),
]


def _format_option(choices: tuple[str, ...] = FORMATS, default: str = DEFAULT_FORMAT) -> Any:
    return click.option("--format", "fmt", type=click.Choice(choices), default=default,
                        show_default=True, help="Output format (table: aligned, for people).")


def _filter_options(*, status: bool = True) -> Callable[[Any], Any]:
    def deco(f: Any) -> Any:
        opts = [
            click.option("--model", metavar="OWNER/NAME", help="Only this model's files."),
            click.option("--status", type=click.Choice(FILE_STATUSES),
                         help="Only files with this status.") if status else None,
            click.option("--since", type=WHEN,
                         help="Created at or after: ISO 8601 (2026-11-01T00:00Z) or ago (6h, 7d)."),
            click.option("--until", type=WHEN, help="Created before (same forms as --since)."),
            click.option("--prediction", "prediction_id", metavar="ID",
                         help="Only this prediction's files."),
        ]
        for opt in reversed([o for o in opts if o is not None]):
            f = opt(f)
        return f
    return deco


def _open(options: dict[str, Any]) -> Any:
    from cachelayer.cli import open_layer

    return open_layer(**options)


def _file_dict(layer: Any, rec: FileRecord) -> dict[str, Any]:
    d = rec.to_dict()
    d["durable_url"] = layer.durable_url(rec) if rec.status == "stored" else None
    return d


def _note(message: str) -> None:
    click.echo(f"cachelayer: {message}", err=True)


# ---- ls -------------------------------------------------------------------------------------


@click.command("ls")
@_filter_options()
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="Files per page.")
@click.option("--cursor", help="Start after this position (the next cursor a listing printed).")
@_format_option()
def ls_command(model: str | None, status: str | None, since: datetime | None,
               until: datetime | None, prediction_id: str | None, limit: int,
               cursor: str | None, fmt: str, **options: Any) -> None:
    """List output files, newest first, one page at a time.

    With --format json the page is {"files": [...], "next_cursor": C}; otherwise the next
    page's cursor is printed on stderr (pass it back with --cursor)."""
    with _open(options) as layer:
        page = layer.catalog.list_files(model=model, status=status, since=since, until=until,
                                        prediction_id=prediction_id, limit=limit, cursor=cursor)
        files = [_file_dict(layer, f) for f in page.files]
    if fmt == "json":
        write_json({"files": files, "next_cursor": page.next_cursor})
    else:
        write_records(files, fmt, columns=FILE_COLUMNS, fields=FILE_FIELDS)
        if page.next_cursor:
            _note(f"more files: --cursor {page.next_cursor}")


# ---- show -----------------------------------------------------------------------------------


@click.command("show")
@click.argument("prediction_id")
@_format_option()
def show_command(prediction_id: str, fmt: str, **options: Any) -> None:
    """Show one prediction: its record, input, outputs and their durable URLs.

    json/jsonl: {"prediction": {...}, "files": [...]}; csv: the file rows."""
    with _open(options) as layer:
        found = layer.catalog.show(prediction_id)
        if found is None:
            raise CacheLayerError(f"prediction {prediction_id} is not in the catalog")
        pred, recs = found
        files = [_file_dict(layer, f) for f in recs]
    if fmt in ("json", "jsonl"):
        write_json({"prediction": pred.to_dict(), "files": files}, compact=fmt == "jsonl")
    elif fmt == "csv":
        write_records(files, "csv", columns=FILE_COLUMNS, fields=FILE_FIELDS)
    else:
        d = pred.to_dict()
        write_fields([(k, d[k]) for k in (
            "id", "model", "version", "status", "source", "created_at", "started_at",
            "completed_at", "data_removed", "rerun_of", "error", "input")])
        click.echo("")
        write_records(files, "table", columns=[
            Column("output_path", "PATH"), Column("status", "STATUS"),
            Column("size", "SIZE", numeric=True), Column("content_type", "TYPE"),
            Column("durable_url", "URL", wrap=True), Column("last_error", "ERROR", wrap=True)])


# ---- resolve --------------------------------------------------------------------------------


def _read_urls(args: tuple[str, ...], stdin: TextIO) -> Iterator[str]:
    for arg in args:
        if arg == "-":
            for line in stdin:
                if line.strip():
                    yield line.strip()
        else:
            yield arg


def _chunks(items: Iterator[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@click.command("resolve")
@click.argument("urls", nargs=-1, required=True)
@_format_option()
def resolve_command(urls: tuple[str, ...], fmt: str, **options: Any) -> None:
    """Map source URLs (or - to read one per line from stdin) to durable URLs.

    Every input URL gets one answer, in input order: its durable URL, or - (table) /
    null (json, jsonl) / empty (csv) when no stored file came from it. The number of
    unknown URLs goes to stderr and the exit status is then 1. jsonl and csv stream
    (1,000 URLs per query), for rewriting a whole database's URLs."""
    counts = {"all": 0, "unknown": 0}
    with _open(options) as layer:
        def records() -> Iterator[dict[str, Any]]:
            for chunk in _chunks(_read_urls(urls, sys.stdin), RESOLVE_CHUNK):
                found = layer.catalog.resolve_many(chunk)
                for url in chunk:
                    rec = found.get(url)
                    counts["all"] += 1
                    if rec is None:
                        counts["unknown"] += 1
                    yield {"url": url, "durable_url": layer.durable_url(rec) if rec else None,
                           "prediction_id": rec.prediction_id if rec else None,
                           "output_path": rec.output_path if rec else None,
                           "key": rec.key if rec else None}

        write_records(records(), fmt, fields=RESOLVE_FIELDS, columns=[
            Column("url", "SOURCE URL", wrap=True), Column("durable_url", "DURABLE URL", wrap=True)])
    if counts["unknown"]:
        _note(f"{counts['unknown']} of {counts['all']} URLs unknown "
              "(no stored file was copied from them)")
        sys.exit(1)


# ---- stats ----------------------------------------------------------------------------------


@click.command("stats")
@click.option("--by", type=click.Choice(["model", "day", "status"]), default="model",
              show_default=True, help="Group by model, UTC day of creation, or status.")
@click.option("--since", type=WHEN, help="Created at or after: ISO 8601 or ago (6h, 7d).")
@click.option("--until", type=WHEN, help="Created before (same forms as --since).")
@_format_option()
def stats_command(by: str, since: datetime | None, until: datetime | None, fmt: str,
                  **options: Any) -> None:
    """Count files per status and sum the bytes stored, per model, day or status.

    Fields: <by>, files, stored, pending, expired, failed, stored_bytes (bytes). The SQL
    behind each number is in docs/SCHEMA.md."""
    with _open(options) as layer:
        rows = [r.to_dict() for r in layer.catalog.stats(by=by, since=since, until=until)]
    write_records(rows, fmt, fields=[by, *STATS_NUMBERS], columns=[
        Column(by, by.upper()), Column("files", "FILES", True), Column("stored", "STORED", True),
        Column("pending", "PENDING", True), Column("expired", "EXPIRED", True),
        Column("failed", "FAILED", True), Column("stored_bytes", "STORED BYTES", True)])


# ---- export ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a file written atomically (temporary file, then renamed into place)."""
    if path is None or path == "-":
        yield sys.stdout
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@click.command("export")
@_filter_options()
@_format_option(("jsonl", "csv", "json"), "jsonl")
@click.option("-o", "--output", "output", metavar="FILE",
              help="Write to FILE (replaced atomically when complete) instead of stdout.")
def export_command(model: str | None, status: str | None, since: datetime | None,
                   until: datetime | None, prediction_id: str | None, fmt: str,
                   output: str | None, **options: Any) -> None:
    """Export every matching file (newest first) with its durable URL, streaming.

    Fields as in `ls --format jsonl`."""
    with _open(options) as layer, _output(output) as out:
        n = write_records(
            (_file_dict(layer, f) for f in layer.catalog.iter_files(
                model=model, status=status, since=since, until=until,
                prediction_id=prediction_id)),
            fmt, columns=FILE_COLUMNS, fields=FILE_FIELDS, out=out)
    _note(f"exported {n} files" + (f" to {output}" if output and output != "-" else ""))


# ---- verify ---------------------------------------------------------------------------------


@click.command("verify")
@_filter_options(status=False)
@click.option("--deep", is_flag=True,
              help="Read every object fully and check its sha256 (not just HEAD and size).")
@click.option("--repair", is_flag=True,
              help="Re-queue missing/corrupt files (or mark them failed if the source is gone). "
                   "Never deletes.")
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Objects checked at once.")
@_format_option()
def verify_command(model: str | None, since: datetime | None, until: datetime | None,
                   prediction_id: str | None, deep: bool, repair: bool, workers: int, fmt: str,
                   **options: Any) -> None:
    """Check every stored object against its recorded size (HEAD) and sha256 (--deep).

    Prints one row per missing, corrupt or unreadable object (nothing when all pass) and a
    summary on stderr; exit status 1 if any problem was found."""
    from cachelayer.verify import verify

    with _open(options) as layer:
        report = verify(layer, model=model, since=since, until=until,
                        prediction_id=prediction_id, deep=deep, repair=repair,
                        concurrency=workers)
    columns = [Column("problem", "PROBLEM"), Column("prediction_id", "PREDICTION"),
               Column("output_path", "PATH"), Column("key", "KEY", wrap=True),
               Column("detail", "DETAIL", wrap=True)]
    if repair:
        columns.append(Column("action", "ACTION"))
    if report.problems or fmt != "table":
        write_records([p.to_dict() for p in report.problems], fmt, columns=columns,
                      fields=VERIFY_FIELDS)
    _note(report.summary())
    if not report.clean:
        sys.exit(1)


COMMANDS = [ls_command, show_command, resolve_command, stats_command, export_command,
            verify_command]


def register(group: click.Group) -> None:
    """Add the catalog commands to ``group`` (the ``cachelayer`` main group), each with
    the shared settings options (``--database-url``, ``--storage-url``, ...)."""
    from cachelayer.cli import settings_options

    for command in COMMANDS:
        if not getattr(command, "_cachelayer_settings", False):
            settings_options(command)  # click appends the options to an existing Command
            command._cachelayer_settings = True  # type: ignore[attr-defined]
        group.add_command(command)
