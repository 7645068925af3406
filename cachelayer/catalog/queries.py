"""Old import path of the catalog, kept for callers being migrated.

``Catalog`` now lives in :mod:`cachelayer.catalog` (composed of repositories), ``NewFile``
in :mod:`cachelayer.catalog.records`, ``catalog_url`` in :mod:`cachelayer.catalog.encoding`
and ``utcnow`` in :mod:`cachelayer.catalog.session`; they are re-exported here unchanged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func

from cachelayer.catalog import Catalog
from cachelayer.catalog.encoding import catalog_url
from cachelayer.catalog.records import NewFile
from cachelayer.catalog.session import utcnow

__all__ = ["Catalog", "NewFile", "catalog_url", "utcnow"]


def _coalesce(a: Any, b: Any) -> Any:
    """``COALESCE(a, b)`` (kept for bench/backfill.py's experiments)."""
    return func.coalesce(a, b)
