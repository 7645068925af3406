"""Issue 20 item 5: the public API (``cachelayer.__all__``) is fully typed: no public
signature mentions ``Any`` but through the aliases of model input and output JSON
(:mod:`cachelayer.model_io`)."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

import cachelayer

ANY = re.compile(r"\bAny\b")
#: The aliases of model input and output JSON, the one place ``Any`` is allowed.
JSON_ALIASES = {"JSONValue", "Input", "Output"}


def public_signatures(obj: object) -> dict[str, list[str]]:
    """Every annotation (as written) of ``obj``'s public signatures: a function's, or a
    class's public methods, properties and dataclass fields."""
    found: dict[str, list[str]] = {}

    def add(name: str, fn: object) -> None:
        try:
            sig = inspect.signature(fn)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        notes = [str(p.annotation) for p in sig.parameters.values() if p.annotation is not p.empty]
        if sig.return_annotation is not sig.empty:
            notes.append(str(sig.return_annotation))
        found[name] = notes

    if inspect.isfunction(obj):
        add(obj.__name__, obj)
        return found
    assert isinstance(obj, type)
    if issubclass(obj, BaseException):
        return found  # errors: their constructors take what they report
    for name, _member in inspect.getmembers(obj):
        if name.startswith("_") and name != "__init__":
            continue
        raw = inspect.getattr_static(obj, name)
        if isinstance(raw, property):
            add(name, raw.fget)
        elif isinstance(raw, (staticmethod, classmethod)):
            add(name, raw.__func__)
        elif inspect.isfunction(raw):
            add(name, raw)
        elif hasattr(raw, "func"):  # functools.cached_property
            add(name, raw.func)
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if not f.name.startswith("_"):
                found[f"field {f.name}"] = [str(f.type)]
    return found


@pytest.mark.parametrize("name", sorted(cachelayer.__all__))
def test_no_public_signature_mentions_any(name):
    obj = getattr(cachelayer, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)) or name in JSON_ALIASES:
        return  # a type alias (Input: Mapping[str, JSONValue]), a constant
    bad = {
        where: notes for where, notes in public_signatures(obj).items() if any(ANY.search(n) for n in notes)
    }
    assert bad == {}, f"{name}: Any in {bad}"


def test_the_finder_sees_any():
    class Example:
        def run(self, x: Any) -> int:  # noqa: F821 - a string annotation, never evaluated
            return 0

        @property
        def part(self) -> dict[str, Any]:  # noqa: F821
            return {}

    found = public_signatures(Example)
    assert found["run"] == ["Any", "int"]
    assert found["part"] == ["dict[str, Any]"]


def test_webhook_verification_error_is_public():
    from cachelayer.errors import WebhookVerificationError

    assert "WebhookVerificationError" in cachelayer.__all__
    assert cachelayer.WebhookVerificationError is WebhookVerificationError
