"""The models, versions and deployments the simulator knows, and their JSON."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from cachelayer.testing.simulator.clock import iso
from cachelayer.testing.simulator.problems import ProblemError
from cachelayer.testing.simulator.state import SimState

__all__ = [
    "DEFAULT_OUTPUT_SCHEMA",
    "ITERATOR_OUTPUT_SCHEMA",
    "Catalogue",
    "Deployment",
    "Model",
    "Version",
    "split_name",
]

#: Output schema of a model whose output is one file URL (the ``add_model`` default).
DEFAULT_OUTPUT_SCHEMA: dict[str, Any] = {"type": "string", "format": "uri"}

#: Output schema of a model whose output is an iterator of strings (text models).
ITERATOR_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "x-cog-array-type": "iterator",
}


@dataclass
class Version:
    """One version of a model: what its predictions output and how long they take."""

    id: str
    model: str
    created_at: float
    outputs: Any
    output_schema: dict[str, Any]
    input_schema: dict[str, Any]
    duration: float | None
    aborts: bool = False

    @property
    def iterator(self) -> bool:
        """True when the output is an iterator of strings (it grows while ``processing``)."""
        return (
            self.output_schema.get("type") == "array"
            and self.output_schema.get("x-cog-array-type") == "iterator"
        )


@dataclass
class Model:
    """A model ``owner/name`` and its versions, oldest first. ``hidden_version``: an
    official model whose predictions report ``version: "hidden"``."""

    owner: str
    name: str
    official: bool
    description: str | None
    versions: list[Version] = field(default_factory=list)
    hidden_version: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Deployment:
    """A deployment ``owner/name`` running a model's pinned version (or its newest)."""

    owner: str
    name: str
    model: str
    version_id: str | None
    created_at: float


def split_name(name: str) -> tuple[str, str]:
    """``"owner/name"`` -> ``("owner", "name")``; :class:`ValueError` for anything else."""
    owner, slash, rest = name.partition("/")
    if not slash or not owner or not rest or "/" in rest or ":" in name:
        raise ValueError(f"expected 'owner/name', got {name!r}")
    return owner, rest


class Catalogue:
    """Registered models, versions and deployments. Methods that read or change them take
    the shared lock themselves."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self.models: dict[str, Model] = {}
        self.versions: dict[str, Version] = {}
        self.deployments: dict[str, Deployment] = {}

    def add_model(
        self,
        name: str,
        outputs: Any = None,
        version_id: str | None = None,
        output_schema: dict[str, Any] | None = None,
        official: bool = True,
        *,
        input_schema: dict[str, Any] | None = None,
        description: str | None = None,
        duration: float | None = None,
        hidden_version: bool = False,
        aborts: bool = False,
    ) -> str:
        """See :meth:`ReplicateSimulator.add_model`."""
        owner, model_name = split_name(name)
        if hidden_version and not official:
            raise ValueError("hidden_version=True needs an official model")
        with self._state.lock:
            model = self.models.get(name)
            if model is None:
                model = Model(owner, model_name, official, description, hidden_version=hidden_version)
                self.models[name] = model
            else:
                model.official = official
                model.hidden_version = hidden_version
                if description is not None:
                    model.description = description
            vid = version_id or hashlib.sha256(f"{name}#{len(model.versions)}".encode()).hexdigest()
            if vid in self.versions:
                raise ValueError(f"version {vid} already exists")
            version = Version(
                id=vid,
                model=name,
                created_at=self._state.clock.time(),
                outputs=outputs,
                output_schema=dict(output_schema or DEFAULT_OUTPUT_SCHEMA),
                input_schema=dict(input_schema or {"type": "object", "title": "Input", "properties": {}}),
                duration=duration,
                aborts=aborts,
            )
            model.versions.append(version)
            self.versions[vid] = version
            return vid

    def reported_version(self, version: Version) -> str:
        """What predictions of ``version`` report as ``version``: its id, or ``"hidden"``
        for an official model that hides its versions (replicate-api.md)."""
        model = self.models.get(version.model)
        return "hidden" if model is not None and model.hidden_version else version.id

    def history_version(self, model_name: str, vid: str) -> Version:
        """The version ``vid`` (or the newest) of ``model_name`` for a seeded prediction,
        registering the model or version on the fly (older than the registered versions, so
        model-level creates keep using the newest registered one)."""
        with self._state.lock:
            if model_name not in self.models or (vid and vid not in self.versions):
                existing = self.models.get(model_name)
                official = existing.official if existing is not None else True
                hidden = existing.hidden_version if existing is not None else False
                vid = self.add_model(
                    model_name, None, version_id=vid or None, official=official, hidden_version=hidden
                )
                model_versions = self.models[model_name].versions
                model_versions.insert(0, model_versions.pop())
            return self.versions[vid] if vid else self.models[model_name].versions[-1]

    def add_deployment(self, name: str, model: str, version_id: str | None = None) -> None:
        """See :meth:`ReplicateSimulator.add_deployment`."""
        owner, dep_name = split_name(name)
        model_name, _, vid = model.partition(":")
        vid = vid or version_id or ""
        with self._state.lock:
            if model_name not in self.models:
                raise KeyError(f"unknown model {model_name}")
            if vid and vid not in self.versions:
                raise KeyError(f"unknown version {vid}")
            self.deployments[name] = Deployment(
                owner, dep_name, model_name, vid or None, self._state.clock.time()
            )

    # -- lookups for the routes (raise ProblemError) ----------------------------------------

    def model(self, owner: str, name: str) -> Model:
        """The model ``owner/name``; 404 problem if unknown."""
        model = self.models.get(f"{owner}/{name}")
        if model is None:
            raise ProblemError(404, "Not found", f"Model {owner}/{name} not found")
        return model

    def official_version(self, owner: str, name: str) -> Version:
        """The version ``POST /v1/models/{owner}/{name}/predictions`` runs (the newest)."""
        model = self.models.get(f"{owner}/{name}")
        if model is None or not model.versions:
            raise ProblemError(404, "Not found", f"Model {owner}/{name} not found")
        if not model.official:
            raise ProblemError(
                404,
                "Not found",
                f"Model {owner}/{name} is not an official model; create the prediction with a version",
            )
        return model.versions[-1]

    def deployment(self, owner: str, name: str) -> tuple[Deployment, Version]:
        """The deployment ``owner/name`` and the version it runs; 404 problem if unknown."""
        dep = self.deployments.get(f"{owner}/{name}")
        if dep is None:
            raise ProblemError(404, "Not found", f"Deployment {owner}/{name} not found")
        version = self.versions[dep.version_id] if dep.version_id else self.models[dep.model].versions[-1]
        return dep, version

    def resolve_version_ref(self, ref: str) -> Version:
        """The version a ``POST /v1/predictions`` body names: ``id``, ``owner/name:id`` or an
        official model's ``owner/name`` (the schema's three forms); 422 problem otherwise,
        including ``"hidden"`` and any version id of a model that hides its versions (only
        ``POST /v1/models/{owner}/{name}/predictions`` or ``owner/name`` run those)."""
        name, colon, vid = ref.rpartition(":")
        if not colon:
            name, vid = "", ref
        found = self.versions.get(vid)
        if found is not None and (not name or found.model == name) and not self._hides(found):
            return found
        if "/" in ref and not colon:
            model = self.models.get(ref)
            if model is not None and model.versions and model.official:
                return model.versions[-1]
        raise ProblemError(
            422,
            "Invalid version or not permitted",
            f"The specified version {ref} does not exist (or perhaps you don't have access to it?)",
        )

    def _hides(self, version: Version) -> bool:
        model = self.models.get(version.model)
        return model is not None and model.hidden_version

    def visible_version(self, owner: str, name: str, vid: str) -> Version:
        """The version ``GET .../versions/{id}`` shows; 404 problem if unknown or hidden."""
        version = self.versions.get(vid)
        if version is None or version.model != f"{owner}/{name}" or self._hides(version):
            raise ProblemError(404, "Not found", f"Version {vid} of model {owner}/{name} not found")
        return version

    def visible_versions(self, model: Model) -> list[Version]:
        """The versions ``GET .../versions`` lists, newest first (none for a hidden model)."""
        return [] if model.hidden_version else list(reversed(model.versions))

    # -- JSON ----------------------------------------------------------------------------------

    def version_json(self, v: Version) -> dict[str, Any]:
        """A version as ``GET /v1/models/{owner}/{name}/versions/{id}`` returns it."""
        return {
            "id": v.id,
            "created_at": iso(v.created_at),
            "cog_version": "0.9.4",
            "openapi_schema": {
                "openapi": "3.0.2",
                "info": {"title": "Cog", "version": "0.1.0"},
                "paths": {},
                "components": {"schemas": {"Input": v.input_schema, "Output": v.output_schema}},
            },
        }

    def model_json(self, m: Model, run_count: int) -> dict[str, Any]:
        """A model as ``GET /v1/models/{owner}/{name}`` returns it."""
        return {
            "url": f"https://replicate.com/{m.full_name}",
            "owner": m.owner,
            "name": m.name,
            "description": m.description,
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": run_count,
            "cover_image_url": None,
            "default_example": None,
            "is_official": m.official,
            "latest_version": (
                self.version_json(m.versions[-1]) if m.versions and not m.hidden_version else None
            ),
        }

    def deployment_json(self, dep: Deployment) -> dict[str, Any]:
        """A deployment as ``GET /v1/deployments/{owner}/{name}`` returns it."""
        vid = dep.version_id or self.models[dep.model].versions[-1].id
        return {
            "owner": dep.owner,
            "name": dep.name,
            "current_release": {
                "number": 1,
                "model": dep.model,
                "version": vid,
                "created_at": iso(dep.created_at),
                "created_by": {"type": "organization", "username": dep.owner, "name": dep.owner},
                "configuration": {"hardware": "gpu-t4", "min_instances": 0, "max_instances": 1},
            },
        }
