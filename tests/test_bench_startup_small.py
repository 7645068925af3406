"""``bench/startup.py`` once per copy command: each command reaches a server through the
relays and exits 0; the figures are printed by the bench, never asserted here."""

from __future__ import annotations

from benches import load_bench


def test_each_copy_command_reaches_a_server(capsys) -> None:
    bench = load_bench("startup")
    assert bench.main(["--runs", "1"]) == 0
    out = capsys.readouterr().out
    for command in ("persist", "run", "backfill"):
        assert f"`cachelayer {command}" in out
