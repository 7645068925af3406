"""Start-up (issue 11): every ``cachelayer`` command imports only what it uses.

Each check runs a fresh interpreter and reads ``sys.modules``: ``import cachelayer`` and
the CLI's entry (what ``cachelayer --version`` pays) load no SQLAlchemy, Replicate client,
boto3 or server stack; no command but ``serve`` loads the server stack (Starlette, uvicorn,
prometheus_client, anyio). What is imported is asserted, never how long it takes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

import cachelayer
from cachelayer.cli.app import COMMANDS, main

#: Loaded by ``cachelayer serve`` (and ``AsyncCacheLayer``) only.
SERVE_ONLY = ("starlette", "uvicorn", "prometheus_client", "anyio", "standardwebhooks", "uvloop", "httptools")
SERVE_ONLY_OURS = (
    "cachelayer.server.app",
    "cachelayer.server.runner",
    "cachelayer.aio",
    "cachelayer.webhooks",
)
#: Loaded when a command opens a catalog, a store or Replicate's client, never before.
HEAVY = ("sqlalchemy", "alembic", "replicate", "httpx", "requests", "boto3", "botocore", *SERVE_ONLY)


def loaded_after(code: str) -> list[str]:
    """Top-level packages (and cachelayer modules) in ``sys.modules`` after ``code`` runs in
    a new interpreter."""
    script = (
        "import sys, json\n"
        f"{code}\n"
        "mods = {m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if m.startswith('cachelayer')}\n"
        "print(json.dumps(sorted(mods)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout.splitlines()[-1]))


def test_the_cli_entry_loads_no_heavy_package():
    loaded = loaded_after("import cachelayer.cli")
    assert [m for m in loaded if m in HEAVY] == []
    assert [m for m in loaded if m.startswith("cachelayer.cli.") and m != "cachelayer.cli.app"] == []


def test_import_cachelayer_loads_no_heavy_package():
    assert [m for m in loaded_after("import cachelayer") if m in HEAVY] == []


def test_commands_other_than_serve_load_no_server_stack():
    """Every command's module, and the library it opens (``CacheLayer``), without the server."""
    names = [n for n in COMMANDS if n != "serve"]
    loaded = loaded_after(
        "import click\n"
        "from cachelayer.cli.app import main\n"
        "ctx = click.Context(main)\n"
        f"assert all(main.get_command(ctx, n) is not None for n in {names!r})\n"
        "import cachelayer.layer"
    )
    assert [m for m in loaded if m in SERVE_ONLY or m in SERVE_ONLY_OURS] == []


def test_serve_command_loads_the_server_stack_only_when_it_runs():
    loaded = loaded_after("import cachelayer.server.command")
    assert [m for m in loaded if m in SERVE_ONLY or m in SERVE_ONLY_OURS] == []


def test_every_command_in_the_table_is_that_command():
    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert main.list_commands(ctx) == sorted(COMMANDS)
    assert main.get_command(ctx, "no-such-command") is None


def test_every_public_name_resolves():
    assert set(cachelayer._EXPORTS) == set(cachelayer.__all__) - {"__version__"}
    for name in cachelayer.__all__:
        assert getattr(cachelayer, name) is not None
    from cachelayer import CacheLayer
    from cachelayer.layer import CacheLayer as Same

    assert CacheLayer is Same
    assert set(cachelayer.__all__) <= set(dir(cachelayer))


def test_a_command_freezes_what_its_imports_loaded_and_version_does_not():
    """Once a command's module is imported, ``gc.freeze()`` moves what exists into the
    permanent generation: the interpreter's exit then skips it (it took 0.24 s of a
    backfill's 0.78 s of imports to tear down on this machine; docs/BENCHMARKS.md)."""
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('FROZEN', gc.get_freeze_count(), file=sys.stderr))\n"
        "from cachelayer.cli import main\n"
        "sys.argv = ['cachelayer', *sys.argv[1:]]\n"
        "main()\n"
    )

    def frozen(*args: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return int(out.stderr.split("FROZEN")[-1].split()[0])

    assert frozen("--version") == 0
    assert frozen("backfill", "--help") > 10_000  # SQLAlchemy's and click's objects, at least


def test_a_sqlite_catalog_never_loads_postgresqls_dialect(tmp_path):
    """Issue 11 (session 6): opening, migrating and writing a SQLite catalog (a prediction
    recorded, its file queued, claimed and read back) imports no part of SQLAlchemy's
    PostgreSQL dialect, which the models' ``postgresql_using`` index keyword used to load
    as the catalog was imported (50 ms of every command's start-up)."""
    script = (
        "import sys\n"
        "from cachelayer import CacheLayer\n"
        "from cachelayer.prediction import Prediction\n"
        f"layer = CacheLayer(database_url='sqlite:///{tmp_path}/c.db', storage_url='file://{tmp_path}/objects',"
        " auto_migrate=True)\n"
        "layer.enqueue(Prediction.from_json({'id': 'p1', 'status': 'succeeded', 'input': {'a': 1},"
        " 'output': ['https://replicate.delivery/xezq/a.png'], 'created_at': '2026-01-01T00:00:00Z'}))\n"
        "assert layer.catalog.queue.claim_next('me', 60) is not None\n"
        "assert [f.output_path for f in layer.catalog.files_of('p1')] == ['/0']\n"
        "print(sorted(m for m in sys.modules if 'postgresql' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"


#: What the catalog queries never load (issue 19 item 5): the Replicate client, the HTTP
#: clients and the S3 SDK. Rendering presigned or gateway URLs is the exception.
QUERY_FORBIDDEN = ("replicate", "httpx", "requests", "urllib3", "boto3", "botocore", "certifi")
QUERY_COMMANDS = ("ls", "show", "resolve", "stats", "export")


def _small_catalog(tmp_path, storage_url: str) -> tuple[str, str]:
    """A SQLite catalog with one stored file; returns (database URL, its source URL)."""
    from cachelayer import CacheLayer
    from cachelayer.prediction import Prediction

    db = f"sqlite:///{tmp_path}/c.db"
    source = "https://replicate.delivery/xezq/a.png"
    with CacheLayer(database_url=db, storage_url=storage_url, auto_migrate=True) as layer:
        (rec,) = layer.enqueue(
            Prediction.from_json(
                {
                    "id": "p1",
                    "status": "succeeded",
                    "model": "o/m",
                    "input": {"a": 1},
                    "output": [source],
                    "created_at": "2026-01-01T00:00:00Z",
                }
            )
        )
        claimed = layer.catalog.queue.claim(rec.id, "me", 60)
        assert claimed is not None
        layer.catalog.queue.mark_stored(
            rec.id, "me", size=3, sha256="0" * 64, content_type="image/png", source_age_seconds=1.0
        )
    return db, source


def _run_cli(args: list[str], env: dict[str, str], *, full: bool = False) -> tuple[int, str, list[str]]:
    """Run ``cachelayer ARGS`` in a fresh interpreter; (exit status, stdout, modules loaded:
    top-level packages, or every module with ``full``)."""
    probe = (
        "import json, sys\n"
        "from cachelayer.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], prog_name='cachelayer')\n"
        "    code = 0\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "sys.stdout.flush()\n"
        f"mods = sorted({'set(sys.modules)' if full else '{m.split(chr(46))[0] for m in sys.modules}'})\n"
        "print('\\nMODULES', json.dumps([code, mods]))\n"
    )
    import os

    out = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    text, _, tail = out.stdout.rpartition("\nMODULES ")
    code, mods = json.loads(tail)
    return code, text, mods


@pytest.mark.parametrize(
    ("storage", "mode"), [("file", "s3"), ("s3://bucket/prefix", "s3"), ("s3://bucket", "public")]
)
def test_catalog_queries_load_no_replicate_client_http_client_or_s3_sdk(tmp_path, storage, mode):
    """Issue 19 (item 5): ``ls``, ``show``, ``resolve``, ``stats`` and ``export`` read the
    catalog and render URLs from recorded keys; none loads the Replicate client, requests,
    httpx or boto3, on the local store or an S3 store (``s3`` and ``public`` URL modes)."""
    storage_url = (tmp_path / "objects").as_uri() if storage == "file" else storage
    db, source = _small_catalog(tmp_path, (tmp_path / "objects").as_uri())
    env = {
        "CACHELAYER_DATABASE_URL": db,
        "CACHELAYER_STORAGE_URL": storage_url,
        "CACHELAYER_URL_MODE": mode,
        "CACHELAYER_PUBLIC_BASE_URL": "https://cdn.example.com" if mode == "public" else "",
        "REPLICATE_API_TOKEN": "r8_x",
    }
    runs = {
        "ls": ["ls"],
        "show": ["show", "p1"],
        "resolve": ["resolve", source],
        "stats": ["stats"],
        "export": ["export"],
    }
    assert set(runs) == set(QUERY_COMMANDS)
    for name, args in runs.items():
        code, text, mods = _run_cli(args, env)
        assert code == 0, (name, text)
        assert "a.png" in text or name == "stats", (name, text)
        assert [m for m in mods if m in QUERY_FORBIDDEN] == [], name


#: Never loaded by any command (issue 19/21 item 5): the catalog is Core tables and Core
#: statements; the ORM was a third of SQLAlchemy's import and the classes' mapping more.
NEVER = ("sqlalchemy.orm", "sqlalchemy.ext.declarative")


def test_catalog_queries_load_no_orm_and_no_rich_console_off_a_terminal(tmp_path):
    """``ls``, ``show``, ``resolve``, ``stats``, ``export`` on a SQLite catalog, stdout a
    pipe: no ``sqlalchemy.orm`` (nor any ORM piece), no rich console (drawn on a terminal
    only), no PostgreSQL dialect, no Alembic (the catalog exists, nothing to migrate)."""
    db, source = _small_catalog(tmp_path, (tmp_path / "objects").as_uri())
    env = {"CACHELAYER_DATABASE_URL": db, "CACHELAYER_STORAGE_URL": (tmp_path / "objects").as_uri()}
    runs = {"ls": ["ls"], "show": ["show", "p1"], "resolve": ["resolve", source], "stats": ["stats"]}
    runs["export"] = ["export"]
    assert set(runs) == set(QUERY_COMMANDS)
    for name, args in runs.items():
        code, text, mods = _run_cli(args, env, full=True)
        assert code == 0, (name, text)
        assert "sqlalchemy.sql" in mods, name  # the probe sees submodules
        loaded = [m for m in mods if m.startswith(NEVER) or m.startswith(("rich.console", "alembic"))]
        assert loaded == [], name
        assert [m for m in mods if "postgresql" in m] == [], name


def test_importing_a_catalog_submodule_loads_no_sqlalchemy():
    """``cachelayer.catalog`` exports its names on first use: the records (what the copy
    path's modules import at load time) come without SQLAlchemy, ``Catalog`` with it."""
    loaded = loaded_after(
        "import cachelayer.catalog.records, cachelayer.persist, cachelayer.copier, cachelayer.scan,"
        " cachelayer.workers, cachelayer.leases, cachelayer.cli.copy, cachelayer.cli.backfill"
    )
    assert "sqlalchemy" not in loaded
    assert "sqlalchemy" in loaded_after("from cachelayer.catalog import Catalog")


_FIRST_CONNECT_PROBE = (
    "import json, socket, sys\n"
    "seen = []\n"
    "connect = socket.socket.connect\n"
    "def probe(self, address):\n"
    "    if not seen and isinstance(address, tuple):\n"
    "        seen.append([list(address[:2]), sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy')])\n"
    "    return connect(self, address)\n"
    "socket.socket.connect = probe\n"
    "from cachelayer.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:], prog_name='cachelayer')\n"
    "    code = 0\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "sys.stdout.flush()\n"
    "print('\\nPROBE', json.dumps([code, seen, 'sqlalchemy' in sys.modules]))\n"
)


@pytest.mark.parametrize("command", ["persist", "run", "backfill"])
def test_copy_commands_send_their_first_request_before_loading_sqlalchemy(
    command, cli_env, replicate_simulator
):
    """Issue 21 (item 5): the copy commands' first request on the network (``persist`` and
    ``run``: the bucket check; ``backfill``: the first page of the listing) leaves before
    SQLAlchemy and the catalog are imported and opened, so the import overlaps nothing
    and delays nothing the user waits on first. The command still opens the catalog."""
    from cachelayer.testing.simulator import File

    sim = replicate_simulator
    sim.add_model("acme/startup", outputs=[File(b"png bytes", filename="o.png")])
    pid = sim.seed_prediction("acme/startup", {"a": 1}, [File(b"png bytes", filename="o.png")])
    args = {
        "persist": ["persist", pid],
        "run": ["run", "acme/startup", "-i", "a=1"],
        "backfill": ["backfill", "--limit", "1"],
    }[command]
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_CONNECT_PROBE, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=cli_env,
    )
    text, _, tail = out.stdout.rpartition("\nPROBE ")
    assert tail, out.stderr
    code, seen, opened_catalog = json.loads(tail)
    assert code == 0, (text, out.stderr)
    assert seen, "no TCP connection"
    (host, port), loaded = seen[0]
    servers = {cli_env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1], sim.host_port.rsplit(":", 1)[1]}
    assert str(port) in servers
    assert loaded == []
    assert opened_catalog
