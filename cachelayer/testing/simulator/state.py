"""What every part of the simulator shares: its settings, clock, lock and base URL."""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from cachelayer.testing.simulator.clock import SimClock

__all__ = ["SimState", "Settings", "Setting", "new_id", "new_token"]

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_TOKEN_ALPHABET = string.ascii_letters + string.digits

T = TypeVar("T")


@dataclass
class Settings:
    """The knobs of a running simulator; see :class:`ReplicateSimulator` for each one's meaning.

    Times are seconds of the simulator's clock.
    """

    token: str
    url_ttl: float
    data_removal_after: float
    prediction_duration: float
    page_size: int
    refresh_expired_urls: bool
    remove_input_on_data_removal: bool
    webhook_secret: str
    webhook_verify: bool | str
    webhook_max_attempts: int
    latency: float = 0.0
    delivery_requires_token: bool = False
    allow_http_webhooks: bool = False
    accept_source_api: bool = False
    wait_timeout_status: str = "starting"


class Setting(Generic[T]):
    """A descriptor exposing one field of an owner's ``settings`` (a :class:`Settings`) as an
    attribute of the owner, readable and settable while the simulator runs."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.settings, self._name)  # type: ignore[attr-defined]

    def __set__(self, obj: object, value: T) -> None:
        setattr(obj.settings, self._name, value)  # type: ignore[attr-defined]


class SimState:
    """Shared by the parts: ``settings``, ``clock``, one re-entrant ``lock`` and its
    condition ``cond`` (notified whenever predictions change or the clock moves),
    ``stopping`` (set on shutdown), and once the server listens the ``base_url`` (the API
    origin) and the ``delivery_url`` (the file-delivery origin, another socket)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = SimClock()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self._base_url: str | None = None
        self._delivery_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` (no trailing slash); raises :class:`RuntimeError` before start."""
        if self._base_url is None:
            raise RuntimeError("simulator not started")
        return self._base_url

    @base_url.setter
    def base_url(self, value: str | None) -> None:
        self._base_url = value

    @property
    def delivery_url(self) -> str:
        """``http(s)://host:port`` of file delivery (no trailing slash), a different port
        from :attr:`base_url`, as replicate.delivery is another host than api.replicate.com;
        raises :class:`RuntimeError` before start."""
        if self._delivery_url is None:
            raise RuntimeError("simulator not started")
        return self._delivery_url

    @delivery_url.setter
    def delivery_url(self, value: str | None) -> None:
        self._delivery_url = value

    def notify(self) -> None:
        """Wake every thread waiting on :attr:`cond` (held requests, the webhook sender)."""
        with self.cond:
            self.cond.notify_all()


def new_id() -> str:
    """A prediction id: 26 characters of lowercase base32, like Replicate's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def new_token(n: int) -> str:
    """``n`` random ASCII letters and digits (delivery tokens, webhook ids)."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))
