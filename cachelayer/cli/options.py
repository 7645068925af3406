"""Options shared by several commands, declared once, and the one way a command opens a
:class:`~cachelayer.layer.CacheLayer`.

* :func:`reading_options`: ``--database-url``, ``--storage-url``, ``--public-base-url``,
  ``--url-mode`` (each overrides its environment variable; see :mod:`cachelayer.config`):
  what the commands that read the catalog use. :func:`settings_options`: those plus
  ``--allowed-hosts`` and ``--concurrency``, for the commands that copy. A command lists
  only the options it uses.
* :func:`filter_options`: ``--model``, ``--status``, ``--since``, ``--until``,
  ``--prediction`` of the catalog commands; :func:`time_options` the ``--since``/``--until``
  pair alone; :data:`WHEN` their click type.
* :func:`format_option`: ``--format table|json|jsonl|csv``.
* :func:`open_layer`: settings from the environment and those options (an error about a
  value names the flag when the flag gave it, the variable otherwise); read-only commands
  ask for ``existing_catalog=True`` so a mistyped SQLite path is refused instead of
  creating an empty catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cachelayer.catalog.records import FILE_STATUSES
from cachelayer.cli.formatting import DEFAULT_FORMAT, FORMATS
from cachelayer.config import URL_MODES, Settings
from cachelayer.errors import CatalogUnavailableError
from cachelayer.setting_values import sqlite_path
from cachelayer.timeparse import parse_duration, parse_when

if TYPE_CHECKING:
    from cachelayer.layer import CacheLayer

__all__ = [
    "WHEN",
    "WhenParamType",
    "filter_options",
    "format_option",
    "flag_name",
    "open_layer",
    "reading_options",
    "require_catalog",
    "settings_options",
    "time_options",
]

F = TypeVar("F", bound=Callable[..., Any])


class WhenParamType(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2
    """click type for :func:`cachelayer.timeparse.parse_when`: ISO 8601 or a duration ago
    (``6h``, ``7d``); a bad value is a usage error (exit status 2)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        try:
            return parse_when(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: Ready-made instance: ``@click.option("--since", type=WHEN)``.
WHEN = WhenParamType()


class SinceParamType(WhenParamType):
    """Like :class:`WhenParamType`, but a duration stays a ``timedelta`` ("that long ago"),
    so a backfill's checkpoint is keyed by the window and ``--since 6h`` resumes."""

    def convert(  # type: ignore[override]
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime | timedelta:
        if isinstance(value, (datetime, timedelta)):
            return value
        try:
            return parse_duration(str(value))
        except ValueError:
            return super().convert(value, param, ctx)


#: ``@click.option("--since", type=SINCE)`` for the backfill.
SINCE = SinceParamType()


def _apply(f: F, opts: Sequence[Callable[[F], F]]) -> F:
    for opt in reversed(opts):
        f = opt(f)
    return f


_READING = [
    click.option("--database-url", help="Catalog URL [env CACHELAYER_DATABASE_URL]."),
    click.option("--storage-url", help="s3://bucket[/prefix] or file:///dir [env CACHELAYER_STORAGE_URL]."),
    click.option("--public-base-url", help="Base of public durable URLs [env CACHELAYER_PUBLIC_BASE_URL]."),
    click.option(
        "--url-mode",
        type=click.Choice(list(URL_MODES)),
        help="Durable URL form (gateway needs CACHELAYER_GATEWAY_URL) [env CACHELAYER_URL_MODE].",
    ),
]


def reading_options(f: F) -> F:
    """The settings options of the commands that read the catalog (and render durable
    URLs): ``--database-url``, ``--storage-url``, ``--public-base-url``, ``--url-mode``."""
    return _apply(f, _READING)


def settings_options(f: F) -> F:
    """The settings options of the commands that copy: :func:`reading_options` plus
    ``--allowed-hosts`` and ``--concurrency`` (they override the environment)."""
    return _apply(
        f,
        [
            *_READING,
            click.option(
                "--allowed-hosts", help="Comma-separated download hosts [env CACHELAYER_ALLOWED_HOSTS]."
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(1, 256),
                help="Files downloaded at once [env CACHELAYER_CONCURRENCY].",
            ),
        ],
    )


def database_option(f: F) -> F:
    """``--database-url`` alone (the ``db`` commands need nothing else)."""
    return click.option("--database-url", help="Catalog URL [env CACHELAYER_DATABASE_URL].")(f)


def time_options(f: F) -> F:
    """``--since`` / ``--until`` (creation time of the prediction)."""
    return _apply(
        f,
        [
            click.option(
                "--since",
                type=WHEN,
                help="Created at or after: ISO 8601 (2026-11-01T00:00Z) or ago (6h, 7d).",
            ),
            click.option("--until", type=WHEN, help="Created before (same forms as --since)."),
        ],
    )


def filter_options(*, status: bool = True) -> Callable[[F], F]:
    """``--model``, ``--status`` (unless ``status=False``), ``--since``, ``--until``,
    ``--prediction``: which output files a catalog command reads."""

    def deco(f: F) -> F:
        opts: list[Callable[[F], F]] = [
            click.option("--model", metavar="OWNER/NAME", help="Only this model's files.")
        ]
        if status:
            opts.append(
                click.option(
                    "--status", type=click.Choice(FILE_STATUSES), help="Only files with this status."
                )
            )
        opts += [
            time_options,
            click.option("--prediction", "prediction_id", metavar="ID", help="Only this prediction's files."),
        ]
        return _apply(f, opts)

    return deco


def format_option(choices: Sequence[str] = FORMATS, default: str = DEFAULT_FORMAT) -> Callable[[F], F]:
    """``--format`` (``fmt`` in the command): one of ``choices``."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help="Output format (table: aligned, for people).",
    )


def open_layer(options: dict[str, Any], *, existing_catalog: bool = False) -> CacheLayer:
    """A CacheLayer from the environment with the command's settings options on top
    (``None`` = not given). Building it contacts nothing; each part is built on first use.

    ``existing_catalog``: the command only reads, so a catalog that does not exist yet is
    an error (``CatalogUnavailableError``, exit status 2) instead of a new empty one.
    Raises :class:`~cachelayer.errors.ConfigError` for bad settings.
    """
    from cachelayer.layer import CacheLayer

    settings = Settings.from_env(override_names=flag_name, **options)
    layer = CacheLayer(settings)
    if existing_catalog:
        require_catalog(layer.settings.database_url)
    return layer


def flag_name(keyword: str) -> str:
    """The command-line flag of a setting's keyword: ``storage_url`` -> ``--storage-url``."""
    return "--" + keyword.replace("_", "-")


def require_catalog(database_url: str) -> None:
    """Refuse a SQLite catalog file that does not exist (a mistyped path would otherwise
    become a new, empty catalog). Raises :class:`~cachelayer.errors.CatalogUnavailableError`
    naming the path. Other databases are checked when opened."""
    path = sqlite_path(database_url)
    if path is not None and not path.exists():
        raise CatalogUnavailableError(
            f"no catalog at {path} (check CACHELAYER_DATABASE_URL or --database-url; "
            "commands that only read never create one)"
        )
