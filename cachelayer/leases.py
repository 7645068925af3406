"""Leases: how a process claims a file in the catalog so no object is stored twice.

A claim sets ``lease_owner`` (this process's owner id, ``host:pid:random``) and
``lease_expires_at``; a :class:`Heartbeat` renews the leases of in-flight files every quarter
of the lease; a claim whose lease has passed may be taken over, so a crashed process never
strands work. Leases of processes of this host that no longer exist (a ``kill -9``) are
released at once (:func:`release_dead_local_leases`). Lease times come from the clock of the
process taking the claim (keep hosts on NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from cachelayer.catalog.records import NO_COPY, FileRecord

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog  # imported by the layer when it opens the catalog

__all__ = ["Heartbeat", "claim_or_wait", "new_owner", "release_dead_local_leases"]

log = logging.getLogger("cachelayer")

#: Seconds between two looks at a file another process is copying.
WAIT_POLL = 0.2


def _host() -> str:
    return socket.gethostname()[:30]


def new_owner() -> str:
    """A lease owner id unique to this process and instance: ``host:pid:random``."""
    return f"{_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_owners(owners: list[str]) -> list[str]:
    """The owner ids among ``owners`` that name a process of this host that is gone."""
    host, me = _host(), os.getpid()
    dead = []
    for owner in owners:
        parts = owner.split(":")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            pid = int(parts[1])
            if pid != me and not _pid_alive(pid):
                dead.append(owner)
    return dead


def release_dead_local_leases(catalog: Catalog) -> int:
    """Release leases held by processes of this host that no longer exist (a ``kill -9``),
    so their files are taken over at once instead of after the lease. Returns how many."""
    dead = dead_local_owners(catalog.queue.lease_owners())
    n = catalog.queue.release_leases(dead) if dead else 0
    if n:
        log.info("took over %d file(s) claimed by dead local processes %s", n, dead)
    return n


def claim_or_wait(catalog: Catalog, file_id: int, owner: str, lease_seconds: float) -> FileRecord | None:
    """Take the lease on ``file_id`` and return the claimed row; if another process holds
    it, wait until that process stores the file or it is deleted (returns ``None``) or its lease lapses or
    its process is found dead on this host (then take it)."""
    looked_for_dead = False
    while True:
        claimed = catalog.queue.claim(file_id, owner, lease_seconds)
        if claimed is not None:
            return claimed
        current = catalog.files.get(file_id)
        if current is None or current.status in NO_COPY:  # stored, or its prediction deleted
            return None
        if not looked_for_dead:  # a killed process of this host need not hold us a whole lease
            looked_for_dead = True
            if release_dead_local_leases(catalog):
                continue
        time.sleep(WAIT_POLL)


class Heartbeat:
    """Renews the leases of in-flight files every quarter of the lease (seconds)."""

    def __init__(self, catalog: Catalog, owner: str, lease_seconds: float) -> None:
        self.catalog, self.owner, self.lease_seconds = catalog, owner, lease_seconds
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, file_id: int) -> None:
        with self._lock:
            self._ids.add(file_id)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="cachelayer-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, file_id: int) -> None:
        with self._lock:
            self._ids.discard(file_id)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            with self._lock:
                ids = list(self._ids)
            if ids:
                try:
                    self.catalog.queue.renew(ids, self.owner, self.lease_seconds)
                except Exception as exc:  # keep beating; the next renewal may work
                    log.warning("lease renewal failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
