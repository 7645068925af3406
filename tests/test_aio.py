"""AsyncCacheLayer: the same answers as CacheLayer, without blocking the event loop.

"Does not block" is shown without timing: while a call is awaited, another task on the
same loop must get to run (it advances the simulator's clock the run is waiting on, or
sees the copy's lease in the catalog). A blocking call would starve that task; a watchdog
thread then unblocks the call, and the test sees who came first.
"""

from __future__ import annotations

import threading

import anyio
import pytest

from cachelayer.aio import AsyncCacheLayer
from cachelayer.errors import ConfigError, ModelNotFoundError, PredictionFailedError
from cachelayer.testing.simulator import File

MB = 1024 * 1024

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("http_webhooks")]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_run_and_persist_return_what_the_sync_api_returns(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model(
        "acme/painter",
        outputs={"images": [File(b"one", filename="1.png"), File(b"two", filename="2.png")], "seed": 42},
    )
    layer = make_layer()
    async with AsyncCacheLayer(layer) as alayer:
        out = await alayer.run("acme/painter", {"prompt": "a cat"})
        pid = sim.prediction_ids[0]
        assert out == await anyio.to_thread.run_sync(layer.persist, pid)
        assert out == await alayer.persist(pid)
        assert out["seed"] == 42 and all(u.startswith("s3://") for u in out["images"])
        sync_out = await anyio.to_thread.run_sync(lambda: layer.run("acme/painter", {"prompt": "a cat"}))
        assert type(sync_out) is type(out) and sync_out.keys() == out.keys()
        result = await alayer.persist_result(pid)
        assert [f.record.status for f in result.files] == ["stored", "stored"]
        assert await alayer.resolve(sim.prediction(pid)["output"]["images"][0]) == out["images"][0]


async def test_errors_are_the_sync_apis(make_layer, replicate_simulator):
    def broken(_input):
        raise RuntimeError("CUDA out of memory")

    replicate_simulator.add_model("acme/broken", outputs=broken)
    layer = make_layer()
    alayer = AsyncCacheLayer(layer)
    with pytest.raises(ModelNotFoundError):
        await alayer.run("acme/missing", {})
    with pytest.raises(PredictionFailedError, match="CUDA out of memory"):
        await alayer.run("acme/broken", {})
    failed = replicate_simulator.prediction_ids[0]
    assert layer.catalog.get_prediction(failed).status == "failed"
    with pytest.raises(ConfigError, match="CACHELAYER_WEBHOOK_URL"):
        await alayer.create("acme/broken", {})
    await alayer.aclose()


async def test_waiting_for_a_prediction_leaves_the_loop_free(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/slow", outputs=File(b"late", filename="late.txt"), duration=30.0)
    alayer = AsyncCacheLayer(make_layer())
    order: list[str] = []
    watchdog = threading.Timer(30.0, lambda: (order.append("watchdog"), sim.advance(60)))
    watchdog.start()
    result: dict = {}

    async def run() -> None:
        result["out"] = await alayer.run("acme/slow", {})

    async def advance_from_the_loop() -> None:
        while not sim.prediction_ids:  # created (and waited on) by run()
            await anyio.sleep(0.01)
        order.append("loop")
        sim.advance(60)  # the prediction finishes on the simulator's clock

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(advance_from_the_loop)
    finally:
        watchdog.cancel()
    assert order[0] == "loop"
    assert result["out"].startswith("s3://")
    await alayer.aclose()


async def test_copies_run_off_the_loop(make_layer, replicate_simulator):
    sim = replicate_simulator
    big = File(size=40 * MB, seed=9, filename="big.bin", content_type="application/octet-stream")
    pid = sim.seed_prediction("acme/big", {}, big)
    layer = make_layer()
    alayer = AsyncCacheLayer(layer)
    seen_in_flight = False
    done = anyio.Event()

    async def persist() -> None:
        await alayer.persist(pid)
        done.set()

    async def watch() -> None:
        nonlocal seen_in_flight
        while not done.is_set():
            if layer.catalog.queue.lease_owners():  # a copy holds its lease while it runs
                seen_in_flight = True
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(persist)
        tg.start_soon(watch)
    assert seen_in_flight
    (row,) = layer.catalog.files_of(pid)
    assert row.status == "stored" and row.sha256 == big.sha256()
    await alayer.aclose()


async def test_create_records_a_prediction_that_reports_to_the_webhook(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=File(b"x", filename="x.png"), duration=5.0)
    hook = "http://127.0.0.1:9/webhooks/replicate"
    layer = make_layer(webhook_url=hook)
    async with AsyncCacheLayer(layer) as alayer:
        pred = await alayer.create("acme/painter", {"prompt": "a"})
    sync_pred = layer.create("acme/painter", {"prompt": "b"})
    assert type(pred) is type(sync_pred)
    for p in (pred, sync_pred):
        assert not p.terminal
        assert layer.catalog.get_prediction(p.id).status == p.status.value
        remote = sim.prediction(p.id)
        assert remote["webhook"] == hook and remote["webhook_events_filter"] == ["completed"]
