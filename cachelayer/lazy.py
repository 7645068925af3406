"""Public names imported on first use (PEP 562): a package's ``__getattr__`` that imports
the module a name lives in only when the name is asked for, so ``import cachelayer`` (and
the CLI's entry) stay light. Used by :mod:`cachelayer` and :mod:`cachelayer.server`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps a public name to the module
    that defines it; the first access imports that module and stores the value in
    ``namespace`` (the package's ``globals()``), so later accesses are plain attributes.
    Raises ``AttributeError`` for names not in ``exports``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__


#: Top-level modules that come with an extra of ``pyproject.toml`` -> how to install them.
#: ``cryptography`` is no extra of its own: only the simulator over HTTPS needs it (the
#: tests, through ``dev``).
INSTALL_HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("starlette", "uvicorn", "httptools", "uvloop", "prometheus_client"),
        "pip install 'cachelayer[serve]'",
    ),
    **dict.fromkeys(("werkzeug", "cheroot"), "pip install 'cachelayer[demo]'"),
    "cryptography": "pip install cryptography",
}


def install_hint(exc: ModuleNotFoundError) -> str | None:
    """One line saying what to install when ``exc`` is the import of a module an extra
    provides (``"starlette is not installed: pip install 'cachelayer[serve]'"``); ``None``
    for any other missing module (a bug or a broken install, to be raised as it is)."""
    top = (exc.name or "").split(".")[0]
    hint = INSTALL_HINTS.get(top)
    return None if hint is None else f"{top} is not installed: {hint}"
