"""The sweep (issue 17.1): predictions whose webhooks never arrived are found and stored.

Everything runs against the Replicate simulator, the moto S3 server and the catalog under
test (SQLite and PostgreSQL). Webhooks go to a port nothing listens on, so every delivery
fails, as Replicate's do while ``serve`` is down.
"""

from __future__ import annotations

import json
import secrets
import socket
from datetime import timedelta

import pytest
from conftest import run_cli
from serving import wait_for

from cachelayer.prediction import Prediction
from cachelayer.sweep import OVERLAP_SECONDS, SWEEP_CHECKPOINT
from cachelayer.testing.simulator import File

pytestmark = pytest.mark.usefixtures("http_webhooks")


def dead_webhook_url() -> str:
    """An http URL on a loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/webhooks/replicate"


def create_unheard(sim, model: str, webhook: str) -> str:
    """Create a prediction (not through cachelayer) whose ``completed`` webhook goes to
    ``webhook``; returns its id once every delivery attempt has failed."""
    client = sim.replicate_client()
    pred = client.predictions.create(
        model=model, input={"prompt": "x"}, webhook=webhook, webhook_events_filter=["completed"]
    )
    wait_for(lambda: sim.prediction(pred.id)["status"] == "succeeded", what="the prediction to finish")
    wait_for(
        lambda: (
            len([d for d in sim.webhook_deliveries if d.prediction_id == pred.id]) >= sim.webhook_max_attempts
        ),
        what="every webhook attempt to fail",
    )
    assert all(d.status is None for d in sim.webhook_deliveries if d.prediction_id == pred.id)
    return str(pred.id)


def stored(layer, pid: str, n: int) -> bool:
    files = layer.catalog.files_of(pid)
    return len(files) == n and all(f.status == "stored" for f in files)


def test_a_prediction_whose_webhook_never_came_is_stored_and_a_second_sweep_changes_nothing(
    make_layer, replicate_simulator
):
    sim = replicate_simulator
    image = File(secrets.token_bytes(20_000), content_type="image/png", filename="out.png")
    sim.add_model("acme/painter", outputs={"images": [image, image]})
    pid = create_unheard(sim, "acme/painter", dead_webhook_url())
    layer = make_layer()
    assert layer.catalog.get_prediction(pid) is None  # nothing heard of it

    first = layer.sweep()

    assert first.complete and first.exit_code == 0, first
    assert first.predictions_listed == 1 and first.files_queued == 2 and first.files_stored == 2
    assert stored(layer, pid, 2)
    files = layer.catalog.files_of(pid)
    assert layer.store.open(files[0].key).read() == image.read()
    downloads = [sim.download_count(f.source_url) for f in files]
    before = (layer.catalog.get_prediction(pid), files)

    second = layer.sweep()  # idempotent: lists it again (the overlap) and leaves it alone

    assert second.complete and second.exit_code == 0, second
    assert second.predictions_listed == 1
    assert (second.files_queued, second.files_stored, second.predictions_reread) == (0, 0, 0)
    assert (layer.catalog.get_prediction(pid), layer.catalog.files_of(pid)) == before
    assert [sim.download_count(f.source_url) for f in files] == downloads


def test_a_starting_prediction_from_create_is_reread_until_it_finishes(make_layer, replicate_simulator):
    sim = replicate_simulator
    video = File(size=300_000, seed=5, content_type="video/mp4", filename="clip.mp4")
    sim.add_model("acme/slow", outputs=video, duration=1500)
    sim.add_model("acme/fast", outputs=File(b"fast", filename="f.txt"))
    layer = make_layer(webhook_url=dead_webhook_url())

    slow = layer.create("acme/slow", {"prompt": "waves"})
    assert layer.catalog.get_prediction(slow.id).status == "starting"
    sim.advance(1200)  # 20 minutes later another prediction runs
    fast = sim.replicate_client().predictions.create(model="acme/fast", input={"prompt": "y"})

    first = layer.sweep()
    assert first.complete and stored(layer, fast.id, 1)
    assert layer.catalog.get_prediction(slow.id).status == "processing"  # listed, still running
    assert layer.catalog.files_of(slow.id) == []

    sim.advance(400)  # the slow one finishes; its webhook fails
    reads = sum(1 for m, path, _ in sim.requests if (m, path) == ("GET", f"/v1/predictions/{slow.id}"))
    second = layer.sweep()

    # created before the checkpoint (fast's creation) less the overlap: not listed, re-read
    assert second.predictions_listed == 1 and second.predictions_reread == 1, second
    assert (
        sum(1 for m, path, _ in sim.requests if (m, path) == ("GET", f"/v1/predictions/{slow.id}"))
        == reads + 1
    )
    assert stored(layer, slow.id, 1)
    assert layer.catalog.get_prediction(slow.id).status == "succeeded"
    rec = layer.catalog.files_of(slow.id)[0]
    assert rec.sha256 == video.sha256() and rec.size == video.size

    third = layer.sweep()
    assert (third.predictions_reread, third.files_queued) == (0, 0)


def test_a_prediction_created_just_before_the_checkpoint_is_still_seen(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=File(b"png", filename="a.png"))
    first_id = create_unheard(sim, "acme/painter", dead_webhook_url())
    layer = make_layer()
    assert layer.sweep().complete
    checkpoint = layer.catalog.checkpoints.load(SWEEP_CHECKPOINT)
    assert checkpoint is not None
    created = Prediction.of(sim.prediction(first_id)).created_at
    assert checkpoint.state["newest"] == created.isoformat().replace("+00:00", "Z")

    # It became visible in the listing only after the first pass read past its time.
    late = sim.seed_prediction(
        "acme/painter",
        {"prompt": "late"},
        File(b"late png", filename="late.png"),
        created_at=created - timedelta(seconds=OVERLAP_SECONDS / 2),
    )
    second = layer.sweep()

    assert second.files_queued == 1 and stored(layer, late, 1), second


def test_a_prediction_replicate_no_longer_has_is_recorded_with_its_reason_and_the_sweep_goes_on(
    make_layer, replicate_simulator
):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=File(b"png", filename="a.png"))
    layer = make_layer(webhook_url=dead_webhook_url())
    gone = Prediction.of({"id": "gone0000000000000000000000", "status": "starting", "model": "acme/painter"})
    layer.catalog.predictions.record(gone)  # Replicate answers 404 for it
    removed = layer.create("acme/painter", {"prompt": "a"})
    wait_for(lambda: sim.prediction(removed.id)["status"] == "succeeded", what="it to finish")
    sim.remove_data(removed.id)  # an hour passed: data gone before anyone copied it
    heard = create_unheard(sim, "acme/painter", dead_webhook_url())

    summary = layer.sweep()

    assert summary.complete and summary.predictions_reread >= 1, summary
    assert summary.predictions_lost == 2
    lost = layer.catalog.get_prediction(gone.id)
    assert lost.data_removed and "not found" in lost.error
    assert layer.catalog.get_prediction(removed.id).data_removed
    assert stored(layer, heard, 1)  # the rest went on
    again = layer.sweep()
    assert again.predictions_reread == 0 and again.predictions_lost == 0


def test_a_failed_pass_leaves_the_checkpoint_where_it_was(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=File(b"png", filename="a.png"))
    first = create_unheard(sim, "acme/painter", dead_webhook_url())
    layer = make_layer()
    assert layer.sweep().complete
    saved = layer.catalog.checkpoints.load(SWEEP_CHECKPOINT)
    sim.advance(60)
    later = create_unheard(sim, "acme/painter", dead_webhook_url())
    sim.inject_fault("status", times=10, path_prefix="/v1/predictions", status=500, method="GET")

    with pytest.raises(Exception, match="list predictions"):
        layer.sweep()

    assert layer.catalog.checkpoints.load(SWEEP_CHECKPOINT).state == saved.state
    sim.clear_faults()
    assert layer.sweep().complete and stored(layer, later, 1) and stored(layer, first, 1)


def test_cachelayer_sweep_recovers_a_prediction_whose_webhook_was_never_delivered(
    cli_env, replicate_simulator, make_layer
):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=[File(b"one", filename="1.png"), File(b"two", filename="2.png")])
    pid = create_unheard(sim, "acme/painter", dead_webhook_url())

    done = run_cli(cli_env, "sweep", "--json")

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["files_queued"] == 2 and summary["files_stored"] == 2 and summary["complete"]
    layer = make_layer(storage_url=cli_env["CACHELAYER_STORAGE_URL"])
    assert stored(layer, pid, 2)

    again = run_cli(cli_env, "sweep")
    assert again.returncode == 0, again.stderr
    assert "files queued" in again.stdout and "Traceback" not in again.stderr


def test_cachelayer_sweep_reports_errors_on_one_line(cli_env, replicate_simulator):
    bad = run_cli({**cli_env, "CACHELAYER_SWEEP_INTERVAL": "soon"}, "sweep")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "CACHELAYER_SWEEP_INTERVAL" in bad.stderr
    replicate_simulator.inject_fault("status", times=20, path_prefix="/v1/predictions", status=500)
    failed = run_cli(cli_env, "sweep")
    assert failed.returncode == 1 and failed.stderr.startswith("cachelayer: error:"), failed.stderr
    assert "Traceback" not in failed.stderr


def test_the_listing_is_paged_and_bounded_by_the_window(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.page_size = 2
    now = sim.clock()
    ids = [
        sim.seed_prediction(
            "acme/painter",
            {"i": i},
            File(f"png {i}".encode(), filename="a.png"),
            created_at=now - timedelta(minutes=5 * i),
        )
        for i in range(5)
    ]
    old = sim.seed_prediction(
        "acme/painter", {"i": "old"}, File(b"old", filename="a.png"), created_at=now - timedelta(hours=2)
    )
    layer = make_layer()

    summary = layer.sweep()

    assert summary.predictions_listed == 5 and summary.files_stored == 5, summary
    assert all(stored(layer, pid, 1) for pid in ids)
    assert layer.catalog.get_prediction(old) is None  # older than the data's lifetime: not listed
    lists = [r for r in sim.request_log if r.method == "GET" and r.path == "/v1/predictions"]
    assert len(lists) == 3 and all("created_after" in r.query for r in lists)
