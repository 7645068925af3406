"""The ``cachelayer`` command (console script ``cachelayer = "cachelayer.cli:main"``).

Thin over the library: each command parses its options, calls one library function and
prints. One module per command group; the group :data:`~cachelayer.cli.app.main` imports a
command's module when the command is used (:data:`~cachelayer.cli.app.COMMANDS`), so each
command pays only for its own imports:

* :mod:`cachelayer.cli.app`: the group and its command table, logging, errors -> one line
  + exit status (0 ok, 1 work failed, 2 usage/config, 130 interrupted);
* :mod:`cachelayer.cli.options`: options shared by several commands, :func:`open_layer`;
* :mod:`cachelayer.cli.copy`: ``run``, ``persist``;
* :mod:`cachelayer.cli.backfill`: ``backfill``, ``worker``;
* :mod:`cachelayer.cli.catalog`: ``ls``, ``show``, ``resolve``, ``stats``, ``export``,
  ``verify`` (catalog only: no Replicate token, no request to the store except ``verify``);
* :mod:`cachelayer.cli.db`: ``db upgrade``, ``db current``;
* :mod:`cachelayer.cli.demo`: ``demo``;
* :mod:`cachelayer.server.command`: ``serve`` (the command lives with the server);
* :mod:`cachelayer.cli.formatting`: ``--format table|json|jsonl|csv`` writers;
* :mod:`cachelayer.cli.progress`: the live progress line and the run summary.

A new command is a ``@click.command()`` in a module plus one line in ``COMMANDS``.
"""

from __future__ import annotations

from cachelayer.cli.app import main

__all__ = ["main"]
