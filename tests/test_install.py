"""A lighter install (issue 19, item 4): ``pip install cachelayer`` is the library and the CLI;
``cachelayer[serve]`` adds the server stack, ``cachelayer[demo]`` the simulator's (werkzeug,
cheroot); cryptography (the simulator's HTTPS) only comes with ``dev``.

Each check runs the CLI in a fresh interpreter in which the extras' modules cannot be
imported (a meta-path finder raises ``ModuleNotFoundError`` for them, as Python does when a
distribution is not installed), so it tests what an install without them does. The installed
sizes are measured by ``bench/install_size.py`` (fresh virtual environments; minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachelayer.lazy import INSTALL_HINTS

ROOT = Path(__file__).resolve().parents[1]
SERVE = ("starlette", "uvicorn", "httptools", "uvloop", "prometheus_client")
DEMO = ("werkzeug", "cheroot")

WRAPPER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from cachelayer.cli import main
main(sys.argv[2:], prog_name="cachelayer")
"""


def run_without(
    blocked: tuple[str, ...], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def test_core_dependencies_hold_no_extra():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for dist in (
        "starlette",
        "uvicorn",
        "httptools",
        "uvloop",
        "prometheus",
        "werkzeug",
        "cheroot",
        "cryptography",
    ):
        assert dist not in core, dist
    extras = project["optional-dependencies"]
    assert "cachelayer[serve,demo]" in extras["dev"] and any("cryptography" in d for d in extras["dev"])
    assert set(INSTALL_HINTS) == {*SERVE, *DEMO, "cryptography"}


def test_serve_without_its_extra_is_one_line_naming_it(tmp_path):
    done = run_without(SERVE + DEMO, "serve", env={"CACHELAYER_HOME": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "pip install 'cachelayer[serve]'" in done.stderr


def test_demo_without_its_extra_is_one_line_naming_it():
    done = run_without(DEMO, "demo", "--url-ttl", "0.5", "--images", "1")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "pip install 'cachelayer[demo]'" in done.stderr


def test_the_demo_runs_on_the_core_and_the_demo_extra(tmp_path):
    """No server stack, no cryptography: the demo runs (its simulator over plain HTTP)."""
    done = run_without(SERVE + ("cryptography",), "demo", "--url-ttl", "1", "--images", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(HTTP)" in done.stdout and "demo ok" in done.stdout


def test_library_and_queries_run_on_the_core(tmp_path):
    env = {
        "CACHELAYER_DATABASE_URL": f"sqlite:///{tmp_path}/c.db",
        "CACHELAYER_STORAGE_URL": (tmp_path / "objects").as_uri(),
    }
    assert run_without(SERVE + DEMO + ("cryptography",), "db", "upgrade", env=env).returncode == 0
    for args in (("ls",), ("stats",), ("--help",), ("serve", "--help")):
        done = run_without(SERVE + DEMO + ("cryptography",), *args, env=env)
        assert done.returncode == 0, (args, done.stderr)


def test_ci_installs_the_main_job_as_the_readme_says():
    import re

    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    main_job = re.search(r"\.venv/bin/pip install (\S+) && \.venv/bin/cachelayer demo", readme)
    assert main_job is not None
    assert f"python -m pip install --quiet {main_job.group(1)}\ncachelayer --version\ncachelayer demo" in ci
