"""Find the files inside a prediction's output and rebuild the output around them.

An output is any JSON value (Replicate: "output is any JSON: a string, a list, an object,
nested"). A *file* is a leaf that is a URL string (``scheme://...`` with no whitespace),
a ``data:`` URI, or an object with a ``url`` attribute such as ``replicate.helpers.FileOutput``
(replicate 1.x wraps every ``https:``/``data:`` string in one). Each file is addressed by
its *output path*, an RFC 6901 JSON Pointer into the output (``""`` for a bare string,
``/0``, ``/images/1``). Everything else (text, numbers, null, booleans) is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://\S+$")


@dataclass(frozen=True)
class FileRef:
    """One output file: its JSON Pointer ``path`` and its source ``url`` (URL or data: URI)."""

    path: str
    url: str


def escape(token: str) -> str:
    """Escape one reference token per RFC 6901 (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    """Undo :func:`escape`."""
    return token.replace("~1", "/").replace("~0", "~")


def file_url(value: Any) -> str | None:
    """The source URL if ``value`` is a file leaf, else ``None``.

    Accepts ``FileOutput``-like objects (an ``url`` attribute that is a string) and strings
    that are ``data:`` URIs or ``scheme://...`` URLs without whitespace.
    """
    if isinstance(value, str):
        if value.startswith("data:") or _URL_RE.match(value):
            return value
        return None
    url = getattr(value, "url", None)
    if isinstance(url, str) and not isinstance(value, (Mapping, list, tuple)):
        return url
    return None


def materialize(output: Any) -> Any:
    """Turn iterator outputs (generators from ``replicate.run`` on iterator models) into lists,
    recursively, so the output can be walked twice and stored as JSON."""
    if isinstance(output, Mapping):
        return {k: materialize(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return [materialize(v) for v in output]
    if isinstance(output, (str, bytes, int, float, bool)) or output is None:
        return output
    if file_url(output) is not None:
        return output
    if isinstance(output, Iterator):
        return [materialize(v) for v in output]
    return output


def find_files(output: Any) -> list[FileRef]:
    """Every file in ``output``, depth first, in document order. Shape: ``[FileRef, ...]``."""
    found: list[FileRef] = []

    def visit(node: Any, path: str) -> None:
        url = file_url(node)
        if url is not None:
            found.append(FileRef(path, url))
        elif isinstance(node, Mapping):
            for key, value in node.items():
                visit(value, f"{path}/{escape(str(key))}")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f"{path}/{i}")

    visit(materialize(output), "")
    return found


def replace_files(output: Any, replace: Callable[[str, str], Any]) -> Any:
    """A copy of ``output`` with each file replaced by ``replace(path, url)``."""

    def visit(node: Any, path: str) -> Any:
        url = file_url(node)
        if url is not None:
            return replace(path, url)
        if isinstance(node, Mapping):
            return {k: visit(v, f"{path}/{escape(str(k))}") for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [visit(v, f"{path}/{i}") for i, v in enumerate(node)]
        return node

    return visit(materialize(output), "")


def lookup(output: Any, path: str) -> Any:
    """The value at JSON Pointer ``path`` in ``output``; raises ``KeyError`` if absent."""
    node = materialize(output)
    if path == "":
        return node
    if not path.startswith("/"):
        raise KeyError(path)
    for raw in path[1:].split("/"):
        token = unescape(raw)
        if isinstance(node, Mapping):
            if token not in node:
                raise KeyError(path)
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node):
                raise KeyError(path)
            node = node[int(token)]
        else:
            raise KeyError(path)
    return node
