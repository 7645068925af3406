"""Celery tasks: the app's Celery workers copy the files (``pip install cachelayer[celery]``).

Importing this module (from the app's Celery module, or ``include=["cachelayer.integrations.celery"]``)
registers three shared tasks with whatever Celery app the worker runs:

=========================  ==================================================================
``cachelayer.persist``     ``(prediction_id, on_expired="raise")`` -> the durable output
                           (:meth:`cachelayer.CacheLayer.persist`: JSON, files as durable URLs)
``cachelayer.copy_file``   ``(file_id)`` -> the stored file's record as a dict
                           (:meth:`cachelayer.CacheLayer.copy_file`, ``FileRecord.to_dict``)
``cachelayer.sweep``       ``()`` -> the pass's summary as a dict (:meth:`cachelayer.CacheLayer.sweep`,
                           copying what it finds with the layer's threads), e.g. from beat
=========================  ==================================================================

Each is ``acks_late`` with ``reject_on_worker_lost``: a worker that dies mid-copy (SIGKILL,
OOM) leaves its message unacknowledged, and the broker hands it to another worker
(RabbitMQ at once, when the connection drops; Redis after the transport's
``visibility_timeout``). That is safe because every unit of work is idempotent (a file is
claimed in the catalog; the redelivered task takes over the dead process's claim and each
file is stored once). A transient failure (:func:`cachelayer.errors.is_transient`: catalog
outage, store error, broken download...) is retried with an exponential backoff
(:func:`cachelayer.integrations.retry_delay`, at most :data:`~cachelayer.integrations.MAX_RETRIES`
times); any other error fails the task at once.

The :class:`~cachelayer.CacheLayer` is built from the worker's environment once per worker
process (:func:`cachelayer.integrations.process_layer`; :func:`~cachelayer.integrations.configure`
to build it yourself). Send them by name or through the objects here::

    from cachelayer.integrations.celery import persist
    layer.handle_webhook(request.headers, request.body, enqueue=persist.delay)
"""

from __future__ import annotations

from typing import Any, NoReturn

from celery import Task, shared_task

from cachelayer.errors import CacheLayerError, is_transient
from cachelayer.integrations import MAX_RETRIES, process_layer, retry_delay

__all__ = ["copy_file", "persist", "sweep"]

_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": MAX_RETRIES,
}


def _retry_or_raise(task: Task, exc: CacheLayerError) -> NoReturn:
    """Retry ``task`` later for a transient ``exc`` (``Retry`` raised), else re-raise it."""
    if is_transient(exc):
        raise task.retry(exc=exc, countdown=retry_delay(task.request.retries))
    raise exc


@shared_task(name="cachelayer.persist", **_OPTIONS)  # type: ignore[untyped-decorator]
def persist(self: Task, prediction_id: str, on_expired: str = "raise") -> Any:
    """Persist the prediction ``prediction_id`` (:meth:`cachelayer.CacheLayer.persist`);
    returns its durable output (JSON)."""
    try:
        return process_layer().persist(prediction_id, on_expired=on_expired)  # type: ignore[arg-type]
    except CacheLayerError as exc:
        _retry_or_raise(self, exc)


@shared_task(name="cachelayer.copy_file", **_OPTIONS)  # type: ignore[untyped-decorator]
def copy_file(self: Task, file_id: int) -> dict[str, Any]:
    """Copy the recorded file ``file_id`` (:meth:`cachelayer.CacheLayer.copy_file`);
    returns its stored record (``FileRecord.to_dict``)."""
    try:
        return process_layer().copy_file(int(file_id)).to_dict()
    except CacheLayerError as exc:
        _retry_or_raise(self, exc)


@shared_task(name="cachelayer.sweep", **_OPTIONS)  # type: ignore[untyped-decorator]
def sweep(self: Task) -> dict[str, Any]:
    """One sweep pass, copying what it finds (:meth:`cachelayer.CacheLayer.sweep`); returns
    its summary (``SweepSummary.to_dict``)."""
    try:
        return process_layer().sweep().to_dict()
    except CacheLayerError as exc:
        _retry_or_raise(self, exc)
