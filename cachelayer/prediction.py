"""The typed prediction at the Replicate boundary.

Everything past :mod:`cachelayer.replicate_api` (and the webhook receiver) handles a
:class:`Prediction`, never Replicate's raw JSON: the catalog records it, the persist policy
decides on it, the history scan filters it.

Facts (shared/reference/replicate-api.md, Replicate's OpenAPI schema): ``status`` is one of
``starting``, ``processing``, ``succeeded``, ``failed``, ``canceled`` or ``aborted`` (the last
four are terminal; ``aborted`` means terminated before it started, e.g. its deadline passed);
times are RFC 3339 with up to nanosecond digits; ``source`` is ``api`` or ``web``;
``data_removed`` becomes true when Replicate has removed the input, output and files (one hour
after an API prediction finishes); official models report ``version: "hidden"``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeAlias

from cachelayer.errors import ConfigError
from cachelayer.outputs import replace_files

if TYPE_CHECKING:
    from cachelayer.model_io import JSONObject, JSONValue, ReplicatePredictionLike

__all__ = [
    "Prediction",
    "PredictionLike",
    "PredictionStatus",
    "as_json",
    "held_prediction",
    "is_version_id",
    "parse_time",
]

_VERSION_RE = re.compile(r"^[0-9a-f]{64}$")


class PredictionStatus(str, enum.Enum):
    """A prediction's ``status``; ``UNKNOWN`` stands for a value Replicate may add later."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        """Whether the prediction will never change status again."""
        return self in _TERMINAL

    @classmethod
    def parse(cls, value: object) -> PredictionStatus:
        """The status named by ``value`` (``UNKNOWN`` for anything unrecognised or missing)."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset(
    {
        PredictionStatus.SUCCEEDED,
        PredictionStatus.FAILED,
        PredictionStatus.CANCELED,
        PredictionStatus.ABORTED,
    }
)


def parse_time(value: Any) -> datetime | None:
    """Parse Replicate's RFC 3339 timestamps (up to 9 fractional digits, ``Z``) to aware UTC.

    ``None`` and unparseable text give ``None`` (a malformed time never stops a record).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def is_version_id(version: str | None) -> bool:
    """Whether ``version`` is a 64-hex version id (official models report ``"hidden"``)."""
    return bool(version and _VERSION_RE.match(version))


def as_json(prediction: Any) -> dict[str, Any]:
    """A prediction given as a dict or either ``replicate`` client's ``Prediction`` object
    (1.x: a pydantic-v1 model, ``.dict()``; 2.x: a pydantic-v2 model whose unknown fields
    are kept, ``.model_dump()``), as a dict. ``FileOutput`` objects in it are left as they
    are (:meth:`Prediction.of` turns them into their URLs).

    Raises ``TypeError`` for anything else.
    """
    if isinstance(prediction, dict):
        return dict(prediction)
    for attr in ("model_dump", "dict"):
        fn = getattr(prediction, attr, None)
        if callable(fn):
            try:
                return dict(fn())
            except TypeError:
                continue
    raise TypeError(f"not a prediction: {prediction!r}")


@dataclass(frozen=True)
class Prediction:
    """One prediction as Replicate describes it (``GET /v1/predictions/{id}``).

    ``input`` is the model input (``None`` once removed), ``output`` the model output in its
    own shape (strings, lists, dicts; file URLs or ``data:`` URIs inside), ``urls`` the
    prediction's links (``get``, ``cancel``, ``stream``, ``web``). ``version`` is ``"hidden"``
    for official models. ``deployment`` is ``owner/name`` when it ran on a deployment.
    ``metrics`` as Replicate reports them (``predict_time`` in seconds...).
    """

    id: str
    status: PredictionStatus = PredictionStatus.UNKNOWN
    model: str | None = None
    version: str | None = None
    source: str | None = None
    input: JSONObject | None = None
    output: JSONValue = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    data_removed: bool = False
    deployment: str | None = None
    urls: dict[str, str] = field(default_factory=dict)
    metrics: JSONObject = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: JSONObject) -> Prediction:
        """Build from Replicate's JSON. Raises ``ValueError`` when ``id`` is missing."""
        pid = data.get("id")
        if not pid or not isinstance(pid, str):
            raise ValueError("a prediction needs an id")
        inp = data.get("input")
        err = data.get("error")
        urls = data.get("urls")
        metrics = data.get("metrics")
        deployment = data.get("deployment")
        return cls(
            id=pid,
            status=PredictionStatus.parse(data.get("status")),
            model=_text(data.get("model")),
            version=_text(data.get("version")),
            source=_text(data.get("source")),
            input=dict(inp) if isinstance(inp, dict) and inp else None,
            output=data.get("output"),
            error=None if err is None else str(err),
            created_at=parse_time(data.get("created_at")),
            started_at=parse_time(data.get("started_at")),
            completed_at=parse_time(data.get("completed_at")),
            data_removed=bool(data.get("data_removed")),
            deployment=_text(deployment) if isinstance(deployment, str) else None,
            urls={str(k): str(v) for k, v in urls.items()} if isinstance(urls, dict) else {},
            metrics=dict(metrics) if isinstance(metrics, dict) else {},
        )

    @classmethod
    def of(cls, prediction: PredictionLike) -> Prediction:
        """A :class:`Prediction` from itself, a JSON dict or either ``replicate`` client's
        ``Prediction`` object; ``FileOutput`` objects (1.x or 2.x: anything with a string
        ``url``) in its output become their URLs. Raises ``TypeError``/``ValueError`` for
        anything else."""
        if isinstance(prediction, Prediction):
            return prediction
        data = as_json(prediction)
        if data.get("output") is not None:
            data["output"] = replace_files(data["output"], lambda _path, url: url)
        return cls.from_json(data)

    @property
    def terminal(self) -> bool:
        """Whether the prediction has finished (succeeded, failed, canceled or aborted)."""
        return self.status.terminal

    @property
    def succeeded(self) -> bool:
        return self.status is PredictionStatus.SUCCEEDED

    @property
    def finished_at(self) -> datetime | None:
        """When it completed, else when it was created: the clock of Replicate's removal."""
        return self.completed_at or self.created_at

    def with_output(self, output: JSONValue) -> Prediction:
        """A copy whose ``output`` is ``output``."""
        return replace(self, output=output)


#: What the public API takes as a prediction: a :class:`Prediction`, Replicate's JSON or
#: either ``replicate`` client's ``Prediction`` object.
PredictionLike: TypeAlias = "Prediction | Mapping[str, JSONValue] | ReplicatePredictionLike"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def held_prediction(prediction: str | PredictionLike) -> Prediction | None:
    """What ``persist`` was given: ``None`` for an id; the typed prediction for an object.
    Raises :class:`~cachelayer.errors.ConfigError` for a URL, a ``FileOutput`` or anything
    else that is not a prediction."""
    if isinstance(prediction, str):
        text = prediction.strip()
        if "://" in text or text.startswith("data:") or "/" in text:
            raise ConfigError(
                f"persist takes a prediction id or a Prediction, not a URL ({text[:60]!r}); "
                "to find the durable URL of a file you hold, use resolve(url)"
            )
        return None
    if hasattr(prediction, "url") and not hasattr(prediction, "id"):  # a FileOutput
        raise ConfigError(
            "persist takes a prediction id or a Prediction, not a FileOutput; pass the prediction, "
            "or use resolve(str(file_output)) for a file already stored"
        )
    try:
        return Prediction.of(prediction)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"persist takes a prediction id or a Prediction: {exc}") from None
