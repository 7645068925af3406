"""The ``cachelayer`` command: thin over the library (parse, call one function, print).

Errors a user can cause print one line on stderr, no traceback: exit status 2 for usage
and configuration errors (:class:`~cachelayer.errors.ConfigError`), 1 when work failed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cachelayer import __version__
from cachelayer.errors import CacheLayerError, ConfigError
from cachelayer.timeparse import WHEN

F = TypeVar("F", bound=Callable[..., Any])
#: Default transfers at once for `backfill` and `worker` (many small files; network bound).
BACKFILL_CONCURRENCY = 16


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose == 1:
        level = logging.INFO
    elif verbose > 1:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cachelayer: %(levelname)s: %(message)s"))
    logger = logging.getLogger("cachelayer")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


class Group(click.Group):
    """Turns cachelayer errors into one line and the right exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CacheLayerError as exc:
            click.echo(f"cachelayer: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"cachelayer: error: {exc.format_message()}{hint}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("cachelayer: interrupted", err=True)
            ctx.exit(130)


def settings_options(f: F) -> F:
    """The options every command that opens a CacheLayer takes (override the environment)."""
    opts = [
        click.option("--database-url", help="Catalog URL [env CACHELAYER_DATABASE_URL]."),
        click.option("--storage-url",
                     help="s3://bucket[/prefix] or file:///dir [env CACHELAYER_STORAGE_URL]."),
        click.option("--public-base-url",
                     help="Base of public durable URLs [env CACHELAYER_PUBLIC_BASE_URL]."),
        click.option("--url-mode", type=click.Choice(["public", "presigned", "s3"]),
                     help="Durable URL form [env CACHELAYER_URL_MODE]."),
        click.option("--allowed-hosts",
                     help="Comma-separated download hosts [env CACHELAYER_ALLOWED_HOSTS]."),
        click.option("--concurrency", type=click.IntRange(1, 256),
                     help="Files transferred at once [env CACHELAYER_CONCURRENCY]."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def open_layer(**options: Any) -> Any:
    """A CacheLayer from the environment with CLI overrides (``None`` = not given)."""
    from cachelayer.layer import CacheLayer

    return CacheLayer(**{k: v for k, v in options.items() if v is not None})


def print_output(output: Any, as_json: bool) -> None:
    """Durable output on stdout: JSON with ``--json``; otherwise one URL per line for a
    string or a flat list of strings, indented JSON for anything else."""
    if as_json:
        click.echo(json.dumps(output))
    elif isinstance(output, str):
        click.echo(output)
    elif isinstance(output, list) and all(isinstance(v, str) for v in output):
        for v in output:
            click.echo(v)
    else:
        click.echo(json.dumps(output, indent=2))


def parse_inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs to a model input. Values parse as JSON when they can
    (``2`` is a number, ``true`` a boolean), else stay strings; ``@path`` sends a local file."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-i/--input")
        value: Any
        if raw.startswith("@"):
            path = Path(raw[1:]).expanduser()
            if not path.is_file():
                raise click.BadParameter(f"no such file: {path}", param_hint="-i/--input")
            value = path
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        result[key] = value
    return result


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cachelayer")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def main(verbose: int, quiet: bool) -> None:
    """Make Replicate model outputs permanent: copy every output file to S3-compatible
    storage, record it in SQL and print durable URLs."""
    _setup_logging(verbose, quiet)


@main.command()
@click.argument("model")
@click.option("-i", "--input", "inputs", multiple=True, metavar="KEY=VALUE",
              help="Model input; JSON values parse (num_outputs=2), @path sends a file.")
@click.option("--json", "as_json", is_flag=True, help="Print the durable output as JSON.")
@click.option("--on-expired", type=click.Choice(["raise", "rerun"]), default="raise", show_default=True)
@click.option("--file-encoding", type=click.Choice(["base64", "upload"]), default="base64",
              show_default=True, help="How @path inputs are sent: data: URI or Replicate's files API.")
@settings_options
def run(model: str, inputs: tuple[str, ...], as_json: bool, on_expired: str,
        file_encoding: str, **options: Any) -> None:
    """Run MODEL (owner/name[:version] or deployments/owner/name), store its files,
    print the output with durable URLs."""
    data = parse_inputs(inputs)
    params: dict[str, Any] = {}
    if any(isinstance(v, Path) for v in data.values()) and file_encoding == "base64":
        params["file_encoding_strategy"] = "base64"
    with open_layer(**options) as layer:
        print_output(layer.run(model, input=data, on_expired=on_expired, **params), as_json)


@main.command()
@click.argument("prediction_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print {id: durable output} as JSON.")
@click.option("--on-expired", type=click.Choice(["raise", "rerun"]), default="raise", show_default=True)
@settings_options
def persist(prediction_ids: tuple[str, ...], as_json: bool, on_expired: str, **options: Any) -> None:
    """Copy the files of existing predictions; print their durable outputs.

    Every id is attempted; the exit status is 1 if any failed."""
    results: dict[str, Any] = {}
    failed: list[str] = []
    with open_layer(**options) as layer:
        for pid in prediction_ids:
            try:
                results[pid] = layer.persist(pid, on_expired=on_expired)
            except ConfigError:
                raise
            except CacheLayerError as exc:
                click.echo(f"cachelayer: error: {pid}: {exc}", err=True)
                failed.append(pid)
    if as_json:
        click.echo(json.dumps(results))
    else:
        for pid, output in results.items():
            if len(prediction_ids) > 1:
                click.echo(f"# {pid}")
            print_output(output, False)
    if failed:
        sys.exit(1)


@main.command()
@click.option("--since", type=WHEN, help="Oldest creation time: ISO 8601 or a duration ago (6h, 7d).")
@click.option("--until", type=WHEN, help="Newest creation time (same forms).")
@click.option("--model", "models", multiple=True, metavar="OWNER/NAME", help="Only this model (repeatable).")
@click.option("--source", type=click.Choice(["api", "web"]), help="Only predictions created this way.")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["succeeded", "failed", "canceled", "starting", "processing"]),
              help="Only predictions with this status (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many predictions.")
@click.option("--dry-run", is_flag=True, help="Scan and report what would be copied; write nothing.")
@click.option("--scan-only", is_flag=True, help="Record and queue only; `cachelayer worker` copies.")
@click.option("--on-expired", type=click.Choice(["skip", "rerun"]), default="skip", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "quiet_progress", is_flag=True, help="No live progress display.")
@settings_options
def backfill(since: Any, until: Any, models: tuple[str, ...], source: str | None,
             statuses: tuple[str, ...], limit: int | None, dry_run: bool, scan_only: bool,
             on_expired: str, as_json: bool, quiet_progress: bool, **options: Any) -> None:
    """Copy every retrievable file of your prediction history (resumable).

    Exit status 0 when every retrievable file is stored, 1 when some failed."""
    from cachelayer.progress import LiveProgress, print_summary

    options["concurrency"] = options.get("concurrency") or BACKFILL_CONCURRENCY
    with open_layer(**options) as layer, LiveProgress(not quiet_progress) as live:
        summary = layer.backfill(since=since, until=until, models=models, source=source,
                                 statuses=statuses, limit=limit, dry_run=dry_run,
                                 scan_only=scan_only, on_expired=on_expired,
                                 progress=live.update)
    print_summary(summary, as_json=as_json)
    sys.exit(summary.exit_code)


@main.command()
@click.option("--once", is_flag=True, help="Exit when the queue has nothing left to claim.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "quiet_progress", is_flag=True, help="No live progress display.")
@settings_options
def worker(once: bool, as_json: bool, quiet_progress: bool, **options: Any) -> None:
    """Drain the catalog's queue of pending files; run one per machine.

    Without --once it keeps polling until interrupted (Ctrl-C or SIGTERM finish the
    files in flight first)."""
    import signal
    import threading

    from cachelayer.progress import LiveProgress, print_summary

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    options["concurrency"] = options.get("concurrency") or BACKFILL_CONCURRENCY
    with open_layer(**options) as layer, LiveProgress(not quiet_progress) as live:
        try:
            summary = layer.work(once=once, stop=stop, progress=live.update)
        except KeyboardInterrupt:
            stop.set()
            raise
    print_summary(summary, as_json=as_json)
    sys.exit(summary.exit_code)


@main.group()
def db() -> None:
    """Manage the catalog database."""


@db.command("upgrade")
@click.option("--database-url", help="Catalog URL [env CACHELAYER_DATABASE_URL].")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Apply the catalog's Alembic migrations."""
    from cachelayer.catalog.db import make_engine, upgrade
    from cachelayer.config import Settings

    settings = Settings.from_env(database_url=database_url)
    engine = make_engine(settings.database_url)
    before, after = upgrade(engine, revision)
    click.echo(f"catalog {engine.url.render_as_string(hide_password=True)}: "
               f"{before or 'empty'} -> {after}")
    engine.dispose()


@db.command("current")
@click.option("--database-url", help="Catalog URL [env CACHELAYER_DATABASE_URL].")
def db_current(database_url: str | None) -> None:
    """Print the catalog's migration revision and the one this version ships."""
    from cachelayer.catalog.db import current_revision, head_revision, make_engine
    from cachelayer.config import Settings

    engine = make_engine(Settings.from_env(database_url=database_url).database_url)
    click.echo(f"current {current_revision(engine) or 'none'}, head {head_revision(engine)}")
    engine.dispose()


@main.command()
@click.option("--images", default=3, show_default=True, help="Images the demo model makes.")
@click.option("--url-ttl", default=3.0, show_default=True, help="Seconds the source URLs live.")
@click.option("--keep", is_flag=True, help="Keep the demo's catalog and objects.")
def demo(images: int, url_ttl: float, keep: bool) -> None:
    """Offline demo: simulator -> persist -> source URLs expire -> durable URLs still serve."""
    from cachelayer.demo import run_demo

    run_demo(images=images, url_ttl=url_ttl, keep=keep, echo=click.echo)


from cachelayer.cli_catalog import register as _register_catalog  # noqa: E402

_register_catalog(main)


if __name__ == "__main__":  # pragma: no cover
    main()
