"""The simulator's defaults follow the real Replicate API (issue 9): aborted predictions,
official models with hidden versions, data removal taking the input, list filters, strict
request checks, held creates that time out, webhook events, encoded filenames, metrics,
and file delivery that may require the token. Facts from shared/reference/replicate-api.md
and the published OpenAPI schema."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import replicate
import requests
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput
from sim_receiver import https_receiver

from cachelayer.testing.simulator import ITERATOR_OUTPUT_SCHEMA, File, ReplicateSimulator

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend image" * 10


@pytest.fixture
def sim() -> Iterator[ReplicateSimulator]:
    with ReplicateSimulator() as s:
        yield s


def api(sim: ReplicateSimulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {sim.token}", **kwargs.pop("headers", {})}
    return httpx.request(method, sim.base_url + path, headers=headers, timeout=70, **kwargs)


def client_for(sim: ReplicateSimulator) -> replicate.Client:
    client = replicate.Client(api_token=sim.token, base_url=sim.base_url)
    client.poll_interval = 0.02
    return client


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- aborted ------------------------------------------------------------------------------------


def test_aborted_is_a_terminal_status_reached_three_ways(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/never", outputs=File(PNG), aborts=True, duration=4)
    pid = api(sim, "POST", "/v1/models/acme/never/predictions", json={"input": {}}).json()["id"]
    assert sim.prediction(pid)["status"] == "starting"
    sim.advance(5)
    obj = api(sim, "GET", f"/v1/predictions/{pid}").json()
    assert obj["status"] == "aborted" and obj["output"] is None and obj["error"] is None
    assert "started_at" not in obj and obj["completed_at"]  # it never ran
    assert obj["metrics"]["predict_time"] == 0.0
    sim.advance(60)
    assert sim.prediction(pid)["status"] == "aborted"  # terminal: it never moves again

    # a Cancel-After deadline reached while starting aborts; while processing cancels
    sim.add_model("acme/slow", outputs=File(PNG), duration=20)
    ids = [
        api(sim, "POST", "/v1/models/acme/slow/predictions", json={"input": {}}, headers={"Cancel-After": h})
        for h in ("5s", "15")
    ]
    assert [r.status_code for r in ids] == [201, 201]
    assert ids[0].json()["deadline"]
    sim.advance(16)
    first, second = (sim.prediction(r.json()["id"]) for r in ids)
    assert first["status"] == "aborted" and "started_at" not in first
    assert second["status"] == "canceled" and second["started_at"] and second["output"] is None
    for bad in ("4s", "soon", "1x"):
        resp = api(
            sim, "POST", "/v1/models/acme/slow/predictions", json={"input": {}}, headers={"Cancel-After": bad}
        )
        assert resp.status_code == 422, bad

    # explicitly, on a prediction still starting; and seeded history
    pid = api(sim, "POST", "/v1/models/acme/slow/predictions", json={"input": {}}).json()["id"]
    sim.abort(pid)
    assert sim.prediction(pid)["status"] == "aborted"
    with pytest.raises(ValueError, match="only a starting prediction"):
        sim.abort(pid)
    seeded = sim.seed_prediction("acme/slow", input={}, status="aborted")
    assert sim.prediction(seeded)["status"] == "aborted" and "started_at" not in sim.prediction(seeded)


def test_a_held_create_of_an_aborting_model_returns_aborted(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/never", outputs=File(PNG), aborts=True)
    resp = api(
        sim, "POST", "/v1/models/acme/never/predictions", json={"input": {}}, headers={"Prefer": "wait"}
    )
    assert resp.status_code == 201 and resp.json()["status"] == "aborted"


# -- official models with hidden versions ---------------------------------------------------------


def test_official_models_with_hidden_versions_run_only_by_name(sim: ReplicateSimulator) -> None:
    vid = sim.add_model("acme/flux", outputs=File(PNG), hidden_version=True)
    client = client_for(sim)
    pred = client.models.predictions.create(model="acme/flux", input={"prompt": "x"}, wait=True)
    assert pred.version == "hidden" and pred.status == "succeeded"
    assert requests.get(str(pred.output), timeout=5).content == PNG
    url: Any = client.run("acme/flux")  # replicate.run goes through the model endpoint
    assert requests.get(url, timeout=5).content == PNG

    # sending the version back (a naive rerun) fails, as on Replicate
    for ref in ("hidden", vid, f"acme/flux:{vid}"):
        resp = api(sim, "POST", "/v1/predictions", json={"version": ref, "input": {}})
        assert resp.status_code == 422, ref
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(version="hidden", input={})
    assert info.value.status == 422
    # the schema's "{owner}/{name}" form names an official model
    assert api(sim, "POST", "/v1/predictions", json={"version": "acme/flux", "input": {}}).status_code == 201

    model = api(sim, "GET", "/v1/models/acme/flux").json()
    assert model["is_official"] is True and model["latest_version"] is None
    assert api(sim, "GET", "/v1/models/acme/flux/versions").json()["results"] == []
    assert api(sim, "GET", f"/v1/models/acme/flux/versions/{vid}").status_code == 404
    assert sim.prediction(sim.seed_prediction("acme/flux", input={}, output=File(PNG)))["version"] == "hidden"
    with pytest.raises(ValueError):
        sim.add_model("acme/private", outputs="x", official=False, hidden_version=True)


# -- data removal -----------------------------------------------------------------------------------


def test_data_removal_takes_input_output_logs_and_files() -> None:
    with ReplicateSimulator(data_removal_after=60) as sim:
        sim.add_model("acme/painter", outputs=[File(PNG)])
        pred = client_for(sim).predictions.create(model="acme/painter", input={"prompt": "cat"}, wait=True)
        url = pred.output[0]
        assert sim.prediction(pred.id)["input"] == {"prompt": "cat"}
        sim.advance(61)
        obj = api(sim, "GET", f"/v1/predictions/{pred.id}").json()
        assert obj["data_removed"] is True
        assert obj["input"] == {} and obj["output"] is None and obj["logs"] == ""
        assert requests.get(url, timeout=5).status_code == 404

        kept = sim.seed_prediction("acme/painter", input={"prompt": "web"}, output=[File(PNG)], source="web")
        sim.advance(3600)
        assert sim.prediction(kept)["input"] == {"prompt": "web"}  # web predictions keep their data

    with ReplicateSimulator(remove_input_on_data_removal=False) as legacy:  # explicit opt-out
        pid = legacy.seed_prediction("acme/x", input={"a": 1}, output=[File(PNG)])
        legacy.remove_data(pid)
        assert legacy.prediction(pid)["input"] == {"a": 1} and legacy.prediction(pid)["data_removed"]


# -- list filters -------------------------------------------------------------------------------------


def test_list_accepts_only_source_web_which_covers_14_days(sim: ReplicateSimulator) -> None:
    now = sim.now()
    recent_web = sim.seed_prediction("acme/x", source="web", created_at=now - dt.timedelta(days=13))
    old_web = sim.seed_prediction("acme/x", source="web", created_at=now - dt.timedelta(days=15))
    api_pid = sim.seed_prediction("acme/x", source="api", created_at=now - dt.timedelta(days=20))

    assert [r["id"] for r in api(sim, "GET", "/v1/predictions?source=web").json()["results"]] == [recent_web]
    everything = api(sim, "GET", "/v1/predictions").json()["results"]  # no source: both, any age
    assert [r["id"] for r in everything] == [recent_web, old_web, api_pid]
    resp = api(sim, "GET", "/v1/predictions?source=api")
    assert resp.status_code == 422 and resp.headers["Content-Type"] == "application/problem+json"
    assert "only web" in resp.json()["detail"]
    assert api(sim, "GET", "/v1/predictions?source=nope").status_code == 422


def test_list_honours_created_after_and_created_before_across_pages() -> None:
    with ReplicateSimulator(page_size=1) as sim:
        base = sim.now() - dt.timedelta(days=1)
        ids = [
            sim.seed_prediction("acme/x", input={"i": i}, created_at=base + dt.timedelta(hours=i))
            for i in range(5)
        ]
        after = (base + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        before = (base + dt.timedelta(hours=3)).isoformat()  # an offset instead of Z
        page = api(
            sim, "GET", "/v1/predictions", params={"created_after": after, "created_before": before}
        ).json()
        seen = [r["id"] for r in page["results"]]
        while page["next"]:
            assert "created_after=" in page["next"] and "created_before=" in page["next"]
            page = httpx.get(page["next"], headers={"Authorization": f"Bearer {sim.token}"}).json()
            seen += [r["id"] for r in page["results"]]
        assert seen == [ids[2], ids[1]]  # created_after inclusive, created_before exclusive
        client_seen = [
            p.id for page in replicate.pagination.paginate(client_for(sim).predictions.list) for p in page
        ]
        assert client_seen == list(reversed(ids))
        for bad in ({"created_after": "yesterday"}, {"created_before": "2025-13-01T00:00:00Z"}):
            assert api(sim, "GET", "/v1/predictions", params=bad).status_code == 422


# -- strict requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefer", "accepted"),
    [
        ("wait", True),
        ("wait=1", True),
        ("wait=60", True),
        ("wait=0", False),
        ("wait=61", False),
        ("wait=5.5", False),
        ("wait=abc", False),
        ("respond-async", False),
        ("", False),
    ],
)
def test_prefer_header_is_validated(sim: ReplicateSimulator, prefer: str, accepted: bool) -> None:
    sim.add_model("acme/painter", outputs=File(PNG))
    resp = api(
        sim, "POST", "/v1/models/acme/painter/predictions", json={"input": {}}, headers={"Prefer": prefer}
    )
    assert resp.status_code == (201 if accepted else 422), resp.text
    if not accepted:
        assert resp.json()["status"] == 422 and "Prefer" in resp.json()["detail"]


def test_create_bodies_are_checked_like_the_schema(sim: ReplicateSimulator) -> None:
    vid = sim.add_model("acme/painter", outputs=File(PNG))
    model_path, version_path = "/v1/models/acme/painter/predictions", "/v1/predictions"
    rejected = [
        (version_path, {"version": vid}),  # input is required
        (version_path, {"version": vid, "input": None}),
        (version_path, {"version": vid, "input": [1]}),
        (version_path, {"version": vid, "input": {}, "extra": 1}),  # additionalProperties: false
        (version_path, {"input": {}}),  # version is required here
        (model_path, {}),
        (model_path, {"input": {}, "version": vid}),  # no version on the model endpoint
        (model_path, {"input": {}, "webhook": "http://example.com/hook"}),  # HTTPS only
        (model_path, {"input": {}, "webhook": "not a url"}),
        (model_path, {"input": {}, "webhook": "https://example.com/h", "webhook_events_filter": ["done"]}),
        (model_path, {"input": {}, "stream": "yes"}),
    ]
    for path, body in rejected:
        resp = api(sim, "POST", path, json=body)
        assert resp.status_code == 422, body
        assert resp.headers["Content-Type"] == "application/problem+json"
    assert api(sim, "POST", model_path, content=b"{not json").status_code == 400
    accepted = [
        (version_path, {"version": vid, "input": {}}),
        (version_path, {"version": f"acme/painter:{vid}", "input": {"a": 1}, "stream": False}),
        (model_path, {"input": {}, "webhook": "https://example.com/h", "webhook_events_filter": ["start"]}),
    ]
    for path, body in accepted:
        assert api(sim, "POST", path, json=body).status_code == 201, body
    sim.allow_http_webhooks = True  # an explicit opt-in for local receivers
    assert (
        api(sim, "POST", model_path, json={"input": {}, "webhook": "http://127.0.0.1:9/h"}).status_code == 201
    )
    assert len(sim.prediction_ids) == 4


# -- held creates that time out ---------------------------------------------------------------------------


def test_a_held_create_that_times_out_comes_back_starting_with_a_location(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/slow", outputs=File(PNG), duration=100)
    resp = api(
        sim, "POST", "/v1/models/acme/slow/predictions", json={"input": {}}, headers={"Prefer": "wait=1"}
    )
    obj = resp.json()
    assert resp.status_code == 201 and obj["status"] == "starting" and obj["output"] is None
    assert resp.headers["Location"] == obj["urls"]["get"]


def test_a_held_create_can_time_out_processing_with_output_so_far() -> None:
    with ReplicateSimulator(wait_timeout_status="current") as sim:
        chunks = ["a", "b", "c", "d", "e"]
        sim.add_model("acme/chat", outputs=chunks, output_schema=ITERATOR_OUTPUT_SCHEMA, duration=10)
        result: dict[str, httpx.Response] = {}

        def create() -> None:
            result["resp"] = api(
                sim,
                "POST",
                "/v1/models/acme/chat/predictions",
                json={"input": {}},
                headers={"Prefer": "wait=1"},
            )

        worker = threading.Thread(target=create)
        worker.start()
        wait_until(lambda: len(sim.prediction_ids) == 1)
        sim.advance(6)  # past the start (5 s), not the end (10 s)
        worker.join(timeout=30)
        resp = result["resp"]
        obj = resp.json()
        assert resp.status_code == 202 and obj["status"] == "processing"
        assert 0 < len(obj["output"]) < len(chunks) and obj["output"] == chunks[: len(obj["output"])]
        assert resp.headers["Location"] == obj["urls"]["get"] and obj["started_at"]


# -- webhook events ---------------------------------------------------------------------------------------


def test_default_webhooks_send_each_new_output_then_completed_and_logs_on_request() -> None:
    with https_receiver() as receiver, ReplicateSimulator(webhook_verify=receiver.ca_file) as sim:
        sim.add_model(
            "acme/chat", outputs=["a", "b", "c", "d"], output_schema=ITERATOR_OUTPUT_SCHEMA, duration=4
        )
        client = client_for(sim)
        pred = client.predictions.create(model="acme/chat", input={}, webhook=receiver.url)
        assert sim.prediction(pred.id)["webhook_events_filter"] == ["output", "completed"]

        def outputs() -> list[Any]:
            return [json.loads(b)["output"] for _, b in receiver.received]

        sim.advance(2.6)  # processing, one chunk out
        wait_until(lambda: len(receiver.received) >= 1)
        sim.advance(0.6)  # past the 500 ms throttle, two chunks
        wait_until(lambda: len(outputs()) >= 2 and len(outputs()[-1]) >= 2)
        sim.advance(2)  # succeeded
        wait_until(lambda: sim.webhook_deliveries and sim.webhook_deliveries[-1].event == "completed")
        events = [d.event for d in sim.webhook_deliveries]
        assert "start" not in events and "logs" not in events  # not in the default filter
        assert events[-1] == "completed" and events.count("output") >= 3
        seen = outputs()
        assert seen[-1] == ["a", "b", "c", "d"] and all(o == seen[-1][: len(o)] for o in seen)
        secret = client.webhooks.default.secret()
        for headers, body in receiver.received:
            replicate.webhooks.validate(headers=headers, body=body, secret=secret, tolerance=300)

        sim.add_model("acme/painter", outputs=File(PNG), duration=2)
        before = len(sim.webhook_deliveries)
        pred = client.predictions.create(
            model="acme/painter", input={}, webhook=receiver.url, webhook_events_filter=["logs", "completed"]
        )
        sim.advance(1.2)  # processing: "Running predict()..."
        wait_until(lambda: len(sim.webhook_deliveries) > before)
        sim.advance(1)
        wait_until(lambda: sim.webhook_deliveries[-1].event == "completed")
        mine = [d for d in sim.webhook_deliveries if d.prediction_id == pred.id]
        assert [d.event for d in mine] == ["logs", "logs", "completed"]
        logs = [json.loads(b)["logs"] for _, b in receiver.received[-3:]]
        assert logs[0] == "Running predict()...\n" and logs[1].endswith("Done.\n")


# -- files ---------------------------------------------------------------------------------------------------


def test_percent_encoded_filenames_are_served(sim: ReplicateSimulator) -> None:
    names = ["my file (1).png", "100%.png", "café.png", "a+b&c.png"]
    sim.add_model(
        "acme/names", outputs=[File(n.encode(), filename=n, content_type="image/png") for n in names]
    )
    client = client_for(sim)
    urls: Any = client.run("acme/names")
    assert [u.rsplit("/", 1)[1] for u in urls] == [quote(n, safe="") for n in names]
    assert [requests.get(u, timeout=5).content for u in urls] == [n.encode() for n in names]
    assert [FileOutput(u, client).read() for u in urls] == [n.encode() for n in names]
    assert requests.get(urls[0].rsplit("/", 1)[0] + "/other.png", timeout=5).status_code == 404


def test_delivery_can_require_the_api_token() -> None:
    with ReplicateSimulator(delivery_requires_token=True) as sim:
        sim.add_model("acme/painter", outputs=File(PNG))
        client = client_for(sim)
        url: Any = client.run("acme/painter", use_file_output=False)
        resp = requests.get(url, timeout=5)
        assert resp.status_code == 401 and resp.json()["status"] == 401
        assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        ok = requests.get(url, headers={"Authorization": f"Bearer {sim.token}"}, timeout=5)
        assert ok.status_code == 200 and ok.content == PNG
        assert FileOutput(url, client).read() == PNG  # the client sends its token
        sim.delivery_requires_token = False
        assert requests.get(url, timeout=5).content == PNG


# -- metrics and optional fields ------------------------------------------------------------------------------


def test_metrics_come_with_every_terminal_status(sim: ReplicateSimulator) -> None:
    def explode(inp: dict[str, Any]) -> Any:
        raise RuntimeError("boom")

    sim.add_model("acme/broken", outputs=explode, duration=2)
    sim.add_model("acme/slow", outputs=File(PNG), duration=10)
    client = client_for(sim)
    failed = client.predictions.create(model="acme/broken", input={})
    running = client.predictions.create(model="acme/slow", input={})
    waiting = client.predictions.create(model="acme/slow", input={})
    starting = sim.prediction(waiting.id)
    assert "metrics" not in starting and "started_at" not in starting and "completed_at" not in starting
    sim.advance(6)  # failed done; running is processing since 5 s
    client.predictions.cancel(running.id)
    objs = {pid: sim.prediction(pid) for pid in (failed.id, running.id)}
    assert objs[failed.id]["status"] == "failed" and objs[failed.id]["metrics"]["predict_time"] == 1.0
    assert objs[running.id]["status"] == "canceled" and objs[running.id]["metrics"]["predict_time"] > 0
    for obj in objs.values():
        assert obj["metrics"]["total_time"] >= obj["metrics"]["predict_time"]
