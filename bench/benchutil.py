"""Helpers shared by the bench scripts (imported from the scripts' own folder)."""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any


def communicate_wait4(proc: subprocess.Popen[bytes]) -> tuple[str, str, int, Any]:
    """Read the child's output and reap it with ``os.wait4``, which gives that child's own
    ``rusage``. Returns ``(stdout, stderr, exit status, rusage)``."""
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
    reader.start()
    out = proc.stdout.read()
    reader.join()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    stderr.close()
    return out.decode(), b"".join(err_chunks).decode(errors="replace"), proc.returncode, usage
