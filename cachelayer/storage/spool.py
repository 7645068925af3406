"""Spool space for single-``PutObject`` uploads: reserved per body before it is written.

A body under the multipart threshold but past what is held in memory is written to an
anonymous temporary file (the *spool*) while it is read, then sent with one ``PutObject``
(:func:`cachelayer.storage.s3_upload.put_spooled`). Concurrent uploads share the spool
directory, so each books its space first in the process-wide :data:`SPOOL_LEDGER`; a body
whose booking fails goes multipart with no spool (:func:`reserve_spool`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import BinaryIO, cast

from cachelayer.errors import StorageError

__all__ = [
    "SPOOL_CHUNK",
    "SPOOL_HEADROOM",
    "SPOOL_LEDGER",
    "SpoolLedger",
    "SpoolReservation",
    "reserve_spool",
]

#: Bytes per ``read`` while a body is spooled to its temporary file.
SPOOL_CHUNK = 1024 * 1024


#: Bytes left free on the spool's filesystem beyond every reservation (file system
#: metadata, other writers' small files).
SPOOL_HEADROOM = 1024 * 1024


class SpoolReservation:
    """Space booked for one spooled body in :data:`SPOOL_LEDGER`: ``nbytes`` (the most the
    spool will hold), ``written`` so far, and ``file``, the anonymous temporary file (opened
    by :meth:`open`). :meth:`close` closes the file and gives the space back; idempotent."""

    def __init__(self, ledger: SpoolLedger, directory: str, nbytes: int) -> None:
        self.ledger = ledger
        self.directory = directory
        self.nbytes = nbytes
        self.written = 0
        self.file: BinaryIO | None = None

    @property
    def unwritten(self) -> int:
        """Bytes booked but not yet on disk (written bytes already show as used space)."""
        return max(0, self.nbytes - self.written)

    def open(self, where: str) -> BinaryIO:
        """The anonymous temporary file in the reserved directory (gone when closed, or when
        the process dies). Raises :class:`StorageError` naming ``where`` when it cannot be
        created."""
        try:
            file = tempfile.TemporaryFile(prefix="cachelayer-spool-", dir=self.directory)  # noqa: SIM115
            self.file = cast(BinaryIO, file)
        except OSError as exc:
            raise StorageError(f"cannot spool the upload to {where}: {exc}") from exc
        return self.file

    def write(self, data: bytes, where: str) -> None:
        """Append ``data`` to the file; a full disk raises :class:`StorageError` (the upload
        fails as a storage error and is retried later)."""
        assert self.file is not None
        try:
            self.file.write(data)
        except OSError as exc:
            raise StorageError(f"cannot spool the upload to {where}: {exc}") from exc
        self.written += len(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.ledger.release(self)


class SpoolLedger:
    """Spool space reserved by this process, per spool directory.

    Concurrent uploads that each checked the free space before any of them wrote would all
    spool and overflow it (4 bodies of 60 MB on a 200 MiB spool: 3 failed with ``ENOSPC``,
    issue 17). So a body is spooled only under a reservation: :meth:`reserve` books
    ``nbytes`` when the directory's free space (``shutil.disk_usage``) minus what the other
    reservations have booked and not yet written still leaves :data:`SPOOL_HEADROOM`;
    otherwise it answers ``None`` and the caller uploads multipart, with no spool. Bytes
    written show in the free space and leave the booking as they are written, so nothing is
    counted twice. Thread-safe. Other processes sharing the directory are not seen until
    they write (a spool filled by them still fails that upload with :class:`StorageError`,
    retried later)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, list[SpoolReservation]] = {}

    def reserve(self, directory: str | None, nbytes: int) -> SpoolReservation | None:
        """Book ``nbytes`` in ``directory`` (``None``: the system's temporary directory);
        ``None`` when they do not fit or the directory cannot be read."""
        path = os.path.realpath(directory or tempfile.gettempdir())
        with self._lock:
            try:
                free = shutil.disk_usage(path).free
            except OSError:
                return None
            booked = sum(r.unwritten for r in self._held.get(path, ()))
            if free - booked < nbytes + SPOOL_HEADROOM:
                return None
            reservation = SpoolReservation(self, path, nbytes)
            self._held.setdefault(path, []).append(reservation)
            return reservation

    def release(self, reservation: SpoolReservation) -> None:
        """Give ``reservation``'s space back (no effect when already released)."""
        with self._lock:
            held = self._held.get(reservation.directory, [])
            if reservation in held:
                held.remove(reservation)
            if not held:
                self._held.pop(reservation.directory, None)

    def reserved(self, directory: str | None) -> int:
        """Bytes booked in ``directory`` and not yet written."""
        path = os.path.realpath(directory or tempfile.gettempdir())
        with self._lock:
            return sum(r.unwritten for r in self._held.get(path, ()))


#: The process-wide ledger every :class:`~cachelayer.storage.s3.S3Store` reserves from.
SPOOL_LEDGER = SpoolLedger()


def reserve_spool(
    have: int, size: int | None, threshold: int, spool_dir: str | None
) -> SpoolReservation | None:
    """The spool reservation for a body of which ``have`` bytes are read (``size`` in all,
    when announced), or ``None`` when it goes multipart at once: it reaches ``threshold``
    (bytes), or its space cannot be reserved in ``spool_dir`` (:data:`SPOOL_LEDGER`). The
    reservation is ``threshold`` bytes, or ``size + 1`` when a smaller size is announced (a
    source that sends more than it announced then goes multipart from its spool)."""
    if have >= threshold or (size is not None and size >= threshold):
        return None
    return SPOOL_LEDGER.reserve(spool_dir, threshold if size is None else min(threshold, size + 1))
