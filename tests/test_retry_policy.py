"""The named retry policies (cachelayer.retry_policy) give the waits and library objects
each mechanism had before they moved there (issue 20): the formulas below are the ones the
mechanisms computed themselves."""

from __future__ import annotations

import pytest
from urllib3.util.retry import Retry

from cachelayer import retry_policy as rp
from cachelayer.config import Settings
from cachelayer.netguard import DeadlineRetry

RANDS = (0.0, 0.3, 0.999)


@pytest.mark.parametrize("u", RANDS)
@pytest.mark.parametrize("n", range(1, 12))
def test_copy_waits_are_the_copiers_formulas(n, u):
    assert rp.COPY_DOWNLOAD.delay(n, rand=lambda: u) == pytest.approx(
        min(10.0, 0.25 * 2 ** (n - 1)) * (0.5 + u)
    )
    assert rp.COPY_REQUEUE.delay(n, rand=lambda: u) == pytest.approx(min(300.0, 2.0**n) * (0.5 + u))


@pytest.mark.parametrize("n", range(1, 8))
def test_create_waits_follow_retry_after_else_double(n):
    assert rp.API_CREATE.delay(n) == min(30.0, 2.0 ** (n - 1))
    assert rp.API_CREATE.delay(n, retry_after=7) == 7
    assert rp.API_CREATE.delay(n, retry_after=600) == 30.0
    assert rp.API_CREATE.retry_on == {429, 503}
    assert rp.API_CREATE.gives_up_after(5) and not rp.API_CREATE.gives_up_after(4)


@pytest.mark.parametrize("poll", [0.5, 1.0, 5.0])
def test_claim_backoff_doubles_the_idle_poll_up_to_30_s(poll):
    policy = rp.RetryPolicy(**{**rp.CLAIM.__dict__, "base_delay_s": 2 * poll})
    assert [policy.delay(f) for f in range(1, 10)] == [min(30.0, poll * 2**f) for f in range(1, 10)]
    assert not policy.gives_up_after(10**6)


def test_download_policy_builds_the_same_urllib3_retry():
    retry = rp.DOWNLOAD.with_attempts(4).to_urllib3(Retry, redirect=0, raise_on_status=False)
    assert (retry.total, retry.connect, retry.read, retry.status, retry.redirect) == (3, 3, 3, 3, 0)
    assert (retry.backoff_factor, retry.backoff_max, retry.backoff_jitter) == (0.25, 30, 0.25)
    assert set(retry.status_forcelist or ()) == {429, 500, 502, 503, 504}
    assert retry.respect_retry_after_header and not retry.raise_on_status
    assert isinstance(rp.DOWNLOAD.to_urllib3(DeadlineRetry), DeadlineRetry)
    assert rp.DOWNLOAD.retries == rp.COPY_DOWNLOAD.attempts == 4
    with pytest.raises(ValueError):
        rp.COPY_REQUEUE.to_urllib3(Retry)


def test_s3_policy_leaves_botocores_attempts_to_its_own_settings():
    assert rp.S3.to_botocore_config().retries == {"mode": "standard"}
    assert rp.S3.__class__(attempts=7).to_botocore_config().retries == {
        "mode": "standard",
        "total_max_attempts": 7,
    }


def test_settings_defaults_are_the_policies():
    s = Settings(database_url="sqlite://", storage_url="file:///tmp/x")
    assert s.max_attempts == rp.COPY_REQUEUE.attempts
    assert s.download_retries == rp.COPY_DOWNLOAD.attempts
    assert s.db_retry_seconds == rp.CATALOG.deadline_s


def test_catalog_retrying_retries_only_what_it_is_told_and_stops_after_attempts():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("hiccup")
        return "ok"

    policy = rp.RetryPolicy(attempts=None, deadline_s=30.0)  # no wait between tries
    assert policy.retrying(lambda e: isinstance(e, ConnectionError))(flaky) == "ok"
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(ConnectionError):
        rp.RetryPolicy(attempts=2).retrying(lambda e: True)(flaky)
    assert len(calls) == 2

    calls.clear()
    with pytest.raises(ConnectionError):
        rp.RetryPolicy(attempts=None, deadline_s=30.0).retrying(lambda e: False)(flaky)
    assert len(calls) == 1


@pytest.mark.parametrize("attempt", [1, 5, 30])
def test_catalog_waits_never_pass_the_deadline(attempt):
    from tenacity import RetryCallState

    retrying = rp.CATALOG.with_deadline(1.5).retrying(lambda e: True)
    state = RetryCallState(retrying, None, (), {})
    state.attempt_number = attempt
    state.outcome_timestamp = state.start_time + 1.0  # 1 s into the 1.5 s budget
    wait = retrying.wait(state)
    assert 0.0 <= wait <= 0.5
    assert wait == pytest.approx(min(0.5, min(2.0, 0.05 * 2 ** (attempt - 1))), abs=0.1)
