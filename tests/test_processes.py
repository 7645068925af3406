"""``backfill --processes N`` and ``worker --processes N`` (issue 21, item 3): helper
processes drain the same queue beside the command's own process, on SQLite and PostgreSQL;
every file is stored and downloaded once, the helpers take a share, and their counts are in
the one summary."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import CLI
from test_backfill import assert_each_file_stored_once, seed_history

from cachelayer.errors import ConfigError
from cachelayer.processes import default_processes


def _run(args, env):
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=300)


def _assert_downloaded_once(sim, made):
    for pid in made:
        for url in sim.delivery_urls(pid):
            assert sim.download_count(url) == 1


def test_backfill_with_two_processes_shares_the_queue(
    cli_env, replicate_simulator, s3_server, s3_bucket, catalog_url
):
    made = seed_history(replicate_simulator, n_pred=20, files_per=5, size=2000, step=1)
    # 100 files, 2 at a time, 0.25 s each: the backfill copies for 12 s or more, long enough
    # for the helper (a fresh interpreter) to start and take its share
    replicate_simulator.latency = 0.25
    try:
        done = _run(["backfill", "--json", "--quiet", "--concurrency", "2", "--processes", "2"], cli_env)
    finally:
        replicate_simulator.latency = 0.0
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["processes"] == 2
    assert summary["files_stored"] == 100
    assert 0 < summary["files_stored_by_helpers"] < 100, (summary, done.stderr)
    assert summary["files_leased_elsewhere"] == 0
    assert_each_file_stored_once(catalog_url, s3_server, s3_bucket, made)
    _assert_downloaded_once(replicate_simulator, made)


def test_worker_once_with_two_processes_drains_the_queue(
    cli_env, replicate_simulator, s3_server, s3_bucket, catalog_url
):
    made = seed_history(replicate_simulator, n_pred=20, files_per=5, size=2000, step=1)
    queued = _run(["backfill", "--scan-only", "--json", "--quiet"], cli_env)
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["files_queued"] == 100
    # 100 files, 2 at a time, 0.25 s each: 12 s for one process, time for the helper to join
    replicate_simulator.latency = 0.25
    try:
        done = _run(
            ["worker", "--once", "--json", "--quiet", "--concurrency", "2", "--processes", "2"], cli_env
        )
    finally:
        replicate_simulator.latency = 0.0
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["processes"], summary["files_stored"]) == (2, 100)
    assert summary["files_stored_by_helpers"] > 0, summary
    assert_each_file_stored_once(catalog_url, s3_server, s3_bucket, made)
    _assert_downloaded_once(replicate_simulator, made)


def test_the_default_is_the_cores_less_one_and_the_summary_says_so(cli_env, replicate_simulator):
    """The default is the CPUs this process may run on less one, at least one (here, on 2
    cores: one process, no helper)."""
    import os
    import sys

    probe = "import os, sys; os.sched_setaffinity(0, {0}); from cachelayer.processes import default_processes as d; print(d())"
    one_cpu = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert one_cpu.stdout.strip() == "1"
    assert default_processes() == max(1, len(os.sched_getaffinity(0)) - 1)
    seed_history(replicate_simulator, n_pred=2, files_per=1)
    done = _run(["backfill", "--json", "--quiet"], cli_env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["processes"] == default_processes()
    assert summary["files_stored"] == 2


def test_processes_need_a_layer_built_from_settings(make_layer, s3_store):
    """Helpers build their own layer from the settings: a store object passed in cannot
    follow them, so asking for helpers is refused before anything is scanned."""
    layer = make_layer(store=s3_store)
    with pytest.raises(ConfigError, match="processes"):
        layer.work(once=True, processes=2)


def test_processes_below_one_are_a_usage_error(cli_env):
    done = _run(["worker", "--once", "--processes", "0"], cli_env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
