"""Deterministic object keys.

``{prefix}/{prediction_id}/{output path}-{filename}``, e.g. prediction ``gm3q...`` with
output ``["https://replicate.delivery/pbxt/abc/out-0.png"]`` under prefix ``replicate``
gives ``replicate/gm3q.../0-out-0.png``; a bare-string output uses ``output`` as the path
part, and ``/images/1`` becomes ``images.1``. The same prediction and output path always give
the same key, which makes persisting idempotent. Every part is sanitised: reference tokens
are percent-encoded (``/``, ``.``-only and non-ASCII cannot escape the prediction's folder),
filenames keep only ``[A-Za-z0-9._-]`` and never start with a dot, so a hostile filename such
as ``../../etc/passwd`` becomes ``etc_passwd``.
"""

from __future__ import annotations

import mimetypes
import re
from urllib.parse import quote

from cachelayer.fetch import filename_of
from cachelayer.outputs import unescape

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_FILENAME = 120


def safe_filename(name: str, content_type: str | None = None) -> str:
    """A filename safe as the last part of a key; falls back to ``file`` plus an extension
    guessed from ``content_type``."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _SAFE.sub("_", name).strip("._") or ""
    if not name:
        ext = mimetypes.guess_extension(content_type or "") or ""
        name = f"file{ext}"
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and len(ext) < 12:
            name = stem[: MAX_FILENAME - len(ext) - 1] + dot + ext
        else:
            name = name[:MAX_FILENAME]
    return name


def path_part(output_path: str) -> str:
    """The key part for a JSON Pointer: tokens percent-encoded (dots too) and joined
    with ``.``, so distinct paths never share a key."""
    if output_path == "":
        return "output"
    tokens = [unescape(t) for t in output_path[1:].split("/")]
    return ".".join(quote(t, safe="-_").replace(".", "%2E") or "_" for t in tokens)


def object_key(prefix: str, prediction_id: str, output_path: str, source_url: str) -> str:
    """The key of one output file (see the module docstring for the layout)."""
    content_type = None
    if source_url.startswith("data:"):
        content_type = source_url[5:].split(",", 1)[0].split(";", 1)[0]
    filename = safe_filename(filename_of(source_url), content_type)
    pid = quote(prediction_id, safe="") or "_"
    parts = [p for p in prefix.strip("/").split("/") if p] + [pid, f"{path_part(output_path)}-{filename}"]
    return "/".join(parts)
