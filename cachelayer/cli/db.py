"""``cachelayer db upgrade`` and ``cachelayer db current``: the catalog's schema (Alembic);
``cachelayer db rebuild --from-store``: a lost catalog recreated from the bucket's manifests."""

from __future__ import annotations

import sys
from typing import Any

import click

from cachelayer.cli.options import database_option, flag_name, require_catalog
from cachelayer.errors import ConfigError
from cachelayer.masking import mask_secrets

__all__ = ["db"]


@click.group()
def db() -> None:
    """Manage the catalog database."""


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Apply the catalog's Alembic migrations (creates a SQLite catalog that does not exist)."""
    from alembic.util import CommandError

    from cachelayer.catalog.db import make_engine, upgrade
    from cachelayer.config import Settings

    settings = Settings.from_env(override_names=flag_name, database_url=database_url)
    engine = make_engine(settings.database_url)
    try:
        try:
            before, after = upgrade(engine, revision)
        except CommandError as exc:  # unknown or backwards --revision (Alembic's own check)
            raise ConfigError(f"--revision {revision!r}: {exc}") from None
        shown = mask_secrets(engine.url.render_as_string(hide_password=True))
        click.echo(f"catalog {shown}: {before or 'empty'} -> {after}")
    finally:
        engine.dispose()


@db.command("current")
@database_option
def db_current(database_url: str | None) -> None:
    """Print the catalog's migration revision and the one this version ships.

    Only reads: a SQLite catalog that does not exist is an error (exit status 2)."""
    from cachelayer.catalog.db import current_revision, head_revision, make_engine
    from cachelayer.config import Settings

    url = Settings.from_env(override_names=flag_name, database_url=database_url).database_url
    require_catalog(url)
    engine = make_engine(url)
    try:
        click.echo(f"current {current_revision(engine) or 'none'}, head {head_revision(engine)}")
    finally:
        engine.dispose()


@db.command("rebuild")
@click.option(
    "--from-store",
    "from_store",
    is_flag=True,
    required=True,
    help="Read the manifests under {prefix}/_manifests/ of the store (the only source).",
)
@click.option("--storage-url", help="s3://bucket[/prefix] or file:///dir [env CACHELAYER_STORAGE_URL].")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def db_rebuild(from_store: bool, storage_url: str | None, database_url: str | None, as_json: bool) -> None:
    """Recreate a lost catalog from the bucket's manifests, into an empty or new database.

    Exit status 1 when a manifest could not be read (reported, skipped) or none was found;
    an interrupted rebuild resumes when run again. Gateway URLs survive only with
    CACHELAYER_GATEWAY_SECRET set (a generated secret lives in the catalog and never goes
    to the bucket)."""
    from cachelayer.cli.formatting import write_fields, write_json
    from cachelayer.config import Settings
    from cachelayer.layer import CacheLayer
    from cachelayer.manifests import manifest_prefix
    from cachelayer.rebuild import RebuildSummary, rebuild

    settings = Settings.from_env(override_names=flag_name, database_url=database_url, storage_url=storage_url)
    with CacheLayer(settings, auto_migrate=True) as layer:
        layer.store.check()
        live = _Live(sys.stderr.isatty())
        with live:
            summary: RebuildSummary = rebuild(layer.catalog, layer.store, progress=live.update)
    if not settings.gateway_secret:
        click.echo(
            "cachelayer: CACHELAYER_GATEWAY_SECRET is not set: gateway URLs signed before the "
            "rebuild do not survive it (the generated secret lived in the lost catalog, never in "
            "the bucket); set it (the same value in every process) so the next rebuild keeps them",
            err=True,
        )
    if as_json:
        write_json(summary.to_dict())
    else:
        rows: list[tuple[str, object]] = [
            ("manifests read", summary.manifests),
            ("predictions restored", summary.predictions),
            ("files restored", summary.files),
            *((f"files {status}", n) for status, n in sorted(summary.files_by_status.items())),
            ("source URLs", summary.aliases),
            ("tombstones", summary.tombstones),
        ]
        if summary.already:
            rows.append(("already restored", summary.already))
        rows += [(f"skipped: {key}", reason) for key, reason in summary.skipped]
        rows += [(f"rerun without its original: {a}", b) for a, b in summary.reruns_unlinked]
        rows.append(("elapsed", f"{summary.elapsed_seconds:.1f}s"))
        write_fields(rows)
    if not summary.manifests:
        click.echo(
            f"cachelayer: no manifests under {layer.store.uri}/{manifest_prefix(layer.store.prefix)} "
            "(check --storage-url and its prefix)",
            err=True,
        )
        sys.exit(1)
    sys.exit(summary.exit_code)


class _Live:
    """The rebuild's live line on stderr (a terminal only): manifests read, restored, skipped."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._live: Any = None

    def __enter__(self) -> _Live:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live("", console=Console(file=sys.stderr), refresh_per_second=5, transient=True)
            self._live.__enter__()
        return self

    def update(self, s: Any) -> None:
        self.show(
            f"rebuilding: {s.manifests} manifests read, {s.predictions} predictions and "
            f"{s.files} files restored, {len(s.skipped)} skipped, {s.elapsed_seconds:.0f}s"
        )

    def show(self, line: str) -> None:
        if self._live is not None:
            self._live.update(line)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)


@db.command("write-manifests")
@click.option("--storage-url", help="s3://bucket[/prefix] or file:///dir [env CACHELAYER_STORAGE_URL].")
@database_option
def db_write_manifests(storage_url: str | None, database_url: str | None) -> None:
    """Write the manifest of every prediction in the catalog into the store (those recorded
    before manifests existed), so `db rebuild --from-store` can restore them. Idempotent."""
    from cachelayer.config import Settings
    from cachelayer.layer import CacheLayer
    from cachelayer.manifests import Manifests

    settings = Settings.from_env(override_names=flag_name, database_url=database_url, storage_url=storage_url)
    require_catalog(settings.database_url)
    with CacheLayer(settings) as layer:
        layer.store.check()
        live = _Live(sys.stderr.isatty())
        with live:
            done = Manifests(layer.catalog, layer.store).publish_all(
                progress=lambda s: live.show(f"manifests: {s.written} written, {s.pending} left pending")
            )
    click.echo(f"{done.written} manifests written, {done.pending} predictions with files still pending")
