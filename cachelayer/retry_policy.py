"""Every retry of cachelayer: one value type (:class:`RetryPolicy`) and the named policies.

A policy says how many tries (``attempts``, the first one included; ``None``: until a
deadline or until stopped), how long to wait before each retry (exponential from
``base_delay_s`` by ``multiplier``, capped at ``max_delay_s``, then jittered) and, for HTTP,
which statuses are worth another try (``retry_on``). Each mechanism takes its policy from
here and turns it into what its library wants (:meth:`RetryPolicy.to_urllib3`,
:meth:`RetryPolicy.to_botocore_config`, :meth:`RetryPolicy.retrying` for tenacity) or asks
it for a delay (:meth:`RetryPolicy.delay`); no other module builds a urllib3 ``Retry``, a
botocore ``retries`` config or tenacity stop/wait objects (``tests/test_architecture.py``).
A setting overrides what it always did: ``CACHELAYER_DOWNLOAD_RETRIES`` (the attempts of
:data:`DOWNLOAD` and :data:`COPY_DOWNLOAD`), ``CACHELAYER_MAX_ATTEMPTS`` (of
:data:`COPY_REQUEUE`), ``CACHELAYER_DB_RETRY_SECONDS`` (the deadline of :data:`CATALOG`);
the defaults of those settings are the policies' (:mod:`cachelayer.config`).

The policies, where each is used and where its numbers come from:

================  ===========================================================================
:data:`CATALOG`   one catalog transaction after a transient database error
                  (``catalog/retry.py``, tenacity): 50 ms doubling up to 2 s, + up to 0.1 s,
                  for 60 s (a PostgreSQL restart or fail-over takes seconds to tens of seconds).
:data:`DOWNLOAD`  one HTTP request of a download (``fetch.py``, urllib3 ``Retry``): 5 tries on
                  connection errors and 429/500/502/503/504, urllib3's backoff from 0.25 s
                  (0 before the first retry, then 0.5, 1, 2 s...) capped at 30 s, + up to
                  0.25 s, ``Retry-After`` honoured (capped by ``netguard.DeadlineRetry``).
:data:`COPY_DOWNLOAD` a download that broke mid-body (``copier.py``, in process): 4 tries,
                  0.25 s doubling up to 10 s, each scaled by 0.5..1.5.
:data:`COPY_REQUEUE` a file's transient failure, back to the queue (``copier.py``:
                  ``available_at``): 5 claims, 2 s doubling (2**claims s) up to 300 s, each
                  scaled by 0.5..1.5.
:data:`SOURCE_REFRESH` a source URL that stopped answering, refreshed through
                  ``predictions.get`` (``expiry.refreshed_source``): 3 tries (2 refreshes),
                  no wait (the refreshed URL is new).
:data:`API_CREATE` a prediction create answered 429 or 503 (``replicate_api.py``): 5 tries,
                  ``Retry-After`` when given (Replicate's rate-limit guidance: wait as long as
                  it says), else 1 s doubling; every wait capped at 30 s. A create is never
                  retried on any other answer (a POST that may have run is not repeated).
:data:`CLAIM`     a worker that could not claim a file (the catalog is down; ``workers.py``):
                  until stopped, twice the idle poll doubling up to 30 s.
:data:`S3`        every S3 request (``storage/s3.py``): botocore's ``standard`` retry mode,
                  whose own defaults are 3 tries and full-jitter backoff from 1 s doubling up
                  to 20 s (botocore ``retries/standard.py``); ``AWS_MAX_ATTEMPTS`` and the AWS
                  config file still set the attempts, so they are not passed.
================  ===========================================================================

Reads of the Replicate API are retried by the client itself (1.x ``RetryTransport``, 2.x
``max_retries``), as that client does; only creates are ours (:data:`API_CREATE`).

Pure: urllib3, botocore and tenacity are imported by the method that needs them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from botocore.config import Config
    from tenacity import RetryCallState, Retrying
    from urllib3.util.retry import Retry

__all__ = [
    "API_CREATE",
    "CATALOG",
    "CLAIM",
    "COPY_DOWNLOAD",
    "COPY_REQUEUE",
    "DOWNLOAD",
    "S3",
    "SOURCE_REFRESH",
    "RetryPolicy",
]

R = TypeVar("R", bound="Retry")


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of operation is retried.

    ``attempts``: tries in all, the first included (``None``: no limit but ``deadline_s``
    or the caller stopping). The wait before retry ``n`` (``n`` = 1 after the first failed
    try) is ``min(max_delay_s, base_delay_s * multiplier ** (n - 1))``, then scaled by a
    uniform factor in ``[1 - jitter_ratio, 1 + jitter_ratio)``, then increased by a uniform
    ``[0, jitter_s)`` seconds. ``deadline_s``: seconds after the first try past which no
    retry starts (``None``: none). ``retry_on``: HTTP statuses worth another try.
    ``library_defaults``: the numbers describe the library's own defaults, which its
    configuration may change, so they are not passed to it (:data:`S3`).
    """

    attempts: int | None
    base_delay_s: float = 0.0
    max_delay_s: float = 0.0
    multiplier: float = 2.0
    jitter_ratio: float = 0.0
    jitter_s: float = 0.0
    deadline_s: float | None = None
    retry_on: frozenset[int] = field(default_factory=frozenset)
    library_defaults: bool = False

    @property
    def retries(self) -> int | None:
        """Retries after the first try (``attempts - 1``; ``None``: no limit)."""
        return None if self.attempts is None else self.attempts - 1

    def with_attempts(self, attempts: int) -> RetryPolicy:
        """This policy with ``attempts`` tries in all (a setting that overrides it)."""
        return replace(self, attempts=attempts)

    def with_deadline(self, seconds: float) -> RetryPolicy:
        """This policy with a deadline of ``seconds`` (a setting or a caller's budget)."""
        return replace(self, deadline_s=seconds)

    def gives_up_after(self, tries: int) -> bool:
        """Whether no retry follows ``tries`` failed tries."""
        return self.attempts is not None and tries >= self.attempts

    def backoff(self, n: int) -> float:
        """The wait before retry ``n`` (>= 1) without jitter, in seconds."""
        return min(self.max_delay_s, self.base_delay_s * self.multiplier ** (n - 1))

    def delay(
        self, n: int, *, retry_after: float | None = None, rand: Callable[[], float] = random.random
    ) -> float:
        """The wait before retry ``n`` (>= 1), in seconds, jittered with ``rand`` (uniform
        in ``[0, 1)``). A server's ``Retry-After`` (seconds) replaces the backoff, capped at
        ``max_delay_s`` and not jittered."""
        if retry_after is not None:
            return max(0.0, min(self.max_delay_s, retry_after))
        wait = self.backoff(n)
        if self.jitter_ratio:
            wait *= 1.0 - self.jitter_ratio + 2.0 * self.jitter_ratio * rand()
        if self.jitter_s:
            wait += self.jitter_s * rand()
        return wait

    def to_urllib3(self, cls: type[R], **options: Any) -> R:
        """A urllib3 ``Retry`` of class ``cls`` (``Retry`` or a subclass) for this policy:
        ``retries`` for every kind of error, statuses ``retry_on``, urllib3's backoff from
        ``base_delay_s`` (urllib3 waits 0 before the first retry and doubles from the second:
        ``multiplier`` must be 2) up to ``max_delay_s`` with ``jitter_s``, ``Retry-After``
        honoured. ``options`` go to ``cls`` as they are (``allowed_methods``, ``redirect``...)."""
        if self.multiplier != 2.0 or self.jitter_ratio:
            raise ValueError("urllib3 backs off by doubling with additive jitter only")
        n = self.retries
        return cls(
            total=n,
            connect=n,
            read=n,
            status=n,
            status_forcelist=sorted(self.retry_on),
            backoff_factor=self.base_delay_s,
            backoff_max=self.max_delay_s,
            backoff_jitter=self.jitter_s,
            respect_retry_after_header=True,
            **options,
        )

    def to_botocore_config(self) -> Config:
        """A botocore ``Config`` carrying only the retry settings (``Config.merge`` it into
        the client's): ``standard`` mode, and ``total_max_attempts`` unless the numbers are
        botocore's own defaults (``library_defaults``: ``AWS_MAX_ATTEMPTS`` keeps working)."""
        from botocore.config import Config

        if self.library_defaults or self.attempts is None:
            return Config(retries={"mode": "standard"})
        return Config(retries={"mode": "standard", "total_max_attempts": self.attempts})

    def retrying(
        self,
        retry_if: Callable[[BaseException], bool],
        before_sleep: Callable[[RetryCallState], None] | None = None,
    ) -> Retrying:
        """A tenacity ``Retrying`` (``reraise=True``) that retries while ``retry_if(exc)``,
        stops after ``attempts`` tries and after ``deadline_s`` seconds (the last try may
        start just before it), and never sleeps past the deadline."""
        from tenacity import (
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            stop_after_delay,
            stop_never,
            wait_exponential,
            wait_random,
        )
        from tenacity.stop import stop_base

        deadline = self.deadline_s
        backoff = wait_exponential(
            multiplier=self.base_delay_s, exp_base=self.multiplier, max=self.max_delay_s
        ) + wait_random(0, self.jitter_s)

        def wait(state: RetryCallState) -> float:
            w = backoff(state)
            if deadline is None:
                return w
            return min(w, max(0.0, deadline - (state.seconds_since_start or 0.0)))

        stop: stop_base = stop_never if deadline is None else stop_after_delay(deadline)
        if self.attempts is not None:
            stop = stop | stop_after_attempt(self.attempts)
        return Retrying(
            retry=retry_if_exception(retry_if),
            stop=stop,
            wait=wait,
            before_sleep=before_sleep,
            reraise=True,
        )

    def to_rq(self) -> Any:
        """An ``rq.Retry`` for this policy: ``retries`` retries at the backoff's waits
        (whole seconds, no jitter: RQ takes a fixed list). Needs the ``rq`` package."""
        from rq import Retry

        n = self.retries or 0
        return Retry(max=n, interval=[int(self.backoff(k)) for k in range(1, n + 1)])


CATALOG = RetryPolicy(attempts=None, base_delay_s=0.05, max_delay_s=2.0, jitter_s=0.1, deadline_s=60.0)
DOWNLOAD = RetryPolicy(
    attempts=5,
    base_delay_s=0.25,
    max_delay_s=30.0,
    jitter_s=0.25,
    retry_on=frozenset({429, 500, 502, 503, 504}),
)
COPY_DOWNLOAD = RetryPolicy(attempts=4, base_delay_s=0.25, max_delay_s=10.0, jitter_ratio=0.5)
COPY_REQUEUE = RetryPolicy(attempts=5, base_delay_s=2.0, max_delay_s=300.0, jitter_ratio=0.5)
SOURCE_REFRESH = RetryPolicy(attempts=3)
API_CREATE = RetryPolicy(attempts=5, base_delay_s=1.0, max_delay_s=30.0, retry_on=frozenset({429, 503}))
CLAIM = RetryPolicy(attempts=None, base_delay_s=2.0, max_delay_s=30.0)
S3 = RetryPolicy(attempts=3, base_delay_s=1.0, max_delay_s=20.0, library_defaults=True)
#: A job-queue task (Celery, RQ: :mod:`cachelayer.integrations`) after a transient failure:
#: 8 retries, 5 s doubling to 10 min, jittered x0.5 to x1.5 so a burst does not return at once.
JOB_QUEUE = RetryPolicy(attempts=9, base_delay_s=5.0, max_delay_s=600.0, jitter_ratio=0.5)
