"""Every text prints (issue 17, item 6).

Finding: ``cachelayer show ID --format json`` (also ``jsonl`` and the table) on a prediction
whose input holds a lone surrogate ``\\ud800`` died with ``UnicodeEncodeError`` and printed
nothing. Now every writer of :mod:`cachelayer.cli.formatting` escapes what the stream
cannot encode (JSON: ``\\uXXXX``, so the document still parses to the same values; tables
and CSV: backslash escapes), and table cells escape terminal control characters (C0, DEL,
C1, line separators, bidi overrides), whatever stdout's encoding.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import unicodedata

import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from cachelayer.cli.copy import print_output
from cachelayer.cli.formatting import FORMATS, Column, write_fields, write_json, write_records

HOSTILE = ["\ud800", "\udfff", "\udc80", "\x00", "\x1b[31m", "\x9b2J", "\u202e", "\u2028", "\r", "é", "😀"]
TEXT = st.lists(
    st.one_of(
        st.characters(codec=None, exclude_categories=()),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
        st.sampled_from(HOSTILE),
    ),
    max_size=10,
).map("".join)
ENCODINGS = ["utf-8", "ascii", "latin-1"]
COLUMNS = [Column("id", "ID"), Column("input", "INPUT"), Column("url", "URL", long=True)]


def same(value):
    """``value`` as any JSON parser reads it back: a high surrogate followed by a low one is
    one character once written as JSON (``json.dumps`` itself does this)."""
    return json.loads(json.dumps(value))


def stream(encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict", newline="")


def text_of(out: io.TextIOWrapper) -> str:
    out.flush()
    raw = out.buffer.getvalue()  # type: ignore[attr-defined]
    return raw.decode(out.encoding)


def no_terminal_controls(text: str) -> bool:
    """Only line ends as controls: nothing that moves the cursor, clears or recolours."""
    return all(
        ch in "\n" or (unicodedata.category(ch) not in ("Cc", "Zl", "Zp", "Cs") and ch not in "\u202e")
        for ch in text
    )


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(TEXT, min_size=1, max_size=4), encoding=st.sampled_from(ENCODINGS))
def test_every_writer_prints_any_text_on_any_stream(texts, encoding):
    records = [{"id": t, "input": {"prompt": t, t: [t]}, "url": f"https://x/{t}"} for t in texts]
    for fmt in FORMATS:
        out = stream(encoding)
        write_records(iter(records), fmt, columns=COLUMNS, out=out)
        text = text_of(out)
        if fmt == "json":
            assert json.loads(text) == same(records)
        elif fmt == "jsonl":
            assert [json.loads(line) for line in text.split("\n")[:-1]] == same(records)
        elif fmt == "csv":
            assert len(list(csv.reader(io.StringIO(text, newline="")))) == len(records) + 1
        else:
            assert no_terminal_controls(text)
            assert len(text.splitlines()) == len(records) + 1
    for compact in (True, False):
        out = stream(encoding)
        write_json({"records": records}, out=out, compact=compact)
        assert json.loads(text_of(out)) == same({"records": records})
    out = stream(encoding)
    write_fields([("id", texts[0]), ("input", records[0]["input"])], out=out)
    text = text_of(out)
    assert no_terminal_controls(text) and len(text.splitlines()) == 2


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(TEXT, min_size=1, max_size=3), encoding=st.sampled_from(ENCODINGS))
def test_run_and_persist_output_prints(texts, encoding):
    for output, as_json in ((texts, True), ({"a": texts}, False), (texts[0], False), (texts, False)):
        out = stream(encoding)
        with contextlib.redirect_stdout(out):
            print_output(output, as_json)
        text = text_of(out)
        if as_json:
            assert json.loads(text) == same(output)


@pytest.mark.parametrize(
    "env_extra", [{"PYTHONIOENCODING": "utf-8"}, {"LANG": "C", "PYTHONIOENCODING": "ascii"}]
)
def test_show_ls_export_stats_print_a_prediction_with_surrogates_and_nul(make_layer, cli_env, env_extra):
    layer = make_layer()
    prompt = "a\ud800b\x00c\x1b[2Jd\u202eé"
    pid = "surrogatepred"
    layer.enqueue(
        {
            "id": pid,
            "model": "acme/painter",
            "version": "v" * 64,
            "status": "succeeded",
            "input": {"prompt": prompt, "\udfffkey": [prompt]},
            "output": ["https://replicate.delivery/pbxt/abc/out\x1b.png"],
            "created_at": "2026-01-01T00:00:00Z",
            "completed_at": "2026-01-01T00:00:01Z",
        }
    )
    env = {**cli_env, **env_extra}
    env.pop("LC_ALL", None)
    if "LANG" in env_extra:
        env = {k: v for k, v in env.items() if not k.startswith("LC_")}
    for fmt in ("json", "jsonl", "table", "csv"):
        done = run_cli(env, "show", pid, "--format", fmt)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (fmt, done.stderr)
        if fmt in ("json", "jsonl"):
            shown = json.loads(done.stdout)
            assert shown["prediction"]["input"] == {"prompt": prompt, "\udfffkey": [prompt]}
        if fmt == "table":
            assert "\x1b" not in done.stdout and "\\ud800" in done.stdout
    for args in (["ls"], ["ls", "--format", "json"], ["export"], ["export", "--format", "csv"], ["stats"]):
        done = run_cli(env, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
        assert "\x1b" not in done.stdout or args[-1] == "csv", args
