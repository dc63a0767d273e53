"""A project: the folder a user owns, declaring their events' features, models and task.

::

    myproject/
      streamlearn.toml     [project] task, [features] the view, [models] specs, [settings], [demo]
      project.py           anything code-shaped: feature functions, model factories, a generator
      sample.jsonl         a few events (checked against the declared fields; `features --sample`)

``STREAMLEARN_PROJECT=DIR`` (or ``--project DIR``) points every command at it; from Python,
:meth:`Project.load`. Without a project, streamlearn runs its built-in card-fraud project
(``entity_v1`` features, the ``logreg`` preset) exactly as before.

The project folder goes on ``sys.path``, so ``"project:make_model"`` in the TOML file names
``make_model`` in ``DIR/project.py``, in the worker, in backtests and in retraining alike.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlearn.featurestore.declare import view_from_dict
from streamlearn.featurestore.definitions import VIEWS, FeatureView, get_view
from streamlearn.featurestore.errors import FeatureConfigError
from streamlearn.featurestore.functions import resolve_import
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.spec import SPECS, ModelSpec, build_model
from streamlearn.models.task import Task, infer_task
from streamlearn.settings import PROJECT_FILE, Settings

__all__ = ["PROJECT_FILE", "Project", "ProjectError", "builtin_spec", "project_for", "load_events"]

_TABLES = {"project", "features", "models", "settings", "demo"}
_PROJECT_KEYS = {"name", "task", "classes", "positive", "sample", "description"}
_MODELS_KEYS = {"name", "champion", "challenger", "specs"}
_DEMO_KEYS = {"generator", "events"}


class ProjectError(ValueError):
    """A project that cannot be used; the message is one line naming the file and key."""


@dataclass
class Project:
    """A loaded project: settings, the feature view, named model specs and the task."""

    settings: Settings
    view: FeatureView
    task: Task
    specs: dict[str, str] = field(default_factory=dict)  # name -> canonical spec string
    champion: str = "logreg"  # canonical spec of the champion
    challenger: str | None = None  # canonical spec drift-started challengers use (None: the champion's)
    directory: Path | None = None
    name: str = "cards"
    sample: Path | None = None
    demo: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, directory: str | Path, **settings: Any) -> Project:
        """The project in ``directory``; ``settings`` override its ``[settings]`` (as keyword
        arguments to :class:`~streamlearn.settings.Settings` do)."""
        try:
            s = Settings(project=str(directory), **settings)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ProjectError(_one_line(exc)) from None
        return cls.from_settings(s)

    @classmethod
    def from_settings(cls, settings: Settings) -> Project:
        """The project the settings point at (``settings.project``), or the built-in one."""
        if not settings.project:
            return _builtin(settings)
        return _load(settings)

    # ------------------------------------------------------------------ what it declares
    @property
    def keys(self) -> Keys:
        """Redis keys of this project's model, in its feature view's namespace."""
        return Keys(self.settings.redis_prefix, self.settings.model_name, view=view_namespace(self.view))

    def resolve_spec(self, spec: str) -> str:
        """A spec name of the project (or a preset, or a factory string) -> canonical string."""
        return _canonical(spec, self.specs, "spec")

    def build_model(self, spec: str | None = None) -> Any:
        """A fresh estimator of ``spec`` (default: the champion's)."""
        return build_model(self.resolve_spec(spec or self.champion))

    def check_sample(self) -> list[str]:
        """Declared fields the sample events never carry (empty if fine or no sample)."""
        if self.sample is None:
            return []
        return self.view.check_sample(list(load_events(self.sample, limit=1000)))

    def features(self, events: list[dict[str, Any]]) -> list[dict[str, float]]:
        """The vectors the live loop would serve for ``events`` (in order, state in memory)."""
        return list(self.iter_features(events))

    def iter_features(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, float]]:
        """:meth:`features`, one vector at a time (a caller learns which event a
        :class:`~streamlearn.featurestore.errors.FeatureError` came from)."""
        states: dict[str, Any] = {}
        for ev in events:
            x, states[ev["entity"]] = self.view.compute(ev, states.get(ev["entity"]))
            yield x

    def demo_items(self, n: int | None = None, seed: int = 7) -> list[Any]:
        """The demo stream: ``[demo] generator = "module:fn"``, called as ``fn(n, seed)``, giving
        :class:`~streamlearn.datasets.Item` s (event, label, label time)."""
        from streamlearn.datasets import Item

        gen = self.demo.get("generator")
        if not gen:
            raise ProjectError(f"{self.directory}/{PROJECT_FILE}: [demo] generator is not set: name a function "
                               "returning streamlearn.datasets.Item s")
        try:
            fn = resolve_import(gen)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ProjectError(f"{self.directory}/{PROJECT_FILE}: demo.generator: {_one_line(exc)}") from None
        items = list(fn(n or int(self.demo.get("events", 5000)), seed))
        return [it if isinstance(it, Item) else Item(*it) for it in items]


def project_for(settings: Settings) -> Project:
    """The project of ``settings`` (cached per settings object: loading imports user code once)."""
    key = id(settings)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is settings:
        return hit[1]
    project = Project.from_settings(settings)
    if len(_CACHE) >= 16:  # a process uses one or two settings objects; tests make many
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (settings, project)
    return project


_CACHE: dict[int, tuple[Settings, Project]] = {}


def view_namespace(view: FeatureView) -> str:
    """Where a view's entity state and served vectors live: the built-in views keep the
    original, unnamespaced keys; every other view gets ``<name>.v<version>``, so bumping a
    version starts a fresh namespace and the old one stays readable."""
    builtin = VIEWS.get(view.name)
    if builtin is not None and builtin.fingerprint == view.fingerprint and builtin.version == view.version:
        return ""
    return f"{view.name}.v{view.version}"


# ---------------------------------------------------------------------- internals
def _builtin(s: Settings) -> Project:
    try:
        view = get_view(s.feature_view)
    except ValueError as exc:
        raise ProjectError(str(exc)) from None
    spec = _canonical(s.model_spec, {}, "STREAMLEARN_MODEL_SPEC")
    task = Task.parse(s.task) if s.task else infer_task(build_model(spec))
    return Project(settings=s, view=view, task=task, specs={k: k for k in SPECS}, champion=spec)


def _load(s: Settings) -> Project:
    directory = Path(s.project).resolve()
    path = directory / PROJECT_FILE
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such file (create a project with `streamlearn init {directory}`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{where}: {exc}") from None
    _known(data, _TABLES, where, "")
    meta = _table(data, "project", where)
    _known(meta, _PROJECT_KEYS, where, "project.")
    models = _table(data, "models", where)
    _known(models, _MODELS_KEYS, where, "models.")
    demo = _table(data, "demo", where)
    _known(demo, _DEMO_KEYS, where, "demo.")
    _activate(directory)

    features = data.get("features")
    if not isinstance(features, dict):
        raise ProjectError(f"{where}: [features] is missing: declare the feature view (see `streamlearn init`)")
    try:
        if "view" in features:  # a view written in Python: view = "project:VIEW"
            extra = set(features) - {"view"}
            if extra:
                raise FeatureConfigError("features", f"with 'view', no other keys (got {sorted(extra)})")
            try:
                view = resolve_import(features["view"], callable_only=False)
            except FeatureConfigError as exc:
                raise FeatureConfigError("features.view", exc.reason) from None
            if not isinstance(view, FeatureView):
                raise FeatureConfigError("features.view", f"{features['view']!r} is not a FeatureView")
        else:
            view = view_from_dict(features, resolve=resolve_import)
    except FeatureConfigError as exc:
        raise ProjectError(f"{where}: {exc}") from None
    except (ImportError, AttributeError, ValueError) as exc:
        raise ProjectError(f"{where}: features: {_one_line(exc)}") from None

    specs: dict[str, str] = {}
    raw_specs = models.get("specs", {})
    if not isinstance(raw_specs, dict):
        raise ProjectError(f"{where}: models.specs must be a table of named specs")
    for name, table in raw_specs.items():
        specs[name] = _canonical(table, specs, f"{where}: models.specs.{name}")
    champion = _canonical(s.model_spec, specs, f"{where}: models.champion")
    challenger = models.get("challenger")
    challenger = _canonical(challenger, specs, f"{where}: models.challenger") if challenger else None
    own = {spec: f"models.specs.{name}" for name, spec in specs.items()}  # a named spec's own table
    for label, spec in [("champion", champion)] + ([("challenger", challenger)] if challenger else []):
        try:
            build_model(spec)  # a factory that does not import fails here, before any consumer joins
        except (ValueError, ImportError) as exc:
            raise ProjectError(f"{where}: {own.get(spec, f'models.{label}')}: {_one_line(exc)}") from None
    declared = meta.get("task")
    try:
        if isinstance(declared, dict):
            task = Task.parse(declared)
        elif s.task or declared or "classes" in meta:
            task = Task.parse({"kind": s.task or declared or "binary",
                               **{k: meta[k] for k in ("classes", "positive") if k in meta}})
        else:
            task = infer_task(build_model(champion))
        task.check_model(build_model(champion))
    except ValueError as exc:
        raise ProjectError(f"{where}: project.task: {_one_line(exc)}") from None
    sample = meta.get("sample")
    sample_path = (directory / sample) if sample else None
    if sample_path is not None and not sample_path.is_file():
        raise ProjectError(f"{where}: project.sample: {sample_path} does not exist")
    project = Project(settings=s, view=view, task=task, specs=specs, champion=champion, challenger=challenger,
                      directory=directory, name=str(meta.get("name") or directory.resolve().name),
                      sample=sample_path, demo=dict(demo), description=str(meta.get("description", "")))
    missing = project.check_sample()
    if missing:
        raise ProjectError(f"{where}: features: {'; '.join(missing)} (checked against {sample_path})")
    return project


_ACTIVE: list[str] = []  # project directories put on sys.path by this process


def _activate(directory: Path) -> None:
    """Put the project's folder first on sys.path, so its modules import as top-level names;
    modules loaded earlier from another project's folder (every project may have a
    ``project.py``) are forgotten, so ``project:make_model`` means this project's."""
    path = str(directory.resolve())
    others = [d for d in _ACTIVE if d != path]
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None) or ""
        if any(file.startswith(d + "/") for d in others):
            del sys.modules[name]
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    if path not in _ACTIVE:
        _ACTIVE.append(path)


def _canonical(spec: Any, named: Mapping[str, str], where: str) -> str:
    """A spec name of the project (``named``), a preset or a factory -> its canonical string;
    a name that is neither the project's nor a preset is one line with the nearest name."""
    if isinstance(spec, str) and spec in named:
        return named[spec]
    try:
        parsed = ModelSpec.parse(spec)
    except ValueError as exc:
        raise ProjectError(f"{where}: {_one_line(exc)}") from None
    if not parsed.is_factory and parsed.target not in SPECS:
        import difflib

        near = difflib.get_close_matches(parsed.target, sorted(named) + sorted(SPECS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        own = f"the project's: {sorted(named)}, " if named else ""  # the built-in project names none
        raise ProjectError(f"{where}: unknown model spec {parsed.target!r}{hint}; {own}presets: {sorted(SPECS)}, "
                           "or a factory 'module:function'")
    return str(parsed)


def builtin_spec(spec: Any) -> str:
    """A spec for the built-in project (a preset or a factory) -> its canonical string, checked
    as :meth:`Project.resolve_spec` checks a project's: an unknown name is one line with the
    nearest preset, before anything is started (the demo's ``--spec``)."""
    return _canonical(spec, {}, "spec")


def _table(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    t = data.get(name, {})
    if not isinstance(t, dict):
        raise ProjectError(f"{where}: [{name}] must be a table")
    return t


def _known(table: Mapping[str, Any], known: set[str], where: str, prefix: str) -> None:
    import difflib

    for key in table:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {prefix + near[0]!r}?)" if near else ""
            raise ProjectError(f"{where}: {prefix}{key}: unknown key{hint}; expected one of {sorted(known)}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 400 else text[:397] + "..."


def load_events(path: str | Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Events from a JSON-lines file (one wire-format event object per line). A line that is
    not a JSON object is a :class:`ProjectError` naming the file and line."""
    with open(path) as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            if line.strip():
                try:
                    ev = json.loads(line)
                except ValueError as exc:
                    raise ProjectError(f"{path}: line {n + 1}: not JSON ({_one_line(exc)})") from None
                if not isinstance(ev, dict):
                    raise ProjectError(f"{path}: line {n + 1}: expected a JSON object, got {type(ev).__name__}")
                yield ev
