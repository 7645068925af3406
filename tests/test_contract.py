"""The simulator against Replicate's published OpenAPI schema (issue 9): every response it
gives (create, get, list, cancel, model, versions, version, deployment, account, webhook
secret) and every webhook it sends validate against the vendored schema's components, and
it accepts exactly the create requests the request schemas allow. How the schema is read:
tests/contract/README.md."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
from native_client import native_client
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sim_receiver import https_receiver

from cachelayer.testing.simulator import ITERATOR_OUTPUT_SCHEMA, DataURI, File, ReplicateSimulator
from cachelayer.webhooks import fetch_webhook_secret, verify_signature

CONTRACT = Path(__file__).with_name("contract") / "replicate_openapi_components.json"
BASE = "urn:replicate-openapi"
#: Keys a prediction may carry beyond the schema's properties (see contract/README.md).
PREDICTION_EXTRAS = {"webhook": {"type": "string"}, "webhook_events_filter": {"type": "array"}}
PNG = b"\x89PNG\r\n\x1a\n" + b"pretend" * 20
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


def _read(node: Any) -> Any:
    """The schema as the contract reads it (contract/README.md)."""
    if isinstance(node, list):
        return [_read(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _read(v) for k, v in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "oneOf" in out:
        out["anyOf"] = out.pop("oneOf")
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _load() -> dict[str, Any]:
    doc = json.loads(CONTRACT.read_text())
    prediction = doc["components"]["schemas"]["schemas_prediction_response"]
    prediction["properties"].update(copy.deepcopy(PREDICTION_EXTRAS))
    return _read(doc)  # type: ignore[no-any-return]


DOC = _load()
REGISTRY: Registry = Registry().with_resource(
    BASE, Resource.from_contents(DOC, default_specification=DRAFT202012)
)
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not RFC3339.match(value):
        return False
    dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00"))
    return True


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


def pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validate(instance: Any, *where: str) -> None:
    """Validate ``instance`` against the schema at JSON pointer ``where`` in the document."""
    schema = {"$ref": f"{BASE}#/{pointer(*where)}"}
    jsonschema.Draft202012Validator(schema, registry=REGISTRY, format_checker=FORMATS).validate(instance)


def check_response(resp: httpx.Response, path: str, method: str) -> Any:
    """``resp`` must be a documented status of ``method path`` with a body valid against it."""
    responses = DOC["paths"][path][method]["responses"]
    assert str(resp.status_code) in responses, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    validate(
        body,
        "paths",
        path,
        method,
        "responses",
        str(resp.status_code),
        "content",
        "application/json",
        "schema",
    )
    return body


PREDICTION = ("components", "schemas", "schemas_prediction_response")


@pytest.fixture
def sim() -> Iterator[ReplicateSimulator]:
    with ReplicateSimulator(page_size=3) as s:
        s.add_model("acme/painter", outputs=[File(PNG), File(PNG, filename="my file.png")], duration=20)
        s.add_model(
            "acme/chat",
            outputs=["a", "b", "c", "d"],
            output_schema=ITERATOR_OUTPUT_SCHEMA,
            official=False,
            duration=4,
        )
        s.add_model("acme/flux", outputs={"image": File(PNG), "thumb": DataURI(PNG)}, hidden_version=True)
        s.add_model("acme/broken", outputs=lambda inp: 1 / 0, duration=20)
        s.add_model("acme/never", outputs=File(PNG), aborts=True, duration=20)
        s.add_deployment("acme/painter-prod", model="acme/painter")
        yield s


def call(sim: ReplicateSimulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {sim.token}", **kwargs.pop("headers", {})}
    return httpx.request(method, sim.base_url + "/v1" + path, headers=headers, timeout=30, **kwargs)


def test_every_prediction_state_matches_the_schema(sim: ReplicateSimulator) -> None:
    chat = sim.add_model(
        "acme/chat", outputs=["x", "y"], output_schema=ITERATOR_OUTPUT_SCHEMA, official=False
    )
    created = [
        check_response(
            call(sim, "POST", "/predictions", json={"version": chat, "input": {}}), "/predictions", "post"
        ),
        check_response(
            call(sim, "POST", "/models/acme/painter/predictions", json={"input": {"prompt": "a"}}),
            "/models/{model_owner}/{model_name}/predictions",
            "post",
        ),
        check_response(
            call(
                sim, "POST", "/models/acme/flux/predictions", json={"input": {}}, headers={"Prefer": "wait"}
            ),
            "/models/{model_owner}/{model_name}/predictions",
            "post",
        ),
        check_response(
            call(sim, "POST", "/deployments/acme/painter-prod/predictions", json={"input": {}}),
            "/deployments/{deployment_owner}/{deployment_name}/predictions",
            "post",
        ),
        check_response(
            call(
                sim,
                "POST",
                "/models/acme/broken/predictions",
                json={"input": {}},
                headers={"Cancel-After": "5m"},
            ),
            "/models/{model_owner}/{model_name}/predictions",
            "post",
        ),
        check_response(
            call(sim, "POST", "/models/acme/never/predictions", json={"input": {}}),
            "/models/{model_owner}/{model_name}/predictions",
            "post",
        ),
    ]
    assert created[2]["version"] == "hidden" and created[2]["status"] == "succeeded"
    assert {c["status"] for c in created} == {"starting", "succeeded"}
    to_cancel = check_response(
        call(sim, "POST", "/models/acme/painter/predictions", json={"input": {}}),
        "/models/{model_owner}/{model_name}/predictions",
        "post",
    )
    sim.advance(12)  # past half of the 20 s: processing
    canceled = check_response(
        call(sim, "POST", f"/predictions/{to_cancel['id']}/cancel"),
        "/predictions/{prediction_id}/cancel",
        "post",
    )
    assert canceled["status"] == "canceled"
    seen: set[str] = set()
    for step in (0, 10, 4000):  # processing, terminal, data removed
        sim.advance(step)
        for c in created:
            body = check_response(
                call(sim, "GET", f"/predictions/{c['id']}"), "/predictions/{prediction_id}", "get"
            )
            seen.add(body["status"] + ("/removed" if body["data_removed"] else ""))
    assert {"processing", "succeeded", "failed", "aborted", "succeeded/removed", "aborted/removed"} <= seen

    # seeded history in every status, on the web and through the API
    for status in ("starting", "processing", "succeeded", "failed", "canceled", "aborted"):
        pid = sim.seed_prediction(
            "acme/painter", input={"s": status}, output=[File(PNG)], status=status, source="web"
        )
        validate(sim.prediction(pid), *PREDICTION)
    pid = sim.seed_prediction("acme/painter", output=None, data_removed=True)
    validate(sim.prediction(pid), *PREDICTION)


def test_list_pages_match_the_schema(sim: ReplicateSimulator) -> None:
    for i in range(7):
        sim.seed_prediction(
            "acme/painter", input={"i": i}, output=[File(PNG)], source="web" if i % 2 else "api"
        )
    url: str | None = f"{sim.base_url}/v1/predictions"
    pages = 0
    while url:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {sim.token}"})
        url = check_response(resp, "/predictions", "get")["next"]
        pages += 1
    assert pages == 3
    after = (sim.now() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    web = call(sim, "GET", "/predictions", params={"source": "web", "created_after": after})
    assert len(check_response(web, "/predictions", "get")["results"]) == 3
    # the parameters the API accepts, as the schema lists them
    params = {p["name"]: p for p in DOC["paths"]["/predictions"]["get"]["parameters"]}
    assert params["source"]["schema"]["enum"] == ["web"]
    for value in ("web", "api", "both"):
        accepted = call(sim, "GET", "/predictions", params={"source": value}).status_code == 200
        assert accepted == (value in params["source"]["schema"]["enum"]), value


def test_models_versions_deployments_account_and_secret_match_the_schema(sim: ReplicateSimulator) -> None:
    sim.seed_prediction("acme/painter", output=[File(PNG)])
    for name in ("painter", "chat", "flux"):
        model = check_response(
            call(sim, "GET", f"/models/acme/{name}"), "/models/{model_owner}/{model_name}", "get"
        )
        if model["latest_version"] is not None:
            validate(model["latest_version"], "components", "schemas", "schemas_version_response")
        versions = check_response(
            call(sim, "GET", f"/models/acme/{name}/versions"),
            "/models/{model_owner}/{model_name}/versions",
            "get",
        )
        for v in versions["results"]:
            one = call(sim, "GET", f"/models/acme/{name}/versions/{v['id']}")
            assert check_response(one, "/models/{model_owner}/{model_name}/versions/{version_id}", "get") == v
    dep = check_response(
        call(sim, "GET", "/deployments/acme/painter-prod"),
        "/deployments/{deployment_owner}/{deployment_name}",
        "get",
    )
    assert dep["current_release"]["model"] == "acme/painter"
    check_response(call(sim, "GET", "/account"), "/account", "get")
    secret = check_response(call(sim, "GET", "/webhooks/default/secret"), "/webhooks/default/secret", "get")
    assert secret["key"] == sim.webhook_secret


def test_held_creates_that_time_out_match_the_schema() -> None:
    with ReplicateSimulator(wait_timeout_status="current") as sim:
        sim.add_model("acme/slow", outputs=File(PNG), duration=100)
        resp = call(
            sim, "POST", "/models/acme/slow/predictions", json={"input": {}}, headers={"Prefer": "wait=1"}
        )
        body = check_response(resp, "/models/{model_owner}/{model_name}/predictions", "post")
        assert body["status"] == "starting" and resp.headers["Location"] == body["urls"]["get"]


def test_webhook_payloads_and_headers_match_the_schema() -> None:
    with https_receiver() as receiver, ReplicateSimulator(webhook_verify=receiver.ca_file) as sim:
        sim.add_model("acme/chat", outputs=["a", "b"], output_schema=ITERATOR_OUTPUT_SCHEMA, duration=1)
        filters = [None, ["start", "output", "logs", "completed"]]
        for events in filters:
            body: dict[str, Any] = {"input": {}, "webhook": receiver.url}
            if events:
                body["webhook_events_filter"] = events
            assert call(sim, "POST", "/models/acme/chat/predictions", json=body).status_code == 201
        for _ in range(30):
            sim.advance(0.1)
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while sum(d.event == "completed" for d in sim.webhook_deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert {d.event for d in sim.webhook_deliveries} == {"start", "output", "logs", "completed"}
        secret = fetch_webhook_secret(native_client(sim))  # the installed client, 1.x or 2.x
        for headers, raw in receiver.received:
            lower = {k.lower(): v for k, v in headers.items()}
            assert lower["content-type"] == "application/json"
            assert re.fullmatch(r"\d+", lower["webhook-timestamp"]) and lower["webhook-id"]
            assert all(re.fullmatch(r"v1,[A-Za-z0-9+/]+=*", s) for s in lower["webhook-signature"].split())
            verify_signature(secret, headers, raw.encode())  # Standard Webhooks, 5 minutes tolerance
            validate(json.loads(raw), *PREDICTION)


# -- the request side --------------------------------------------------------------------------------------

VERSION_BODIES: list[dict[str, Any]] = [
    {"input": {}},
    {"version": "V", "input": {}},
    {"version": "V", "input": {"prompt": "x"}, "stream": True},
    {"version": "V", "input": {}, "webhook": "https://example.com/h", "webhook_events_filter": ["start"]},
    {"version": "V", "input": {}, "webhook_events_filter": ["start", "sometimes"]},
    {"version": "V"},
    {"version": "V", "input": None},
    {"version": "V", "input": "text"},
    {"version": "V", "input": {}, "extra": True},
    {"version": 7, "input": {}},
    {"version": "V", "input": {}, "stream": "yes"},
]
MODEL_BODIES: list[dict[str, Any]] = [
    {"input": {}},
    {"input": {"a": [1, 2]}, "webhook": "https://example.com/h"},
    {"input": {}, "version": "V"},
    {},
    {"input": []},
    {"input": {}, "webhook_events_filter": "completed"},
    {"input": {}, "webhook_completed": "https://example.com/h"},  # a key the old client sent
]


def test_creates_are_accepted_exactly_when_the_request_schema_allows_them(sim: ReplicateSimulator) -> None:
    vid = sim.add_model("acme/painter", outputs=File(PNG))
    cases = [
        (
            "/predictions",
            "/predictions",
            [{**b, "version": vid} if b.get("version") == "V" else b for b in VERSION_BODIES],
        ),
        ("/models/acme/painter/predictions", "/models/{model_owner}/{model_name}/predictions", MODEL_BODIES),
        (
            "/deployments/acme/painter-prod/predictions",
            "/deployments/{deployment_owner}/{deployment_name}/predictions",
            MODEL_BODIES,
        ),
    ]
    for url, path, bodies in cases:
        schema = DOC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        for body in bodies:
            ref = schema["$ref"].split("/")
            valid = jsonschema.Draft202012Validator(
                {"$ref": f"{BASE}#/{pointer(*ref[1:])}"}, registry=_request_registry(), format_checker=FORMATS
            ).is_valid(body)
            resp = call(sim, "POST", url, json=body)
            assert (200 <= resp.status_code < 300) == valid, (url, body, resp.status_code, resp.text)
            if not valid:
                assert resp.status_code == 422 and resp.json()["status"] == 422
    # outside the types, inside the text: a webhook is an HTTPS URL
    resp = call(
        sim, "POST", "/models/acme/painter/predictions", json={"input": {}, "webhook": "http://example.com/h"}
    )
    assert resp.status_code == 422


def _request_registry() -> Registry:
    """Request schemas read without the closed-world rule (it is for responses): they say
    ``additionalProperties: false`` themselves."""
    doc = json.loads(CONTRACT.read_text())

    def read(node: Any) -> Any:
        if isinstance(node, list):
            return [read(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: read(v) for k, v in node.items()}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        return out

    return Registry().with_resource(
        BASE, Resource.from_contents(read(doc), default_specification=DRAFT202012)
    )


@pytest.mark.parametrize(
    "prefer", ["wait", "wait=1", "wait=9", "wait=60", "wait=61", "wait=99", "wait=0", "wait=x", "Wait"]
)
def test_prefer_header_follows_the_parameter_schema(sim: ReplicateSimulator, prefer: str) -> None:
    param = DOC["components"]["parameters"]["parameters_prefer_header"]
    in_pattern = re.fullmatch(param["schema"]["pattern"].strip("^$"), prefer) is not None
    within_text = not prefer.startswith("wait=") or not prefer[5:].isdigit() or 1 <= int(prefer[5:]) <= 60
    resp = call(sim, "POST", "/models/acme/flux/predictions", json={"input": {}}, headers={"Prefer": prefer})
    assert (resp.status_code == 201) == (in_pattern and within_text), (prefer, resp.text)
