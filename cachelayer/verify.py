"""Verify that every stored object still exists, with the size and sha256 the catalog recorded.

For each ``stored`` file row (optionally filtered like ``cachelayer ls``):

1. ``HEAD`` the object (:meth:`Store.head`): absent -> **missing**; a size other than the
   recorded ``size`` -> **corrupt**; a stored SHA-256 (:attr:`ObjectInfo.sha256`: the
   ``sha256`` the store wrote with the object, or a full-object checksum of the service)
   that differs from the recorded one -> **corrupt**. No byte is read: this is how a
   multipart object is compared without downloading it. An object with no stored SHA-256
   (written by another tool, or by cachelayer before it wrote one) is checked by size only
   and counted in :attr:`VerifyReport.size_only`.
2. With ``deep``, read the whole object as a stream (1 MiB at a time, memory stays flat)
   and compare its byte count and SHA-256 with the recorded ones -> **corrupt** otherwise.

A storage failure while checking (HTTP 403/500, a dropped connection) is reported as an
**error**: it says nothing about the object, so it is never repaired.

With ``repair``, each missing or corrupt file leaves ``stored``: it becomes ``pending``
(re-queued, ``last_error`` ``verify: missing`` / ``verify: corrupt``) when its source may
still be retrievable, so the backfill worker or ``cachelayer persist PREDICTION_ID`` copies
it again; otherwise it becomes ``failed`` with the same ``last_error``. A source counts as
retrievable when the prediction's data has not been removed and either it was created on
the web (Replicate keeps those) or it completed less than one hour ago (Replicate removes
API predictions' files one hour after they finish): :func:`cachelayer.expiry.retrievable`.
Nothing is ever deleted, neither objects nor rows.

**Mirror copies** (``file_copies``, :mod:`cachelayer.mirror`): every ``stored`` copy of a
checked file is checked the same way in its own store, against the file's recorded size
and sha256 (its problems carry the copy's ``store`` and ``key``). With ``repair``, a
missing or corrupt copy, primary or mirror, is first **restored from a good one** (a copy
that passed this run), streamed store to store and checked by sha256
(:func:`cachelayer.mirror.copy_object`; action ``restored``): nothing is downloaded from
Replicate. Only when no good copy is left does a primary copy take the path above; a
mirror copy without a good source goes back to the mirror queue (``requeued``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from cachelayer.catalog.records import FileRecord, FileStatus
from cachelayer.errors import StorageError
from cachelayer.expiry import retrievable

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog
    from cachelayer.catalog.copies import CopyRecord
    from cachelayer.mirror import Mirror
    from cachelayer.storage.base import Store

__all__ = ["VerifyProblem", "VerifyReport", "verify"]

log = logging.getLogger("cachelayer")

Problem = Literal["missing", "corrupt", "error"]
Action = Literal["requeued", "failed", "unchanged", "restored"]

_READ_CHUNK = 1024 * 1024  # bytes per read in a deep check
_BATCH = 256  # files handed to the thread pool at once
_SIZE_ONLY = "size only"  # detail of a passed HEAD check without a stored sha256


@dataclass(frozen=True)
class VerifyProblem:
    """One object that did not pass: its file record, ``problem`` (``missing``,
    ``corrupt`` or ``error``), a one-line ``detail`` and, with ``repair``, the ``action``
    taken: ``requeued`` (now ``pending``), ``failed``, ``restored`` (written again from
    another good copy), or ``unchanged`` (the row was no longer ``stored`` as read, e.g.
    re-copied meanwhile; also every ``error``). A mirror copy's problem has the copy's
    ``store`` and ``key`` in ``file``."""

    file: FileRecord
    problem: Problem
    detail: str
    action: Action | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict with stable keys (``file_id``, ``prediction_id``,
        ``output_path``, ``model``, ``store``, ``key``, ``size``, ``sha256``, ``problem``,
        ``detail``, ``action``)."""
        f = self.file
        return {
            "file_id": f.id,
            "prediction_id": f.prediction_id,
            "output_path": f.output_path,
            "model": f.model,
            "store": f.store,
            "key": f.key,
            "size": f.size,
            "sha256": f.sha256,
            "problem": self.problem,
            "detail": self.detail,
            "action": self.action,
        }


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`.

    ``checked``: stored files whose object was examined; ``ok``: those that passed;
    ``skipped``: stored files recorded in another store than the one given (not checked);
    ``size_only``: objects that passed a ``HEAD`` check without a stored SHA-256 to compare
    (only their size was checked; ``deep`` reads them); ``bytes_read``: object bytes read by
    deep checks; ``problems``: every failure, in listing order (newest first).
    """

    deep: bool = False
    repair: bool = False
    checked: int = 0
    ok: int = 0
    skipped: int = 0
    size_only: int = 0
    bytes_read: int = 0
    problems: list[VerifyProblem] = field(default_factory=list)

    def count(self, problem: Problem) -> int:
        """How many problems of one kind were found."""
        return sum(1 for p in self.problems if p.problem == problem)

    @property
    def missing(self) -> int:
        return self.count("missing")

    @property
    def corrupt(self) -> int:
        return self.count("corrupt")

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def requeued(self) -> int:
        return sum(1 for p in self.problems if p.action == "requeued")

    @property
    def restored(self) -> int:
        return sum(1 for p in self.problems if p.action == "restored")

    @property
    def marked_failed(self) -> int:
        return sum(1 for p in self.problems if p.action == "failed")

    @property
    def clean(self) -> bool:
        """``True`` when every checked object passed."""
        return not self.problems

    def summary(self) -> str:
        """One line: ``checked 12 objects (deep, 3456 bytes read): 10 ok, 1 missing, ...``."""
        mode = f"deep, {self.bytes_read} bytes read" if self.deep else "HEAD"
        text = (
            f"checked {self.checked} objects ({mode}): {self.ok} ok, {self.missing} missing, "
            f"{self.corrupt} corrupt, {self.errors} errors"
        )
        if self.size_only:
            text += f"; {self.size_only} with no stored sha256 checked by size only (--deep reads them)"
        if self.skipped:
            text += f"; {self.skipped} in another store skipped"
        if self.repair:
            text += f"; repair: {self.requeued} re-queued, {self.marked_failed} marked failed"
            if self.restored:
                text += f", {self.restored} restored from another copy"
        return text


def verify(
    catalog: Catalog,
    store: Store,
    *,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    prediction_id: str | None = None,
    deep: bool = False,
    repair: bool = False,
    concurrency: int = 8,
    on_problem: Callable[[VerifyProblem], None] | None = None,
    mirror: Mirror | None = None,
) -> VerifyReport:
    """Check every ``stored`` file matching the filters against its object.

    Only files recorded in ``store`` are checked (others are counted as skipped).
    Filters are those of :meth:`Catalog.list_files` (``since`` inclusive, ``until``
    exclusive, on the prediction's creation time). ``deep`` reads every object fully
    (SHA-256 and byte count); otherwise one ``HEAD`` per object checks existence and size.
    Either way a stored SHA-256 (:attr:`ObjectInfo.sha256`) is compared with the recorded
    one, without reading the object.
    ``repair`` moves missing/corrupt files out of ``stored`` (see the module docstring);
    nothing is deleted. ``concurrency`` objects are checked at once (threads).
    ``on_problem`` is called (from the calling thread) for each problem as found.
    ``mirror`` (:class:`cachelayer.mirror.Mirror`) opens the store of each mirror copy
    and restores copies (``None``: mirror copies are not checked).

    Returns a :class:`VerifyReport`. Does not raise for a bad object; database errors
    propagate.
    """
    report = VerifyReport(deep=deep, repair=repair)
    files = catalog.iter_files(
        model=model, status=FileStatus.STORED, since=since, until=until, prediction_id=prediction_id
    )
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="cachelayer-verify") as pool:
        for batch in _batches(files, _BATCH):
            mine = [f for f in batch if f.store == store.uri]
            report.skipped += len(batch) - len(mine)
            outcomes = list(pool.map(lambda f: _check(store, f, deep), mine))
            copies = _copies(catalog, mine) if mirror is not None and mine else []
            views = [_as_copy(rec, c) for rec, c in copies]
            opener = mirror.store_for if mirror is not None else _same(store)
            outcomes += list(pool.map(partial(_check_in, opener, deep=deep), views))
            found: list[VerifyProblem] = []
            good: dict[int, list[FileRecord]] = {}
            for rec, (problem, detail, nbytes) in zip([*mine, *views], outcomes, strict=True):
                report.checked += 1
                report.bytes_read += nbytes
                if problem is None:
                    report.ok += 1
                    report.size_only += detail == _SIZE_ONLY
                    good.setdefault(rec.id, []).append(rec)
                else:
                    found.append(VerifyProblem(rec, problem, detail))
            if repair and found:
                mirrors = {(rec.id, c.store): c for rec, c in copies}
                found = _restore(found, good, store, mirror, mirrors, catalog)
            for p in found:
                log.info(
                    "verify: %s %s (%s %s): %s",
                    p.problem,
                    p.file.key,
                    p.file.prediction_id,
                    p.file.output_path or "(root)",
                    p.detail,
                )
                report.problems.append(p)
                if on_problem is not None:
                    on_problem(p)
            if report.checked and report.checked % 10_000 < len(mine):
                log.info("verify: %s", report.summary())
    return report


def _same(store: Store) -> Callable[[str], Store]:
    return lambda uri: store


def _check_in(
    store_for: Callable[[str], Store], rec: FileRecord, *, deep: bool
) -> tuple[Problem | None, str, int]:
    return _check(store_for(rec.store), rec, deep)


def _copies(catalog: Catalog, files: list[FileRecord]) -> list[tuple[FileRecord, CopyRecord]]:
    """The stored mirror copies of ``files``, each with its file."""
    by_id = catalog.copies.of_files(f.id for f in files)
    return [(f, c) for f in files for c in by_id.get(f.id, []) if c.status == FileStatus.STORED]


def _as_copy(rec: FileRecord, copy: CopyRecord) -> FileRecord:
    """``rec`` as its mirror copy (the copy's store and key; the file's size and sha256)."""
    return replace(rec, store=copy.store, key=copy.key)


def _restore(
    problems: list[VerifyProblem],
    good: dict[int, list[FileRecord]],
    primary: Store,
    mirror: Mirror | None,
    mirrors: dict[tuple[int, str], CopyRecord],
    catalog: Catalog,
) -> list[VerifyProblem]:
    """Write each missing/corrupt copy again from a good copy of the same file (action
    ``restored``); the rest: primary copies through :func:`_repair`, mirror copies back to
    the mirror queue (``requeued``), errors ``unchanged``."""
    from cachelayer.mirror import copy_object

    def open_store(uri: str) -> Store:
        return primary if uri == primary.uri or mirror is None else mirror.store_for(uri)

    cache_control = mirror.cache_control if mirror is not None else None

    done: list[VerifyProblem] = []
    rest: list[VerifyProblem] = []
    for p in problems:
        f = p.file
        copy = mirrors.get((f.id, f.store))
        is_mirror = copy is not None and copy.key == f.key
        if p.problem == "error":
            done.append(replace(p, action="unchanged"))
            continue
        restored = False
        for src in good.get(f.id, []):
            try:
                sha, size = copy_object(
                    open_store(src.store), src.key, open_store(f.store), f.key, f, cache_control=cache_control
                )
            except (FileNotFoundError, StorageError, ValueError) as exc:
                log.warning("verify: restoring %s from %s failed: %s", f.key, src.store, _one_line(exc))
                continue
            if is_mirror and copy is not None:
                catalog.copies.mark_stored(copy.id, sha256=sha, size=size)
            done.append(replace(p, action="restored", detail=f"{p.detail}; restored from {src.store}"))
            restored = True
            break
        if restored:
            continue
        if is_mirror and copy is not None:
            catalog.copies.requeue(copy.id, error=f"verify: {p.problem}")
            done.append(replace(p, action="requeued"))
        else:
            rest.append(p)
    repaired = _repair(catalog, rest) if rest else []
    order = {id(p.file): i for i, p in enumerate(problems)}
    return sorted([*done, *repaired], key=lambda p: order.get(id(p.file), 0))


def _batches(items: Iterator[FileRecord], n: int) -> Iterator[list[FileRecord]]:
    while batch := list(islice(items, n)):
        yield batch


def _check(store: Store, rec: FileRecord, deep: bool) -> tuple[Problem | None, str, int]:
    """``(problem or None, detail, bytes read)`` for one stored file."""
    try:
        info = store.head(rec.key)
    except (StorageError, ValueError) as exc:
        return "error", _one_line(exc), 0
    if info is None:
        return "missing", f"no object at {store.object_uri(rec.key)}", 0
    if rec.size is not None and info.size != rec.size:
        return "corrupt", f"object is {info.size} bytes, catalog recorded {rec.size}", 0
    stored = info.sha256
    if stored and rec.sha256 and stored.lower() != rec.sha256.lower():
        return "corrupt", f"stored sha256 {stored} != recorded {rec.sha256}", 0
    if not deep:
        return None, "" if stored else _SIZE_ONLY, 0
    digest = hashlib.sha256()
    nbytes = 0
    try:
        body = store.open(rec.key)
    except FileNotFoundError:
        return "missing", f"no object at {store.object_uri(rec.key)}", 0
    except (StorageError, ValueError) as exc:
        return "error", _one_line(exc), 0
    try:
        while chunk := body.read(_READ_CHUNK):
            digest.update(chunk)
            nbytes += len(chunk)
    except Exception as exc:  # botocore read timeouts, dropped connections, OSError
        return "error", f"reading the object failed after {nbytes} bytes: {_one_line(exc)}", nbytes
    finally:
        body.close()
    if rec.size is not None and nbytes != rec.size:
        return "corrupt", f"read {nbytes} bytes, catalog recorded {rec.size}", nbytes
    actual = digest.hexdigest()
    if rec.sha256 and actual != rec.sha256.lower():
        return "corrupt", f"sha256 {actual} != recorded {rec.sha256}", nbytes
    return None, "", nbytes


def _repair(catalog: Catalog, problems: list[VerifyProblem]) -> list[VerifyProblem]:
    preds = catalog.predictions.get_many(p.file.prediction_id for p in problems if p.problem != "error")
    now = datetime.now(timezone.utc)
    repaired: list[VerifyProblem] = []
    for p in problems:
        if p.problem == "error":
            repaired.append(VerifyProblem(p.file, p.problem, p.detail, "unchanged"))
            continue
        status = (
            FileStatus.PENDING if retrievable(preds.get(p.file.prediction_id), now) else FileStatus.FAILED
        )
        changed = catalog.queue.mark_unverified(
            p.file.id, status=status, error=f"verify: {p.problem}", expected_sha256=p.file.sha256
        )
        action: Action = "unchanged"
        if changed:
            action = "requeued" if status == FileStatus.PENDING else "failed"
        repaired.append(VerifyProblem(p.file, p.problem, p.detail, action))
    return repaired


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
