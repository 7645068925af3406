"""The types of the public API's model input and output, and what a caller may pass as a
prediction, a file or the parameters of a create.

A model's input and output are JSON whose shape each model decides (its OpenAPI schema at
Replicate): :data:`JSONValue` is that JSON, typed ``Any`` on purpose as ``json.loads`` is in
typeshed, so a caller indexes an output (``output[0]``, ``output["image"]``) without
narrowing a union first. It is the only ``Any`` of the public signatures
(``tests/test_public_types.py``). An input may also hold files the client uploads or
encodes (open binary files, paths, either client's ``FileOutput``); an output that
cachelayer returns has every file replaced by its durable URL (a string).

Sources: Replicate's prediction object and create parameters
(shared/reference/replicate-api.md, replicate-openapi.json ``schemas_prediction_response``
and the ``Prefer``/``webhook*`` fields of the creates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, TypeAlias, TypedDict, runtime_checkable

__all__ = [
    "CreateParams",
    "FileOutputLike",
    "Input",
    "JSONObject",
    "JSONValue",
    "Output",
    "ReplicatePredictionLike",
]

#: One JSON value of a model's input or output (``None``, ``bool``, numbers, ``str``, lists,
#: string-keyed dicts; in an input also files). ``Any`` on purpose: see the module docstring.
JSONValue: TypeAlias = Any
#: A JSON object: a prediction as Replicate sends it, a record as ``to_dict`` renders it.
JSONObject: TypeAlias = dict[str, JSONValue]
#: A model's input: its parameters by name.
Input: TypeAlias = Mapping[str, JSONValue]
#: A model's output as cachelayer returns it: the model's JSON with each file's URL durable.
Output: TypeAlias = JSONValue


@runtime_checkable
class FileOutputLike(Protocol):
    """Either ``replicate`` client's ``FileOutput`` (or anything with a string ``url``)."""

    @property
    def url(self) -> str: ...


class ReplicatePredictionLike(Protocol):
    """Either ``replicate`` client's ``Prediction`` object (1.x ``replicate.prediction.
    Prediction``, 2.x ``replicate.types.Prediction``): an ``id`` and a ``status``; its other
    fields are read as Replicate's JSON."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...


class CreateParams(TypedDict, total=False):
    """The parameters of a create besides the input (replicate-openapi.json, the creates):
    ``wait`` (``True``: ``Prefer: wait``, up to 60 s; or 1..60 seconds), ``webhook`` (an
    HTTPS URL), ``webhook_events_filter`` (``start``, ``output``, ``logs``, ``completed``),
    ``stream``, ``file_encoding_strategy`` (how the client sends input files)."""

    wait: bool | int
    webhook: str
    webhook_events_filter: Sequence[Literal["start", "output", "logs", "completed"]]
    stream: bool
    file_encoding_strategy: Literal["url", "base64"]
