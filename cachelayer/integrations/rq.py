"""RQ jobs: the app's RQ workers copy the files (``pip install cachelayer[rq]``).

Plain functions, enqueued by dotted path so the enqueuing process need not import them::

    from redis import Redis
    from rq import Queue
    from cachelayer.integrations.rq import RETRY, enqueuer

    queue = Queue("cachelayer", connection=Redis())
    queue.enqueue("cachelayer.integrations.rq.persist", prediction_id, retry=RETRY)
    layer.handle_webhook(headers, body, enqueue=enqueuer(queue))   # the same, per webhook

=================================================  ========================================
``cachelayer.integrations.rq.persist``             ``(prediction_id, on_expired="raise")`` ->
                                                   the durable output (JSON)
``cachelayer.integrations.rq.copy_file``           ``(file_id)`` -> the stored record (dict)
``cachelayer.integrations.rq.sweep``               ``()`` -> the pass's summary (dict)
=================================================  ========================================

**Retries and dead workers.** RQ retries a job only when it was enqueued with
``retry=Retry(...)`` (:data:`RETRY`: 8 retries, 5 s to 10 min apart; delayed retries need a
worker started ``--with-scheduler``), and then for any
exception (every unit of work is idempotent, so a final error retried costs a few
requests). A worker killed mid-job (SIGKILL, OOM) leaves the job in the queue's
``StartedJobRegistry``; once its heartbeat lapses (the worker's ``job_monitoring_interval``
+ 60 s) the next registry cleanup (any worker's maintenance, every
``maintenance_interval``, default 10 min, or ``rq.registry.StartedJobRegistry(queue=q).cleanup()``)
re-enqueues it if it has retries left, else moves it to the ``FailedJobRegistry`` as
``AbandonedJobError`` (re-enqueue it from there with ``FailedJobRegistry.requeue``). The
redelivered job takes over the dead process's claims, and each file is stored once.

The :class:`~cachelayer.CacheLayer` is built from the worker's environment once per
process (:func:`cachelayer.integrations.process_layer`): RQ's default ``Worker`` forks a
work horse per job, so each job builds one; ``rq worker --worker-class rq.worker.SimpleWorker``
(jobs in the worker process) keeps one per worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rq import Queue, Retry

from cachelayer.integrations import process_layer
from cachelayer.retry_policy import JOB_QUEUE

__all__ = ["RETRY", "copy_file", "enqueuer", "persist", "sweep"]

#: The retry policy to enqueue the jobs with: :data:`~cachelayer.integrations.MAX_RETRIES`
#: retries, the backoff of :func:`cachelayer.integrations.retry_delay` without its jitter.
RETRY = JOB_QUEUE.to_rq()


def persist(prediction_id: str, on_expired: str = "raise") -> Any:
    """Persist the prediction ``prediction_id`` (:meth:`cachelayer.CacheLayer.persist`);
    returns its durable output (JSON). Raises its errors (see there)."""
    return process_layer().persist(prediction_id, on_expired=on_expired)  # type: ignore[arg-type]


def copy_file(file_id: int) -> dict[str, Any]:
    """Copy the recorded file ``file_id`` (:meth:`cachelayer.CacheLayer.copy_file`);
    returns its stored record (``FileRecord.to_dict``). Raises its errors (see there)."""
    return process_layer().copy_file(int(file_id)).to_dict()


def sweep() -> dict[str, Any]:
    """One sweep pass, copying what it finds (:meth:`cachelayer.CacheLayer.sweep`); returns
    its summary (``SweepSummary.to_dict``)."""
    return process_layer().sweep().to_dict()


def enqueuer(queue: Queue, *, retry: Retry | None = RETRY, **options: Any) -> Callable[[str], object]:
    """``enqueue(prediction_id)`` for :meth:`cachelayer.CacheLayer.handle_webhook`: enqueues
    :func:`persist` on ``queue`` by dotted path with ``retry`` (and ``options`` of
    ``Queue.enqueue_call``, e.g. ``job_timeout``); returns the ``rq.job.Job``."""

    def enqueue(prediction_id: str) -> object:
        return queue.enqueue_call(
            "cachelayer.integrations.rq.persist", args=(prediction_id,), retry=retry, **options
        )

    return enqueue
