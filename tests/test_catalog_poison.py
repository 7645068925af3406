"""Poison predictions (issue 8.5): values Replicate can send that a database refuses (NUL,
lone surrogates, NaN, a long Content-Type, a long output key or URL, thousands of files)
are recorded on SQLite and PostgreSQL under the documented lossless rules and read back
unchanged; what still cannot be recorded is a typed CatalogWriteError and the rest goes on.
``data:`` payloads never enter the catalog (issue 8.10)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import string
import tracemalloc
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from cachelayer.catalog import Catalog, FileFilter, FileStatus, NewFile
from cachelayer.catalog.encoding import catalog_url, escape_json, escape_text, unescape_json, unescape_text
from cachelayer.datauri import redact_data_uri
from cachelayer.errors import CatalogWriteError
from cachelayer.prediction import Prediction, PredictionStatus

CREATED = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def _noise(n: int, seed: int = 0) -> str:
    """``n`` random URL-safe characters: incompressible, so a PostgreSQL B-tree entry of
    them really is ``n`` bytes."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def _prediction(pid: str, **fields) -> Prediction:
    base = dict(
        id=pid,
        status=PredictionStatus.SUCCEEDED,
        model="acme/poison",
        version="v1",
        source="api",
        created_at=CREATED,
        completed_at=CREATED,
    )
    base.update(fields)
    return Prediction(**base)


def _store(c: Catalog, file_id: int, content_type: str = "image/png") -> None:
    assert c.queue.claim(file_id, "t", 60)
    assert c.queue.mark_stored(
        file_id, "t", size=3, sha256="0" * 64, content_type=content_type, source_age_seconds=1.0
    )


# ---- the text rule ----------------------------------------------------------------------------

TRICKY = st.sampled_from(
    ["\x00", "\\", "u", "0", "5", "c", "d", "8", "f", "A", "\ud800", "\udfff", "\udc80", "é"]
)
TEXTS = st.text(alphabet=st.one_of(st.characters(), TRICKY), max_size=40)


@given(TEXTS)
def test_text_rule_is_lossless_and_leaves_nothing_a_database_refuses(value):
    stored = escape_text(value)
    assert unescape_text(stored) == value
    assert "\x00" not in stored
    stored.encode("utf-8")  # no lone surrogate left


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | TEXTS,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXTS, kids, max_size=4),
        max_leaves=20,
    )
)
def test_json_rule_is_lossless(value):
    stored = escape_json(value)
    again = unescape_json(json.loads(json.dumps(stored, allow_nan=False)))
    assert json.dumps(again, sort_keys=True) == json.dumps(value, sort_keys=True)  # NaN == NaN as text


def test_text_rule_examples_as_documented():
    assert escape_text("a\x00b") == "a\\u0000b"
    assert escape_text("x\ud800") == "x\\ud800"
    assert escape_text("C:\\users\\u0041") == "C:\\users\\u005cu0041"  # only \u+4 hex is touched
    assert escape_text("plain text, é and 😀") == "plain text, é and 😀"
    assert escape_json({"n": math.nan, "i": -math.inf}) == {"n": "\\u0001NaN", "i": "\\u0001-Infinity"}


# ---- on both databases --------------------------------------------------------------------------


def test_nul_surrogates_and_nan_round_trip(catalog):
    nasty_url = "https://replicate.delivery/pbxt/a\x00b/\ud800-out.png"
    output = {"im\x00g": nasty_url, "lone": "\udc80", "lit": "\\u0000 literal", "n": math.nan}
    p = _prediction(
        "nul-and-surrogates",
        model="acme/nul\x00model",
        input={"prompt": "a\x00b \ud83d", "k\x00": ["\udfff", math.inf], "lit\\u0000": 1},
        output=output,
        error="failed\x00 with \ud800",
    )
    catalog.predictions.record(p)
    rec = catalog.get_prediction(p.id)
    assert rec.input["prompt"] == "a\x00b \ud83d" and rec.input["k\x00"][0] == "\udfff"
    assert rec.input["k\x00"][1] == math.inf and rec.input["lit\\u0000"] == 1
    assert rec.output["im\x00g"] == nasty_url and rec.output["lone"] == "\udc80"
    assert rec.output["lit"] == "\\u0000 literal" and math.isnan(rec.output["n"])
    assert rec.error == "failed\x00 with \ud800" and rec.model == "acme/nul\x00model"

    rows = catalog.files.ensure(
        p.id,
        [NewFile("/im\x00g", nasty_url, "k/0.png"), NewFile("/lone\ud800", "https://x/\udc80", "k/1.png")],
        store="s3://b",
        model=p.model,
        created_at=CREATED,
    )
    assert [r.output_path for r in rows] == ["/im\x00g", "/lone\ud800"]
    assert rows[0].source_url == nasty_url and rows[1].source_url == "https://x/\udc80"
    _store(catalog, rows[0].id)
    assert catalog.resolve(nasty_url).id == rows[0].id
    assert catalog.queue.mark_unstored(rows[1].id, "t", status="failed", error="bad \x00 \ud800 url")
    assert catalog.files.get(rows[1].id).last_error == "bad \x00 \ud800 url"
    assert [f.id for f in catalog.reports.iter_files(FileFilter(model="acme/nul\x00model"))] == [
        r.id for r in rows
    ][::-1]
    assert catalog.list_files(prediction_id=p.id, status="failed").files[0].id == rows[1].id

    with catalog.engine.connect() as conn:  # what SQL users see: the documented escapes
        stored_error = conn.execute(text("SELECT error FROM predictions WHERE id = :i"), {"i": p.id}).scalar()
        assert stored_error == "failed\\u0000 with \\ud800"
        path = conn.execute(
            text("SELECT output_path FROM output_files WHERE id = :i"), {"i": rows[0].id}
        ).scalar()
        assert path == "/im\\u0000g"


def test_long_content_type_output_key_and_url(catalog):
    long_key = "/" + _noise(5000, 1)  # a JSON object key of 5,000 characters
    long_url = "https://replicate.delivery/" + _noise(6000, 2) + ".png"
    ctype = "image/png; " + _noise(1000, 3)
    p = _prediction("long-values", output={long_key[1:]: long_url})
    catalog.predictions.record(p)
    (row,) = catalog.files.ensure(
        p.id, [NewFile(long_key, long_url, "k/long.png")], store="s3://b", model=p.model, created_at=CREATED
    )
    again = catalog.files.ensure(
        p.id, [NewFile(long_key, long_url, "k/long.png")], store="s3://b", model=p.model, created_at=CREATED
    )
    assert again == [row] and row.output_path == long_key
    _store(catalog, row.id, content_type=ctype)
    stored = catalog.resolve(long_url)
    assert stored.id == row.id and stored.content_type == ctype and stored.status is FileStatus.STORED
    rotated = "https://replicate.delivery/" + _noise(6000, 4) + ".png"
    catalog.files.add_source_url(row.id, rotated)  # an alias of unbounded length too
    assert catalog.resolve(rotated).id == row.id


def test_thousands_of_files_in_one_prediction(catalog):
    n = 7000  # 7,000 rows of 10 columns: over PostgreSQL's 65,535 bind parameters in one INSERT
    p = _prediction("many-files", output=[f"https://replicate.delivery/m/{i}.png" for i in range(n)])
    catalog.predictions.record(p)
    files = [NewFile(f"/{i}", f"https://replicate.delivery/m/{i}.png", f"k/{i}.png") for i in range(n)]
    rows = catalog.files.ensure(p.id, files, store="s3://b", model=p.model, created_at=CREATED)
    assert len(rows) == n and len({r.id for r in rows}) == n
    assert catalog.files.ensure(p.id, files, store="s3://b", model=p.model, created_at=CREATED) == rows
    catalog.queue.renew([r.id for r in rows], "nobody", 60)  # a long IN list is chunked too
    assert catalog.queue.counts() == {"pending": n}
    assert sum(1 for _ in catalog.iter_files(prediction_id=p.id, batch_size=3000)) == n
    with catalog.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM source_urls")).scalar() == n


def test_what_cannot_be_recorded_is_a_typed_error_and_the_rest_goes_on(catalog):
    too_long = "p" * 65
    with pytest.raises(CatalogWriteError, match="1 to 64 characters") as err:
        catalog.predictions.record(_prediction(too_long))
    assert err.value.prediction_id == too_long and "ppp" in str(err.value)
    with pytest.raises(CatalogWriteError, match="1,024|1024"):
        catalog.predictions.record(_prediction("long-model", model="acme/" + _noise(3000)))
    with pytest.raises(CatalogWriteError):
        catalog.files.ensure(
            too_long, [NewFile("", "https://x/y.png", "k")], store="s", model=None, created_at=None
        )
    assert catalog.get_prediction(too_long) is None and catalog.get_prediction("long-model") is None
    catalog.predictions.record(_prediction("fine"))  # the catalog goes on
    assert catalog.get_prediction("fine").status == "succeeded"


# ---- data: URIs (issue 8.10) ----------------------------------------------------------------------


def test_data_uri_payloads_never_enter_the_catalog(catalog):
    payload = bytes(range(256)) * 4096  # 1 MiB
    uri = "data:image/png;base64," + base64.b64encode(payload).decode()
    digest = hashlib.sha256(payload).hexdigest()
    p = _prediction("data-uri", output=[uri, "https://replicate.delivery/x/1.png"])
    catalog.predictions.record(p)
    assert catalog.get_prediction(p.id).output == [f"data:image/png;sha256={digest},", p.output[1]]
    (row, _) = catalog.files.ensure(
        p.id,
        [NewFile("/0", uri, "k/0.png"), NewFile("/1", p.output[1], "k/1.png")],
        store="s",
        model=None,
        created_at=None,
    )
    assert row.source_url == f"data:image/png;sha256={digest}," == catalog_url(uri) == redact_data_uri(uri)
    _store(catalog, row.id)
    assert catalog.resolve(uri).id == row.id == catalog.resolve(row.source_url).id
    catalog.predictions.set_durable_output(p.id, [uri, "s3://b/k/1.png"])  # a file not stored keeps its URI
    assert catalog.get_prediction(p.id).durable_output[0] == row.source_url
    with catalog.engine.connect() as conn:
        sizes = conn.execute(
            text(
                "SELECT LENGTH(CAST(output AS TEXT)) + LENGTH(CAST(durable_output AS TEXT)) FROM predictions"
            )
        ).scalar()
    assert sizes < 1000


def test_catalog_url_is_bounded_in_memory_and_takes_lone_surrogates():
    uri = "data:application/octet-stream;base64," + "QUJD" * (10 << 20)  # 40 MiB, 30 MiB decoded
    tracemalloc.start()
    try:
        redacted = catalog_url(uri)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (
        redacted == f"data:application/octet-stream;sha256={hashlib.sha256(b'ABC' * (10 << 20)).hexdigest()},"
    )
    assert peak < 20 << 20  # chunks of 4 MiB: never a whole decoded (30 MiB) or encoded copy
    bad = "data:text/plain,caf\udce9" + "x" * 100
    form = catalog_url(bad)
    assert form.startswith("data:text/plain;malformed;sha256=") and form.endswith(",")
    assert form == catalog_url(bad)  # deterministic
