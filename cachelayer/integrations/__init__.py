"""The app's own job queue runs the copies: thin integrations over the public units of work.

:mod:`cachelayer.integrations.celery` (shared tasks ``cachelayer.persist``,
``cachelayer.copy_file``, ``cachelayer.sweep``) and :mod:`cachelayer.integrations.rq`
(functions enqueued by dotted path) call :meth:`cachelayer.CacheLayer.persist`,
:meth:`~cachelayer.CacheLayer.copy_file` and :meth:`~cachelayer.CacheLayer.sweep` on one
:class:`~cachelayer.CacheLayer` per worker process (:func:`process_layer`). Neither module
is imported by ``import cachelayer``; each needs its extra (``cachelayer[celery]``,
``cachelayer[rq]``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from cachelayer.retry_policy import JOB_QUEUE

if TYPE_CHECKING:
    from cachelayer.layer import CacheLayer

__all__ = ["configure", "process_layer", "retry_delay"]

#: Retries of one task after transient failures before it fails for good
#: (:data:`cachelayer.retry_policy.JOB_QUEUE`, the one home of the policy).
MAX_RETRIES = JOB_QUEUE.retries or 0

_lock = threading.Lock()
_built: CacheLayer | None = None
_factory: Callable[[], CacheLayer] | None = None


def _forget_in_child() -> None:  # a forked worker process builds its own (no shared pools)
    global _lock, _built
    _lock, _built = threading.Lock(), None


os.register_at_fork(after_in_child=_forget_in_child)


def configure(factory: Callable[[], CacheLayer] | None) -> None:
    """Build the workers' :class:`~cachelayer.CacheLayer` with ``factory()`` instead of
    ``CacheLayer()`` (settings from the environment, :mod:`cachelayer.config`); ``None``
    goes back to that. Call it where the worker imports the app (Celery's app module, RQ's
    worker settings); a layer built already is closed and built again on next use."""
    global _factory, _built
    with _lock:
        _factory = factory
        old, _built = _built, None
    if old is not None:
        old.close()


def process_layer() -> CacheLayer:
    """The :class:`~cachelayer.CacheLayer` of this worker process, built on first use (from
    the environment, or by the :func:`configure` d factory) and kept for every later task;
    a forked child builds its own. Raises :class:`~cachelayer.errors.ConfigError` for bad
    settings."""
    global _built
    with _lock:
        if _built is None:
            if _factory is None:
                from cachelayer.layer import CacheLayer

                _built = CacheLayer()
            else:
                _built = _factory()
        return _built


def retry_delay(retries: int) -> float:
    """Seconds to wait before retry number ``retries + 1`` (``retries`` done so far), as
    :data:`cachelayer.retry_policy.JOB_QUEUE` says: 5 s doubled per retry, at most 600 s,
    times a jitter of 0.5 to 1.5 so a burst of failures does not come back at once."""
    return JOB_QUEUE.delay(max(0, retries) + 1)
