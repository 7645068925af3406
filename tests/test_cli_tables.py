"""Tables on a terminal (issue 8.14): at any width every field is shown, and no value (a URL
above all) is cut, folded or split over lines.

Drawn on rich consoles of 60, 80, 120 and 200 columns (``force_terminal``), then for real:
the installed script writing `ls` and `show` to a pseudo-terminal with ``COLUMNS`` set.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
from typing import Any

import pytest
from conftest import CLI, run_cli
from rich.cells import cell_len
from rich.console import Console

from cachelayer.cli.catalog import FILE_COLUMNS
from cachelayer.cli.formatting import Column, write_fields, write_records
from cachelayer.testing.simulator import File

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WIDTHS = [60, 80, 120, 200]


def _url(i: int, extra: str = "") -> str:
    return (
        f"https://cdn.example.com/replicate/acme/some-long-model-name/p{i:02d}w4e5r6t7y8u9i0o1p2a3s4/"
        f"images/{i}/out-{i}.png{extra}"
    )


def file_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(4):
        rows.append(
            {
                "created_at": f"2026-11-20T23:05:{10 + i}.760091Z",
                "prediction_id": f"p{i:02d}w4e5r6t7y8u9i0o1p2a3s4",
                "output_path": f"/images/{i}",
                "model": f"acme/some-long-model-name-{i}",
                "status": ["stored", "stored", "failed", "stored"][i],
                "size": 1000 * (i + 1) + i,
                "content_type": "image/png",
                "durable_url": _url(i, "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=" + "f" * 64)
                if i != 2
                else None,
                "last_error": "HTTP 403 from replicate.delivery: the URL expired" if i == 2 else None,
            }
        )
    return rows


TABLES = {
    "ls": FILE_COLUMNS,
    "show": [
        Column("output_path", "PATH"),
        Column("status", "STATUS"),
        Column("size", "SIZE", numeric=True),
        Column("content_type", "TYPE"),
        Column("durable_url", "URL", long=True),
        Column("last_error", "ERROR", long=True),
    ],
    "resolve": [
        Column("source_url", "SOURCE URL", long=True),
        Column("durable_url", "DURABLE URL", long=True),
    ],
}


def _draw(width: int, draw: Any) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system="standard")
    draw(console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[1m" in text  # bold headers: this really was the terminal layout
    return ANSI.sub("", text).splitlines()


def _assert_whole(lines: list[str], values: list[str], width: int) -> None:
    for value in values:
        assert any(value in line for line in lines), f"{value!r} is not whole on any line"
    for line in lines:  # only a line holding one long value may be wider than the terminal
        if cell_len(line) > width:
            assert any(v in line and cell_len(v) > width // 2 for v in values), line


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("table", list(TABLES))
def test_every_field_whole_at_every_width(width, table):
    rows = file_rows()
    if table == "resolve":
        rows = [
            {"source_url": f"https://replicate.delivery/xezq/{i:03d}/out.png", **r}
            for i, r in enumerate(rows)
        ]
    columns = TABLES[table]
    lines = _draw(width, lambda c: write_records(rows, "table", columns=columns, console=c))
    values = [str(r[c.key]) for r in rows for c in columns if r[c.key] is not None]
    _assert_whole(lines, values, width)
    headers = {c.header for c in columns}
    assert all(any(h in line for line in lines) for h in headers)
    for r in rows:
        for c in columns:
            if c.long and r[c.key]:  # a URL is alone on its line, or in a row that fits
                (line,) = [x for x in lines if r[c.key] in x]
                assert line.strip().endswith(r[c.key])


def test_layout_follows_the_width():
    rows = file_rows()[:2]
    for r in rows:
        r["durable_url"] = r["durable_url"].split("?")[0]
    wide = _draw(250, lambda c: write_records(rows, "table", columns=FILE_COLUMNS, console=c))
    assert wide[0].split() == ["CREATED", "PREDICTION", "PATH", "MODEL", "STATUS", "SIZE", "URL"]
    assert len(wide) == 3 and wide[1].endswith(rows[0]["durable_url"])  # one row per line
    mid = _draw(120, lambda c: write_records(rows, "table", columns=FILE_COLUMNS, console=c))
    assert mid[0].split() == ["CREATED", "PREDICTION", "PATH", "MODEL", "STATUS", "SIZE"]
    assert mid[2].split() == ["URL", rows[0]["durable_url"]]  # the URL under its row
    narrow = _draw(60, lambda c: write_records(rows, "table", columns=FILE_COLUMNS, console=c))
    assert narrow[:2] == [f"CREATED     {rows[0]['created_at']}", f"PREDICTION  {rows[0]['prediction_id']}"]
    assert narrow[7] == "" and narrow[6] == f"URL         {rows[0]['durable_url']}"  # a block per file


@pytest.mark.parametrize("width", WIDTHS)
def test_fields_block_keeps_long_values_whole(width):
    long_input = {"prompt": "a cat " * 30, "image": _url(7)}
    pairs = [("id", "p1"), ("input", long_input), ("error", "line one\nline two\x1b[31m")]
    lines = _draw(width, lambda c: write_fields(pairs, console=c))
    assert len(lines) == 3
    assert '"image":"' + _url(7) + '"' in lines[1]
    assert lines[2] == "error  line one\\nline two\\x1b[31m"  # control characters escaped


def _on_a_terminal(env: dict[str, str], *args: str) -> str:
    """Run the installed script with stdout on a pseudo-terminal; returns what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [CLI, *args], env=env, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


def test_ls_and_show_on_a_real_terminal(cli_env, replicate_simulator):
    files = [File(size=300 + i, seed=i, filename=f"picture-number-{i}.png") for i in range(3)]
    pid = replicate_simulator.seed_prediction("acme/terminal-widths", input={"prompt": "x"}, output=files)
    assert run_cli(cli_env, "persist", pid).returncode == 0
    rows = [json.loads(x) for x in run_cli(cli_env, "ls", "--format", "jsonl").stdout.splitlines()]
    assert len(rows) == 3
    for width in (80, 120):
        env = {**cli_env, "COLUMNS": str(width), "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        lines = _on_a_terminal(env, "ls").splitlines()
        keys = ("created_at", "prediction_id", "output_path", "model", "status", "size", "durable_url")
        values = [str(r[k]) for r in rows for k in keys]
        _assert_whole(lines, values, width)
        shown = _on_a_terminal(env, "show", pid).splitlines()
        _assert_whole(shown, [r["durable_url"] for r in rows] + [pid, "acme/terminal-widths"], width)
