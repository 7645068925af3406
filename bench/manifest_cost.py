"""Cost of a prediction's manifest (issue 18) on a one-file persist, local store + SQLite.

One run, persists interleaved with the manifest written and not (``Manifests.publish``
replaced by a no-op): wall time per persist (median) and process CPU per persist (the
in-process simulator included, the same in both). ``python bench/manifest_cost.py [N]``
(N persists of each kind, 100 kB files; default 60).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cachelayer import CacheLayer
from cachelayer.manifests import Manifests
from cachelayer.testing.simulator import File, ReplicateSimulator


def main(n: int) -> None:
    real = Manifests.publish
    sim = ReplicateSimulator().start()
    tmp = Path(tempfile.mkdtemp())
    layer = CacheLayer(
        database_url=f"sqlite:///{tmp}/c.db",
        storage_url=(tmp / "o").as_uri(),
        replicate_api_token=sim.token,
        replicate_base_url=sim.base_url,
        allowed_hosts=sim.host_port,
        ca_bundle=sim.ca_file,
    )
    ids = [
        sim.seed_prediction("acme/x", input={"i": i}, output=[File(size=100_000, seed=i)])
        for i in range(2 * n + 4)
    ]
    for pid in ids[:4]:
        layer.persist(sim.prediction(pid))  # warm
    wall: dict[str, list[float]] = {"on": [], "off": []}
    cpu = {"on": 0.0, "off": 0.0}

    def off(self: Any, prediction_id: str) -> bool:
        return False

    try:
        for i, pid in enumerate(ids[4:]):
            mode = "on" if i % 2 == 0 else "off"
            Manifests.publish = real if mode == "on" else off  # type: ignore[method-assign]
            held = sim.prediction(pid)
            c0, t0 = time.process_time(), time.perf_counter()
            layer.persist(held)
            wall[mode].append(time.perf_counter() - t0)
            cpu[mode] += time.process_time() - c0
    finally:
        Manifests.publish = real  # type: ignore[method-assign]
        layer.close()
        sim.stop()
    for mode in ("on", "off"):
        print(
            f"manifest {mode}: median wall {1000 * statistics.median(wall[mode]):.2f} ms, "
            f"CPU {1000 * cpu[mode] / len(wall[mode]):.2f} ms per persist"
        )
    print(f"CPU ratio on/off {cpu['on'] / cpu['off']:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
