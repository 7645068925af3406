"""The ``cachelayer`` group: its commands, logging on stderr and the one place errors become
exit statuses.

Every command lives in a command module (:mod:`cachelayer.cli.copy`,
:mod:`~cachelayer.cli.backfill`, :mod:`~cachelayer.cli.sweep`, :mod:`~cachelayer.cli.catalog`,
:mod:`~cachelayer.cli.db`, :mod:`~cachelayer.cli.demo`, :mod:`cachelayer.server.command`) and is named in
:data:`COMMANDS`; the group imports a command's module only when that command runs (or
``cachelayer --help`` lists them all), so ``cachelayer --version`` loads click alone and each
command loads what it needs: ``ls`` no Replicate client, ``backfill`` no Starlette. Nothing
here imports a command module at import time.

Exit statuses (the same for every command):

* ``0`` success;
* ``1`` work failed (:class:`~cachelayer.errors.CacheLayerError` other than a
  ``ConfigError``: a download, storage or Replicate failure; a command may also exit 1 on
  its own, e.g. ``resolve`` with unknown URLs);
* ``2`` usage or configuration error (click's usage errors, bad option values,
  :class:`~cachelayer.errors.ConfigError` and its subclasses);
* ``130`` interrupted (Ctrl-C).

Each error is one line on stderr, ``cachelayer: error: <message>``, never a traceback.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from typing import Any

import click

from cachelayer import __version__
from cachelayer.errors import CacheLayerError

__all__ = ["COMMANDS", "Group", "main", "setup_logging"]

#: Every command of ``cachelayer``: its name -> ``module:attribute`` of its click command.
COMMANDS: dict[str, str] = {
    "run": "cachelayer.cli.copy:run",
    "persist": "cachelayer.cli.copy:persist",
    "backfill": "cachelayer.cli.backfill:backfill",
    "worker": "cachelayer.cli.backfill:worker",
    "sweep": "cachelayer.cli.sweep:sweep",
    "delete": "cachelayer.cli.delete:delete",
    "prune": "cachelayer.cli.delete:prune",
    "ls": "cachelayer.cli.catalog:ls_command",
    "show": "cachelayer.cli.catalog:show_command",
    "resolve": "cachelayer.cli.catalog:resolve_command",
    "stats": "cachelayer.cli.catalog:stats_command",
    "export": "cachelayer.cli.catalog:export_command",
    "verify": "cachelayer.cli.catalog:verify_command",
    "db": "cachelayer.cli.db:db",
    "demo": "cachelayer.cli.demo:demo",
    "serve": "cachelayer.server.command:serve_command",
}


def setup_logging(verbose: int, quiet: bool) -> None:
    """Send the ``cachelayer`` logger to stderr: warnings by default, ``-v`` info,
    ``-vv`` debug, ``-q`` errors only."""
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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Group(click.Group):
    """A click group that turns cachelayer errors into one line and the right exit status,
    and imports each command of :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
            # What is loaded by now lives as long as the process: out of the collector's
            # sight, the interpreter's exit no longer walks it (0.24 s of 0.78 s for a
            # backfill's imports on this machine) and neither do full collections.
            gc.freeze()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CacheLayerError as exc:
            click.echo(f"cachelayer: error: {_one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"cachelayer: error: {_one_line(exc.format_message())}{hint}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("cachelayer: interrupted", err=True)
            ctx.exit(130)
        except ModuleNotFoundError as exc:  # a command whose extra is not installed
            from cachelayer.lazy import install_hint

            missing = install_hint(exc)
            if missing is None:
                raise
            click.echo(f"cachelayer: error: {missing}", err=True)
            ctx.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cachelayer")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def main(verbose: int, quiet: bool) -> None:
    """Make Replicate model outputs permanent: copy every output file to S3-compatible
    storage, record it in SQL and print durable URLs."""
    setup_logging(verbose, quiet)
