"""The registry of predictions and delivery tokens: creation, cancel and abort, URL expiry
and rotation, data removal, waiting, and rendering as the API's JSON. The state machine
itself is in :mod:`.lifecycle`."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from cachelayer.testing.simulator.catalogue import Version
from cachelayer.testing.simulator.clock import iso
from cachelayer.testing.simulator.files import File
from cachelayer.testing.simulator.lifecycle import (
    TERMINAL_STATUSES,
    Prediction,
    Slot,
    SlotRef,
    State,
    Token,
    build_tree,
    logs_at,
    metrics_of,
    next_change,
    state_at,
)
from cachelayer.testing.simulator.state import SimState, new_id, new_token

__all__ = ["Predictions", "order_key"]


def order_key(p: Prediction) -> tuple[float, int]:
    """Sort key of the list endpoint (creation time, then creation order)."""
    return (p.created_at, p.seq)


class Predictions:
    """Every prediction by id and every delivery token. :meth:`settle` and :meth:`render`
    expect the shared lock to be held; the other methods take it."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self.by_id: dict[str, Prediction] = {}
        self.tokens: dict[str, Token] = {}
        self._seq = 0

    # -- registry --------------------------------------------------------------------------

    def next_seq(self) -> int:
        with self._state.lock:
            self._seq += 1
            return self._seq

    def get(self, pid: str) -> Prediction:
        """The prediction ``pid``; :class:`KeyError` if unknown."""
        with self._state.lock:
            try:
                return self.by_id[pid]
            except KeyError:
                raise KeyError(f"unknown prediction {pid}") from None

    def add(self, p: Prediction, files: list[tuple[str, File]], expires_at: float) -> None:
        """Register ``p`` with delivery tokens for ``files`` alive until ``expires_at``.
        Raises :class:`ValueError` for a duplicate id."""
        with self._state.cond:
            if p.id in self.by_id:
                raise ValueError(f"prediction {p.id} already exists")
            for path, file in files:
                slot = Slot(path, file, new_token(32))
                p.slots.append(slot)
                self.tokens[slot.token] = Token(p.id, slot, expires_at)
            self.by_id[p.id] = p
            self._state.cond.notify_all()

    def newest_first(self) -> list[Prediction]:
        """Every prediction, newest first (the list endpoint's order)."""
        with self._state.lock:
            return sorted(self.by_id.values(), key=order_key, reverse=True)

    def run_count(self, model: str) -> int:
        """How many predictions ran model ``owner/name``."""
        with self._state.lock:
            return sum(1 for p in self.by_id.values() if p.model == model)

    # -- files -----------------------------------------------------------------------------

    def url(self, slot: Slot) -> str:
        """The delivery URL of ``slot``'s current token, on the delivery origin; the filename
        is percent-encoded, as in Replicate's delivery URLs (replicate-api.md)."""
        return f"{self._state.delivery_url}/delivery/pbxt/{slot.token}/{quote(slot.file.filename, safe='')}"

    def rotate(self, p: Prediction, only_dead: bool = False) -> None:
        """Give ``p``'s files fresh tokens (only the dead ones when ``only_dead``)."""
        with self._state.lock:
            now = self._state.clock.time()
            expires = max(now, p.completed_at or (p.created_at + p.duration)) + self._state.settings.url_ttl
            for slot in p.slots:
                old = self.tokens[slot.token]
                if only_dead and self.token_alive(old, now):
                    continue
                old.revoked = True
                slot.token = new_token(32)
                self.tokens[slot.token] = Token(p.id, slot, expires)

    def expire(self, p: Prediction) -> None:
        """Make ``p``'s current delivery URLs answer 404."""
        with self._state.lock:
            for slot in p.slots:
                self.tokens[slot.token].revoked = True

    def remove(self, p: Prediction) -> None:
        """Remove ``p``'s data, as Replicate does an hour after an API prediction completes:
        output, logs and files, and (``remove_input_on_data_removal``, the default) the input,
        which then reads ``{}`` (the schema's ``input`` is a required object)."""
        with self._state.lock:
            p.data_removed = True
            self.expire(p)
            if self._state.settings.remove_input_on_data_removal:
                p.input = {}

    def token_alive(self, tok: Token, now: float) -> bool:
        return not tok.revoked and now < tok.expires_at

    def live_file(self, token: str, prefix: str, filename: str) -> File | None:
        """The file a delivery URL (``filename`` percent-decoded) serves now, or None
        (unknown, expired, removed)."""
        with self._state.lock:
            tok = self.tokens.get(token)
            if tok is None or prefix != "pbxt" or tok.slot.file.filename != filename:
                return None
            now = self._state.clock.time()
            p = self.by_id[tok.pid]
            self.settle(p, now)
            if p.data_removed or not self.token_alive(tok, now):
                return None
            return tok.slot.file

    # -- lifecycle -------------------------------------------------------------------------

    def create(
        self,
        version: Version,
        inp: dict[str, Any],
        *,
        reported_version: str,
        aborts: bool = False,
        deployment: str | None = None,
        webhook: str | None = None,
        webhook_events: tuple[str, ...] = (),
        cancel_after: float | None = None,
    ) -> Prediction:
        """Start a prediction of ``version`` (source ``api``) that reports
        ``reported_version``. Calls the version's ``outputs`` now (outside the lock; if it
        raises, the prediction will fail). ``aborts``: it ends ``aborted`` without running.
        ``cancel_after``: seconds after creation of its deadline."""
        error: str | None = None
        tree: Any = None
        files: list[tuple[str, File]] = []
        if not aborts:
            try:
                value = version.outputs(dict(inp)) if callable(version.outputs) else version.outputs
                tree, files = build_tree(value)
            except Exception as exc:  # noqa: BLE001 - a model failure is data, not a crash
                error = str(exc)
        settings = self._state.settings
        duration = settings.prediction_duration if version.duration is None else version.duration
        with self._state.cond:
            now = self._state.clock.time()
            p = Prediction(
                id=new_id(),
                seq=self.next_seq(),
                model=version.model,
                version=reported_version,
                input=inp,
                source="api",
                created_at=now,
                duration=max(0.0, duration),
                tree=tree,
                slots=[],
                final_status="aborted" if aborts else "failed" if error is not None else "succeeded",
                error=error,
                iterator=version.iterator,
                deadline=None if cancel_after is None else now + cancel_after,
                deployment=deployment,
                webhook=webhook,
                webhook_events=webhook_events,
            )
            self.add(p, files, now + p.duration + settings.url_ttl)
        return p

    def _stop(self, p: Prediction, status: str, started: float | None) -> None:
        now = self._state.clock.time()
        p.fixed_status = status
        p.started_at = started
        p.completed_at = now
        p.tree = None
        self.expire(p)
        p.slots = []
        self._state.cond.notify_all()

    def cancel(self, p: Prediction) -> None:
        """Cancel ``p`` if it is still running (its files are dropped)."""
        with self._state.cond:
            status, started, _ = self.settle(p, self._state.clock.time())
            if status not in TERMINAL_STATUSES:
                self._stop(p, "canceled", started)

    def abort(self, p: Prediction) -> None:
        """End ``p`` as ``aborted`` now; :class:`ValueError` unless it is still ``starting``
        (Replicate: aborted means terminated before it started running)."""
        with self._state.cond:
            status = self.settle(p, self._state.clock.time()).status
            if status != "starting":
                raise ValueError(f"prediction {p.id} is {status}; only a starting prediction can abort")
            self._stop(p, "aborted", None)

    def settle(self, p: Prediction, now: float) -> State:
        """Apply lazy transitions (data removal) and return the state at ``now``."""
        state = state_at(p, now)
        if (
            not p.data_removed
            and p.source == "api"
            and state.status in TERMINAL_STATUSES
            and state.completed_at is not None
            and now >= state.completed_at + self._state.settings.data_removal_after
        ):
            self.remove(p)
        return state

    def wait_terminal(self, p: Prediction, seconds: float) -> bool:
        """Block up to ``seconds`` real seconds until ``p`` is terminal; True if it is."""
        deadline = time.monotonic() + seconds
        with self._state.cond:
            while True:
                now = self._state.clock.time()
                if state_at(p, now).status in TERMINAL_STATUSES:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._state.stopping.is_set():
                    return False
                due = next_change(p, now)
                self._state.cond.wait(max(0.001, min(remaining, 0.25, due - now if due else 0.25)))

    # -- JSON ------------------------------------------------------------------------------

    def _materialize(self, p: Prediction, tree: Any) -> Any:
        if isinstance(tree, SlotRef):
            return self.url(p.slots[tree.index])
        if isinstance(tree, dict):
            return {k: self._materialize(p, v) for k, v in tree.items()}
        if isinstance(tree, list):
            return [self._materialize(p, v) for v in tree]
        return tree

    def _output(self, p: Prediction, state: State, now: float) -> Any:
        if p.data_removed:
            return None
        if self._state.settings.refresh_expired_urls and state.status in TERMINAL_STATUSES:
            self.rotate(p, only_dead=True)
        if p.fixed_status is not None or state.status == "succeeded":
            return self._materialize(p, p.tree)
        if state.status == "processing" and p.iterator and isinstance(p.tree, list):
            frac = (now - (state.started_at or now)) / max(p.duration / 2, 1e-9)
            return self._materialize(p, p.tree[: int(len(p.tree) * min(frac, 1.0))])
        return None

    def render(self, p: Prediction, *, report_starting: bool = False) -> dict[str, Any]:
        """``p`` as ``GET /v1/predictions/{id}`` returns it now. ``report_starting``: show a
        running prediction as ``starting`` with no output (a held create that timed out,
        as the API and ``replicate.run()`` expect).

        ``started_at``, ``completed_at``, ``metrics`` and ``deadline`` are left out while
        unknown (the OpenAPI schema types them as strings/objects, not null)."""
        now = self._state.clock.time()
        state = self.settle(p, now)
        if report_starting and state.status not in TERMINAL_STATUSES:
            state = State("starting", None, None)
        base = self._state.base_url
        obj: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "input": p.input,
            "logs": logs_at(p, state),
            "output": self._output(p, state, now),
            "data_removed": p.data_removed,
            "error": p.error if state.status == "failed" else None,
            "status": state.status,
            "source": p.source,
            "created_at": iso(p.created_at),
            "urls": {
                "get": f"{base}/v1/predictions/{p.id}",
                "cancel": f"{base}/v1/predictions/{p.id}/cancel",
                "web": f"https://replicate.com/p/{p.id}",
            },
        }
        if state.started_at is not None:
            obj["started_at"] = iso(state.started_at)
        if state.completed_at is not None:
            obj["completed_at"] = iso(state.completed_at)
        metrics = metrics_of(p, state)
        if metrics is not None:
            obj["metrics"] = metrics
        if p.deadline is not None:
            obj["deadline"] = iso(p.deadline)
        if p.deployment:
            obj["deployment"] = p.deployment
        if p.webhook:
            obj["webhook"] = p.webhook
            obj["webhook_events_filter"] = list(p.webhook_events)
        return obj
