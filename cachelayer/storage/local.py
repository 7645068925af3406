"""Objects as plain files under a root directory.

Layout: the object ``a/b.png`` is the file ``<root>/a/b.png``, byte for byte, so the root can
be served by any web server (``public`` URLs) or read directly (``file://`` URIs).

Content type, user metadata and cache control live in a JSON sidecar in a separate tree,
``<root>/.cachelayer-meta/a/b.png.json``, so object directories hold only objects and no key
can collide with a sidecar (keys whose first segment is ``.cachelayer-meta`` are rejected).
The SHA-256 of the bytes written is kept there as metadata ``sha256``.
The sidecar records the data file's size and ``st_mtime_ns``; :meth:`LocalStore.head` uses
its content only while both still match the file, so a sidecar never describes other bytes
(after a crash between the two renames, or a copy that did not preserve mtimes, the object
reads back with no content type and no metadata rather than wrong ones). Metadata names are
lower-cased, as S3 does; values are kept as given, any text (JSON escapes non-ASCII and lone
surrogates, so the sidecar is ASCII), and read back the same: no percent-encoding here (the
S3 store's :func:`~cachelayer.storage.base.encode_metadata` exists for HTTP headers). Sidecars
written by earlier versions hold the copier's ``output-path`` percent-encoded.

Writes are atomic: bytes go to a temporary file in the target's directory, are ``fsync``-ed,
and ``os.replace`` moves them into place (a rename within one directory is atomic on POSIX
file systems); the directory is ``fsync``-ed afterwards so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from cachelayer.errors import StorageConfigError, StorageError
from cachelayer.storage.base import ObjectInfo, Store

__all__ = ["LocalStore", "META_DIR", "validate_key"]

#: Top-level directory under the root that holds metadata sidecars.
META_DIR = ".cachelayer-meta"
_COPY_CHUNK = 1024 * 1024  # bytes read from the body per call


def validate_key(key: str) -> list[str]:
    """Split ``key`` into path segments, refusing anything that could leave the root.

    Rejected (``ValueError``): non-strings, empty keys, absolute keys (leading ``/``),
    backslashes, NUL bytes, empty segments (``a//b``, trailing ``/``), ``.`` and ``..``
    segments, and keys under the reserved ``.cachelayer-meta/`` directory.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid object key {key!r}: must be a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"invalid object key {key!r}: must not be absolute")
    if "\\" in key:
        raise ValueError(f"invalid object key {key!r}: must not contain backslashes")
    if "\x00" in key:
        raise ValueError(f"invalid object key {key!r}: must not contain NUL")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"invalid object key {key!r}: empty, '.' and '..' segments are not allowed")
    if parts[0] == META_DIR:
        raise ValueError(f"invalid object key {key!r}: {META_DIR}/ is reserved")
    return parts


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not supported here (e.g. Windows); the rename itself is still atomic
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    """A directory on a local (or mounted) file system.

    ``root`` is made absolute (``~`` expanded, symlinks resolved) and need not exist yet:
    :meth:`check` creates it, :meth:`put` creates parent directories as needed.
    :attr:`uri` is ``file:///abs/root``. Safe to share between threads and processes:
    each put writes its own temporary file and the last rename wins.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    # -- paths ---------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """The absolute file path of ``key``. Raises ``ValueError`` for invalid keys
        (see :func:`validate_key`) or keys that resolve outside the root through a symlink.
        """
        parts = validate_key(key)
        path = self.root.joinpath(*parts)
        # Defence in depth: a symlinked directory inside the root must not lead outside it.
        resolved = path.parent.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ValueError(f"invalid object key {key!r}: resolves outside {self.root}")
        return path

    def _meta_path(self, key: str) -> Path:
        parts = validate_key(key)
        return self.root.joinpath(META_DIR, *parts[:-1], parts[-1] + ".json")

    # -- Store interface -----------------------------------------------------------------

    def check(self) -> None:
        """Create the root if missing and prove it writable by creating and removing a
        probe file. Raises :class:`StorageConfigError` with a one-line reason otherwise.
        """
        if self.root.exists() and not self.root.is_dir():
            raise StorageConfigError(f"storage path {self.root} is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageConfigError(
                f"cannot create storage directory {self.root}: {exc.strerror or exc}"
            ) from exc
        if not self.root.is_dir():
            raise StorageConfigError(f"storage path {self.root} is not a directory")
        probe = self.root / f".cachelayer-probe-{secrets.token_hex(8)}"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"ok")
        except OSError as exc:
            raise StorageConfigError(
                f"storage directory {self.root} is not writable: {exc.strerror or exc}"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _write_temp(self, directory: Path, name: str, writer: Any) -> Path:
        """Write via ``writer(fh)`` into a fresh temp file in ``directory``; fsync; return it."""
        tmp = directory / f".{name}.tmp-{secrets.token_hex(8)}"
        try:
            with open(tmp, "xb") as fh:
                writer(fh)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp

    def put(
        self,
        key: str,
        body: BinaryIO,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
        size: int | None = None,
    ) -> str:
        """Copy ``body`` (read in 1 MiB calls until ``b""``) into ``key`` atomically.

        The sidecar (content type, metadata with lower-cased names, cache control, size,
        mtime) is always rewritten, so a new put never inherits the previous object's
        metadata; metadata ``sha256`` is the SHA-256 (hex) of the bytes written (a value
        passed in is replaced) and is returned. Memory use is one 1 MiB read; ``size`` is not
        needed here and is ignored. An exception raised by ``body.read``
        propagates unchanged and leaves the previous object (or none) in place; file system
        errors raise :class:`StorageError`; invalid keys raise ``ValueError``.
        """
        path = self.path_for(key)
        meta_path = self._meta_path(key)

        body_errors: list[BaseException] = []
        digest = hashlib.sha256()

        def copy(fh: BinaryIO) -> None:
            while True:
                try:
                    chunk = body.read(_COPY_CHUNK)
                except BaseException as exc:
                    body_errors.append(exc)
                    raise
                if not chunk:
                    return
                digest.update(chunk)
                fh.write(chunk)

        data_tmp: Path | None = None
        meta_tmp: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            data_tmp = self._write_temp(path.parent, path.name, copy)
            st = data_tmp.stat()
            sidecar = {
                "content_type": content_type,
                "metadata": {
                    **{str(k).lower(): str(v) for k, v in (metadata or {}).items()},
                    "sha256": digest.hexdigest(),
                },
                "cache_control": cache_control,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
            encoded = json.dumps(sidecar, sort_keys=True).encode("utf-8")
            meta_tmp = self._write_temp(meta_path.parent, meta_path.name, lambda f: f.write(encoded))
            # Sidecar first: if the data rename fails, the old data stays and the new
            # sidecar does not match it (size/mtime), so head() shows no stale metadata.
            os.replace(meta_tmp, meta_path)
            meta_tmp = None
            os.replace(data_tmp, path)
            data_tmp = None
            _fsync_dir(meta_path.parent)
            _fsync_dir(path.parent)
            return digest.hexdigest()
        except OSError as exc:
            if body_errors and exc is body_errors[0]:
                raise  # e.g. ConnectionResetError from a download: not a storage failure
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        finally:
            for tmp in (data_tmp, meta_tmp):
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        tmp.unlink()

    def head(self, key: str) -> ObjectInfo | None:
        """Size (bytes) from ``stat``; content type, metadata and ``sha256`` from the sidecar
        when it matches the file. ``None`` if no regular file has that key. ``ValueError`` for
        invalid keys; :class:`StorageError` for other file system errors.
        """
        path = self.path_for(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {path}: {exc.strerror or exc}") from exc
        if not path.is_file():
            return None
        content_type: str | None = None
        cache_control: str | None = None
        metadata: dict[str, str] = {}
        try:
            sidecar = json.loads(self._meta_path(key).read_bytes())
        except (OSError, ValueError):
            sidecar = None
        if (
            isinstance(sidecar, dict)
            and sidecar.get("size") == st.st_size
            and sidecar.get("mtime_ns") == st.st_mtime_ns
        ):
            content_type = sidecar.get("content_type") or None
            cache_control = sidecar.get("cache_control") or None
            metadata = {str(k): str(v) for k, v in (sidecar.get("metadata") or {}).items()}
        return ObjectInfo(
            key=key,
            size=st.st_size,
            content_type=content_type,
            metadata=metadata,
            cache_control=cache_control,
            sha256=metadata.get("sha256") or None,
        )

    def open(self, key: str) -> BinaryIO:
        """Open the file for binary reads. ``FileNotFoundError`` if absent (or a directory);
        ``ValueError`` for invalid keys."""
        path = self.path_for(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        except (IsADirectoryError, NotADirectoryError) as exc:
            raise FileNotFoundError(f"no object {key!r} in {self.uri}") from exc

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """The file opened and positioned at ``start``, reading up to ``end`` (inclusive;
        ``None``: to the end). Errors as :meth:`open`; ``ValueError`` for a bad range."""
        from cachelayer.storage.base import _Limited

        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        fh = self.open(key)
        fh.seek(start)
        return fh if end is None else cast(BinaryIO, _Limited(fh, end - start + 1))

    def object_uri(self, key: str) -> str:
        """``file:///abs/root/key`` (percent-encoded as by ``Path.as_uri``)."""
        return self.path_for(key).as_uri()

    def delete(self, keys: Iterable[str]) -> None:
        """Remove each key's file, then its sidecar (a sidecar left by a crash in between
        describes no file and is rewritten by the next put); a missing one is skipped. Every
        key is validated first (``ValueError``, nothing removed); file system errors raise
        :class:`StorageError` naming the first few paths, after every key was tried. Emptied
        directories stay (a concurrent put may be about to write into them)."""
        paths = [(self.path_for(k), self._meta_path(k)) for k in dict.fromkeys(keys)]
        failed: list[str] = []
        for pair in paths:
            for path in pair:
                try:
                    path.unlink()
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    pass  # no object there (a directory is none either)
                except OSError as exc:
                    failed.append(f"{path} ({exc.strerror or exc})")
                    break  # keep the sidecar of a file still there
        if failed:
            shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
            raise StorageError(f"cannot delete {shown}")

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys of the regular files under the root that start with ``prefix``, found by a
        walk of the directory ``prefix`` names up to its last ``/`` (sorted per directory).
        Sidecars (``.cachelayer-meta/``) and temporary files (``.<name>.tmp-<hex>``, a put in
        flight) are left out. Raises :class:`StorageError` when a directory cannot be read."""
        head, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*validate_key(head)) if head else self.root
        if not start.is_dir():
            return

        def failed(exc: OSError) -> None:
            raise StorageError(f"cannot list {exc.filename}: {exc.strerror or exc}") from exc

        for dirpath, dirnames, filenames in os.walk(start, onerror=failed):
            rel = Path(dirpath).relative_to(self.root).parts
            if rel[:1] == (META_DIR,):
                dirnames.clear()
                continue
            if not rel:
                dirnames[:] = [d for d in dirnames if d != META_DIR]
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".") and ".tmp-" in name:
                    continue
                key = "/".join((*rel, name))
                if key.startswith(prefix):
                    yield key

    def __repr__(self) -> str:
        return f"<LocalStore {self.uri}>"
