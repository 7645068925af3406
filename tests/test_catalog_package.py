"""The catalog as a package (issue 7.4): repositories composed in ``Catalog``, the old
surface each on one home, ``FileFilter`` and ``FileStatus``, no
import cycle, small modules, SQL only inside ``cachelayer/catalog``."""

from __future__ import annotations

import ast
import inspect
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cachelayer.catalog import Catalog, FileFilter, FileStatus, NewFile
from cachelayer.errors import ConfigError
from cachelayer.prediction import Prediction, PredictionStatus

PACKAGE = Path(__file__).resolve().parents[1] / "cachelayer"
BASE = datetime(2026, 11, 1, tzinfo=timezone.utc)

#: Every public method of the Catalog before the split, with its parameters, and its one
#: home now: on ``Catalog`` (the documented queries) or on one of its repositories.
OLD_SURFACE = {
    "record_prediction": ("predictions.record", ["prediction", "rerun_of"]),
    "set_durable_output": ("predictions.set_durable_output", ["prediction_id", "durable_output"]),
    "get_prediction": ("get_prediction", ["prediction_id"]),
    "reruns_of": ("predictions.reruns_of", ["prediction_id"]),
    "ensure_files": ("files.ensure", ["prediction_id", "files", "store", "model", "created_at"]),
    "add_source_url": ("files.add_source_url", ["file_id", "url"]),
    "files_of": ("files_of", ["prediction_id"]),
    "get_file": ("files.get", ["file_id"]),
    "resolve": ("resolve", ["url"]),
    "claim": ("queue.claim", ["file_id", "owner", "lease_seconds"]),
    "renew": ("queue.renew", ["file_ids", "owner", "lease_seconds"]),
    "mark_stored": (
        "queue.mark_stored",
        ["file_id", "owner", "size", "sha256", "content_type", "source_age_seconds"],
    ),
    "mark_unstored": (
        "queue.mark_unstored",
        ["file_id", "owner", "status", "error", "source_age_seconds", "retry_after"],
    ),
    "mark_prediction_files_expired": ("queue.mark_prediction_expired", ["prediction_id", "error"]),
    "claim_next": ("queue.claim_next", ["owner", "lease_seconds"]),
    "release_leases": ("queue.release_leases", ["owners"]),
    "lease_owners": ("queue.lease_owners", []),
    "queue_counts": ("queue.counts", []),
    "count_unleased_pending": ("queue.count_unleased_pending", []),
    "load_checkpoint": ("checkpoints.load", ["name"]),
    "save_checkpoint": ("checkpoints.save", ["name", "cursor", "state"]),
    "list_files": ("list_files", ["model", "status", "since", "until", "prediction_id", "limit", "cursor"]),
    "iter_files": ("iter_files", ["model", "status", "since", "until", "prediction_id", "batch_size"]),
    "show": ("show", ["prediction_id"]),
    "predictions_by_id": ("predictions.get_many", ["prediction_ids"]),
    "resolve_many": ("resolve_many", ["urls"]),
    "stats": ("stats", ["by", "since", "until"]),
    "mark_unverified": ("queue.mark_unverified", ["file_id", "status", "error", "expected_sha256"]),
}


def test_old_surface_has_one_home_each(catalog):
    from cachelayer.catalog.records import FileRecord, PredictionRecord  # noqa: F401
    from cachelayer.catalog.reports import CursorError, Page, StatsRow, decode_cursor, encode_cursor  # noqa: F401

    for name, (home, params) in OLD_SURFACE.items():
        target = catalog
        for part in home.split("."):
            target = getattr(target, part)
        got = [p for p in inspect.signature(target).parameters if p != "self"]
        assert got[: len(params)] == params, name
        if "." in home:  # a repository's: no second way on the Catalog
            assert not hasattr(Catalog, name), name
    for repo in ("predictions", "files", "queue", "reports", "checkpoints", "reruns"):
        assert repo in inspect.getsource(Catalog.__init__)
    assert not (PACKAGE / "catalog" / "queries.py").exists()  # the old import path is gone


def test_file_status_is_a_string(catalog):
    assert FileStatus.STORED == "stored" and hash(FileStatus.STORED) == hash("stored")
    assert f"{FileStatus.PENDING}" == str(FileStatus.PENDING) == "pending"
    assert json.dumps({"s": FileStatus.FAILED}) == '{"s": "failed"}' and {"stored": 1}[FileStatus.STORED] == 1
    catalog.predictions.record(Prediction("p", PredictionStatus.SUCCEEDED, created_at=BASE))
    (row,) = catalog.files.ensure(
        "p", [NewFile("", "https://x/y.png", "k")], store="s", model=None, created_at=BASE
    )
    assert row.status is FileStatus.PENDING and row.to_dict()["status"] == "pending"
    with pytest.raises(ValueError, match="pending, stored, expired, failed"):
        FileStatus.parse("done")


def test_file_filter_replaces_the_five_arguments(catalog):
    for k in range(4):
        pid, model = f"p{k}", ["acme/a", "acme/b"][k % 2]
        catalog.predictions.record(
            Prediction(pid, PredictionStatus.SUCCEEDED, model=model, created_at=BASE + timedelta(hours=k))
        )
        (row,) = catalog.files.ensure(
            pid,
            [NewFile("", f"https://x/{k}.png", f"k{k}")],
            store="s",
            model=model,
            created_at=BASE + timedelta(hours=k),
        )
        if k < 2:
            catalog.queue.claim(row.id, "t", 60)
            catalog.queue.mark_stored(
                row.id, "t", size=10, sha256="0" * 64, content_type=None, source_age_seconds=None
            )
    where = FileFilter(model="acme/a", status="stored", since=BASE.replace(tzinfo=None))
    assert where.status is FileStatus.STORED and where.since == BASE  # naive is UTC
    assert catalog.reports.list_files(where) == catalog.list_files(
        model="acme/a", status="stored", since=BASE
    )
    assert [f.prediction_id for f in catalog.reports.iter_files(where)] == ["p0"]
    assert [
        f.prediction_id
        for f in catalog.reports.iter_files(FileFilter.of(FileFilter(model="acme/a"), status="pending"))
    ] == ["p2"]
    assert (
        catalog.reports.list_files(FileFilter(until=BASE + timedelta(hours=2))).files
        == catalog.list_files(until=BASE + timedelta(hours=2)).files
    )
    by_status = catalog.stats("status", where=FileFilter(model="acme/b"))
    assert {r.group: (r.files, r.stored_bytes) for r in by_status} == {"stored": (1, 10), "pending": (1, 0)}
    assert (
        sum(
            r.files
            for r in catalog.stats(
                "model", since=BASE + timedelta(hours=1), where=FileFilter(status="pending")
            )
        )
        == 2
    )
    assert FileFilter.of(where, model="acme/b").model == "acme/b"
    with pytest.raises(ConfigError):
        FileFilter(status="done")
    with pytest.raises(ConfigError):
        FileFilter.of(None, colour="red")


def _imports(path: Path) -> set[str]:
    """Every ``cachelayer`` module ``path`` imports, wherever the import statement is
    (function-local and ``TYPE_CHECKING`` imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("cachelayer")}


def test_catalog_modules_are_small_acyclic_and_hold_all_the_sql():
    modules = {
        "cachelayer.catalog" + ("" if p.stem == "__init__" else f".{p.stem}"): p
        for p in (PACKAGE / "catalog").glob("*.py")
    }
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*trail, m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in graph[m]:
            visit(n, [*trail, m])
        state[m] = 2

    for m in graph:
        visit(m, [])
    for m, p in modules.items():
        assert len(p.read_text().splitlines()) <= 400, m
    outside = [p for p in PACKAGE.rglob("*.py") if "catalog" not in p.relative_to(PACKAGE).parts]
    tables = {
        f"cachelayer.catalog.models.{n}"
        for n in ("PREDICTIONS", "OUTPUT_FILES", "SOURCE_URLS", "CHECKPOINTS")
    }
    for p in outside:
        assert not (tables | {"cachelayer.catalog.session"}) & _imports(p), p
        for node in ast.walk(ast.parse(p.read_text())):  # SQLAlchemy only as the Engine type / URL parser
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                assert {a.name for a in node.names} <= {"Engine", "make_url", "ArgumentError"}, p
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("sqlalchemy") for a in node.names), p
