"""The parts behind `cachelayer serve`: gateway URLs, Range parsing, webhook signature
checks (against the simulator's signer), the server-state catalog on SQLite and
PostgreSQL, settings, and ranged reads of both stores."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachelayer import gateway_urls
from cachelayer.catalog.db import make_engine, upgrade
from cachelayer.catalog.server_state import ServerState, gateway_secret
from cachelayer.config import Settings
from cachelayer.errors import ConfigError, WebhookVerificationError
from cachelayer.prediction import Prediction
from cachelayer.server.gateway import parse_range
from cachelayer.testing.simulator import ReplicateSimulator
from cachelayer.webhooks import verify_signature

SECRET = b"0123456789abcdef0123456789abcdef"


# ---- gateway URLs ------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=300))
def test_gateway_urls_verify_their_own_key_only(key):
    url = gateway_urls.gateway_url("https://files.example.com/cl/", SECRET, key)
    assert url.startswith("https://files.example.com/cl/files/")
    sig = url.split("/")[5]
    assert len(sig) == gateway_urls.SIGNATURE_CHARS
    assert gateway_urls.verify(SECRET, key, sig)
    assert not gateway_urls.verify(SECRET, key + "x", sig)
    assert not gateway_urls.verify(b"another secret", key, sig)
    assert not gateway_urls.verify(SECRET, key, sig[:-1])


def test_gateway_url_keeps_the_file_name_last():
    url = gateway_urls.gateway_url("http://h", SECRET, "replicate/p1/out 0.png")
    assert url.endswith("/replicate/p1/out%200.png")
    with pytest.raises(ValueError):
        gateway_urls.secret_bytes("")


# ---- Range -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=10-", 10, "unsatisfiable"),
        ("bytes=-0", 10, "unsatisfiable"),
        ("bytes=0-", 0, "unsatisfiable"),
        ("bytes=5-2", 10, None),
        ("bytes=0-1,4-5", 10, None),
        ("items=0-1", 10, None),
        ("bytes=-", 10, None),
        ("BYTES = 1 - 2", 10, (1, 2)),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@given(st.integers(0, 10_000), st.integers(0, 20_000), st.integers(0, 20_000))
def test_parse_range_stays_inside_the_object(size, a, b):
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        got = parse_range(header, size)
        if isinstance(got, tuple):
            assert 0 <= got[0] <= got[1] < size


# ---- webhook signatures -------------------------------------------------------------------


def test_verify_signature_accepts_the_simulators_deliveries_and_nothing_else():
    sim = ReplicateSimulator()  # never started: only signs
    body = b'{"id": "p1", "status": "succeeded"}'
    headers = sim.sign_webhook(body)
    verify_signature(sim.webhook_secret, headers, body)
    verify_signature(sim.webhook_secret, {k.upper(): v for k, v in headers.items()}, body)
    two = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    verify_signature(sim.webhook_secret, two, body)  # one of several signatures matches
    cases = {
        "missing_headers": (body, {k: v for k, v in headers.items() if k != "webhook-id"}),
        "bad_signature": (body + b" ", headers),
        "stale": (body, sim.sign_webhook(body, timestamp=int(time.time()) - 301)),
        "malformed": (b"\xff\xfe", sim.sign_webhook(b"\xff\xfe")),
    }
    for reason, (payload, hdrs) in cases.items():
        with pytest.raises(WebhookVerificationError) as err:
            verify_signature(sim.webhook_secret, hdrs, payload)
        assert err.value.reason == reason
        assert err.value.status == (401 if reason == "bad_signature" else 400)
    for garbage in ("v1,%%%", "v1", "v2,abc", ","):
        with pytest.raises(WebhookVerificationError) as err:
            verify_signature(sim.webhook_secret, {**headers, "webhook-signature": garbage}, body)
        assert err.value.reason == "bad_signature"


# ---- server state ---------------------------------------------------------------------------


@pytest.fixture
def state(catalog_url):
    engine = make_engine(catalog_url)
    upgrade(engine)
    yield ServerState(engine)
    engine.dispose()


def test_the_generated_gateway_secret_is_shared_through_the_catalog(state, catalog_url):
    results: list[bytes] = []

    def read() -> None:
        engine = make_engine(catalog_url)
        results.append(gateway_secret(engine, None))
        engine.dispose()

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) >= 32
    assert gateway_secret(state.engine, "configured-secret-value") == b"configured-secret-value"


def test_deliveries_are_claimed_once_forgotten_and_pruned(state):
    assert state.claim_delivery("msg_1", "p1", "succeeded") is True
    assert state.claim_delivery("msg_1", "p1", "succeeded") is False
    state.forget_delivery("msg_1")
    assert state.claim_delivery("msg_1", "p1", "succeeded") is True
    assert state.prune_deliveries(3600) == 0
    assert state.prune_deliveries(0) == 1
    assert state.delivery_count() == 0


def test_record_progress_never_turns_a_finished_prediction_back(state):
    from cachelayer.catalog import Catalog

    catalog = Catalog(state.engine)
    now = datetime.now(timezone.utc).isoformat()
    running = Prediction.of({"id": "p9", "status": "processing", "model": "a/b", "created_at": now})
    done = Prediction.of(
        {"id": "p9", "status": "succeeded", "model": "a/b", "output": "x", "created_at": now}
    )
    assert state.record_progress(running) is True
    assert catalog.get_prediction("p9").status == "processing"
    catalog.predictions.record(done)
    assert state.record_progress(running) is False
    rec = catalog.get_prediction("p9")
    assert rec.status == "succeeded" and rec.output == "x"


# ---- settings ------------------------------------------------------------------------------


def test_server_settings(tmp_path):
    base = {"CACHELAYER_HOME": str(tmp_path)}
    s = Settings.from_env(
        {
            **base,
            "CACHELAYER_URL_MODE": "gateway",
            "CACHELAYER_GATEWAY_URL": "https://files.example.com/cl/",
            "CACHELAYER_GATEWAY_PROXY": "true",
            "CACHELAYER_WEBHOOK_URL": "https://app.example.com/cachelayer/webhooks/replicate",
            "CACHELAYER_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }
    )
    assert s.url_mode == "gateway" and s.gateway_url == "https://files.example.com/cl"
    assert s.gateway_proxy is True and s.gateway_secret is None
    assert s.webhook_url.endswith("/webhooks/replicate")
    assert Settings.from_env(base).gateway_proxy is False
    bad = [
        ({"CACHELAYER_URL_MODE": "gateway"}, "CACHELAYER_GATEWAY_URL"),
        ({"CACHELAYER_GATEWAY_URL": "ftp://x"}, "CACHELAYER_GATEWAY_URL"),
        ({"CACHELAYER_WEBHOOK_URL": "not a url"}, "CACHELAYER_WEBHOOK_URL"),
        ({"CACHELAYER_WEBHOOK_SECRET": "whsec_!!!"}, "CACHELAYER_WEBHOOK_SECRET"),
        ({"CACHELAYER_GATEWAY_SECRET": "short"}, "CACHELAYER_GATEWAY_SECRET"),
        ({"CACHELAYER_GATEWAY_PROXY": "maybe"}, "CACHELAYER_GATEWAY_PROXY"),
    ]
    for env, match in bad:
        with pytest.raises(ConfigError, match=match):
            Settings.from_env({**base, **env})


# ---- ranged reads ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["local_store", "s3_store"])
def test_open_range_reads_exactly_the_bytes_asked(request, which):
    import io

    store = request.getfixturevalue(which)
    store.check()
    data = bytes(range(256)) * 1000
    store.put("a/b.bin", io.BytesIO(data), content_type="application/octet-stream", cache_control="max-age=5")
    for start, end in ((0, None), (0, 0), (10, 99), (255_990, None), (1000, 255_999)):
        with store.open_range("a/b.bin", start, end) as fh:
            got = fh.read()
        assert got == data[start : None if end is None else end + 1], (start, end)
    info = store.head("a/b.bin")
    assert info.cache_control == "max-age=5"
    with pytest.raises(FileNotFoundError):
        store.open_range("a/missing.bin", 5, 10)
    with pytest.raises(ValueError):
        store.open_range("a/b.bin", 5, 1)


def test_progress_snapshots_keep_data_payloads_out_of_the_catalog(catalog_url):
    """A `start`/`output` webhook is recorded by the same row builder as every other writer:
    a `data:` payload in a running prediction's output never lands in the catalog."""
    from cachelayer.catalog import Catalog
    from cachelayer.catalog.db import ensure_schema, make_engine
    from cachelayer.catalog.server_state import ServerState
    from cachelayer.prediction import Prediction

    engine = make_engine(catalog_url)
    ensure_schema(engine, auto_migrate=True)
    payload = "data:image/png;base64," + "A" * 40_000
    running = Prediction.from_json({"id": "p1", "status": "processing", "output": [payload]})
    assert ServerState(engine).record_progress(running)
    recorded = Catalog(engine).get_prediction("p1").output
    assert recorded[0].startswith("data:image/png;sha256=") and "AAAA" not in recorded[0]
    engine.dispose()
