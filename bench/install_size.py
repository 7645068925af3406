"""Installed size of cachelayer (issue 19, item 4): MiB that ``pip install`` adds to a fresh
virtual environment, for each install spec, minus an empty environment's ``site-packages``
(pip and setuptools). Each spec gets a new ``python -m venv``; ``du -sm`` reads the size.

    python bench/install_size.py                      # ".", ".[demo]", ".[serve]", ".[dev]"
    python bench/install_size.py --specs ".,.[demo]" --source /path/to/other/checkout

Takes minutes (every spec resolves and installs its dependencies; pip's cache helps).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def site_packages_mib(venv: Path) -> int:
    """``du -sm`` of the environment's ``site-packages`` (MiB, rounded up by du)."""
    version = sysconfig.get_python_version()
    out = subprocess.run(
        ["du", "-sm", str(venv / "lib" / f"python{version}" / "site-packages")],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[0])


def measure(spec: str, source: Path, work: Path) -> int:
    """MiB of ``site-packages`` after ``pip install SOURCE+EXTRAS`` in a fresh venv."""
    venv = work / f"venv-{abs(hash(spec))}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    target = str(source) + spec[1:] if spec.startswith(".") else spec
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", target], check=True)
    return site_packages_mib(venv)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--specs", default=".,.[demo],.[serve],.[dev]", help="comma-separated install specs")
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to install (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cachelayer-size-") as tmp:
        work = Path(tmp)
        empty = work / "venv-empty"
        subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True)
        base = site_packages_mib(empty)
        print(f"empty venv site-packages: {base} MiB (subtracted below)")
        print("| install | MiB added |\n|---|---|")
        for spec in args.specs.split(","):
            print(f"| `pip install '{spec}'` | {measure(spec, args.source, work) - base} |", flush=True)


if __name__ == "__main__":
    main()
