"""The ``cachelayer`` command (console script ``cachelayer = "cachelayer.cli:main"``).

Thin over the library: each command parses its options, calls one library function and
prints. One module per command group, each adding its commands to the group
:data:`~cachelayer.cli.app.main` when imported:

* :mod:`cachelayer.cli.app`: the group, logging, errors -> one line + exit status
  (0 ok, 1 work failed, 2 usage/config, 130 interrupted);
* :mod:`cachelayer.cli.options`: options shared by several commands, :func:`open_layer`;
* :mod:`cachelayer.cli.copy`: ``run``, ``persist``;
* :mod:`cachelayer.cli.backfill`: ``backfill``, ``worker``;
* :mod:`cachelayer.cli.catalog`: ``ls``, ``show``, ``resolve``, ``stats``, ``export``,
  ``verify`` (catalog only: no Replicate token, no request to the store except ``verify``);
* :mod:`cachelayer.cli.db`: ``db upgrade``, ``db current``;
* :mod:`cachelayer.cli.demo`: ``demo``;
* :mod:`cachelayer.cli.serve`: ``serve`` (the command lives in :mod:`cachelayer.server`);
* :mod:`cachelayer.cli.formatting`: ``--format table|json|jsonl|csv`` writers;
* :mod:`cachelayer.cli.progress`: the live progress line and the run summary.

A new command group is a module doing ``@main.command()`` plus one import line below.
"""

from __future__ import annotations

import cachelayer.cli.backfill
import cachelayer.cli.catalog
import cachelayer.cli.copy
import cachelayer.cli.db
import cachelayer.cli.demo
import cachelayer.cli.serve  # noqa: F401  (each import registers its commands)
from cachelayer.cli.app import main

__all__ = ["main"]
