"""The CLI's rough edges a new user met (issue 19, item 6), each kept as a test.

Most run the installed ``cachelayer`` script as a user does (``conftest.run_cli``) against
the simulator, the moto S3 server and both catalogs; the ETA and the live display are
checked at unit level (a fake clock; a rich console on a buffer standing for the terminal).
"""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import CLI, run_cli

from cachelayer.testing.simulator import File

NOW = datetime.now(timezone.utc)


def _one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cachelayer: error: "), done.stderr
    return lines[0]


def _stored(cli_env, sim, n: int = 1) -> str:
    pid = sim.seed_prediction(
        "acme/x", input={}, output=[File(size=500, seed=i, filename=f"o{i}.png") for i in range(n)]
    )
    done = run_cli(cli_env, "persist", pid)
    assert done.returncode == 0, done.stderr
    return pid


def _history(sim, n: int, *, model: str = "acme/painter") -> list[str]:
    out = []
    for i in range(n):
        created = NOW - timedelta(minutes=5 + i)
        out.append(
            sim.seed_prediction(
                model,
                input={"i": i},
                output=[File(size=800, seed=100 + i, filename="a.png")],
                created_at=created,
                completed_at=created + timedelta(seconds=2),
            )
        )
    return out


# ---- formats and options --------------------------------------------------------------


def test_csv_lines_end_with_a_newline_not_crlf(cli_env, replicate_simulator):
    _stored(cli_env, replicate_simulator, 2)
    for args in (["ls", "--format", "csv"], ["export", "--format", "csv"]):
        raw = subprocess.run([CLI, *args], env=cli_env, capture_output=True, timeout=60)
        assert raw.returncode == 0, raw.stderr
        assert b"\r" not in raw.stdout
        lines = raw.stdout.decode().splitlines()
        assert len(lines) == 3 and lines[0].split(",")[-1] == "durable_url"
        assert all(line.split(",")[-1].startswith("s3://") for line in lines[1:])


def test_url_mode_gateway_is_accepted_on_the_command_line(cli_env, replicate_simulator):
    _stored(cli_env, replicate_simulator)
    env = {**cli_env, "CACHELAYER_GATEWAY_URL": "https://files.example.com"}
    done = run_cli(env, "ls", "--url-mode", "gateway", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["durable_url"].startswith("https://files.example.com/files/")


@pytest.mark.parametrize("command", ["ls", "show", "resolve", "stats", "export", "verify"])
def test_read_only_commands_list_only_the_options_they_use(command):
    done = run_cli({}, command, "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--concurrency" not in done.stdout and "--allowed-hosts" not in done.stdout
    assert "--database-url" in done.stdout and "--url-mode" in done.stdout


def test_copying_commands_keep_concurrency_and_allowed_hosts():
    for command in ("backfill", "worker", "persist", "run", "sweep"):
        out = run_cli({}, command, "--help", timeout=60).stdout
        assert "--concurrency" in out and "--allowed-hosts" in out, command


def test_an_error_names_the_flag_when_the_flag_gave_the_value(tmp_path):
    env = {"CACHELAYER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cases = [
        (["ls", "--storage-url", "bad"], "--storage-url", "CACHELAYER_STORAGE_URL"),
        (["ls", "--database-url", "mysql://x/y"], "--database-url", "CACHELAYER_DATABASE_URL"),
        (["ls", "--public-base-url", "ftp://x"], "--public-base-url", "CACHELAYER_PUBLIC_BASE_URL"),
        (["ls", "--url-mode", "public"], "--url-mode", "CACHELAYER_URL_MODE"),
        (["ls", "--url-mode", "gateway"], "--url-mode", "CACHELAYER_URL_MODE"),
        (["backfill", "--allowed-hosts", "a b"], "--allowed-hosts", "CACHELAYER_ALLOWED_HOSTS"),
    ]
    for args, flag, var in cases:
        line = _one_line(run_cli(env, *args, timeout=60), 2)
        assert flag in line and var not in line, line
    # the variable is still named when it gave the value
    line = _one_line(run_cli({**env, "CACHELAYER_STORAGE_URL": "bad"}, "ls", timeout=60), 2)
    assert "CACHELAYER_STORAGE_URL" in line


def test_db_upgrade_where_no_directory_can_be_made_is_one_line():
    done = run_cli({"PATH": "/usr/bin:/bin"}, "db", "upgrade", "--database-url", "sqlite:////proc/nope/x.db")
    assert "/proc/nope" in _one_line(done, 2)


# ---- persist and show -------------------------------------------------------------------


def test_persist_json_lists_every_id_with_its_outcome(cli_env, replicate_simulator):
    ok = replicate_simulator.seed_prediction("acme/x", input={}, output=[File(b"fine", filename="a.png")])
    done = run_cli(cli_env, "persist", ok, "nosuchprediction", "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert list(result) == [ok, "nosuchprediction"]
    assert result[ok]["ok"] is True and result[ok]["output"][0].startswith("s3://")
    bad = result["nosuchprediction"]
    assert bad["ok"] is False and bad["error_type"] == "PredictionNotFoundError" and bad["error"]


def test_show_json_of_an_expired_prediction_holds_no_dead_url(cli_env, replicate_simulator):
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/x", input={}, output=[File(b"gone", filename="a.png")])
    sim.expire_urls(pid)
    assert run_cli(cli_env, "persist", pid).returncode == 1
    done = run_cli(cli_env, "show", pid, "--format", "json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["files"][0]["status"] == "expired"
    assert shown["prediction"]["durable_output"] == [None]


# ---- backfill and worker ------------------------------------------------------------------


def test_since_after_until_is_a_usage_error(cli_env):
    line = _one_line(run_cli(cli_env, "backfill", "--since", "2h", "--until", "6h"), 2)
    assert "--since" in line and "--until" in line


def test_a_model_replicate_does_not_know_is_exit_2(cli_env, replicate_simulator):
    _history(replicate_simulator, 2)
    assert "nope/nope" in _one_line(run_cli(cli_env, "backfill", "--model", "nope/nope"), 2)


def test_a_known_model_with_no_predictions_says_so(cli_env, replicate_simulator):
    _history(replicate_simulator, 2)
    replicate_simulator.add_model("acme/quiet", outputs=File(b"x"))
    done = run_cli(cli_env, "backfill", "--model", "acme/quiet", "--json")
    assert done.returncode == 0, done.stderr
    assert "no predictions matched" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_scan_only_summary_says_how_many_files_it_queued(cli_env, replicate_simulator):
    _history(replicate_simulator, 3)
    done = run_cli(cli_env, "backfill", "--scan-only")
    assert done.returncode == 0, done.stderr
    rows = dict(line.rsplit(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert rows["files queued"] == "3"


def test_failures_are_grouped_by_a_human_reason(cli_env, replicate_simulator):
    _history(replicate_simulator, 3)
    blocked = {**cli_env, "CACHELAYER_ALLOWED_HOSTS": "cdn.example.com"}
    done = run_cli(blocked, "backfill", "--json")
    assert done.returncode == 1, done.stderr
    failures = json.loads(done.stdout)["failures"]
    assert len(failures) == 1, failures
    [(reason, n)] = failures.items()
    assert n == 3 and "not an allowed host" in reason
    assert "://" not in reason and "Error" not in reason
    table = run_cli(blocked, "worker", "--once", "--retry-failed")  # the table form
    assert table.returncode == 1, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("failed: ")]
    assert len(rows) == 1 and "not an allowed host" in rows[0] and rows[0].endswith(" 3"), table.stdout


def test_worker_counts_the_files_pending_in_the_queue(cli_env, replicate_simulator):
    _history(replicate_simulator, 4)
    assert run_cli(cli_env, "backfill", "--scan-only").returncode == 0
    done = run_cli(cli_env, "worker", "--once", "--json")
    summary = json.loads(done.stdout)
    assert done.returncode == 0 and summary["files_stored"] == 4
    assert summary["files_queued"] == 4


def test_ctrl_c_on_a_worker_prints_the_summary_and_exits_130(cli_env, replicate_simulator):
    _history(replicate_simulator, 2)
    assert run_cli(cli_env, "backfill", "--scan-only").returncode == 0
    proc = subprocess.Popen(
        [CLI, "worker", "--json"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(600):  # until the worker stored both files (the catalog says so)
            stats = run_cli(cli_env, "stats", "--by", "status", "--format", "json")
            rows = {r["status"]: r["files"] for r in json.loads(stats.stdout or "[]")}
            if rows.get("stored") == 2:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert json.loads(out)["files_stored"] == 2
    assert "Traceback" not in err


# ---- the live display (unit level) ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_eta_follows_the_current_rate_not_the_run_average():
    from cachelayer.cli.progress import EtaEstimator

    clock = FakeClock()
    eta = EtaEstimator(window=10.0, clock=clock)
    total = 300
    # ten seconds of scanning: nothing copied yet, nothing to estimate from
    for _ in range(10):
        assert eta.estimate(done=0, left=total) is None
        clock.now += 1.0
    # then 20 files a second
    done = 0
    for _ in range(5):
        clock.now += 1.0
        done += 20
        got = eta.estimate(done=done, left=total - done)
    assert got is not None and 9.0 <= got <= 13.0  # 200 left at 20/s; the run average says 30 s
    # a slow-down shows within the window
    for _ in range(20):
        clock.now += 1.0
        done += 2
        got = eta.estimate(done=done, left=total - done)
    assert got is not None and (total - done) / 2 * 0.9 <= got <= (total - done) / 2 * 1.1


def test_warnings_during_the_live_display_print_above_it(monkeypatch):
    from rich.console import Console

    from cachelayer.cli.app import setup_logging
    from cachelayer.cli.progress import LiveProgress

    raw = io.StringIO()
    monkeypatch.setattr("sys.stderr", raw)
    logger = logging.getLogger("cachelayer")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        setup_logging(0, False)
        terminal = io.StringIO()
        console = Console(file=terminal, force_terminal=True, width=120)
        with LiveProgress(console=console) as live:
            logger.warning("the file of p1 expired")
            live.console.print("")  # let rich draw
        logger.warning("after the display")
        assert "the file of p1 expired" in terminal.getvalue()
        assert "the file of p1 expired" not in raw.getvalue()
        assert "after the display" in raw.getvalue()  # the stderr handler is back
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
