"""Deterministic object keys in an alphabet that needs no escaping.

``{prefix}/{prediction_id}/{output path}-{filename}``, e.g. prediction ``gm3q...`` with
output ``["https://replicate.delivery/pbxt/abc/out-0.png"]`` under prefix ``replicate``
gives ``replicate/gm3q.../0-out-0.png``; a bare-string output uses ``output`` as the path
part, and ``/images/1`` becomes ``images.1``. The same prediction and output path always give
the same key, which makes persisting idempotent.

**Alphabet.** Every segment cachelayer derives uses only :data:`KEY_ALPHABET`
(``[A-Za-z0-9._-]``) and never starts with ``.`` or ``-``, so a key is its own URL path:
``quote(key) == key``, public URLs hold it verbatim (no ``%2520`` behind a CDN that
re-encodes) and shells, ``rclone`` and file systems take it as is. (The storage prefix is
the user's and is used as given; keep it in the alphabet too.) The mapping, deterministic:

* prediction id: kept when it matches ``[A-Za-z0-9_][A-Za-z0-9_-]*`` without ``--`` (every
  Replicate id does); otherwise ``{sanitised}--{hash}``.
* output path (a JSON Pointer): ``output`` for the root; reference tokens joined with ``.``
  when every token matches ``[A-Za-z0-9_]+`` (``images.1``); otherwise, or when the last
  segment would be too long, ``{sanitised}--{hash}``.
* filename: the source URL's last path segment, percent-decoded (``my%20file.png`` ->
  ``my file.png``), then every run of characters outside the alphabet -> ``_``
  (``my_file.png``), leading ``.``/``_``/``-`` and trailing ``.``/``_`` removed, at most
  :data:`MAX_FILENAME` characters (extension kept); ``file.<ext>`` (from a ``data:`` URI's
  media type) when nothing is left. A hostile ``../../etc/passwd`` becomes ``etc_passwd``.

``sanitised`` replaces every run of characters outside ``[A-Za-z0-9_]`` with ``_`` (tokens
joined with ``.``); ``hash`` is the first 16 hex digits of the SHA-256 of the original id or
output path (UTF-8). The mapping is lossy only where the hash is added, so distinct names
never collide: a kept path part and a ``sanitised`` part hold no ``-``, so the first ``-``
of the last segment ends the path part; the next character is ``-`` only in the hashed form
(filenames never start with ``-``); kept parts are injective (tokens hold no ``.``) and
hashed ones differ in their hash. Keys of names already in the alphabet are unchanged from
earlier releases; output paths with other characters (``-``, spaces, non-ASCII, empty
tokens) used to be percent-encoded and now take the hashed form.

**Length rule** (keys must fit every store): each ``/``-separated segment we derive is at
most :data:`MAX_SEGMENT_BYTES` (255, the ``NAME_MAX`` of Linux/macOS filesystems), the last
one at most :data:`MAX_LAST_SEGMENT_BYTES` (200: the local store names its sidecar
``<name>.json`` and its temporary files ``.<name>.json.tmp-<16 hex>``, 27 bytes more), and
the whole key at most :data:`MAX_KEY_BYTES` (1,024, S3's limit on a key's UTF-8 length, AWS
docs "Naming Amazon S3 objects"). Over the limit, the id or path part takes the hashed form
with its sanitised text shortened, and the filename is shortened (extension kept) if needed.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re

from cachelayer.errors import ConfigError
from cachelayer.outputs import unescape
from cachelayer.urls import filename_of

#: The characters of every key segment cachelayer derives (the prefix is the user's).
KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_WORD = re.compile(r"[^A-Za-z0-9_]+")
_WORD = re.compile(r"[A-Za-z0-9_]+")
_CLEAN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
MAX_FILENAME = 120
MAX_SEGMENT_BYTES = 255
MAX_LAST_SEGMENT_BYTES = 200
MAX_KEY_BYTES = 1024
#: Smallest budget left for the last segment; a longer storage prefix is a config error.
MIN_LAST_SEGMENT = 64
_HASH_CHARS = 16
_MARK = "--"  # between a sanitised name and its hash; never inside a kept name


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _trim(name: str) -> str:
    return name.lstrip("._-").rstrip("._")


def safe_filename(name: str, content_type: str | None = None, max_length: int = MAX_FILENAME) -> str:
    """A filename safe as the end of a key: only :data:`KEY_ALPHABET`, at most
    ``max_length`` characters (extension kept), not starting with ``.``, ``_`` or ``-`` nor
    ending with ``.`` or ``_``; falls back to ``file`` plus an extension guessed from
    ``content_type``. ``name`` is taken after its last ``/`` or ``\\``."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _trim(_SAFE.sub("_", name))
    if not name:
        ext = mimetypes.guess_extension(content_type or "") or ""
        name = f"file{ext}"
    if len(name) > max_length:
        stem, dot, ext = name.rpartition(".")
        if dot and len(ext) < 12 and max_length - len(ext) - 1 >= 1:
            name = stem[: max_length - len(ext) - 1].rstrip("._") + dot + ext
        else:
            name = name[:max_length]
        name = _trim(name) or "file"
    return name


def _tokens(output_path: str) -> list[str]:
    return [unescape(t) for t in output_path[1:].split("/")]


def path_part(output_path: str) -> str:
    """The key part for a JSON Pointer: ``output`` for the root, the tokens joined with
    ``.`` when each is ``[A-Za-z0-9_]+``, else ``{sanitised}--{hash}`` (module docstring).
    Distinct paths never share a part; the result holds only :data:`KEY_ALPHABET` and its
    first ``-`` (if any) starts the ``--`` mark."""
    if output_path == "":
        return "output"
    tokens = _tokens(output_path)
    if all(_WORD.fullmatch(t) for t in tokens):
        return ".".join(tokens)
    return _hashed(_sanitised(tokens), output_path)


def _sanitised(tokens: list[str]) -> str:
    return ".".join(_UNSAFE_WORD.sub("_", t) or "_" for t in tokens)


def _hashed(sanitised: str, original: str, room: int | None = None) -> str:
    """``{sanitised}--{hash}``, the sanitised text cut so the whole fits ``room`` characters."""
    tail = _MARK + _digest(original)
    if room is not None:
        sanitised = sanitised[: max(1, room - len(tail))]
    return sanitised + tail


def prediction_part(prediction_id: str) -> str:
    """The key segment of a prediction id: the id itself when it matches
    ``[A-Za-z0-9_][A-Za-z0-9_-]*``, holds no ``--`` and fits :data:`MAX_SEGMENT_BYTES`;
    otherwise ``{sanitised}--{hash}`` (module docstring)."""
    if (
        _CLEAN_ID.fullmatch(prediction_id)
        and _MARK not in prediction_id
        and len(prediction_id) <= MAX_SEGMENT_BYTES
    ):
        return prediction_id
    sanitised = _UNSAFE_WORD.sub("_", prediction_id) or "_"
    return _hashed(sanitised, prediction_id, MAX_SEGMENT_BYTES)


def _content_type_of(source_url: str) -> str | None:
    if source_url[:5].lower() != "data:":
        return None
    comma = source_url.find(",", 5, 5 + 4096)
    header = source_url[5:comma] if comma != -1 else ""
    return header.split(";", 1)[0] or None


def object_key(prefix: str, prediction_id: str, output_path: str, source_url: str) -> str:
    """The key of one output file (see the module docstring for the layout, the alphabet
    and the length rule).

    Deterministic; never raises for ``str`` arguments except
    :class:`~cachelayer.errors.ConfigError` when ``prefix`` leaves fewer than
    :data:`MIN_LAST_SEGMENT` bytes of the 1,024 for the rest.
    """
    filename = safe_filename(filename_of(source_url), _content_type_of(source_url))
    head = [p for p in prefix.strip("/").split("/") if p] + [prediction_part(prediction_id)]
    used = sum(len(p.encode("utf-8", "surrogatepass")) + 1 for p in head)
    budget = min(MAX_LAST_SEGMENT_BYTES, MAX_KEY_BYTES - used)
    if budget < MIN_LAST_SEGMENT:
        raise ConfigError(
            f"storage prefix {prefix[:80]!r} is too long: keys are limited to {MAX_KEY_BYTES} bytes"
        )
    last = f"{path_part(output_path)}-{filename}"
    if len(last) > budget:
        filename = safe_filename(filename, max_length=min(len(filename), budget // 2))
        room = budget - 1 - len(filename)
        tokens = ["output"] if output_path == "" else _tokens(output_path)
        last = f"{_hashed(_sanitised(tokens), output_path, room)}-{filename}"
    return "/".join(head + [last])
