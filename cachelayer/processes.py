"""Copy processes beside this one: ``backfill --processes N`` and ``worker --processes N``.

One Python process copies 100 to 200 small files a second, bound by its own CPU under one
GIL (docs/BENCHMARKS.md). A machine with more cores runs more processes against the same
catalog and bucket; claims are leases, so no file is copied twice. :class:`Helpers` starts
``N - 1`` worker processes (``spawn``: a fresh interpreter each, nothing inherited from a
parent that already runs threads), each building its own :class:`~cachelayer.layer.CacheLayer`
from the same :class:`~cachelayer.config.Settings` and draining the queue with
:func:`cachelayer.workers.work`; this process keeps doing its own part (the scan and its
share of the copies). When this process's run is over, the helpers are told to stop (files
in flight finish) and their summaries are added to this one's.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Protocol

from cachelayer.errors import ConfigError

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

    from cachelayer.config import Settings
    from cachelayer.workers import BackfillSummary

__all__ = ["Helpers", "default_processes", "run_beside"]

log = logging.getLogger(__name__)

#: Seconds a helper is given to finish its files in flight after it is told to stop, beyond
#: which it is terminated (its leases lapse and another process takes the files over).
STOP_GRACE_SECONDS = 120.0

#: Counts of a helper's summary added to this process's summary.
_ADDED = (
    "files_stored",
    "files_skipped",
    "files_expired",
    "files_failed",
    "files_retrying",
    "bytes_stored",
)


def default_processes() -> int:
    """The cores left after this process's own work: the CPUs this process may run on
    (``os.sched_getaffinity``, else ``os.cpu_count``) less one, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def _helper_main(make_layer: LayerFactory, settings: Settings, once: bool, results: Any) -> None:
    """A helper process: drain the queue until it is empty (``once``) or SIGTERM (files in
    flight finish); put its summary (``to_dict()``) or ``{"error": ...}`` on ``results``."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and tells us
    try:
        layer = make_layer(settings)
        try:
            results.put(layer.work(once=once, stop=stop).to_dict())
        finally:
            layer.close()
    except BaseException as exc:  # reported to the parent, which warns about it
        results.put({"error": f"{type(exc).__name__}: {exc}"})


class Worker(Protocol):
    """What a helper needs of a layer (:class:`cachelayer.layer.CacheLayer`)."""

    def work(self, *, once: bool, stop: threading.Event) -> BackfillSummary: ...

    def close(self) -> None: ...


#: Builds a layer from settings in the helper: ``CacheLayer`` itself (a class pickles by
#: name, so the helper imports it; this module never imports the facade).
LayerFactory = Callable[["Settings"], Worker]


class Helpers:
    """``count`` helper processes draining the queue beside this one, as a context manager::

        with Helpers(CacheLayer, settings, count=3, once=False) as helpers:
            summary = this_process_run()
        helpers.add_to(summary)

    ``once``: each helper returns when the queue is empty (``worker --once``); otherwise
    they poll until this process's run ends. Leaving the block tells them to stop (SIGTERM:
    files in flight finish, up to :data:`STOP_GRACE_SECONDS`, then they are killed and
    their leases lapse) and collects their summaries. (A ``multiprocessing.Event`` would
    do, but setting one blocks for ever once a process waiting on it has exited.)
    ``count`` 0 starts nothing. Raises :class:`~cachelayer.errors.ConfigError` for a
    negative count."""

    def __init__(self, make_layer: LayerFactory, settings: Settings, *, count: int, once: bool) -> None:
        if count < 0:
            raise ConfigError(f"--processes must be at least 1, not {count + 1}")
        self.make_layer = make_layer
        self.settings = settings
        self.count = count
        self.once = once
        self._ctx = multiprocessing.get_context("spawn")
        self._results: Any = self._ctx.Queue()
        self._procs: list[SpawnProcess] = []
        self.summaries: list[dict[str, Any]] = []

    def __enter__(self) -> Helpers:
        for _ in range(self.count):
            p = self._ctx.Process(
                target=_helper_main,
                args=(self.make_layer, self.settings, self.once, self._results),
                name="cachelayer-helper",
                daemon=True,
            )
            p.start()
            self._procs.append(p)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the helper stops claiming and finishes its files
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        # read while they exit: a helper whose summary is still in the pipe cannot exit
        while len(self.summaries) < len(self._procs):
            try:
                self.summaries.append(self._results.get(timeout=0.2))
            except queue.Empty:
                if time.monotonic() > deadline or not any(p.is_alive() for p in self._procs):
                    break
        for p in self._procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        self._results.close()

    def add_to(self, summary: BackfillSummary) -> BackfillSummary:
        """Add the helpers' counts and failure reasons to ``summary`` (in place; returned).
        A helper that failed or ended without a summary is a warning: its leased files
        lapse and are taken over, so nothing is lost, but the run should say so."""
        names = {f.name for f in fields(summary)}
        for s in self.summaries:
            if "error" in s:
                _warn(summary, f"a copy process failed: {s['error']}")
                continue
            for name in _ADDED:
                if name in names:
                    setattr(summary, name, getattr(summary, name) + int(s.get(name, 0)))
            summary.files_stored_by_helpers += int(s.get("files_stored", 0))
            for reason, n in (s.get("failures") or {}).items():
                summary.failures[reason] = summary.failures.get(reason, 0) + int(n)
        summary.processes = 1 + self.count
        missing = self.count - len(self.summaries)
        if missing > 0:
            _warn(summary, f"{missing} copy process(es) ended without a summary")
        return summary


def _warn(summary: BackfillSummary, text: str) -> None:
    log.warning("%s", text)
    summary.warnings.append(text)


def run_beside(
    make_layer: LayerFactory,
    settings: Settings,
    processes: int,
    *,
    once: bool,
    run: Callable[[], BackfillSummary],
    leased_elsewhere: Callable[[], int],
) -> BackfillSummary:
    """``run()`` in this process with ``processes - 1`` helpers draining the same queue;
    returns its summary with theirs added and ``files_leased_elsewhere`` counted again
    (``leased_elsewhere()``) once they have stopped. ``processes`` 1 is ``run()`` alone."""
    if processes == 1:
        return run()
    with Helpers(make_layer, settings, count=processes - 1, once=once) as helpers:
        summary = run()
    helpers.add_to(summary)
    summary.files_leased_elsewhere = leased_elsewhere()
    return summary
