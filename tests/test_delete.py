"""Delete and retention (issue 18 items 2 and 3), through the library.

Real parts only: predictions persisted from the Replicate simulator into the moto S3
server (or a local directory), the catalog under test (SQLite and PostgreSQL). Each test
deletes through ``CacheLayer.delete``/``prune``/``sweep`` and then looks at the bucket, the
catalog and every way a prediction could be copied again.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from cachelayer.errors import PredictionDeletedError
from cachelayer.testing.simulator import File


def _seed(sim: Any, n: int = 2, model: str = "acme/del", **kw: Any) -> str:
    files = [File(size=400 + i, seed=i, filename=f"img-{i}.png") for i in range(n)]
    return str(sim.seed_prediction(model, input={"prompt": "secret"}, output=files, **kw))


def _backdate(layer: Any, pid: str, days: float) -> None:
    """Make a recorded prediction look created ``days`` ago (the simulator removes the
    data of old predictions, so they are persisted fresh and aged in the catalog)."""
    from sqlalchemy import update

    from cachelayer.catalog.models import PREDICTIONS

    when = datetime.now(timezone.utc) - timedelta(days=days)
    with layer.catalog.engine.begin() as c:
        c.execute(update(PREDICTIONS).where(PREDICTIONS.c.id == pid).values(created_at=when))


def _object_exists(layer: Any, rec: Any) -> bool:
    return layer.store_for(rec.store).head(rec.key) is not None


@pytest.fixture(params=["s3", "local"])
def store_layer(request, make_layer, tmp_path):
    """A layer on the moto bucket, or on a local directory."""
    if request.param == "s3":
        return make_layer()
    return make_layer(storage_url=str(tmp_path / "objects"))


def test_delete_removes_objects_erases_input_and_output_and_keeps_a_tombstone(
    store_layer, replicate_simulator
):
    layer, sim = store_layer, replicate_simulator
    gone, kept = _seed(sim, 3), _seed(sim, 2)
    layer.persist(gone)
    layer.persist(kept)
    before = layer.catalog.files.of_prediction(gone)
    kept_files = layer.catalog.files.of_prediction(kept)
    assert all(_object_exists(layer, r) for r in before + kept_files)

    summary = layer.delete([gone], reason="GDPR request 17")

    assert [o.outcome for o in summary.outcomes] == ["deleted"]
    assert (summary.predictions, summary.files) == (1, 3)
    assert summary.bytes_freed == sum(r.size for r in before) == 400 + 401 + 402
    assert not any(_object_exists(layer, r) for r in before)
    assert all(_object_exists(layer, r) for r in kept_files)  # only what was asked
    rec = layer.catalog.predictions.get(gone)
    assert rec is not None and rec.input is None and rec.output is None and rec.durable_output is None
    tomb = layer.catalog.tombstones.get_many([gone])[gone]
    assert tomb.reason == "GDPR request 17" and tomb.deleted_at is not None
    assert (tomb.files, tomb.bytes_freed, tomb.model) == (3, summary.bytes_freed, "acme/del")
    after = layer.catalog.files.of_prediction(gone)
    assert {r.status for r in after} == {"deleted"} and all(r.sha256 is None for r in after)
    # the catalog's queries
    listed = [r.prediction_id for r in layer.catalog.list_files(status="deleted").files]
    assert listed == [gone] * 3
    by_status = {r.group: r for r in layer.catalog.stats(by="status")}
    assert by_status["deleted"].files == 3 and by_status["deleted"].deleted == 3
    assert all(layer.resolve(r.source_url) is None for r in before)
    report = layer.verify()
    assert report.missing == 0 and report.checked == 2  # the kept prediction's files only
    # idempotent
    again = layer.delete(gone)
    assert [o.outcome for o in again.outcomes] == ["already_deleted"] and again.predictions == 0


def test_nothing_copies_a_deleted_prediction_again(make_layer, replicate_simulator):
    import json

    sim = replicate_simulator
    layer = make_layer(webhook_secret=sim.webhook_secret)
    pid = _seed(sim, 2)
    layer.persist(pid)
    keys = [r.key for r in layer.catalog.files.of_prediction(pid)]
    layer.delete(pid)

    body = json.dumps(sim.prediction(pid)).encode()  # its completed webhook, delivered late
    outcome = layer.handle_webhook(sim.sign_webhook(body), body)
    assert outcome.queued == 0 and not outcome.duplicate

    with pytest.raises(PredictionDeletedError):
        layer.persist(pid)
    with pytest.raises(PredictionDeletedError):
        layer.enqueue(sim.prediction(pid))
    with pytest.raises(PredictionDeletedError):
        layer.rerun(pid)
    layer.backfill(since=timedelta(days=1), concurrency=2)
    layer.sweep(copy=True, concurrency=2)
    layer.work(once=True)
    files = layer.catalog.files.of_prediction(pid)
    assert {f.status for f in files} == {"deleted"}
    assert all(layer.store.head(k) is None for k in keys)
    rec = layer.catalog.predictions.get(pid)
    assert rec is not None and rec.input is None and rec.output is None


def test_dry_run_deletes_nothing_and_unknown_ids_are_reported(layer, replicate_simulator):
    pid = _seed(replicate_simulator, 2)
    layer.persist(pid)
    files = layer.catalog.files.of_prediction(pid)

    summary = layer.delete([pid, "nosuchprediction0000000000"], dry_run=True)

    assert [o.outcome for o in summary.outcomes] == ["would_delete", "unknown"]
    assert (summary.predictions, summary.files, summary.bytes_freed) == (1, 2, 400 + 401)
    assert summary.ids("unknown") == ["nosuchprediction0000000000"]
    assert all(layer.store.head(r.key) is not None for r in files)
    assert {r.status for r in layer.catalog.files.of_prediction(pid)} == {"stored"}
    assert layer.catalog.tombstones.get_many([pid]) == {}
    real = layer.delete([pid, "nosuchprediction0000000000"])
    assert [o.outcome for o in real.outcomes] == ["deleted", "unknown"]


def test_a_copy_in_flight_keeps_the_delete_unfinished_until_its_lease_ends(layer, replicate_simulator):
    pid = _seed(replicate_simulator, 2)
    layer.enqueue(replicate_simulator.prediction(pid))  # queued, not copied
    row = layer.catalog.files.of_prediction(pid)[0]
    claimed = layer.catalog.queue.claim(row.id, "other-host:1:x", 3600)  # a worker elsewhere holds it
    assert claimed is not None

    first = layer.delete(pid)

    assert [o.outcome for o in first.outcomes] == ["unfinished"]
    assert layer.catalog.tombstones.get_many([pid])[pid].deleted_at is None
    assert {r.status for r in layer.catalog.files.of_prediction(pid)} == {"deleting"}
    # the worker cannot record it stored any more, nor claim it again
    assert (
        layer.catalog.queue.mark_stored(
            row.id, "other-host:1:x", size=1, sha256="0" * 64, content_type=None, source_age_seconds=None
        )
        is None
    )
    assert layer.catalog.queue.claim(row.id, "third:1:x", 60) is None
    layer.catalog.queue.release_leases(["other-host:1:x"])  # the worker died (or finished)

    swept = layer.deleter.finish_unfinished()
    assert [o.outcome for o in swept.outcomes] == ["deleted"]
    assert {r.status for r in layer.catalog.files.of_prediction(pid)} == {"deleted"}


def test_prune_deletes_old_predictions_of_the_chosen_models_in_batches(
    layer, replicate_simulator, monkeypatch
):
    from cachelayer import delete as delete_mod

    monkeypatch.setattr(delete_mod, "BATCH", 2)  # several batches out of a few predictions
    sim = replicate_simulator
    old_a = [_seed(sim, 1, "acme/a") for _ in range(3)]
    old_b = _seed(sim, 1, "acme/b")
    new_a = _seed(sim, 1, "acme/a")
    for pid in [*old_a, old_b, new_a]:
        layer.persist(pid)
    for pid in [*old_a, old_b]:
        _backdate(layer, pid, 100)
    seen: list[int] = []

    dry = layer.prune(timedelta(days=90), models=["acme/a"], dry_run=True)
    assert sorted(o.prediction_id for o in dry.outcomes) == sorted(old_a) and dry.predictions == 3
    assert layer.catalog.tombstones.get_many(old_a) == {}

    done = layer.prune(timedelta(days=90), models=["acme/a"], progress=lambda s: seen.append(s.predictions))
    assert sorted(done.ids("deleted")) == sorted(old_a) and done.files == 3
    assert seen == [2, 3]  # one call per batch
    tombs = layer.catalog.tombstones.get_many([*old_a, old_b, new_a])
    assert set(tombs) == set(old_a) and all(
        t.reason == "retention: older than 90 days" for t in tombs.values()
    )
    assert layer.catalog.files.of_prediction(old_b)[0].status == "stored"
    assert layer.catalog.files.of_prediction(new_a)[0].status == "stored"
    assert layer.prune(timedelta(days=90), models=["acme/a"]).predictions == 0


def test_retention_makes_the_sweep_prune(make_layer, replicate_simulator):
    sim = replicate_simulator
    pid_old, pid_new = _seed(sim, 2), _seed(sim, 1)
    plain = make_layer()
    plain.persist(pid_old)
    plain.persist(pid_new)
    _backdate(plain, pid_old, 100)
    assert plain.sweep(copy=False).predictions_deleted == 0  # retention is off by default

    summary = make_layer(retention="90d").sweep(copy=False)

    assert summary.predictions_deleted == 1 and summary.bytes_deleted == 400 + 401
    assert {r.status for r in plain.catalog.files.of_prediction(pid_old)} == {"deleted"}
    assert {r.status for r in plain.catalog.files.of_prediction(pid_new)} == {"stored"}


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("90d", 90 * 86400.0), ("12w", 12 * 604800.0), ("off", None), ("", None), ("2h", 7200.0)],
)
def test_retention_setting(raw, seconds, tmp_path):
    from cachelayer.config import Settings

    s = Settings.from_env({"CACHELAYER_HOME": str(tmp_path), "CACHELAYER_RETENTION": str(raw)})
    assert s.retention == seconds


@pytest.mark.parametrize("raw", ["ninety days", "30m", "-5d", "1x"])
def test_retention_setting_refuses_bad_values(raw, tmp_path):
    from cachelayer.config import Settings
    from cachelayer.errors import ConfigError

    with pytest.raises(ConfigError, match="CACHELAYER_RETENTION"):
        Settings.from_env({"CACHELAYER_HOME": str(tmp_path), "CACHELAYER_RETENTION": raw})


def test_a_catalog_at_revision_0006_upgrades_and_its_predictions_can_be_deleted(
    catalog_url, make_layer, replicate_simulator
):
    """A catalog at the landed revision (0006), holding a stored prediction, gets
    ``tombstones`` from ``db upgrade`` (0007) and its prediction deletes; downgrading
    drops the table again."""
    from alembic import command
    from sqlalchemy import inspect

    from cachelayer.catalog.db import HEAD_REVISION, _alembic_config, make_engine, upgrade

    engine = make_engine(catalog_url)
    upgrade(engine, "0006")
    assert "tombstones" not in inspect(engine).get_table_names()
    assert "file_copies" not in inspect(engine).get_table_names()
    pid = _seed(replicate_simulator, 2)
    from cachelayer.catalog.models import PREDICTIONS
    from cachelayer.catalog.predictions import prediction_values
    from cachelayer.prediction import Prediction

    with engine.begin() as c:  # the row as revision 0006's code wrote it
        c.execute(PREDICTIONS.insert(), prediction_values(Prediction.of(replicate_simulator.prediction(pid))))
    assert upgrade(engine) == ("0006", HEAD_REVISION)  # 0007, and the revisions after it
    layer = make_layer()
    layer.persist(pid)
    assert layer.delete(pid).predictions == 1
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    assert "tombstones" not in inspect(engine).get_table_names()
    engine.dispose()
