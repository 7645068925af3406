"""cachelayer with whichever ``replicate`` client is installed (1.x or 2.x), over real sockets.

CI runs this file under replicate 1.0.4, the newest 1.0.x and the newest 2.x (.ci/run): the
objects handed to cachelayer here are the installed client's own (``Prediction``,
``FileOutput``), obtained from it talking to the simulator.
"""

from __future__ import annotations

import importlib.metadata

import pytest
from native_client import V2, native_client, native_create, native_run

from cachelayer import CacheLayerError
from cachelayer.replicate_api import CREATE_ATTEMPTS
from cachelayer.replicate_clients import client_major
from cachelayer.replicate_clients.base import api_origin
from cachelayer.testing.simulator import File, ReplicateSimulator

CREATE_PATH = "/v1/models/acme/painter/predictions"


def painter(sim, n: int = 2) -> list[File]:
    files = [File(size=1000 + i, seed=i, filename=f"out-{i}.png") for i in range(n)]
    sim.add_model("acme/painter", outputs=files)
    return files


def posts(sim, path: str = CREATE_PATH) -> int:
    return sum(1 for method, p, _status in sim.requests if method == "POST" and p == path)


def test_the_installed_client_is_the_one_the_adapter_uses(layer):
    major = int(importlib.metadata.version("replicate").split(".")[0])
    assert client_major() == major and (major >= 2) == V2
    assert type(layer.adapter).__name__ == ("V2Adapter" if V2 else "V1Adapter")
    assert type(layer.client).__module__.split(".")[0] == "replicate"


def test_persist_takes_the_clients_own_prediction_object(layer, replicate_simulator, s3_server):
    sim = replicate_simulator
    files = painter(sim)
    pred = native_create(sim, "acme/painter", {"prompt": "a cat"})
    assert type(pred).__module__.split(".")[0] == "replicate"  # the client's own model
    out = layer.persist(pred)
    assert len(out) == 2 and all(u.startswith("s3://") and u.endswith(f.filename) for u, f in zip(out, files))
    rows = layer.catalog.files_of(pred.id)
    assert [r.sha256 for r in rows] == [f.sha256() for f in files]
    rec = layer.catalog.get_prediction(pred.id)
    assert rec.input == {"prompt": "a cat"} and rec.status == "succeeded"


def test_resolve_and_run_take_the_clients_file_outputs(make_layer):
    # Over HTTPS, as in production: the 2.x client wraps only https: and data: URLs.
    with ReplicateSimulator(https=True) as sim:
        painter(sim)
        layer = make_layer(simulator=sim)
        held = native_run(sim, "acme/painter")  # what an app holds after client.run
        assert [type(f).__name__ for f in held] == ["FileOutput", "FileOutput"]
        assert layer.resolve(held[0]) is None  # not stored yet
        out = layer.persist(sim.prediction_ids[0])
        assert [layer.resolve(f) for f in held] == out
        # A FileOutput fed to the next model goes to Replicate as its URL.
        sim.add_model("acme/upscaler", outputs=[File(b"big", filename="big.png")])
        layer.run("acme/upscaler", {"image": held[0], "images": [held[1]]})
        sent = sim.prediction(sim.prediction_ids[0])["input"]  # newest first
        assert sent == {"image": held[0].url, "images": [held[1].url]}


def test_a_503_on_create_is_retried_by_our_policy_only(make_layer, replicate_simulator):
    """The 2.x client retries ``POST`` on 5xx by itself (a second, billed prediction); the
    adapter turns that off, so the simulator sees exactly our policy's attempts."""
    sim = replicate_simulator
    painter(sim, n=1)
    layer = make_layer()
    sim.inject_fault("status", times=2, path_prefix=CREATE_PATH, status=503, retry_after=0, method="POST")
    out = layer.run("acme/painter")
    assert len(out) == 1 and posts(sim) == 3  # two 503s, then the create that ran
    assert len(sim.prediction_ids) == 1
    sim.inject_fault("status", times=100, path_prefix=CREATE_PATH, status=503, retry_after=0, method="POST")
    with pytest.raises(CacheLayerError, match="503"):
        layer.run("acme/painter")
    assert posts(sim) == 3 + CREATE_ATTEMPTS
    sim.clear_faults()
    sim.inject_fault("status", times=1, path_prefix=CREATE_PATH, status=500, method="POST")
    with pytest.raises(CacheLayerError, match="500"):
        layer.run("acme/painter")  # not ours to retry, and not the client's
    assert posts(sim) == 3 + CREATE_ATTEMPTS + 1


def test_reads_keep_the_clients_retries(layer, replicate_simulator):
    sim = replicate_simulator
    painter(sim, n=1)
    pid = native_create(sim, "acme/painter").id
    sim.inject_fault("status", times=1, path_prefix=f"/v1/predictions/{pid}", status=503, retry_after=0)
    assert layer.api.get(pid).succeeded
    assert [s for m, p, s in sim.requests if m == "GET" and p == f"/v1/predictions/{pid}"] == [503, 200]


def test_webhook_secret_through_the_adapter_and_a_native_client(layer, replicate_simulator):
    from cachelayer.webhooks import fetch_webhook_secret

    secret = replicate_simulator.webhook_secret
    assert layer.adapter.webhook_secret() == secret
    assert fetch_webhook_secret(native_client(replicate_simulator)) == secret


@pytest.mark.parametrize(
    ("base_url", "origin"),
    [
        (None, "https://api.replicate.com"),
        ("https://api.replicate.com", "https://api.replicate.com"),
        ("https://api.replicate.com/v1", "https://api.replicate.com"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080"),
    ],
)
def test_either_clients_base_url_convention_names_one_origin(base_url, origin):
    assert api_origin(base_url) == origin
