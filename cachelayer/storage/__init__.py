"""Storage backends behind one interface (:class:`~cachelayer.storage.base.Store`)."""

from cachelayer.storage.base import ObjectInfo, Store, UrlMode

__all__ = ["ObjectInfo", "Store", "UrlMode"]
