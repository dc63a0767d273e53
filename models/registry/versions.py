"""The model registry: every version, its lineage, its stage, and why it changed.

Each version records name, version, parent, spec and hyperparameters (River's
``_get_params()``), what it learned from (free-form: offset ranges, an archive time
range), code version, creation time, metrics at registration and its stage
(``shadow`` / ``canary`` / ``champion`` / ``retired``). Every stage change is appended to
the name's history with a reason and who made it: the audit trail. ``spec_detail`` keeps
the full spec (factory path + params, the factory package's version, River's version).

Artifacts are signed (HMAC-SHA256, :mod:`streamlearn.models.artifacts`) over the model
*and* its name and version, so a validly signed artifact copied under another version is
refused too; loading never unpickles anything whose signature does not verify. Storage is
:mod:`streamlearn.models.registry.store` (Redis or a directory), chosen by
``settings.registry_url``; the state lives there, so it survives restarts.

Champions form a stack: promoting pushes, :meth:`ModelRegistry.rollback` pops, so a
rollback returns to the champion before the current one, and a second rollback to the
one before that (a rolled-back champion is never rolled back *to*).

>>> import tempfile
>>> reg = ModelRegistry(DirectoryStore(tempfile.mkdtemp()), key=b"k")
>>> v1 = reg.register("fraud", {"w": 1}, spec="logreg", stage="champion", reason="bootstrap")
>>> v2 = reg.register("fraud", {"w": 2}, spec="hat", parent=1, trained_on={"feedback": {"0": [0, 5000]}})
>>> reg.promote("fraud", 2, "gate: lower bound 0.012 > margin 0").stage
'champion'
>>> reg.rollback("fraud", "canary worse").version, reg.get("fraud", 2).stage
(1, 'retired')
>>> [(h.version, h.to_stage) for h in reg.history("fraud")]
[(1, 'champion'), (2, 'shadow'), (2, 'champion'), (1, 'retired'), (2, 'retired'), (1, 'champion')]
>>> reg.load("fraud", 1)
{'w': 1}
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from streamlearn.formats import jsonable as _jsonable
from streamlearn.models import artifacts
from streamlearn.models.artifacts import ArtifactError
from streamlearn.models.estimators.spec import ModelSpec, describe_spec
from streamlearn.models.registry.store import (
    DirectoryStore,
    RedisStore,
    RegistryError,
    RegistryStore,
    check_artifact,
    check_name,
    open_store,
)

__all__ = ["ArtifactError", "DirectoryStore", "ModelRegistry", "ModelVersion", "RedisStore", "RegistryError",
           "Transition", "code_version", "model_params", "open_registry"]

STAGES = ("shadow", "canary", "champion", "retired")
# direct moves; champion -> retired and retired -> champion happen only by promote/rollback
ALLOWED = {
    "shadow": {"canary", "champion", "retired"},
    "canary": {"champion", "shadow", "retired"},
    "champion": set(),
    "retired": {"shadow"},
}


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    parent: int | None
    spec: str
    params: dict[str, Any]
    trained_on: dict[str, Any]
    code_version: dict[str, Any]
    created_at: float
    metrics: dict[str, float]
    stage: str
    artifact: str  # storage key of the signed artifact (never a path)
    # streamlearn.models.spec.describe_spec(spec); {} for versions registered before it existed
    spec_detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    version: int
    from_stage: str | None
    to_stage: str
    reason: str
    by: str
    at: float


@dataclass
class _Index:
    name: str
    next_version: int = 1
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    champions: list[int] = field(default_factory=list)  # the stack: newest last
    history: list[Transition] = field(default_factory=list)  # append-only

    def dumps(self) -> bytes:
        return json.dumps({"name": self.name, "next_version": self.next_version,
                           "versions": [asdict(v) for v in self.versions.values()],
                           "champions": self.champions, "history": [asdict(h) for h in self.history]},
                          sort_keys=True).encode()

    @classmethod
    def loads(cls, name: str, raw: bytes | None) -> _Index:
        if raw is None:
            return cls(name)
        d = json.loads(raw)
        versions = {v["version"]: ModelVersion(**v) for v in d["versions"]}
        return cls(d["name"], d["next_version"], versions, d["champions"], [Transition(**h) for h in d["history"]])

    def move(self, version: int, to: str, reason: str, by: str, at: float) -> ModelVersion:
        mv = self.versions[version]
        self.versions[version] = new = ModelVersion(**{**asdict(mv), "stage": to})
        self.history.append(Transition(version, mv.stage, to, reason, by, at))
        return new

    def stage_of(self, stage: str) -> ModelVersion | None:
        return next((v for v in self.versions.values() if v.stage == stage), None)


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Package version and, when run from a git checkout, the commit."""
    try:
        package = importlib.metadata.version("streamlearn")
    except importlib.metadata.PackageNotFoundError:
        package = None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": package, "git": commit}


def model_params(obj: Any) -> dict[str, Any]:
    """River hyperparameters (``_get_params()``) as JSON: classes become their dotted names.

    Accepts an estimator, a :class:`~streamlearn.models.estimators.learner.Learner` or its state dict.
    """
    est = obj.get("model") if isinstance(obj, dict) else getattr(obj, "model", obj)
    if not hasattr(est, "_get_params"):
        return {}
    return _jsonable(est._get_params())


class ModelRegistry:
    """Register, stage and load model versions. Plain method calls, safe across processes."""

    def __init__(self, store: RegistryStore, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.store, self.key, self.clock = store, key, clock

    # ------------------------------------------------------------------ queries
    def _index(self, name: str) -> _Index:
        return _Index.loads(name, self.store.read(check_name(name)))

    def names(self) -> list[str]:
        return self.store.names()

    def list(self, name: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        names = [name] if name else self.names()
        return [v for n in names for v in self._index(n).versions.values() if stage in (None, v.stage)]

    def get(self, name: str, version: int) -> ModelVersion:
        try:
            return self._index(name).versions[int(version)]
        except KeyError:
            raise RegistryError(f"{name} has no version {version}") from None

    def champion(self, name: str) -> ModelVersion | None:
        idx = self._index(name)
        return idx.versions[idx.champions[-1]] if idx.champions else None

    def previous_champion(self, name: str) -> ModelVersion | None:
        """The version a rollback would restore."""
        idx = self._index(name)
        return idx.versions[idx.champions[-2]] if len(idx.champions) > 1 else None

    def canary(self, name: str) -> ModelVersion | None:
        return self._index(name).stage_of("canary")

    def history(self, name: str, version: int | None = None) -> list[Transition]:
        return [h for h in self._index(name).history if version is None or h.version == version]

    def load(self, name: str, version: int) -> Any:
        """The model object, only after its signature verifies for exactly this name and version."""
        mv = self.get(name, version)
        blob = self.store.get_artifact(name, check_artifact(mv.artifact))
        if blob is None:
            raise ArtifactError(f"artifact of {name} v{version} is missing from the registry store")
        payload = artifacts.load(blob, self.key)
        if not isinstance(payload, dict) or (payload.get("name"), payload.get("version")) != (name, mv.version):
            raise ArtifactError(f"artifact stored for {name} v{version} is signed for another model or version")
        return payload["model"]

    # ------------------------------------------------------------------ changes
    def _update(self, name: str, change: Callable[[_Index], Any]) -> Any:
        """Read-modify-write with compare-and-set, retried if another process got there first."""
        for _ in range(100):
            raw = self.store.read(check_name(name))
            idx = _Index.loads(name, raw)
            result = change(idx)
            if self.store.compare_and_set(name, raw, idx.dumps()):
                return result
            time.sleep(0.001)
        raise RegistryError(f"registry index of {name} is too contended; try again")

    def register(self, name: str, model: Any, *, spec: str | ModelSpec, parent: int | None = None,
                 trained_on: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                 params: dict[str, Any] | None = None, stage: str = "shadow", reason: str = "registered",
                 by: str = "system") -> ModelVersion:
        """Store a signed artifact and record a new version (``stage`` shadow, or champion to bootstrap)."""
        if stage not in ("shadow", "champion"):
            raise RegistryError("a new version starts as shadow (or champion, to bootstrap a name)")
        params = model_params(model) if params is None else params
        detail = describe_spec(spec)
        spec = spec if isinstance(spec, str) else str(spec)
        while True:
            idx = self._index(name)
            version = idx.next_version
            art = f"v{version}-{uuid.uuid4().hex[:12]}"
            self.store.put_artifact(name, art, artifacts.sign({"name": name, "version": version, "model": model},
                                                              self.key))

            def add(idx: _Index, version: int = version, art: str = art) -> ModelVersion | None:
                if idx.next_version != version:
                    return None  # someone registered meanwhile: sign again for the next number
                if parent is not None and parent not in idx.versions:
                    raise RegistryError(f"{name} has no parent version {parent}")
                if stage == "champion" and idx.champions:
                    raise RegistryError(f"{name} already has a champion; register as shadow and promote")
                idx.next_version += 1
                idx.versions[version] = ModelVersion(
                    name, version, parent, spec, params, dict(trained_on or {}), code_version(), self.clock(),
                    {k: float(v) for k, v in (metrics or {}).items()}, stage, art, detail)
                mv = idx.versions[version]
                idx.history.append(Transition(version, None, stage, reason, by, mv.created_at))
                if stage == "champion":
                    idx.champions.append(version)
                return mv

            try:
                mv = self._update(name, add)
            except Exception:
                self.store.delete_artifact(name, art)
                raise
            if mv is not None:
                return mv
            self.store.delete_artifact(name, art)

    def set_stage(self, name: str, version: int, stage: str, reason: str, by: str = "system") -> ModelVersion:
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; known: {STAGES}")

        def change(idx: _Index) -> ModelVersion:
            if version not in idx.versions:
                raise RegistryError(f"{name} has no version {version}")
            current = idx.versions[version].stage
            if stage not in ALLOWED[current]:
                hint = "; promote another version or roll back" if current == "champion" else ""
                raise RegistryError(f"{name} v{version} cannot go from {current} to {stage}{hint}")
            now = self.clock()
            if stage == "canary" and (other := idx.stage_of("canary")) is not None:
                raise RegistryError(f"{name} v{other.version} is already the canary")
            old = idx.champions[-1] if stage == "champion" and idx.champions else None
            mv = idx.move(version, stage, reason, by, now)
            if stage == "champion":
                idx.champions.append(version)
            if old is not None:
                idx.move(old, "retired", f"superseded by v{version}: {reason}", by, now)
            return mv

        return self._update(name, change)

    def promote(self, name: str, version: int, reason: str, by: str = "system") -> ModelVersion:
        return self.set_stage(name, version, "champion", reason, by)

    def retire(self, name: str, version: int, reason: str, by: str = "system") -> ModelVersion:
        return self.set_stage(name, version, "retired", reason, by)

    def rollback(self, name: str, reason: str, by: str = "system") -> ModelVersion:
        """End the canary (back to shadow), or else restore the previous champion. Returns what serves now."""

        def change(idx: _Index) -> ModelVersion:
            now = self.clock()
            canary = idx.stage_of("canary")
            if canary is not None:
                idx.move(canary.version, "shadow", f"canary rolled back: {reason}", by, now)
                return idx.versions[idx.champions[-1]]
            if len(idx.champions) < 2:
                raise RegistryError(f"{name} has no previous champion to roll back to")
            bad = idx.champions.pop()
            idx.move(bad, "retired", f"rolled back: {reason}", by, now)
            return idx.move(idx.champions[-1], "champion", f"rollback from v{bad}: {reason}", by, now)

        return self._update(name, change)


def open_registry(settings: Any) -> ModelRegistry:
    """The registry the settings name: ``registry_url``, or the state Redis if it is empty."""
    url = settings.registry_url or settings.redis_url
    return ModelRegistry(open_store(url, settings.redis_prefix), settings.artifact_key.get_secret_value().encode())
