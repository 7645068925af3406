"""``cachelayer db upgrade`` and ``cachelayer db current``: the catalog's schema (Alembic)."""

from __future__ import annotations

import click

from cachelayer.cli.options import database_option, require_catalog
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

    settings = Settings.from_env(database_url=database_url)
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

    url = Settings.from_env(database_url=database_url).database_url
    require_catalog(url)
    engine = make_engine(url)
    try:
        click.echo(f"current {current_revision(engine) or 'none'}, head {head_revision(engine)}")
    finally:
        engine.dispose()
