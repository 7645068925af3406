"""A prediction's internal record and its state machine over the simulator's clock.

A created prediction is ``starting`` for the first half of its duration, ``processing``
for the second, then ends with its final status (``succeeded``, or ``failed`` when the
model raised). A version made with ``aborts=True`` stays ``starting`` and ends
``aborted``. A ``deadline`` (the ``Cancel-After`` header) reached first ends it
``aborted`` if it had not started, else ``canceled``, as Replicate documents. Seeded,
canceled and explicitly aborted predictions have a ``fixed_status`` that never moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from cachelayer.testing.simulator.files import DataURI, File

__all__ = [
    "STATUSES",
    "TERMINAL_STATUSES",
    "Prediction",
    "Slot",
    "SlotRef",
    "State",
    "Token",
    "build_tree",
    "logs_at",
    "metrics_of",
    "next_change",
    "state_at",
]

#: Statuses after which a prediction never changes (Replicate's OpenAPI schema).
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
STATUSES = frozenset({"starting", "processing"}) | TERMINAL_STATUSES


@dataclass
class SlotRef:
    """Where output file number ``index`` sits in a prediction's output tree."""

    index: int


@dataclass
class Slot:
    """One output file of a prediction: its JSON path, content and current delivery token."""

    path: str
    file: File
    token: str


@dataclass
class Token:
    """A delivery token: which prediction's slot it serves and until when."""

    pid: str
    slot: Slot
    expires_at: float
    revoked: bool = False


@dataclass
class Prediction:
    """A prediction's internal record (times are Unix seconds of the simulator's clock).

    ``version`` is what the API reports (a version id, or ``"hidden"`` for official
    models that hide theirs); ``tree`` is the output with :class:`SlotRef` for files.
    """

    id: str
    seq: int
    model: str
    version: str
    input: Any
    source: str
    created_at: float
    duration: float
    tree: Any
    slots: list[Slot]
    final_status: str
    error: str | None
    iterator: bool
    logs: str | None = None
    fixed_status: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    deadline: float | None = None
    data_removed: bool = False
    deployment: str | None = None
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ()


class State(NamedTuple):
    """A prediction's status at one instant, with its start and completion times (or None)."""

    status: str
    started_at: float | None
    completed_at: float | None


def _natural(p: Prediction) -> tuple[float | None, float]:
    """When ``p`` starts running (None if it never does) and when it ends, deadline aside."""
    done = p.created_at + p.duration
    if p.final_status == "aborted":
        return None, done
    return p.created_at + p.duration / 2, done


def state_at(p: Prediction, now: float) -> State:
    """``p``'s status at ``now``."""
    if p.fixed_status is not None:
        return State(p.fixed_status, p.started_at, p.completed_at)
    started, done = _natural(p)
    if p.deadline is not None and p.deadline < done and now >= p.deadline:
        if started is None or p.deadline < started:
            return State("aborted", None, p.deadline)
        return State("canceled", started, p.deadline)
    if now >= done:
        return State(p.final_status, started, done)
    if started is not None and now >= started:
        return State("processing", started, None)
    return State("starting", None, None)


def next_change(p: Prediction, now: float) -> float | None:
    """The next simulator time after ``now`` at which ``p``'s status changes, or None."""
    if p.fixed_status is not None:
        return None
    started, done = _natural(p)
    times = [t for t in (started, done, p.deadline) if t is not None and t > now]
    return min(times) if times else None


def logs_at(p: Prediction, state: State) -> str:
    """The ``logs`` text of ``p`` in ``state`` (what a model's ``predict()`` printed)."""
    status = state.status
    if p.data_removed:
        return ""
    if p.logs is not None:
        return p.logs
    if status in ("starting", "aborted"):
        return ""
    if status == "processing":
        return "Running predict()...\n"
    if status == "failed":
        return f"Running predict()...\nTraceback (most recent call last):\n{p.error}\n"
    if status == "canceled":
        return "Running predict()...\n" if state.started_at is not None else ""
    return "Running predict()...\nDone.\n"


def metrics_of(p: Prediction, state: State) -> dict[str, float] | None:
    """``metrics`` for a terminal ``state``: ``predict_time`` (seconds running, 0 if it never
    started) and ``total_time`` (seconds since creation). Replicate sends them with every
    terminal status (replicate-api.md); None before that."""
    status, started, completed = state
    if completed is None or status not in TERMINAL_STATUSES:
        return None
    return {
        "predict_time": round(max(0.0, completed - started) if started is not None else 0.0, 6),
        "total_time": round(max(0.0, completed - p.created_at), 6),
    }


def json_pointer(parent: str, key: str | int) -> str:
    """``parent`` extended by one JSON Pointer token (``~`` and ``/`` escaped)."""
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{token}"


def build_tree(value: Any, path: str = "") -> tuple[Any, list[tuple[str, File]]]:
    """Copy an output value into the internal tree: File leaves become slot references
    (numbered in order), DataURI leaves strings. Raises TypeError on other objects."""
    files: list[tuple[str, File]] = []

    def walk(v: Any, at: str) -> Any:
        if isinstance(v, File):
            files.append((at, v))
            return SlotRef(len(files) - 1)
        if isinstance(v, DataURI):
            return v.uri
        if v is None or isinstance(v, (str, bool, int, float)):
            return v
        if isinstance(v, dict):
            out = {}
            for k, item in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"output object keys must be strings, got {k!r} at {at!r}")
                out[k] = walk(item, json_pointer(at, k))
            return out
        if isinstance(v, (list, tuple)):
            return [walk(item, json_pointer(at, i)) for i, item in enumerate(v)]
        raise TypeError(f"unsupported output value {type(v).__name__} at {at!r}")

    return walk(value, path), files
