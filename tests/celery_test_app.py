"""The Celery app of the job-queue tests: the worker processes run it
(``celery -A celery_test_app``, broker and queue from the environment, cachelayer's tasks
registered by importing :mod:`cachelayer.integrations.celery`, as an app's own Celery
module would); the tests send tasks by name through :func:`make_app`'s app."""

from __future__ import annotations

import os

from celery import Celery


def make_app(broker: str, queue: str, visibility: float = 3600.0) -> Celery:
    """A Celery app on ``broker`` whose tasks go to ``queue``. On Redis, a message left
    unacknowledged ``visibility`` seconds (its worker died) is handed out again, and every
    key is prefixed with the queue so a parallel test's worker never restores this one's."""
    app = Celery("cachelayer_tests", broker=broker)
    options = {"visibility_timeout": visibility, "global_keyprefix": f"{queue}:"}
    app.conf.update(
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options=options if broker.startswith("redis") else {},
    )
    return app


if "CL_TEST_BROKER" in os.environ:
    app = make_app(
        os.environ["CL_TEST_BROKER"],
        os.environ["CL_TEST_QUEUE"],
        float(os.environ.get("CL_TEST_VISIBILITY", "3600")),
    )

    import cachelayer.integrations.celery  # noqa: E402, F401 - registers the shared tasks
