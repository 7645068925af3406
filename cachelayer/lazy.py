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
