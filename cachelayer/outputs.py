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

from cachelayer.errors import MalformedOutputError

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
    """The source URL if ``value`` is a file leaf, else ``None``; never raises.

    Accepts ``FileOutput``-like objects (an ``url`` attribute that is a string) and strings
    that are ``data:`` URIs or ``scheme://...`` URLs without whitespace.
    """
    if isinstance(value, str):
        if value.startswith("data:") or _URL_RE.match(value):
            return value
        return None
    if isinstance(value, (Mapping, list, tuple, bytes, bytearray, int, float)) or value is None:
        return None
    try:
        url = getattr(value, "url", None)
    except Exception:  # a property that raises is not a file
        return None
    return url if isinstance(url, str) else None


_EXIT = object()  # stack marker: the container with this id is finished


def _rebuild(output: Any, on_file: Callable[[str, str, Any], Any]) -> Any:
    """Copy ``output`` depth first in document order: mappings become ``dict``, lists,
    tuples and iterators become ``list``, each file leaf becomes ``on_file(path, url, leaf)``.
    Iterative (no recursion limit); raises :class:`MalformedOutputError` on a cycle."""
    root: list[Any] = [None]
    stack: list[tuple[Any, str, Any, Any]] = [(output, "", root, 0)]
    active: dict[int, Any] = {}  # containers on the current path (kept alive: ids stay unique)
    while stack:
        node, path, parent, slot = stack.pop()
        if node is _EXIT:
            active.pop(slot, None)
            continue
        url = file_url(node)
        if url is not None:
            parent[slot] = on_file(path, url, node)
            continue
        if isinstance(node, (str, bytes, bytearray, int, float)) or node is None:
            parent[slot] = node
            continue
        if isinstance(node, Mapping):
            items = [(k, v) for k, v in node.items()]
        elif isinstance(node, (list, tuple, Iterator)):
            items = list(enumerate(node))
        else:
            parent[slot] = node
            continue
        if id(node) in active:
            raise MalformedOutputError(f"output contains a reference cycle at {path[:200]!r}")
        active[id(node)] = node
        new: Any = {k: None for k, _ in items} if isinstance(node, Mapping) else [None] * len(items)
        parent[slot] = new
        stack.append((_EXIT, "", None, id(node)))
        for key, value in reversed(items):
            token = escape(str(key)) if isinstance(node, Mapping) else str(key)
            stack.append((value, f"{path}/{token}", new, key))
    return root[0]


def materialize(output: Any) -> Any:
    """Turn iterator outputs (generators from ``replicate.run`` on iterator models) into lists,
    recursively, so the output can be walked twice and stored as JSON (mappings become
    ``dict``, tuples ``list``; file objects are kept). Raises :class:`MalformedOutputError`
    for a reference cycle."""
    return _rebuild(output, lambda _path, _url, leaf: leaf)


def find_files(output: Any) -> list[FileRef]:
    """Every file in ``output``, depth first, in document order. Shape: ``[FileRef, ...]``.
    Raises :class:`MalformedOutputError` for a reference cycle; any depth works."""
    found: list[FileRef] = []

    def record(path: str, url: str, leaf: Any) -> Any:
        found.append(FileRef(path, url))
        return leaf

    _rebuild(output, record)
    return found


def replace_files(output: Any, replace: Callable[[str, str], Any]) -> Any:
    """A copy of ``output`` with each file replaced by ``replace(path, url)`` (called in
    document order). Raises :class:`MalformedOutputError` for a reference cycle."""
    return _rebuild(output, lambda path, url, _leaf: replace(path, url))


def durable_output(output: Any, stored: Mapping[str, str], *, keep_sources: bool = True) -> Any:
    """The durable output: ``output`` with the file at each output path of ``stored``
    replaced by the URL or URI there; other files keep their source URL (what a caller of
    ``persist(on_expired="skip")`` gets back) or, with ``keep_sources=False``, become
    ``None`` (what the catalog records: a durable output never holds a URL that expires).
    ``FileOutput`` objects become plain strings. The one rule, wherever it is recorded or
    rendered."""
    return replace_files(output, lambda path, url: stored.get(path, url if keep_sources else None))


def lookup(output: Any, path: str) -> Any:
    """The value at JSON Pointer ``path`` in ``output``; raises ``KeyError`` if absent
    (also for a malformed pointer) and :class:`MalformedOutputError` for a cycle."""
    node = materialize(output)
    if path == "":
        return node
    if not isinstance(path, str) or not path.startswith("/"):
        raise KeyError(path)
    for raw in path[1:].split("/"):
        token = unescape(raw)
        if isinstance(node, Mapping):
            if token not in node:
                raise KeyError(path)
            node = node[token]
        elif isinstance(node, list):
            if not (token.isascii() and token.isdigit()) or int(token) >= len(node):
                raise KeyError(path)
            node = node[int(token)]
        else:
            raise KeyError(path)
    return node
