"""Any text as a prediction id, an output path or a filename (issue 17, item 2).

* Metadata: S3 user metadata must be US-ASCII (AWS S3 "Working with object metadata");
  values are percent-encoded on the way in and decoded by ``head``, on moto's S3 server
  and the local store alike, within S3's 2 KB.
* Property (hypothesis): the worker copies files of predictions whose id and output path
  are arbitrary Unicode (lone surrogates included: JSON's ``\\ud800`` escapes reach us from
  webhooks and the API) and whose filenames are arbitrary Unicode (no lone surrogate: a
  delivery URL's filename is percent-encoded UTF-8, which cannot carry one). Each file ends
  ``stored`` with the right bytes, key and metadata, or ``failed``/``expired`` with a
  reason; no exception escapes ``work``.
"""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cachelayer.keys import KEY_ALPHABET
from cachelayer.outputs import escape
from cachelayer.storage.base import MAX_METADATA_BYTES, Store, decode_metadata, encode_metadata
from cachelayer.storage.s3 import S3Store
from cachelayer.testing.simulator import File

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates included
HEADER_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~/-%")


@settings(max_examples=200, deadline=None)
@given(values=st.dictionaries(st.sampled_from(["prediction-id", "output-path", "x"]), ANY_TEXT))
def test_metadata_encoding_is_ascii_and_lossless(values: dict[str, str]) -> None:
    encoded = encode_metadata(values)
    assert all(set(v) <= HEADER_SAFE for v in encoded.values())
    assert decode_metadata(encoded) == values


@settings(max_examples=50, deadline=None)
@given(value=st.text(st.characters(exclude_categories=()), min_size=300, max_size=3000))
def test_metadata_is_cut_to_fit_2_kb(value: str) -> None:
    encoded = encode_metadata({"prediction-id": "p", "output-path": value}, reserve=70)
    assert sum(len(k) + len(v) for k, v in encoded.items()) <= MAX_METADATA_BYTES - 70
    decoded = decode_metadata(encoded)
    assert decoded["prediction-id"] == "p" and value.startswith(decoded["output-path"])


@pytest.fixture(params=["s3", "local"])
def any_store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


def test_non_ascii_and_control_metadata_round_trips(any_store: Store) -> None:
    meta = {"prediction-id": "caf\u00e9-pred", "output-path": "/t\u00e4sse/\ud800\n~0 %41"}
    any_store.put("k", io.BytesIO(b"x"), metadata=meta)
    info = any_store.head("k")
    assert info is not None
    assert {k: info.metadata[k] for k in meta} == meta
    if isinstance(any_store, S3Store):  # what travels: percent-encoded ASCII
        raw = any_store.client.head_object(Bucket=any_store.bucket, Key="k")["Metadata"]
        assert raw["prediction-id"] == "caf%C3%A9-pred"
        assert raw["output-path"] == "/t%C3%A4sse/%ED%A0%80%0A~0%20%2541"


def test_replicate_ids_and_plain_paths_travel_unchanged(s3_store: S3Store) -> None:
    """Objects written before the encoding (ASCII ids; output paths percent-encoded by the
    copier) read back the same."""
    s3_store.put(
        "k", io.BytesIO(b"x"), metadata={"prediction-id": "gm3qorzdhgbfurvjtvhg6dckhu", "output-path": "/0"}
    )
    raw = s3_store.client.head_object(Bucket=s3_store.bucket, Key="k")["Metadata"]
    assert raw["prediction-id"] == "gm3qorzdhgbfurvjtvhg6dckhu" and raw["output-path"] == "/0"


FILENAMES = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda f: "/" not in f and f not in (".", "..")
)
_counter = itertools.count()


@pytest.fixture
def layer_on(make_layer, tmp_path, backend: str):
    """The layer of one test (hypothesis runs all its examples on it): the moto bucket or a
    local directory; ``max_attempts=1`` so a failure is final at once (no backoff waits)."""
    options: dict[str, Any] = {"max_attempts": 1}
    if backend == "local":
        options["storage_url"] = f"file://{tmp_path}/objects"
    return make_layer(**options)


@pytest.mark.parametrize("backend", ["s3", "local"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pid=st.text(st.characters(exclude_categories=()), min_size=1, max_size=40),
    name=ANY_TEXT,
    filename=FILENAMES,
)
def test_the_worker_copies_any_text_or_fails_that_file_with_a_reason(
    layer_on, replicate_simulator, backend: str, pid: str, name: str, filename: str
) -> None:
    sim, layer = replicate_simulator, layer_on
    content = f"bytes of {filename!a}".encode()
    seeded = sim.seed_prediction("acme/any", {}, File(content, filename=filename))
    pid = f"{pid}-{next(_counter)}"  # ids repeat across examples; predictions must not
    data: dict[str, Any] = {**sim.prediction(seeded), "id": pid}
    data["output"] = {name: data["output"]}
    layer.enqueue(data)

    summary = layer.work(once=True, concurrency=1)  # never raises: asserted by running

    (row,) = layer.catalog.files_of(pid)
    assert row.prediction_id == pid and row.output_path == "/" + escape(name)
    event(str(row.status))
    if row.status == "stored":
        assert summary.files_stored == 1
        assert all(set(part) <= set(KEY_ALPHABET) for part in row.key.split("/")[-2:])
        info = layer.store.head(row.key)
        assert info is not None and info.sha256 == row.sha256 == File(content).sha256()
        assert info.metadata["prediction-id"] == pid and info.metadata["output-path"] == row.output_path
    else:
        assert row.status in ("failed", "expired") and row.last_error, row
