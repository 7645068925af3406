"""``bench/data_path.py`` on 5 files: every download candidate reads the same bytes (the
bench checks each SHA-256 against the first), every upload candidate writes through moto's
server; CPU figures are printed by the bench, never asserted here."""

from __future__ import annotations

from benches import load_bench


def test_every_candidate_runs_on_the_same_file(capsys) -> None:
    bench = load_bench("data_path")
    result = bench.main(["--files", "5", "--rounds", "1", "--size", "20000", "--json"])
    assert {"library", "requests", "urllib3"} <= set(result["download"])
    assert {"library", "boto3"} <= set(result["upload"])
    for part in ("download", "upload"):
        for runs in result[part].values():
            ((cpu_ms, wall_ms),) = runs
            assert cpu_ms > 0 and wall_ms > 0
    assert '"download"' in capsys.readouterr().out
