"""Rebuilding a lost catalog from the bucket's manifests (``cachelayer db rebuild
--from-store``).

Into an empty catalog only (a missing SQLite file or an empty PostgreSQL database gets the
schema first): every object under ``{prefix}/_manifests/`` of the store is read
(:meth:`Store.list_keys <cachelayer.storage.base.Store.list_keys>`: S3 ``ListObjectsV2``
pages, a directory walk for the local store) and its prediction restored as recorded
(:class:`cachelayer.catalog.manifest_rows.ManifestRows`): statuses, files (ids, keys,
stores, sizes, hashes, content types, errors), source-URL aliases; reruns are linked to
their originals at the end. A manifest that cannot be read or parsed is reported and
skipped; the others go on. Tombstones (deleted predictions) are counted, and handed to
``on_tombstone`` when given.

A ``server_state`` mark is kept while the rebuild runs, so one interrupted (Ctrl-C, a
crash, the store failing) is resumed by running it again: predictions already restored are
skipped. Not restored: backfill checkpoints (a backfill scans again; what is stored is
skipped), webhook deliveries, rerun claims (a rerun's ``rerun_of`` is), and the generated
gateway secret, which never goes to the bucket: gateway URLs survive only with
``CACHELAYER_GATEWAY_SECRET`` set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cachelayer.catalog.manifest_rows import ManifestRows
from cachelayer.errors import CatalogWriteError, ConfigError
from cachelayer.manifests import MAX_MANIFEST_BYTES, Tombstone, manifest_prefix, read_manifest
from cachelayer.storage.base import Store

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog

__all__ = ["RebuildSummary", "rebuild"]

log = logging.getLogger("cachelayer")


@dataclass
class RebuildSummary:
    """What a rebuild did: ``manifests`` read (objects listed under ``_manifests/``),
    ``predictions`` restored, ``files`` restored (``files_by_status``), ``aliases`` (source
    URLs), ``tombstones`` seen, ``already`` (predictions a resumed rebuild found restored),
    ``skipped`` (``(key, reason)`` of each object that could not be read or restored),
    ``reruns_unlinked`` (``(rerun, original)`` whose original has no manifest),
    ``elapsed_seconds``."""

    manifests: int = 0
    predictions: int = 0
    files: int = 0
    aliases: int = 0
    tombstones: int = 0
    already: int = 0
    files_by_status: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reruns_unlinked: list[tuple[str, str]] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """``1`` when a manifest was skipped (the catalog lacks it), else ``0``."""
        return 1 if self.skipped else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "manifests": self.manifests,
            "predictions": self.predictions,
            "files": self.files,
            "files_by_status": dict(sorted(self.files_by_status.items())),
            "aliases": self.aliases,
            "tombstones": self.tombstones,
            "already_restored": self.already,
            "skipped": [{"key": k, "reason": r} for k, r in self.skipped],
            "reruns_unlinked": [{"rerun": a, "original": b} for a, b in self.reruns_unlinked],
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


def _read(store: Store, key: str) -> bytes:
    with store.open(key) as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def rebuild(
    catalog: Catalog,
    store: Store,
    *,
    progress: Callable[[RebuildSummary], None] | None = None,
    on_tombstone: Callable[[Tombstone], None] | None = None,
) -> RebuildSummary:
    """Restore every prediction whose manifest ``store`` holds into ``catalog`` (see the
    module docstring). ``progress`` is called after each manifest.

    Raises :class:`~cachelayer.errors.ConfigError` (nothing done) when the catalog holds
    rows and is not an unfinished rebuild; :class:`~cachelayer.errors.StorageError` when the
    store cannot be listed or read (run it again to resume); catalog outages."""
    rows = ManifestRows(catalog.db)
    if not rows.rebuilding() and not rows.is_empty():
        raise ConfigError("the catalog is not empty: rebuild only into an empty or new database")
    rows.begin_rebuild()
    started = time.monotonic()
    summary = RebuildSummary()
    links: list[tuple[str, str]] = []
    for key in store.list_keys(manifest_prefix(store.prefix)):
        summary.manifests += 1
        _take(rows, store, key, summary, links, on_tombstone)
        summary.elapsed_seconds = time.monotonic() - started
        if progress is not None:
            progress(summary)
    summary.reruns_unlinked = rows.link_reruns(links)
    rows.reset_sequences()
    rows.end_rebuild()
    summary.elapsed_seconds = time.monotonic() - started
    return summary


def _take(
    rows: ManifestRows,
    store: Store,
    key: str,
    summary: RebuildSummary,
    links: list[tuple[str, str]],
    on_tombstone: Callable[[Tombstone], None] | None,
) -> None:
    """Read the object ``key`` and restore what it describes, counting it in ``summary``;
    an object that cannot be read or restored is reported (a warning) and skipped."""
    try:
        doc = read_manifest(_read(store, key))
        if isinstance(doc, Tombstone):
            summary.tombstones += 1
            if on_tombstone is not None:
                on_tombstone(doc)
            return
        restored = rows.restore(doc.recorded)
    except (ValueError, FileNotFoundError, CatalogWriteError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        log.warning("skipped %s: %s", key, reason)
        summary.skipped.append((key, reason))
        return
    record = doc.recorded
    if record.prediction.rerun_of:
        links.append((record.prediction.id, record.prediction.rerun_of))
    if not restored:
        summary.already += 1
        return
    summary.predictions += 1
    summary.files += len(record.files)
    summary.aliases += sum(len(set(v)) for v in record.aliases.values())
    for f in record.files:
        summary.files_by_status[str(f.status)] = summary.files_by_status.get(str(f.status), 0) + 1
