"""Loading a ``bench/`` script as a module, for the small versions of the benches in the suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def load_bench(script: str) -> ModuleType:
    """``bench/<script>.py`` imported as module ``bench_<script>`` (registered in
    ``sys.modules``: dataclasses look their module up by name)."""
    spec = importlib.util.spec_from_file_location(f"bench_{script}", BENCH_DIR / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
