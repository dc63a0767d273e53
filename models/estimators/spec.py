"""Model specs: a short, persistent description -> a fresh River estimator.

A spec is either a **preset** name (the seven below) or a **factory**: a callable given by
import path with keyword parameters, returning any River estimator or pipeline, e.g.
``{"factory": "mypkg.models:make_pipeline", "params": {"lr": 0.05}}``, or as one string
``"mypkg.models:make_pipeline?lr=0.05"``. :class:`ModelSpec` is the canonical form: its
``str()`` is stable (parameters sorted, values JSON), parses back to an equal spec, and is
what learners, checkpoints and the registry keep (a preset's string is just its name, as
it always was). Specs are descriptions, not pickles, so a spec recorded with a run
rebuilds the same model later (backtests, retraining, registry lineage). Presets are
seeded; a factory should seed its estimators too, or replays will not be exact.

>>> model = build_model("logreg")
>>> model.learn_one({"x": 1.0}, True)
>>> 0.0 < model.predict_proba_one({"x": 1.0})[True] < 1.0
True
>>> spec = ModelSpec.parse({"factory": "river.linear_model:LogisticRegression", "params": {"l2": 0.01}})
>>> str(spec)
'river.linear_model:LogisticRegression?l2=0.01'
>>> ModelSpec.parse(str(spec)) == spec, build_model(spec).l2
(True, 0.01)
>>> build_model("nowhere.models:make")
Traceback (most recent call last):
...
ValueError: model factory 'nowhere.models:make': cannot import module 'nowhere.models': No module named 'nowhere'
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

import river
from river import base, compose, dummy, forest, linear_model, naive_bayes, optim, preprocessing, tree

SEED = 42


def _logreg() -> base.Estimator:
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(0.05)),
    )


def _hat() -> base.Estimator:
    return tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, seed=SEED)


def _arf() -> base.Estimator:
    return forest.ARFClassifier(n_models=5, seed=SEED)


def _ht() -> base.Estimator:
    # grows but never prunes: cannot unlearn an old concept (the case drift challengers fix)
    return tree.HoeffdingTreeClassifier(grace_period=100)


def _nb() -> base.Estimator:
    return naive_bayes.GaussianNB()


def _prior() -> base.Estimator:
    # predicts the class frequencies: the floor any real model must beat
    return dummy.PriorClassifier()


def _linreg() -> base.Estimator:
    return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())


SPECS: dict[str, Callable[[], base.Estimator]] = {
    "logreg": _logreg,
    "hat": _hat,
    "arf": _arf,
    "ht": _ht,
    "nb": _nb,
    "prior": _prior,
    "linreg": _linreg,
}


_SAFE = "-_.~:/[],{}\"'+ "  # kept readable in the string form; & = ? % # are escaped


@dataclass(frozen=True)
class ModelSpec:
    """A preset name, or ``module.path:attribute`` with keyword ``params`` (JSON values).

    ``params`` is a sorted tuple of (name, value) pairs so the spec is hashable and its
    string form stable; use :attr:`kwargs` for the dict.
    """

    target: str
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target.strip():
            raise ValueError(f"a model spec needs a preset name or a factory path, got {self.target!r}")
        params = self.params.items() if isinstance(self.params, Mapping) else self.params
        items = tuple(sorted((str(k), _frozen(v, f"{self.target}: param {k!r}")) for k, v in params))
        object.__setattr__(self, "params", items)
        if self.is_factory:
            module, _, attr = self.target.partition(":")
            if not module or not attr or ":" in attr:
                raise ValueError(f"model factory {self.target!r}: expected 'package.module:callable'")
        elif self.params:
            raise ValueError(f"model preset {self.target!r} takes no params (use a factory for custom ones)")

    @property
    def is_factory(self) -> bool:
        return ":" in self.target

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: _thawed(v) for k, v in self.params}

    @classmethod
    def parse(cls, value: ModelSpec | str | Mapping[str, Any]) -> ModelSpec:
        """From a string (``name`` or ``path?k=v&...``), a config table or a spec."""
        if isinstance(value, ModelSpec):
            return value
        if isinstance(value, str):
            target, sep, query = value.strip().partition("?")
            params = {}
            for pair in query.split("&") if sep and query else []:
                k, eq, v = pair.partition("=")
                if not eq or not k:
                    raise ValueError(f"model spec {value!r}: parameter {pair!r} is not key=value")
                params[unquote(k)] = _parse_value(unquote(v))
            return cls(target, tuple(params.items()))
        if isinstance(value, Mapping):
            return cls.from_json(value)
        raise ValueError(f"a model spec is a preset name, a factory string or a table, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        if self.is_factory:
            return {"factory": self.target, "params": self.kwargs}
        return {"preset": self.target}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelSpec:
        unknown = set(d) - {"factory", "preset", "params"}
        if unknown or ("factory" in d) == ("preset" in d):
            raise ValueError(f"a model spec table has 'preset' or 'factory' (+ optional 'params'), got {dict(d)!r}")
        if "preset" in d:
            return cls(str(d["preset"]), tuple((d.get("params") or {}).items()))
        params = d.get("params") or {}
        if not isinstance(params, Mapping):
            raise ValueError(f"model factory {d['factory']!r}: params must be a table, got {params!r}")
        return cls(str(d["factory"]), tuple(params.items()))

    def __str__(self) -> str:
        if not self.params:
            return self.target
        query = "&".join(f"{quote(k, safe=_SAFE)}={quote(_format_value(_thawed(v)), safe=_SAFE)}"
                         for k, v in self.params)
        return f"{self.target}?{query}"


def _frozen(v: Any, where: str) -> Any:
    """JSON values only (the spec is recorded as JSON), made hashable."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"model spec {where}: {v!r} is not a finite number")
        return v
    if isinstance(v, (list, tuple)):
        return ("__list__", tuple(_frozen(x, where) for x in v))
    if isinstance(v, Mapping):
        return ("__dict__", tuple(sorted((str(k), _frozen(x, where)) for k, x in v.items())))
    raise ValueError(f"model spec {where}: {type(v).__name__} is not a JSON value")


def _thawed(v: Any) -> Any:
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "__list__":
        return [_thawed(x) for x in v[1]]
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "__dict__":
        return {k: _thawed(x) for k, x in v[1]}
    return v


def _format_value(v: Any) -> str:
    # bare strings stay bare unless they would read back as another JSON value
    if isinstance(v, str) and _parse_value(v) == v and v.strip() == v and v:
        return v
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_model(spec: ModelSpec | str | Mapping[str, Any]) -> base.Estimator:
    """A fresh estimator; ValueError with a one-line message naming the spec otherwise."""
    s = ModelSpec.parse(spec)
    if not s.is_factory:
        try:
            return SPECS[s.target]()
        except KeyError:
            raise ValueError(f"unknown model spec {s.target!r}; known: {sorted(SPECS)}") from None
    module_name, _, attr = s.target.partition(":")
    where = f"model factory {s.target!r}"
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module: one line
        raise ValueError(f"{where}: cannot import module {module_name!r}: {_one_line(e)}") from None
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"{where}: {attr!r} is not callable")
    try:
        model = factory(**s.kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: rejected params {s.kwargs}: {_one_line(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{where}: raised {type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(model, (base.Classifier, base.Regressor)):
        raise ValueError(f"{where}: returned {type(model).__name__}, not a River classifier or regressor")
    return model


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def describe_spec(spec: ModelSpec | str | Mapping[str, Any]) -> dict[str, Any]:
    """What the registry records to rebuild exactly: the spec, the factory's package version
    (None for a local module) and River's version. Never raises: an unparsable spec
    string (a label such as ``logreg-offline``) is recorded as given."""
    try:
        s = ModelSpec.parse(spec)
    except ValueError:
        return {"spec": str(spec), "river": river.__version__}
    out: dict[str, Any] = {"spec": str(s), **s.to_json(), "river": river.__version__}
    if s.is_factory:
        top = s.target.partition(":")[0].split(".")[0]
        out["package"] = top
        out["package_version"] = package_version(top)
    return out


@lru_cache(maxsize=256)
def package_version(top_level: str) -> str | None:
    """The installed distribution version providing import package ``top_level``, or None."""
    for dist in importlib.metadata.packages_distributions().get(top_level, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def is_classifier(model: base.Estimator) -> bool:
    # River pipelines report the type of their last step.
    return isinstance(model, base.Classifier)
