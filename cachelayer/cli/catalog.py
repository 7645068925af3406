"""Catalog commands: ``ls``, ``show``, ``resolve``, ``stats``, ``export``, ``verify``.

Thin over the library (``layer.catalog`` queries and :meth:`CacheLayer.verify`): parse,
call, print. Output formats and their conventions are in :mod:`cachelayer.cli.formatting`
(default ``table``; ``--format json|jsonl|csv`` for scripts; only data on stdout, counts
and hints on stderr).

They read the catalog only: no Replicate token is needed and no request goes to the store
(durable URLs are rendered from the recorded keys; ``verify`` alone reads objects). A
catalog that does not exist is refused (exit status 2), never created.

Exit status: 0 on success; 1 when ``resolve`` met an unknown URL (every URL is still
answered, unknown ones as ``-``/``null``), when ``verify`` found a missing, corrupt or
unreadable object (even if ``--repair`` re-queued it), or when ``show`` gets an unknown
prediction; 2 for usage and configuration errors (bad ``--since``, bad ``--cursor``,
unreachable or missing catalog).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from cachelayer.catalog.records import FileRecord, FileStatus
from cachelayer.cli.formatting import Column, write_fields, write_json, write_records
from cachelayer.cli.options import filter_options, format_option, open_layer, reading_options, time_options
from cachelayer.errors import CacheLayerError, ConfigError

__all__ = [
    "export_command",
    "ls_command",
    "resolve_command",
    "show_command",
    "stats_command",
    "verify_command",
]

#: Field names of a file in json/jsonl/csv output, in order (``FileRecord.to_dict()`` keys
#: plus ``durable_url``, the URL in the configured mode, ``null`` unless stored).
FILE_FIELDS = [*FileRecord.__dataclass_fields__, "durable_url"]
RESOLVE_FIELDS = ["url", "durable_url", "prediction_id", "output_path", "key"]
VERIFY_FIELDS = [
    "file_id",
    "prediction_id",
    "output_path",
    "model",
    "store",
    "key",
    "size",
    "sha256",
    "problem",
    "detail",
    "action",
]
STATS_NUMBERS = ["files", "stored", "pending", "expired", "failed", "stored_bytes", "deleted", "deleting"]
#: Source URLs resolved per catalog query when reading many (stdin).
RESOLVE_CHUNK = 1000

FILE_COLUMNS = [
    Column("created_at", "CREATED"),
    Column("prediction_id", "PREDICTION"),
    Column("output_path", "PATH"),
    Column("model", "MODEL"),
    Column("status", "STATUS"),
    Column("size", "SIZE", numeric=True),
    Column("durable_url", "URL", long=True),
]


#: File ids are 64-bit integers in both databases.
_MAX_ID = 2**63 - 1


class CursorType(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2
    """``--cursor``: a ``next_cursor`` a listing printed. Checked before the catalog is
    opened (a malformed or out-of-range cursor is a usage error, exit status 2); the
    value passed on is the text itself."""

    name = "CURSOR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from cachelayer.catalog.reports import CursorError, decode_cursor

        text = str(value)
        try:
            _, file_id = decode_cursor(text)
        except CursorError as exc:
            self.fail(str(exc), param, ctx)
        except (ValueError, OverflowError, RecursionError):  # a time outside years 1..9999, deep JSON
            file_id = -1
        if not 0 <= file_id <= _MAX_ID:
            self.fail(f"invalid cursor {text[:60]!r}: pass a next_cursor from a listing", param, ctx)
        return text


def _open(options: dict[str, Any]) -> Any:
    return open_layer(options, existing_catalog=True)


def _file_dict(layer: Any, rec: FileRecord) -> dict[str, Any]:
    d = rec.to_dict()
    d["durable_url"] = layer.durable_url(rec) if rec.status == FileStatus.STORED else None
    return d


def _note(message: str) -> None:
    click.echo(f"cachelayer: {message}", err=True)


# ---- ls -------------------------------------------------------------------------------------


@click.command("ls")
@filter_options()
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Files per page."
)
@click.option(
    "--cursor", type=CursorType(), help="Start after this position (the next cursor a listing printed)."
)
@format_option()
@reading_options
def ls_command(
    model: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    prediction_id: str | None,
    limit: int,
    cursor: str | None,
    fmt: str,
    **options: Any,
) -> None:
    """List output files, newest first, one page at a time.

    With --format json the page is {"files": [...], "next_cursor": C}; otherwise the next
    page's cursor is printed on stderr (pass it back with --cursor)."""
    with _open(options) as layer:
        page = layer.catalog.list_files(
            model=model,
            status=status,
            since=since,
            until=until,
            prediction_id=prediction_id,
            limit=limit,
            cursor=cursor,
        )
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
@format_option()
@reading_options
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
        write_fields(
            [
                (k, d[k])
                for k in (
                    "id",
                    "model",
                    "version",
                    "status",
                    "source",
                    "created_at",
                    "started_at",
                    "completed_at",
                    "data_removed",
                    "rerun_of",
                    "error",
                    "input",
                )
            ]
        )
        click.echo("")
        write_records(
            files,
            "table",
            columns=[
                Column("output_path", "PATH"),
                Column("status", "STATUS"),
                Column("size", "SIZE", numeric=True),
                Column("content_type", "TYPE"),
                Column("durable_url", "URL", long=True),
                Column("last_error", "ERROR", long=True),
            ],
        )


# ---- resolve --------------------------------------------------------------------------------


def _stdin() -> TextIO:
    """stdin, where a byte that is not UTF-8 reads as U+FFFD (that URL is then unknown)."""
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")
    return sys.stdin


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
@format_option()
@reading_options
def resolve_command(urls: tuple[str, ...], fmt: str, **options: Any) -> None:
    """Map source URLs (or - to read one per line from stdin) to durable URLs.

    Every input URL gets one answer, in input order: its durable URL, or - (table) /
    null (json, jsonl) / empty (csv) when no stored file came from it. The number of
    unknown URLs goes to stderr and the exit status is then 1. jsonl and csv stream
    (1,000 URLs per query), for rewriting a whole database's URLs."""
    counts = {"all": 0, "unknown": 0}
    with _open(options) as layer:

        def records() -> Iterator[dict[str, Any]]:
            for chunk in _chunks(_read_urls(urls, _stdin()), RESOLVE_CHUNK):
                # a URL with a NUL was never downloaded (control characters are refused)
                found = layer.catalog.resolve_many([u for u in chunk if "\x00" not in u])
                for url in chunk:
                    rec = found.get(url)
                    counts["all"] += 1
                    if rec is None:
                        counts["unknown"] += 1
                    yield {
                        "url": url,
                        "durable_url": layer.durable_url(rec) if rec else None,
                        "prediction_id": rec.prediction_id if rec else None,
                        "output_path": rec.output_path if rec else None,
                        "key": rec.key if rec else None,
                    }

        write_records(
            records(),
            fmt,
            fields=RESOLVE_FIELDS,
            columns=[Column("url", "SOURCE URL", long=True), Column("durable_url", "DURABLE URL", long=True)],
        )
    if counts["unknown"]:
        _note(f"{counts['unknown']} of {counts['all']} URLs unknown (no stored file was copied from them)")
        sys.exit(1)


# ---- stats ----------------------------------------------------------------------------------


@click.command("stats")
@click.option(
    "--by",
    type=click.Choice(["model", "day", "status"]),
    default="model",
    show_default=True,
    help="Group by model, UTC day of creation, or status.",
)
@time_options
@format_option()
@reading_options
def stats_command(by: str, since: datetime | None, until: datetime | None, fmt: str, **options: Any) -> None:
    """Count files per status and sum the bytes stored, per model, day or status.

    Fields: <by>, files, stored, pending, expired, failed, stored_bytes (bytes), deleted,
    deleting (files of deleted predictions). The SQL behind each number is in
    docs/SCHEMA.md."""
    with _open(options) as layer:
        rows = [r.to_dict() for r in layer.catalog.stats(by=by, since=since, until=until)]
    write_records(
        rows,
        fmt,
        fields=[by, *STATS_NUMBERS],
        columns=[
            Column(by, by.upper()),
            Column("files", "FILES", True),
            Column("stored", "STORED", True),
            Column("pending", "PENDING", True),
            Column("expired", "EXPIRED", True),
            Column("failed", "FAILED", True),
            Column("stored_bytes", "STORED BYTES", True),
            Column("deleted", "DELETED", True),
        ],
    )


# ---- export ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a file written atomically (temporary file, then renamed into place).

    Raises :class:`ConfigError` when ``path`` cannot be written at all (missing directory,
    a directory, no permission) before anything is read, and :class:`CacheLayerError` when
    writing fails midway (disk full); the target is then left as it was."""
    if path is None or path == "-":
        yield sys.stdout
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory")
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write {path}: directory {target.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CacheLayerError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@click.command("export")
@filter_options()
@format_option(("jsonl", "csv", "json"), "jsonl")
@click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE",
    help="Write to FILE (replaced atomically when complete) instead of stdout.",
)
@reading_options
def export_command(
    model: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    prediction_id: str | None,
    fmt: str,
    output: str | None,
    **options: Any,
) -> None:
    """Export every matching file (newest first) with its durable URL, streaming.

    Fields as in `ls --format jsonl`."""
    with _open(options) as layer, _output(output) as out:
        n = write_records(
            (
                _file_dict(layer, f)
                for f in layer.catalog.iter_files(
                    model=model, status=status, since=since, until=until, prediction_id=prediction_id
                )
            ),
            fmt,
            columns=FILE_COLUMNS,
            fields=FILE_FIELDS,
            out=out,
        )
    _note(f"exported {n} files" + (f" to {output}" if output and output != "-" else ""))


# ---- verify ---------------------------------------------------------------------------------


@click.command("verify")
@filter_options(status=False)
@click.option(
    "--deep", is_flag=True, help="Read every object fully and check its sha256 (not just HEAD and size)."
)
@click.option(
    "--repair",
    is_flag=True,
    help="Re-queue missing/corrupt files (or mark them failed if the source is gone). Never deletes.",
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=8, show_default=True, help="Objects checked at once."
)
@format_option()
@reading_options
def verify_command(
    model: str | None,
    since: datetime | None,
    until: datetime | None,
    prediction_id: str | None,
    deep: bool,
    repair: bool,
    workers: int,
    fmt: str,
    **options: Any,
) -> None:
    """Check every stored object against its recorded size (HEAD) and sha256 (--deep).

    Prints one row per missing, corrupt or unreadable object (nothing when all pass) and a
    summary on stderr; exit status 1 if any problem was found."""
    with _open(options) as layer:
        report = layer.verify(
            model=model,
            since=since,
            until=until,
            prediction_id=prediction_id,
            deep=deep,
            repair=repair,
            concurrency=workers,
        )
    columns = [
        Column("problem", "PROBLEM"),
        Column("prediction_id", "PREDICTION"),
        Column("output_path", "PATH"),
        Column("key", "KEY", long=True),
        Column("detail", "DETAIL", long=True),
    ]
    if repair:
        columns.append(Column("action", "ACTION"))
    if report.problems or fmt != "table":
        write_records([p.to_dict() for p in report.problems], fmt, columns=columns, fields=VERIFY_FIELDS)
    _note(report.summary())
    if not report.clean:
        sys.exit(1)
