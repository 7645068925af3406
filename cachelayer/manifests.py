"""Manifests: the bucket describes itself, so the catalog can be rebuilt from it.

Each prediction the catalog records gets one JSON object at
``{prefix}/_manifests/{prediction part}.json`` in the configured store (``prefix``: the
store's; the prediction part is :func:`cachelayer.keys.prediction_part` of its id, the
segment its output files' keys use, so any Unicode id fits; the raw id is inside). That key
is fixed: tools tell manifests from output copies by the ``_manifests/`` segment. The
document (format 1, documented in docs/SCHEMA.md) holds the prediction as recorded (id,
model, version, status, times, input, output with source URLs, durable output, error,
``data_removed``, ``rerun_of``), its output with source and durable URLs, and each file's
key, store, object URI, size, sha256, content type, status, error and every source URL it
was served from (the ``source_urls`` aliases).

When: :meth:`Manifests.publish` writes it once none of the prediction's files is
``pending`` (all stored, expired or failed; or no files at all: text, a failed prediction),
after its files, and again whenever the prediction changes after that (a late file, a
re-read, a rerun recording). It is called by the copier after a file's final outcome and by
the persister after a prediction is recorded or persisted: one function, reading the
catalog, so the document is always the catalog's view. A manifest that cannot be written is
logged and never fails the copy (the next change of the prediction writes it).
:func:`write_tombstone` replaces a manifest with a tombstone document (a deleted prediction).

JSON is written with Python's ``json`` (``ensure_ascii``), which round-trips every value the
catalog keeps losslessly: lone surrogates as ``\\udXXX`` escapes, NaN and infinities as the
``NaN``/``Infinity`` literals (not strict JSON).
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cachelayer.catalog.records import FileRecord, FileStatus, PredictionRecord, RecordedPrediction, iso
from cachelayer.keys import prediction_part
from cachelayer.outputs import durable_output
from cachelayer.storage.base import Store

if TYPE_CHECKING:  # SQLAlchemy comes with the catalog: the copier imports this module first
    from cachelayer.catalog import Catalog

__all__ = [
    "FORMAT",
    "MANIFEST_DIR",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "Manifests",
    "PublishSummary",
    "Tombstone",
    "build_manifest",
    "encode",
    "manifest_key",
    "manifest_prefix",
    "read_manifest",
    "recorded_from",
    "write_manifest",
    "write_tombstone",
]

log = logging.getLogger("cachelayer")

#: The version of the document's layout (field ``format``); a reader refuses others.
FORMAT = 1
#: The key segment under the store's prefix that holds manifests.
MANIFEST_DIR = "_manifests"
#: Largest manifest read back (bytes): a larger object is reported and skipped.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_CONTENT_TYPE = "application/json"


def manifest_prefix(prefix: str) -> str:
    """``{prefix}/_manifests/`` (``_manifests/`` without a prefix): what a listing of the
    manifests asks for."""
    prefix = prefix.strip("/")
    return f"{prefix}/{MANIFEST_DIR}/" if prefix else f"{MANIFEST_DIR}/"


def manifest_key(prefix: str, prediction_id: str) -> str:
    """The key of ``prediction_id``'s manifest under the store prefix ``prefix``: the id
    encoded as in output keys (:func:`cachelayer.keys.prediction_part`), plus ``.json``."""
    return f"{manifest_prefix(prefix)}{prediction_part(prediction_id)}.json"


def _object_uri(store: Store, f: FileRecord) -> str:
    """A file's object URI: the configured store renders its own; a file in another store is
    ``store || '/' || key`` (docs/SCHEMA.md)."""
    return store.object_uri(f.key) if f.store == store.uri else f"{f.store.rstrip('/')}/{f.key}"


def build_manifest(
    recorded: RecordedPrediction, store: Store, *, now: datetime | None = None
) -> dict[str, Any]:
    """The manifest document of ``recorded`` (format :data:`FORMAT`; docs/SCHEMA.md):
    ``prediction`` (the row as recorded, times as ISO 8601 UTC), ``output`` (``source``: the
    recorded output, ``durable``: the same with each stored file as its object URI),
    ``files`` (each file row, its ``object_uri`` and its ``source_urls``). ``store`` renders
    the object URIs of files written to it."""
    p = recorded.prediction
    stored = {f.output_path: _object_uri(store, f) for f in recorded.files if f.status == FileStatus.STORED}
    files = []
    for f in recorded.files:
        d = f.to_dict()
        d["object_uri"] = _object_uri(store, f)
        d["source_urls"] = recorded.aliases.get(f.id, [])
        files.append(d)
    return {
        "format": FORMAT,
        "kind": "prediction",
        "prediction_id": p.id,
        "written_at": iso(now or datetime.now(timezone.utc)),
        "prediction": p.to_dict(),
        "output": {
            "source": p.output,
            "durable": durable_output(p.output, stored) if p.output is not None else None,
        },
        "files": files,
    }


def encode(doc: Mapping[str, Any]) -> bytes:
    """The bytes of a document: JSON, keys sorted, ASCII (see the module docstring)."""
    return json.dumps(doc, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode("ascii")


def _put(store: Store, key: str, doc: Mapping[str, Any]) -> str:
    store.put(
        key,
        io.BytesIO(encode(doc)),
        content_type=_CONTENT_TYPE,
        metadata={"prediction-id": doc["prediction_id"]},
    )
    return key


def write_manifest(store: Store, doc: Mapping[str, Any]) -> str:
    """Write ``doc`` (:func:`build_manifest`) to its key in ``store``, replacing any earlier
    one (one ``put``: atomic in every store). Returns the key. Raises
    :class:`~cachelayer.errors.StorageError`."""
    return _put(store, manifest_key(store.prefix, doc["prediction_id"]), doc)


def write_tombstone(
    store: Store, prediction_id: str, tombstone: Mapping[str, Any], *, prefix: str | None = None
) -> str:
    """Replace ``prediction_id``'s manifest in ``store`` with a tombstone document:
    ``{"format": 1, "kind": "tombstone", "prediction_id": ..., "written_at": ...,
    "tombstone": {...}}``, ``tombstone`` being what the delete recorded (JSON-ready values:
    e.g. id, model, deleted_at, reason, bytes freed); ``prefix``: the store prefix the
    manifest was written under (default ``store.prefix``). Returns the key. Raises
    :class:`~cachelayer.errors.StorageError`."""
    doc = {
        "format": FORMAT,
        "kind": "tombstone",
        "prediction_id": prediction_id,
        "written_at": iso(datetime.now(timezone.utc)),
        "tombstone": dict(tombstone),
    }
    return _put(store, manifest_key(store.prefix if prefix is None else prefix, prediction_id), doc)


@dataclass(frozen=True)
class Manifest:
    """A prediction's manifest read back: the document and the catalog rows it describes."""

    doc: dict[str, Any]
    recorded: RecordedPrediction


@dataclass(frozen=True)
class Tombstone:
    """A tombstone read back: the prediction deleted and what its delete recorded."""

    prediction_id: str
    tombstone: dict[str, Any]


def read_manifest(data: bytes) -> Manifest | Tombstone:
    """Parse the bytes of a manifest or tombstone object. Raises ``ValueError`` with a
    one-line reason for anything else (not JSON, another ``format``, a missing or mistyped
    field)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("format") != FORMAT:
        raise ValueError(f"format {doc.get('format')!r}, this release reads format {FORMAT}")
    pid = doc.get("prediction_id")
    if not isinstance(pid, str) or not pid:
        raise ValueError("no prediction_id")
    if doc.get("kind") == "tombstone":
        body = doc.get("tombstone")
        if not isinstance(body, dict):
            raise ValueError("a tombstone without its record")
        return Tombstone(pid, body)
    if doc.get("kind") != "prediction":
        raise ValueError(f"unknown kind {doc.get('kind')!r}")
    try:
        recorded = recorded_from(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad manifest of {pid[:80]!r}: {type(exc).__name__}: {exc}") from None
    if recorded.prediction.id != pid:
        raise ValueError(f"prediction_id {pid[:80]!r} differs from the prediction's id")
    return Manifest(doc, recorded)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"a time must be an ISO 8601 string, got {type(value).__name__}")
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return stamp.astimezone(timezone.utc)


def _text(value: Any, name: str, *, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def _number(value: Any, name: str, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number")
    return kind(value)


def recorded_from(doc: Mapping[str, Any]) -> RecordedPrediction:
    """The catalog rows a manifest document describes. Raises ``KeyError``, ``TypeError``
    or ``ValueError`` for a field missing or of the wrong type."""
    p = doc["prediction"]
    if not isinstance(p, dict):
        raise TypeError("prediction must be an object")
    prediction = PredictionRecord(
        id=_text(p["id"], "id", optional=False),
        model=_text(p.get("model"), "model"),
        version=_text(p.get("version"), "version"),
        status=_text(p["status"], "status", optional=False),
        source=_text(p.get("source"), "source"),
        input=p.get("input"),
        output=p.get("output"),
        durable_output=p.get("durable_output"),
        error=_text(p.get("error"), "error"),
        created_at=_when(p.get("created_at")),
        started_at=_when(p.get("started_at")),
        completed_at=_when(p.get("completed_at")),
        data_removed=bool(p.get("data_removed", False)),
        rerun_of=_text(p.get("rerun_of"), "rerun_of"),
    )
    files: list[FileRecord] = []
    aliases: dict[int, list[str]] = {}
    rows = doc["files"]
    if not isinstance(rows, list):
        raise TypeError("files must be a list")
    for f in rows:
        fid = _number(f["id"], "file id", int)
        if fid is None:
            raise TypeError("file id missing")
        files.append(
            FileRecord(
                id=fid,
                prediction_id=prediction.id,
                output_path=_text(f["output_path"], "output_path", optional=False),
                source_url=_text(f["source_url"], "source_url", optional=False),
                store=_text(f["store"], "store", optional=False),
                key=_text(f["key"], "key", optional=False),
                status=FileStatus.parse(f["status"]),
                size=_number(f.get("size"), "size", int),
                sha256=_text(f.get("sha256"), "sha256"),
                content_type=_text(f.get("content_type"), "content_type"),
                attempts=_number(f.get("attempts"), "attempts", int) or 0,
                last_error=_text(f.get("last_error"), "last_error"),
                source_age_seconds=_number(f.get("source_age_seconds"), "source_age_seconds", float),
                stored_at=_when(f.get("stored_at")),
                model=_text(f.get("model"), "model"),
                created_at=_when(f.get("created_at")),
            )
        )
        urls = f.get("source_urls", [])
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise TypeError("source_urls must be a list of strings")
        aliases[fid] = urls
    return RecordedPrediction(prediction, files, aliases)


class Manifests:
    """Writes the manifests of one catalog's predictions into ``store`` (the configured
    store, where new files go); thread-safe."""

    def __init__(self, catalog: Catalog, store: Store) -> None:
        from cachelayer.catalog.manifest_rows import ManifestRows

        self.store = store
        self.rows = ManifestRows(catalog.db)
        # One prediction's read-then-write runs under one lock (striped by id), so a
        # publish that read an older state never lands after one that read a newer state
        # (a file's copier thread and the persister publish the same prediction at once).
        self._locks = [threading.Lock() for _ in range(64)]

    def publish(self, prediction_id: str) -> bool:
        """(Re)write ``prediction_id``'s manifest from the catalog if none of its files is
        ``pending``; returns whether it was written. Never raises an ``Exception``: a
        failure (catalog or store down) is logged as a warning and the manifest is written
        by the prediction's next change (see the module docstring)."""
        try:
            return self._publish(prediction_id)
        except Exception as exc:  # noqa: BLE001 - a manifest never fails the copy it describes
            log.warning("could not write the manifest of %s: %s", prediction_id, exc)
            return False

    def _publish(self, prediction_id: str) -> bool:
        with self._locks[hash(prediction_id) % len(self._locks)]:
            recorded = self.rows.read(prediction_id)
            if recorded is None or any(f.status == FileStatus.PENDING for f in recorded.files):
                return False
            write_manifest(self.store, build_manifest(recorded, self.store))
            return True

    def publish_all(
        self, *, batch: int = 500, progress: Callable[[PublishSummary], None] | None = None
    ) -> PublishSummary:
        """Write the manifest of every prediction in the catalog (those recorded before
        manifests existed, or whose write failed), in id order, ``batch`` ids per catalog
        read; ``progress`` after each. Predictions with a pending file are left for their
        copies to write. Idempotent. Raises :class:`~cachelayer.errors.StorageError` and
        catalog errors (run it again: it starts over, rewriting the same documents)."""
        summary = PublishSummary()
        after: str | None = None
        while True:
            ids = self.rows.prediction_ids(after, batch)
            for pid in ids:
                if self._publish(pid):
                    summary.written += 1
                else:
                    summary.pending += 1
                if progress is not None:
                    progress(summary)
            if len(ids) < batch:
                return summary
            after = ids[-1]


@dataclass
class PublishSummary:
    """What :meth:`Manifests.publish_all` did: manifests ``written``, predictions left
    because a file of theirs is ``pending``."""

    written: int = 0
    pending: int = 0
