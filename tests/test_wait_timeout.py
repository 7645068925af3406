"""``--wait-timeout N`` bounds the whole wait, ``Prefer: wait`` included (issue 17, item 7b).

Finding: ``cachelayer run acme/stuck --wait-timeout 3`` gave up after 63.8 s, because the
create always sent ``Prefer: wait`` (which Replicate holds up to 60 s) before the bounded
poll began. Now the create asks for ``Prefer: wait=N`` with N no more than what is left of
the wait (Replicate documents ``wait=1..60``), and the poll gets only the rest. The tests
assert the header the simulator received, not the wall-clock time.
"""

from __future__ import annotations

import pytest
from conftest import run_cli

from cachelayer.errors import WaitTimeoutError
from cachelayer.replicate_api import MAX_PREFER_WAIT, prefer_wait
from cachelayer.testing.simulator import File

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def creates(sim):
    return [r for r in sim.request_log if r.method == "POST" and r.path.endswith("/predictions")]


def test_run_wait_timeout_bounds_prefer_wait(cli_env, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/stuck", outputs=File(PNG), duration=10**9)  # never finishes
    done = run_cli(cli_env, "run", "acme/stuck", "--wait-timeout", "3")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("cachelayer: error: prediction ") and "after waiting 3 s" in lines[-1]
    assert "Traceback" not in done.stderr
    (create,) = creates(sim)
    prefer = create.headers.get("prefer", "")
    assert prefer.startswith("wait=") and 1 <= int(prefer.removeprefix("wait=")) <= 3, prefer


def test_library_wait_timeout_under_a_second_sends_no_prefer_wait(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/stuck", outputs=File(PNG), duration=10**9)
    layer = make_layer(wait_timeout=0.5)
    with pytest.raises(WaitTimeoutError):
        layer.run("acme/stuck")
    (create,) = creates(sim)
    assert "prefer" not in create.headers


def test_unbounded_wait_keeps_replicates_default(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.add_model("acme/quick", outputs=File(PNG))
    make_layer(wait_timeout=0).run("acme/quick")
    (create,) = creates(sim)
    assert create.headers.get("prefer") == "wait"


@pytest.mark.parametrize(
    ("wait", "left", "expected"),
    [
        (True, None, True),
        (True, 3.9, 3),
        (True, 600.0, MAX_PREFER_WAIT),
        (10, 4.5, 4),
        (10, 0.99, None),
        (None, 30.0, None),
        (False, None, None),
        (90, None, MAX_PREFER_WAIT),
    ],
)
def test_prefer_wait_never_exceeds_what_is_left(wait, left, expected):
    assert prefer_wait(wait, left) == expected
