"""User mistakes (issue 8.11): each is one line on stderr and exit status 2, never a
traceback, never silently accepted; commands that only read never create a catalog.

Most cases run the ``cachelayer`` group in-process (click's runner, the same code path as
the script; an uncaught exception would show up as ``result.exception``); a sample runs
the installed script as a subprocess to check the real stderr. Catalog cases run on SQLite
and PostgreSQL (the ``catalog_url`` fixture).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import run_cli
from test_config import BAD_SETTINGS, bad_env

from cachelayer.catalog.db import make_engine, upgrade
from cachelayer.cli import main
from cachelayer.testing.simulator import File

_CLEARED = ("CACHELAYER_", "REPLICATE_", "AWS_")


def _cursor(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.fixture
def invoke(monkeypatch) -> Iterator[Any]:
    """``invoke(env, *args, stdin=None)``: run the group in-process with exactly ``env`` as
    the cachelayer/Replicate/AWS environment; restores the logger the group reconfigures."""
    for key in list(os.environ):
        if key.startswith(_CLEARED):
            monkeypatch.delenv(key)
    logger = logging.getLogger("cachelayer")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    runner = CliRunner()

    def run(env: dict[str, str], *args: str, stdin: bytes | str | None = None) -> Any:
        return runner.invoke(main, list(args), input=stdin, env={**env, "NO_COLOR": "1"})

    yield run
    logger.handlers[:], logger.level, logger.propagate = saved


def _one_line_error(result: Any, code: int = 2) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cachelayer: error: "), result.stderr
    return str(lines[0])


@pytest.mark.parametrize(("var", "value"), BAD_SETTINGS)
def test_every_bad_setting_is_one_line_and_exit_2(invoke, tmp_path, var, value):
    env = bad_env(tmp_path, var, value)
    assert var in _one_line_error(invoke(env, "ls"))
    assert not (tmp_path / "catalog.db").exists()


@pytest.fixture
def catalog_env(catalog_url, tmp_path) -> dict[str, str]:
    engine = make_engine(catalog_url)
    upgrade(engine)
    engine.dispose()
    return {
        "CACHELAYER_DATABASE_URL": catalog_url,
        "CACHELAYER_STORAGE_URL": (tmp_path / "objects").as_uri(),
        "CACHELAYER_HOME": str(tmp_path / "home"),
    }


#: (arguments, exit status, text the one-line error must contain); ``{tmp}`` is tmp_path.
BAD_ARGUMENTS = [
    (("export", "-o", "{tmp}/missing-dir/files.jsonl"), 2, "does not exist"),
    (("export", "-o", "{tmp}"), 2, "is a directory"),
    (("db", "upgrade", "--revision", "9999"), 2, "9999"),
    (("ls", "--since", "99999-01-01"), 2, "--since"),
    (("ls", "--since", "0001-01-01T00:00+01:00"), 2, "out of range"),
    (("ls", "--until", "9999-12-31T23:59-01:00"), 2, "out of range"),
    (("ls", "--since", "99999999w"), 2, "out of range"),
    (("stats", "--since", "9" * 400 + "h"), 2, "out of range"),
    (("export", "--until", "99999-01-01"), 2, "--until"),
    (("verify", "--since", "99999999w"), 2, "out of range"),
    (("backfill", "--until", "99999999w"), 2, "out of range"),
    (("ls", "--cursor", "zzz"), 2, "invalid cursor"),
    (("ls", "--cursor", _cursor([None, 2**70])), 2, "invalid cursor"),
    (("ls", "--cursor", _cursor(["2026-01-01T00:00:00Z", 2**64])), 2, "invalid cursor"),
    (("ls", "--cursor", _cursor([None, -(2**70)])), 2, "invalid cursor"),
    (("ls", "--cursor", _cursor([None, 1.5])), 2, "invalid cursor"),
    (("ls", "--cursor", _cursor(["0001-01-01T00:00:00+01:00", 1])), 2, "invalid cursor"),
    (("ls", "--cursor", _cursor(["99999-01-01T00:00:00Z", 1])), 2, "invalid cursor"),
    (("ls", "--cursor", base64.urlsafe_b64encode(b"[" * 20000).decode()), 2, "invalid cursor"),
    (("ls", "--cursor", "a\x01b"), 2, "invalid cursor"),
    (("ls", "--limit", "0"), 2, "--limit"),
    (("verify", "--workers", "0"), 2, "--workers"),
    (("demo", "--url-ttl", "nan"), 2, "--url-ttl"),
    (("demo", "--url-ttl", "-1"), 2, "--url-ttl"),
    (("demo", "--images", "0"), 2, "--images"),
    (("show", "no-such-prediction"), 1, "not in the catalog"),
]


@pytest.mark.parametrize(("args", "code", "needle"), BAD_ARGUMENTS)
def test_bad_arguments_are_one_line(invoke, catalog_env, tmp_path, args, code, needle):
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    assert needle in _one_line_error(invoke(catalog_env, *args), code)
    assert list(tmp_path.glob("*.jsonl")) == []


@pytest.mark.parametrize(
    "stdin",
    [b"https://replicate.delivery/a\x00b.png\n", b"https://replicate.delivery/\xff\xfe.png\n"],
    ids=["nul", "not-utf8"],
)
def test_resolve_answers_unreadable_urls_as_unknown(invoke, catalog_env, stdin):
    result = invoke(catalog_env, "resolve", "-", "--format", "jsonl", stdin=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and "1 of 1 URLs unknown" in result.stderr
    assert json.loads(result.stdout)["durable_url"] is None


READ_ONLY = [
    ("ls",),
    ("show", "p1"),
    ("resolve", "https://replicate.delivery/x.png"),
    ("stats",),
    ("export",),
    ("verify",),
    ("db", "current"),
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[a[-1] if a[0] == "db" else a[0] for a in READ_ONLY])
def test_read_only_commands_refuse_a_catalog_that_does_not_exist(invoke, tmp_path, args):
    typo = tmp_path / "catalgo.db"
    env = {
        "CACHELAYER_DATABASE_URL": f"sqlite:///{typo}",
        "CACHELAYER_STORAGE_URL": (tmp_path / "objects").as_uri(),
    }
    line = _one_line_error(invoke(env, *args))
    assert f"no catalog at {typo}" in line
    assert not typo.exists()
    # the flag form too, and the default catalog under CACHELAYER_HOME
    flag = ["--database-url", f"sqlite:///{typo}"]
    assert "no catalog" in _one_line_error(invoke({}, *args, *flag))
    home = {"CACHELAYER_HOME": str(tmp_path / "fresh-home")}
    assert "no catalog" in _one_line_error(invoke(home, *args))
    assert not typo.exists() and not (tmp_path / "fresh-home" / "catalog.db").exists()


def test_the_script_prints_one_line_for_each_mistake(tmp_path):
    """A sample of the above through the installed script: real stderr, no traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED)}
    good = bad_env(tmp_path, "CACHELAYER_HOME", str(tmp_path / "home"))
    assert run_cli({**base, **good}, "db", "upgrade").returncode == 0
    notdb = tmp_path / "afile"
    calls = {
        "export into a missing dir": ({}, ("export", "-o", str(tmp_path / "nope" / "x.csv"))),
        "missing CA bundle": ({"CACHELAYER_CA_BUNDLE": str(tmp_path / "ca.pem")}, ("ls",)),
        "home is a file": (
            {"CACHELAYER_HOME": str(notdb), "CACHELAYER_DATABASE_URL": "", "CACHELAYER_STORAGE_URL": ""},
            ("ls",),
        ),
        "not a SQLite file": ({"CACHELAYER_DATABASE_URL": f"sqlite:///{notdb}"}, ("stats",)),
        "unknown revision": ({}, ("db", "upgrade", "--revision", "9999")),
        "since out of range": ({}, ("ls", "--since", "0001-01-01T00:00+01:00")),
        "garbage cursor": ({}, ("ls", "--cursor", _cursor([None, 2**70]))),
        "lease nan": ({"CACHELAYER_LEASE_SECONDS": "nan"}, ("ls",)),
        "presign ttl": ({"CACHELAYER_PRESIGN_TTL": "604801"}, ("ls",)),
        "mistyped catalog": ({"CACHELAYER_DATABASE_URL": f"sqlite:///{tmp_path}/typo.db"}, ("ls",)),
    }
    with ThreadPoolExecutor(5) as pool:
        futures = {
            name: pool.submit(run_cli, {**base, **good, **extra}, *args, timeout=60)
            for name, (extra, args) in calls.items()
        }
        results = {name: f.result() for name, f in futures.items()}
    for name, done in results.items():
        assert done.returncode == 2, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cachelayer: error: "), (name, done.stderr)
    assert not (tmp_path / "typo.db").exists()


def test_mistyped_aws_profile_and_bad_presign_ttl_stop_before_any_copy(
    cli_env, replicate_simulator, s3_server, s3_bucket
):
    """With a stored file in S3, `ls` in presigned mode must sign its URL, so a mistyped
    AWS_PROFILE is reported (one line, exit 2; in `s3` mode `ls` renders `s3://` URLs without
    building an S3 client, issue 19); `persist` with it, or with a presign TTL over S3's
    7-day limit, exits 2 before downloading anything."""
    first = replicate_simulator.seed_prediction("acme/x", input={}, output=[File(b"one", filename="a.png")])
    assert run_cli(cli_env, "persist", first).returncode == 0
    second = replicate_simulator.seed_prediction("acme/x", input={}, output=[File(b"two", filename="b.png")])
    s3 = s3_server.client()

    def copies() -> int:  # output copies, not the predictions' manifests
        listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        return sum("/_manifests/" not in o["Key"] for o in listed)

    objects_before = copies()
    calls = {
        "ls_profile": ({"AWS_PROFILE": "no-such-profile-x", "CACHELAYER_URL_MODE": "presigned"}, ("ls",)),
        "persist_profile": ({"AWS_PROFILE": "no-such-profile-x"}, ("persist", second)),
        "persist_ttl": (
            {"CACHELAYER_URL_MODE": "presigned", "CACHELAYER_PRESIGN_TTL": "604801"},
            ("persist", second),
        ),
    }
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {k: pool.submit(run_cli, {**cli_env, **e}, *a, timeout=60) for k, (e, a) in calls.items()}
        results = {k: f.result() for k, f in futures.items()}
    for name, done in results.items():
        assert done.returncode == 2, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, (name, done.stderr)
    assert "no-such-profile-x" in results["ls_profile"].stderr
    assert "CACHELAYER_PRESIGN_TTL" in results["persist_ttl"].stderr
    assert replicate_simulator.download_count(replicate_simulator.delivery_urls(second)[0]) == 0
    assert copies() == objects_before == 1


def test_export_to_a_file_is_atomic_and_leaves_no_temporary(invoke, catalog_env, tmp_path):
    target = tmp_path / "out" / "files.csv"
    target.parent.mkdir()
    result = invoke(catalog_env, "export", "--format", "csv", "-o", str(target))
    assert result.exit_code == 0 and target.read_text().startswith("id,")
    assert sorted(p.name for p in Path(target.parent).iterdir()) == ["files.csv"]
