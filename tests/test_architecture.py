"""Guards on the code's shape (issue 7): no import cycle among the library's modules
(function-local and ``TYPE_CHECKING`` imports count), no library module over 600 lines, and
the dependency rule of docs/ARCHITECTURE.md (lower layers never import upper ones)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "cachelayer"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every cachelayer module ``name`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            # the longest known module that the target names
            while t and t not in known:
                t = t.rpartition(".")[0]
            # A module's own ancestor packages are initialised before it by Python itself
            # (``from cachelayer import expiry`` inside the package is not an edge back).
            if t and t != name and t.startswith("cachelayer") and not name.startswith(t + "."):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if color.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if color.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = 2
        return None

    for n in sorted(g):
        if color.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycle_among_library_modules():
    g = graph()
    assert find_cycle(g) is None, " -> ".join(find_cycle(g) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_library_module_over_600_lines(name):
    lines = modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


#: Lower layers must not import these (docs/ARCHITECTURE.md).
UPPER = {"cachelayer.cli", "cachelayer.server", "cachelayer.layer", "cachelayer.aio"}
LOWER_PREFIXES = (
    "cachelayer.catalog",
    "cachelayer.storage",
    "cachelayer.fetch",
    "cachelayer.netguard",
    "cachelayer.urls",
    "cachelayer.replicate_api",
    "cachelayer.prediction",
    "cachelayer.outputs",
    "cachelayer.keys",
    "cachelayer.expiry",
    "cachelayer.errors",
    "cachelayer.config",
    "cachelayer.persist",
    "cachelayer.copier",
    "cachelayer.leases",
    "cachelayer.workers",
    "cachelayer.scan",
    "cachelayer.sweep",
    "cachelayer.verify",
)


def test_lower_layers_never_import_the_facade_cli_or_server():
    g = graph()
    bad = {
        (m, t)
        for m, targets in g.items()
        if m.startswith(LOWER_PREFIXES)
        for t in targets
        if any(t == u or t.startswith(u + ".") for u in UPPER)
    }
    assert bad == set()


def test_library_never_imports_the_test_kit():
    g = graph()
    bad = {
        (m, t)
        for m, targets in g.items()
        if not m.startswith(("cachelayer.testing", "cachelayer.cli"))
        for t in targets
        if t.startswith("cachelayer.testing")
    }
    assert bad == set()


#: The concrete stores: only ``open_store`` (``storage/__init__.py``) and the test kit name them.
CONCRETE_STORES = ("cachelayer.storage.s3", "cachelayer.storage.local")


def test_only_storage_imports_the_concrete_stores():
    """Issue 20: what a store can do is asked of it (``can_presign``, ``presign``,
    ``object_uri``), never read from its class: the server, the facade and the use cases
    import no concrete store."""
    g = graph()
    bad = {
        (m, t)
        for m, targets in g.items()
        if not m.startswith(("cachelayer.storage", "cachelayer.testing"))
        for t in targets
        if t.startswith(CONCRETE_STORES)
    }
    assert bad == set()
    assert not any(
        t.startswith(CONCRETE_STORES) for m, ts in g.items() if m.startswith("cachelayer.server") for t in ts
    )
