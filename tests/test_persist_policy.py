"""The persist policy against the simulator's real-API defaults (issue 9 items 1-4, 6, 9).

Terminal statuses, the overall wait, reruns (official models, at most once, only from a
recorded input), retried creates, and the URLs a caller already holds.
"""

from __future__ import annotations

import hashlib
import threading

import pytest
from native_client import native_create, native_wait

from cachelayer import (
    ConfigError,
    ExpiredDownloadUrlError,
    PredictionFailedError,
    RerunError,
    WaitTimeoutError,
)
from cachelayer.testing.simulator import File


def s3_bytes(s3_server, uri: str) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    return s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def creates(sim, path_part: str = "") -> list[str]:
    return [p for (m, p, _status) in sim.requests if m == "POST" and "predictions" in p and path_part in p]


def test_aborted_is_terminal_for_run_and_persist(layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/late", outputs=File(b"never"), aborts=True)
    with pytest.raises(PredictionFailedError) as err:
        layer.run("acme/late", input={})
    assert err.value.status == "aborted"
    pid = sim.prediction_ids[-1]
    with pytest.raises(PredictionFailedError, match="aborted"):
        layer.persist(pid)
    assert layer.catalog.get_prediction(pid).status == "aborted"
    assert layer.catalog.files_of(pid) == []


def test_wait_timeout_bounds_run_and_records_nothing_stored(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/slow", outputs=File(b"slow"), duration=600)
    layer = make_layer(wait_timeout=1)
    with pytest.raises(WaitTimeoutError) as err:
        layer.run("acme/slow", input={}, wait=1)
    assert err.value.status in ("starting", "processing")
    pid = err.value.prediction_id
    assert [f for f in layer.catalog.files_of(pid) if f.status == "stored"] == []
    with pytest.raises(WaitTimeoutError):
        layer.persist(pid)


def test_official_model_rerun_goes_through_the_model_endpoint(layer, replicate_simulator, s3_server):
    sim = replicate_simulator
    sim.add_model("acme/official", outputs=File(b"official-bytes", filename="out.png"), hidden_version=True)
    first = layer.run("acme/official", input={"prompt": "x"})
    pid = sim.prediction_ids[-1]
    assert layer.catalog.get_prediction(pid).version == "hidden"
    sim.remove_data(pid)
    before = len(creates(sim))
    result = layer.rerun(pid)
    assert result.prediction_id != pid
    assert len(creates(sim)) == before + 1
    assert creates(sim)[-1].startswith("/v1/models/acme/official/predictions")
    assert s3_bytes(s3_server, first) == b"official-bytes"


def test_rerun_happens_at_most_once_and_later_calls_return_its_output(
    make_layer, replicate_simulator, s3_server
):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=lambda inp: [File(f"img {inp['n']}".encode(), filename="o.png")])
    layer = make_layer()
    pid = sim.seed_prediction("acme/painter", input={"n": 1}, output=[File(b"lost", filename="o.png")])
    layer.enqueue(sim.prediction(pid))  # recorded on arrival (a webhook), never copied...
    sim.remove_data(pid)  # ...and an hour later Replicate removed input, output and files
    before = len(creates(sim))
    layers = [make_layer() for _ in range(4)]
    outs: list = []
    errors: list = []

    def call(lay):
        try:
            outs.append(lay.persist(pid, on_expired="rerun"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(lay,)) for lay in layers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(creates(sim)) == before + 1  # one paid rerun for four concurrent callers
    assert len({tuple(o) for o in outs}) == 1
    again = layer.persist(pid, on_expired="rerun")
    plain = layer.persist(pid)  # without rerun: the stored rerun's output, no error
    assert again == plain == outs[0]
    assert len(creates(sim)) == before + 1
    assert s3_bytes(s3_server, plain[0]) == b"img 1"


def test_rerun_needs_a_recorded_input(layer, replicate_simulator):
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/x", input={"p": 1}, output=[File(b"gone")])
    sim.remove_data(pid)  # removal takes the input too, and the catalog never saw it
    assert sim.prediction(pid)["input"] in ({}, None)
    with pytest.raises(RerunError, match="never recorded"):
        layer.persist(pid, on_expired="rerun")
    with pytest.raises(ExpiredDownloadUrlError):
        layer.persist(pid)


def test_create_is_retried_on_429_and_503(layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/busy", outputs=File(b"ok", filename="ok.txt"))
    sim.inject_fault("status", times=1, path_prefix="/v1/models", status=429, retry_after=0, method="POST")
    sim.inject_fault("status", times=1, path_prefix="/v1/models", status=503, retry_after=0, method="POST")
    out = layer.run("acme/busy", input={})
    assert out.startswith("s3://")
    assert len(creates(sim, "/v1/models/acme/busy")) == 3


def test_urls_the_caller_holds_resolve_after_rotation(layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model(
        "acme/official",
        outputs=[File(b"a", filename="a.png"), File(b"b", filename="b.png")],
        hidden_version=True,
    )
    pred = native_wait(sim, native_create(sim, "acme/official"))
    held = [str(u) for u in pred.output]  # what the app stored before calling persist
    sim.rotate_urls(pred.id)
    out = layer.persist(pred)
    assert [layer.resolve(u) for u in held] == out


def test_persist_of_a_url_says_what_to_pass(layer):
    with pytest.raises(ConfigError, match="resolve"):
        layer.persist("https://replicate.delivery/pbxt/abc/out-0.png")


def test_all_durable_objects_match_sources(layer, replicate_simulator, s3_server):
    """A sanity check of the split: run stores byte-identical objects."""
    sim = replicate_simulator
    files = [File(size=5000, seed=i, filename=f"f{i}.bin") for i in range(3)]
    sim.add_model("acme/many", outputs=files)
    out = layer.run("acme/many", input={})
    assert [hashlib.sha256(s3_bytes(s3_server, u)).hexdigest() for u in out] == [f.sha256() for f in files]


def test_on_expired_skip_keeps_stored_files_and_leaves_expired_ones_as_their_urls(layer, replicate_simulator):
    """Issue 20: one vocabulary (``raise``/``skip``/``rerun``) for every call. ``skip`` in a
    persist: no error for an expired file, which keeps its source URL in the output."""
    sim = replicate_simulator
    pid = sim.seed_prediction(
        "acme/half", {}, [File(b"kept", filename="a.png"), File(b"gone", filename="b.png")]
    )
    held = sim.prediction(pid)
    gone_url = held["output"][1]
    sim.inject_fault("status", status=404, path_prefix=gone_url.split(sim.delivery_url, 1)[1], times=100)
    out = layer.persist(held, on_expired="skip")
    stored, gone = layer.catalog.files_of(pid)
    assert (stored.status, gone.status) == ("stored", "expired")
    assert out == [layer.durable_url(stored), gone_url]
    with pytest.raises(ExpiredDownloadUrlError):
        layer.persist(held)  # "raise", the default, still raises
    assert len(creates(sim)) == 0  # neither reran anything

    removed = sim.seed_prediction("acme/x", input={"p": 1}, output=[File(b"never seen")])
    sim.remove_data(removed)  # gone before the catalog recorded it
    assert layer.persist(removed, on_expired="skip") is None


def test_a_backfill_takes_skip_or_rerun_only(layer):
    with pytest.raises(ConfigError, match="skip or rerun"):
        layer.backfill(on_expired="raise")
