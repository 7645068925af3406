"""The `cachelayer` command as users run it: a subprocess, real servers, exit statuses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
from conftest import CLI, run_cli

from cachelayer.testing.simulator import File


def cli(env, *args, stdin=None):
    return run_cli(env, *args, stdin=stdin)


def test_version():
    out = cli(os.environ, "--version")
    assert out.returncode == 0 and "cachelayer" in out.stdout


def test_run_parses_inputs_and_prints_durable_urls(cli_env, replicate_simulator, s3_server, tmp_path):
    seen = {}

    def model(inp):
        seen.update(inp)
        return [File(f"img{i}".encode(), filename=f"out-{i}.png") for i in range(inp["num_outputs"])]

    replicate_simulator.add_model("acme/painter", outputs=model)
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG local file")
    out = cli(
        cli_env,
        "run",
        "acme/painter",
        "-i",
        "prompt=a cat",
        "-i",
        "num_outputs=2",
        "-i",
        "flag=true",
        "-i",
        f"image=@{photo}",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    urls = json.loads(out.stdout)
    assert len(urls) == 2 and all(u.startswith("s3://") for u in urls)
    assert seen["prompt"] == "a cat" and seen["num_outputs"] == 2 and seen["flag"] is True
    assert seen["image"].startswith("data:")  # the local file travelled as a data: URI
    bucket, key = urls[1][5:].split("/", 1)
    assert s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read() == b"img1"

    plain = cli(cli_env, "run", "acme/painter", "-i", "num_outputs=1")
    assert plain.returncode == 0 and plain.stdout.strip().startswith("s3://")


def test_persist_twice_same_urls(cli_env, replicate_simulator):
    f = File(size=1000, seed=3)
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=[f])
    a = cli(cli_env, "persist", pid, "--json")
    b = cli(cli_env, "persist", pid, "--json")
    assert a.returncode == b.returncode == 0, a.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)
    assert replicate_simulator.download_count(replicate_simulator.delivery_urls(pid)[0]) == 1


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", "acme/missing"], 2, "acme/missing"),
        (["run", "not a model"], 2, "bad model reference"),
        (["run", "acme/m", "-i", "novalue"], 2, "key=value"),
    ],
)
def test_usage_and_config_errors_exit_2(cli_env, args, code, needle):
    out = cli(cli_env, *args)
    assert out.returncode == code
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_missing_bucket_and_bad_database_exit_2(cli_env):
    out = cli({**cli_env, "CACHELAYER_STORAGE_URL": "s3://no-such-bucket-x"}, "persist", "abc")
    assert out.returncode == 2 and "no-such-bucket-x" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    out = cli({**cli_env, "CACHELAYER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}, "persist", "abc")
    assert out.returncode == 2 and "catalog" in out.stderr and "Traceback" not in out.stderr


def test_expired_prediction_exits_1_with_one_line(cli_env, replicate_simulator):
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=[File(b"gone")])
    replicate_simulator.remove_data(pid)
    out = cli(cli_env, "persist", pid)
    assert out.returncode == 1
    assert "The output URL has expired" in out.stderr and pid in out.stderr
    assert "Traceback" not in out.stderr


def test_two_processes_persisting_at_once_store_each_object_once(
    cli_env, replicate_simulator, s3_server, s3_bucket
):
    files = [File(size=400_000, seed=i, filename=f"out-{i}.png") for i in range(6)]
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=files)
    procs = [
        subprocess.Popen(
            [CLI, "persist", pid, "--json"],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert json.loads(outs[0][0]) == json.loads(outs[1][0])
    for url in replicate_simulator.delivery_urls(pid):
        assert replicate_simulator.download_count(url) == 1
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    manifests = [o for o in listed if "/_manifests/" in o["Key"]]  # one per prediction
    listed = [o for o in listed if o not in manifests]
    assert len(listed) == 6 and len(manifests) == 1
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=listed[0]["Key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() in {f.sha256() for f in files}


def test_wait_timeout_flag_is_one_line_exit_1(cli_env, replicate_simulator):
    replicate_simulator.add_model("acme/slow", outputs=File(b"slow"), duration=600)
    out = cli(cli_env, "run", "acme/slow", "--wait-timeout", "1")
    assert out.returncode == 1, out.stderr
    assert "still" in out.stderr and "--wait-timeout" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_worker_retry_failed_flag_requeues(cli_env, replicate_simulator):
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=[File(b"later")])
    blocked = {**cli_env, "CACHELAYER_ALLOWED_HOSTS": "cdn.example.com"}
    cli(blocked, "persist", pid)  # refused host: the file is recorded failed
    out = cli(cli_env, "worker", "--once", "--json")
    assert json.loads(out.stdout)["files_stored"] == 0
    out = cli(cli_env, "worker", "--once", "--retry-failed", "--json")
    summary = json.loads(out.stdout)
    assert out.returncode == 0 and summary["files_requeued"] == 1 and summary["files_stored"] == 1


def test_persist_on_expired_takes_the_one_vocabulary(cli_env, replicate_simulator):
    """Issue 20: ``--on-expired`` of ``persist`` takes ``raise``, ``skip`` and ``rerun``;
    ``skip`` prints the output with the expired file's source URL and exits 0."""
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/x", input={}, output=[File(b"gone", filename="g.png")])
    url = sim.prediction(pid)["output"][0]
    sim.inject_fault("status", status=404, path_prefix=url.split(sim.delivery_url, 1)[1], times=100)
    raised = cli(cli_env, "persist", pid, "--on-expired", "raise")
    assert raised.returncode == 1 and "expired" in raised.stderr
    skipped = cli(cli_env, "persist", pid, "--json", "--on-expired", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout) == {pid: {"ok": True, "output": [url]}}
