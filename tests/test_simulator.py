"""The Replicate simulator against the real ``replicate`` client, over real sockets."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import replicate
import requests
import urllib3
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput
from replicate.pagination import paginate
from sim_receiver import https_receiver

from cachelayer.testing.simulator import (
    CHUNK_SIZE,
    ITERATOR_OUTPUT_SCHEMA,
    DataURI,
    File,
    ReplicateSimulator,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend image" * 10
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


@pytest.fixture
def sim() -> Iterator[ReplicateSimulator]:
    with ReplicateSimulator() as s:
        yield s


@pytest.fixture(scope="module")
def https_sim() -> Iterator[ReplicateSimulator]:
    with ReplicateSimulator(https=True) as s:
        yield s


def client_for(sim: ReplicateSimulator, token: str | None = None) -> replicate.Client:
    kwargs: dict[str, Any] = {}
    if sim.ca_file:
        # The client builds its own transport and ignores verify=; pass the transport.
        kwargs["transport"] = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=sim.ca_file))
    client = replicate.Client(api_token=token or sim.token, base_url=sim.base_url, **kwargs)
    client.poll_interval = 0.02
    return client


def api(sim: ReplicateSimulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {sim.token}"})
    return httpx.request(
        method, sim.base_url + path, headers=headers, verify=sim.ssl_context() or True, **kwargs
    )


# -- basic runs ---------------------------------------------------------------------------


def test_run_over_http_returns_plain_url_strings(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/painter", outputs=File(PNG, content_type="image/png"))
    url: Any = client_for(sim).run("acme/painter", input={"prompt": "a cat"})
    assert isinstance(url, str)
    assert re.fullmatch(rf"{sim.delivery_url}/delivery/pbxt/[A-Za-z0-9]{{32}}/out-0\.png", url)
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 200
    assert resp.content == PNG
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Content-Length"] == str(len(PNG))
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(PNG))
    assert sim.download_count(url) == 1
    assert ("POST", "/v1/models/acme/painter/predictions", 201) in sim.requests


def test_run_over_https_returns_file_outputs(https_sim: ReplicateSimulator) -> None:
    sim = https_sim
    assert sim.base_url.startswith("https://127.0.0.1:")
    assert sim.ca_file
    with open(sim.ca_file) as fh:
        assert fh.read().startswith("-----BEGIN CERTIFICATE-----")
    sim.add_model(
        "acme/https-painter",
        outputs=lambda inp: [File(PNG + bytes([i]), filename=f"out-{i}.png") for i in range(inp["n"])],
    )
    out: Any = client_for(sim).run("acme/https-painter", input={"n": 2})
    assert [type(o) for o in out] == [FileOutput, FileOutput]
    assert [o.read() for o in out] == [PNG + b"\x00", PNG + b"\x01"]
    assert out[1].url.endswith("/out-1.png")
    again: Any = sim.replicate_client().run("acme/https-painter", input={"n": 1})
    assert again[0].read() == PNG + b"\x00"
    # plain TLS clients trust the CA too
    assert requests.get(out[0].url, verify=sim.ca_file, timeout=5).content == PNG + b"\x00"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(out[0].url, timeout=5)


def test_prediction_object_has_every_reference_field(sim: ReplicateSimulator) -> None:
    vid = sim.add_model("acme/painter", outputs=File(PNG))
    pred = client_for(sim).predictions.create(version=vid, input={"prompt": "x"}, wait=True)
    obj = api(sim, "GET", f"/v1/predictions/{pred.id}").json()
    assert obj == sim.prediction(pred.id)
    assert set(obj) >= {
        "id",
        "model",
        "version",
        "input",
        "logs",
        "output",
        "data_removed",
        "error",
        "status",
        "source",
        "created_at",
        "started_at",
        "completed_at",
        "metrics",
        "urls",
    }
    assert re.fullmatch(r"[a-z2-7]{26}", obj["id"])
    assert re.fullmatch(r"[0-9a-f]{64}", obj["version"])
    assert obj["model"] == "acme/painter" and obj["source"] == "api"
    assert obj["status"] == "succeeded" and obj["error"] is None and not obj["data_removed"]
    assert obj["input"] == {"prompt": "x"}
    for key in ("created_at", "started_at", "completed_at"):
        assert ISO_Z.match(obj[key]), obj[key]
    assert set(obj["metrics"]) == {"predict_time", "total_time"}
    assert obj["urls"]["get"] == f"{sim.base_url}/v1/predictions/{obj['id']}"
    assert obj["urls"]["cancel"].endswith(f"/v1/predictions/{obj['id']}/cancel")
    assert obj["urls"]["web"] == f"https://replicate.com/p/{obj['id']}"


# -- lifecycle ----------------------------------------------------------------------------


def test_prefer_wait_holds_until_the_prediction_finishes(sim: ReplicateSimulator) -> None:
    sim.prediction_duration = 0.3
    sim.add_model("acme/painter", outputs=File(PNG))
    url: Any = client_for(sim).run("acme/painter")  # sends Prefer: wait
    assert requests.get(url, timeout=5).content == PNG
    assert [m for m, p, _ in sim.requests if p.startswith("/v1/")] == ["POST"]  # no polling


def test_prefer_wait_times_out_then_client_polls(sim: ReplicateSimulator) -> None:
    sim.prediction_duration = 1.6
    sim.add_model("acme/painter", outputs=File(PNG))
    client = client_for(sim)
    pred = client.predictions.create(model="acme/painter", input={}, wait=1)
    assert pred.status == "starting" and pred.output is None  # what run() expects
    url: Any = client.run("acme/painter", wait=1)  # held 1 s, then polled to the end
    polls = [p for m, p, _ in sim.requests if m == "GET" and p.startswith("/v1/predictions/")]
    assert polls, "the client should have polled GET /v1/predictions/{id}"
    assert requests.get(url, timeout=5).content == PNG


def test_lifecycle_follows_the_clock(sim: ReplicateSimulator) -> None:
    sim.prediction_duration = 10
    sim.add_model("acme/painter", outputs=File(PNG))
    client = client_for(sim)
    pred = client.predictions.create(model="acme/painter", input={"a": 1})
    assert pred.status == "starting" and pred.started_at is None
    sim.advance(6)
    pred.reload()
    assert pred.status == "processing" and pred.output is None and pred.started_at
    sim.advance(5)
    pred.reload()
    assert pred.status == "succeeded" and pred.output.startswith(sim.delivery_url)
    assert pred.completed_at and pred.metrics and pred.metrics["predict_time"] == 5.0


def test_polling_without_wait(sim: ReplicateSimulator) -> None:
    sim.prediction_duration = 0.2
    sim.add_model("acme/painter", outputs=File(PNG))
    url: Any = client_for(sim).run("acme/painter", wait=False)
    assert requests.get(url, timeout=5).content == PNG
    assert sum(1 for m, p, _ in sim.requests if m == "GET" and "/v1/predictions/" in p) >= 2


def test_failing_model_and_cancel(sim: ReplicateSimulator) -> None:
    def explode(inp: dict[str, Any]) -> Any:
        raise RuntimeError(f"CUDA out of memory for {inp['prompt']}")

    sim.add_model("acme/broken", outputs=explode)
    client = client_for(sim)
    with pytest.raises(ModelError, match="CUDA out of memory for cat"):
        client.run("acme/broken", input={"prompt": "cat"})

    sim.prediction_duration = 30
    sim.add_model("acme/slow", outputs=File(PNG))
    pred = client.predictions.create(model="acme/slow", input={})
    pred.cancel()
    assert pred.status == "canceled" and pred.output is None and pred.completed_at
    sim.advance(60)
    assert sim.prediction(pred.id)["status"] == "canceled"


# -- list -----------------------------------------------------------------------------------


def test_list_paginates_newest_first_with_cursor_and_source_filter() -> None:
    with ReplicateSimulator(page_size=3) as sim:
        sim.add_model("acme/painter", outputs=File(PNG))
        base = sim.now() - dt.timedelta(hours=1)  # web listings cover the last 14 days only
        ids = [
            sim.seed_prediction(
                "acme/painter",
                input={"i": i},
                output=File(PNG),
                source="web" if i % 3 == 0 else "api",
                created_at=base + dt.timedelta(minutes=i),
            )
            for i in range(8)
        ]
        client = client_for(sim)
        created = client.predictions.create(model="acme/painter", input={"i": "new"}, wait=True)
        expected = [created.id, *reversed(ids)]

        pages = list(paginate(client.predictions.list))
        assert [len(p.results) for p in pages] == [3, 3, 3]
        assert [p.id for page in pages for p in page] == expected
        assert pages[0].next and pages[0].next.startswith(f"{sim.base_url}/v1/predictions?cursor=")
        assert pages[0].previous is None and pages[-1].next is None
        back = client.predictions.list(pages[1].previous)
        assert [p.id for p in back] == [p.id for p in pages[0]]
        assert sim.prediction_ids == expected

        web = api(sim, "GET", "/v1/predictions?source=web").json()
        assert [r["id"] for r in web["results"]] == [ids[6], ids[3], ids[0]]
        assert all(r["source"] == "web" for r in web["results"]) and web["next"] is None
        # the API accepts only source=web ("Currently only web is supported") ...
        assert api(sim, "GET", "/v1/predictions?source=api").status_code == 422
        # ... unless a test opts in to filtering API predictions server-side
        sim.accept_source_api = True
        api_only = api(sim, "GET", "/v1/predictions?source=api").json()
        assert "source=api" in api_only["next"]
        second = httpx.get(api_only["next"], headers={"Authorization": f"Bearer {sim.token}"}).json()
        assert [r["id"] for r in api_only["results"] + second["results"]][:5] == [
            created.id,
            ids[7],
            ids[5],
            ids[4],
            ids[2],
        ]


# -- errors ---------------------------------------------------------------------------------


def test_auth_is_required(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/painter", outputs=File(PNG))
    with pytest.raises(ReplicateError) as info:
        client_for(sim, token="wrong").run("acme/painter")
    assert info.value.status == 401
    resp = api(sim, "GET", "/v1/predictions", headers={})
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["status"] == 401 and resp.json()["title"] and resp.json()["detail"]


def test_unknown_model_and_version(sim: ReplicateSimulator) -> None:
    client = client_for(sim)
    with pytest.raises(ReplicateError) as info:
        client.run("acme/nope", input={})
    assert info.value.status == 404 and info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(version="0" * 64, input={})
    assert info.value.status == 422
    with pytest.raises(ReplicateError) as info:
        client.predictions.get("doesnotexist")
    assert info.value.status == 404
    with pytest.raises(ReplicateError) as info:
        client.models.get("acme/nope")
    assert info.value.status == 404

    vid = sim.add_model("acme/private", outputs="text", official=False)
    with pytest.raises(ReplicateError) as info:  # model-level create needs an official model
        client.run("acme/private")
    assert info.value.status == 404
    assert client.run(f"acme/private:{vid}") == "text"


def test_models_versions_deployments_and_webhook_secret(sim: ReplicateSimulator) -> None:
    v1 = sim.add_model("acme/painter", outputs=File(PNG, filename="v1.png"))
    v2 = sim.add_model("acme/painter", outputs=File(PNG, filename="v2.png"))
    assert v1 != v2 and len(v1) == 64
    sim.add_deployment("acme/painter-prod", model="acme/painter")
    sim.add_deployment("acme/painter-old", model=f"acme/painter:{v1}")
    client = client_for(sim)

    model = client.models.get("acme/painter")
    assert model.latest_version is not None and model.latest_version.id == v2
    version = model.versions.get(v1)
    assert version.openapi_schema["components"]["schemas"]["Output"] == {
        "type": "string",
        "format": "uri",
    }
    latest: Any = client.run("acme/painter")
    pinned: Any = client.run(f"acme/painter:{v1}")
    assert latest.endswith("/v2.png") and pinned.endswith("/v1.png")

    dep = client.deployments.get("acme/painter-prod")
    assert dep.current_release and dep.current_release.version == v2
    pred = client.deployments.predictions.create("acme/painter-prod", input={}, wait=True)
    assert pred.status == "succeeded" and str(pred.output).endswith("/v2.png")
    old = client.deployments.predictions.create("acme/painter-old", input={}, wait=True)
    assert old.version == v1
    with pytest.raises(ReplicateError) as info:
        client.deployments.predictions.create("acme/missing", input={})
    assert info.value.status == 404

    secret = client.webhooks.default.secret()
    assert secret.key == sim.webhook_secret and secret.key.startswith("whsec_")

    # history on a version never registered does not change which version is latest
    old_pid = sim.seed_prediction(f"acme/painter:{'a' * 64}", input={}, output=None)
    assert sim.prediction(old_pid)["version"] == "a" * 64
    latest_model = client.models.get("acme/painter")
    assert latest_model.latest_version is not None and latest_model.latest_version.id == v2
    assert client.models.get("acme/painter").versions.get("a" * 64).id == "a" * 64


def test_iterator_models_and_data_uris(sim: ReplicateSimulator) -> None:
    vid = sim.add_model(
        "acme/chat",
        outputs=lambda inp: ["Hel", "lo ", inp["name"]],
        output_schema=ITERATOR_OUTPUT_SCHEMA,
    )
    client = client_for(sim)
    chunks = client.run(f"acme/chat:{vid}", input={"name": "Ann"})
    assert not isinstance(chunks, list)  # the client returns an iterator for these
    assert "".join(chunks) == "Hello Ann"

    sim.prediction_duration = 4
    pred = client.predictions.create(version=vid, input={"name": "Bo"})
    sim.advance(3)  # halfway through "processing": partial output
    pred.reload()
    assert pred.status == "processing" and pred.output == ["Hel"]

    sim.prediction_duration = 0
    sim.add_model(
        "acme/thumbs",
        outputs={"thumb": DataURI(b"RIFF webp", "image/webp"), "meta": {"w": 1, "ok": True}},
    )
    out: Any = client.run("acme/thumbs")
    assert isinstance(out["thumb"], FileOutput)  # 1.x wraps data: URIs even over http
    assert out["thumb"].read() == b"RIFF webp"
    assert out["meta"] == {"w": 1, "ok": True}
    raw: Any = client.run("acme/thumbs", use_file_output=False)
    assert raw["thumb"] == "data:image/webp;base64," + base64.b64encode(b"RIFF webp").decode()


# -- expiry, removal, rotation -------------------------------------------------------------


def test_urls_expire_then_api_data_is_removed() -> None:
    with ReplicateSimulator(url_ttl=60, data_removal_after=120) as sim:
        sim.add_model("acme/painter", outputs=File(PNG))
        client = client_for(sim)
        pred = client.predictions.create(model="acme/painter", input={"p": 1}, wait=True)
        web = sim.seed_prediction("acme/painter", input={"p": 2}, output=[File(PNG)], source="web")
        url: Any = pred.output
        assert requests.get(url, timeout=5).status_code == 200

        sim.advance(61)
        assert requests.get(url, timeout=5).status_code == 404
        pred.reload()
        assert pred.output == url and not sim.prediction(pred.id)["data_removed"]

        sim.advance(60)
        obj = api(sim, "GET", f"/v1/predictions/{pred.id}").json()
        assert obj["data_removed"] is True and obj["output"] is None and "output" in obj
        assert obj["input"] == {} and obj["logs"] == ""  # removal takes the input too
        kept = sim.prediction(web)
        assert kept["data_removed"] is False and kept["output"][0].startswith(sim.delivery_url)
        assert requests.get(kept["output"][0], timeout=5).status_code == 404  # TTL passed

        fresh = sim.rotate_urls(web)
        assert requests.get(fresh[0], timeout=5).content == PNG
        assert sim.prediction(web)["output"] == fresh


def test_seeded_history_and_explicit_controls(sim: ReplicateSimulator) -> None:
    now = sim.now()
    old = sim.seed_prediction(
        "acme/painter",
        input={"prompt": "old"},
        output={"images": [File(PNG), File(PNG, filename="out-1.png")]},
        created_at=now - dt.timedelta(hours=2),
    )
    assert sim.prediction(old)["data_removed"] is True  # > 1 h after completion, api source
    recent = sim.seed_prediction(
        "acme/painter", output=[File(PNG), File(PNG)], created_at=now - dt.timedelta(minutes=5)
    )
    first, second = sim.prediction(recent)["output"]
    assert sim.delivery_urls(recent) == [first, second]
    assert requests.get(first, timeout=5).status_code == 200

    new_urls = sim.rotate_urls(recent)
    assert requests.get(first, timeout=5).status_code == 404
    assert requests.get(new_urls[1], timeout=5).content == PNG
    assert sim.prediction(recent)["output"] == new_urls

    sim.expire_urls(recent)
    assert requests.get(new_urls[0], timeout=5).status_code == 404
    assert sim.prediction(recent)["output"] == new_urls  # dead URLs stay until rotated

    sim.remove_data(recent)
    obj = sim.prediction(recent)
    assert obj["data_removed"] and obj["output"] is None
    with pytest.raises(KeyError):
        sim.prediction("nope")
    failed = sim.seed_prediction("acme/painter", status="failed", error="boom", source="web")
    assert sim.prediction(failed)["error"] == "boom"


def test_refresh_expired_urls_on_read() -> None:
    with ReplicateSimulator(url_ttl=10, data_removal_after=1000, refresh_expired_urls=True) as sim:
        sim.add_model("acme/painter", outputs=File(PNG))
        client = client_for(sim)
        pred = client.predictions.create(model="acme/painter", input={}, wait=True)
        old: Any = pred.output
        sim.advance(11)
        assert requests.get(old, timeout=5).status_code == 404
        pred.reload()
        new: Any = pred.output
        assert new != old and requests.get(new, timeout=5).content == PNG
        sim.expire_urls(pred.id)
        pred.reload()
        assert requests.get(str(pred.output), timeout=5).content == PNG


# -- faults ---------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_by_the_client(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/painter", outputs=File(PNG))
    client = client_for(sim)
    pred = client.predictions.create(model="acme/painter", input={}, wait=True)
    sim.inject_fault("status", status=429, retry_after=1, path_prefix="/v1/predictions/")
    again = client.predictions.get(pred.id)
    assert again.status == "succeeded"
    path = f"/v1/predictions/{pred.id}"
    assert [s for m, p, s in sim.requests if p == path] == [429, 200]

    sim.inject_fault("status", status=503, times=2, path_prefix="/delivery/")
    url = str(pred.output)
    resp = api(sim, "GET", urlpath(url), headers={})
    assert resp.status_code == 503 and resp.json()["status"] == 503
    assert FileOutput(url, client).read() == PNG  # RetryTransport retries the 2nd one

    sim.inject_fault("status", status=500, method="POST")
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model="acme/painter", input={})
    assert info.value.status == 500


def urlpath(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_truncated_and_dropped_downloads(sim: ReplicateSimulator) -> None:
    big = File(size=3 * CHUNK_SIZE + 123, seed=7)
    sim.add_model("acme/big", outputs=big)
    url: Any = client_for(sim).run("acme/big")
    errors = (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)

    sim.inject_fault("truncate", path_prefix="/delivery/")
    resp = requests.get(url, stream=True, timeout=5)
    assert resp.headers["Content-Length"] == str(big.size)
    with pytest.raises(errors):
        for _ in resp.iter_content(65536):
            pass

    sim.inject_fault("drop")
    resp = requests.get(url, stream=True, timeout=5)
    with pytest.raises(errors):
        resp.content  # noqa: B018

    ok = requests.get(url, timeout=10)
    assert hashlib.sha256(ok.content).hexdigest() == big.sha256()
    assert sim.download_count(url) == 3


# -- big files, ranges, File itself ---------------------------------------------------------


def test_20_mb_generated_file_streams_with_correct_sha256(https_sim: ReplicateSimulator) -> None:
    sim = https_sim
    big = File(size=20_000_000, seed=42, content_type="video/mp4", filename="output.mp4")
    sim.add_model("acme/video", outputs=big)
    out: Any = client_for(sim).run("acme/video")
    h = hashlib.sha256()
    n = 0
    for chunk in out:  # FileOutput streams
        h.update(chunk)
        n += len(chunk)
    assert n == 20_000_000 and h.hexdigest() == big.sha256()

    rng = requests.get(out.url, headers={"Range": "bytes=1048570-1048585"}, verify=sim.ca_file, timeout=5)
    assert rng.status_code == 206
    assert rng.headers["Content-Range"] == "bytes 1048570-1048585/20000000"
    assert rng.content == b"".join(big.iter_range(1048570, 1048586))
    assert len(rng.content) == 16


def test_file_generation_is_deterministic_and_chunked() -> None:
    f = File(size=2 * CHUNK_SIZE + 5, seed=1)
    again = File(size=2 * CHUNK_SIZE + 5, seed=1)
    data = f.read()
    assert len(data) == f.size and data == again.read()
    assert data[:CHUNK_SIZE] == data[CHUNK_SIZE : 2 * CHUNK_SIZE]
    assert f.sha256() == hashlib.sha256(data).hexdigest()
    assert b"".join(f.iter_bytes(300_000)) == data
    assert max(len(c) for c in f.iter_bytes(300_000)) <= 300_000
    assert File(size=10, seed=2).read() != File(size=10, seed=1).read()
    assert File(b"abc").sha256() == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(ValueError):
        File()
    with pytest.raises(ValueError):
        File(b"abc", size=4)


# -- webhooks -------------------------------------------------------------------------------


def test_webhooks_are_signed_retried_and_cover_start_and_completed() -> None:
    with (
        https_receiver(answer=lambda n: 500 if n == 1 else 200) as receiver,
        ReplicateSimulator(prediction_duration=0.2, webhook_verify=receiver.ca_file) as sim,
    ):
        sim.add_model("acme/painter", outputs=File(PNG))
        client = client_for(sim)
        pred = client.predictions.create(
            model="acme/painter",
            input={},
            webhook=receiver.url,
            webhook_events_filter=["start", "completed"],
        )
        deadline = time.monotonic() + 5
        while len(sim.webhook_deliveries) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        secret = client.webhooks.default.secret()
        received = receiver.received
        bodies = []
        for headers, body in received:
            replicate.webhooks.validate(headers=headers, body=body, secret=secret, tolerance=300)
            bodies.append(json.loads(body))
        assert [b["id"] for b in bodies] == [pred.id] * 3
        assert [b["status"] for b in bodies] == ["starting", "starting", "succeeded"]
        deliveries = sim.webhook_deliveries
        assert [(d.event, d.attempt, d.status) for d in deliveries] == [
            ("start", 1, 500),
            ("start", 2, 200),
            ("completed", 1, 200),
        ]
        # retries of one event keep the webhook-id (receivers dedupe on it)
        assert received[0][0]["Webhook-Id"] == received[1][0]["Webhook-Id"]
        assert received[1][0]["Webhook-Id"] != received[2][0]["Webhook-Id"]


# -- latency --------------------------------------------------------------------------------


def test_latency_delays_api_and_delivery_requests_and_can_be_changed(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/painter", outputs=File(PNG))
    client = client_for(sim)
    pred = client.predictions.create(model="acme/painter", input={}, wait=True)
    url = str(pred.output)
    sim.latency = 0.3
    session = requests.Session()  # one kept-alive connection: every request pays, not only the first
    for target in (f"{sim.base_url}/v1/predictions/{pred.id}", url, url):
        start = time.monotonic()
        resp = session.get(target, headers={"Authorization": f"Bearer {sim.token}"}, timeout=10)
        assert resp.status_code == 200
        assert time.monotonic() - start >= 0.3, target  # at least the time to first byte
    start = time.monotonic()
    assert client.predictions.get(pred.id).status == "succeeded"  # through the real client too
    assert time.monotonic() - start >= 0.3
    assert [s for _, p, s in sim.requests if p == urlpath(url)] == [200, 200]

    with ReplicateSimulator(latency=0.2) as slow:
        assert slow.latency == 0.2
        start = time.monotonic()
        assert requests.get(f"{slow.base_url}/v1/account", timeout=10).status_code == 401
        assert time.monotonic() - start >= 0.2  # even an unauthenticated answer waits
    with pytest.raises(ValueError):
        ReplicateSimulator(latency=-1)
