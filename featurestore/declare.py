"""Feature views declared in a project's TOML table, and what ``streamlearn plan`` shows of one.

The ``[features]`` table of a project file (or any dict of the same shape):

>>> import tomllib
>>> table = tomllib.loads('''
... [features]
... name = "payments"
... version = 2
...
... [[features.fields]]
... name = "amount"
... type = "numeric"
... missing = "indicator"
...
... [[features.fields]]
... name = "shop"
... type = "categorical"
... encoding = "hash"
... buckets = 32
...
... [[features.aggregates]]
... kind = "decayed"
... on = ["amount"]
... half_lives = ["1h", "1d"]
... stats = ["count", "mean", "std", "zscore"]
...
... [[features.aggregates]]
... kind = "window"
... on = "amount"
... duration = "10m"
... stats = ["count", "sum", "max"]
...
... [[features.aggregates]]
... kind = "distinct"
... on = "shop"
...
... [[features.aggregates]]
... kind = "since_last"
... ''')["features"]
>>> view = view_from_dict(table)
>>> view.name, view.version, sorted(view.trending)
('payments', 2, ['ent_shop_distinct'])
>>> view_from_dict(view.spec()).fingerprint == view.fingerprint  # round trip
True

Mistakes are refused with the key path, on one line:

>>> view_from_dict({"name": "v", "aggregates": [{"kind": "decayed", "on": "amount"},
...                                               {"kind": "decayed", "on": "amount", "half_lives": [5]}]})
Traceback (most recent call last):
...
streamlearn.featurestore.errors.FeatureConfigError: features.aggregates[1].half_lives[0]: expected durations \
like "1h", got 5
>>> view_from_dict({"name": "v", "agregates": []})
Traceback (most recent call last):
...
streamlearn.featurestore.errors.FeatureConfigError: features.agregates: unknown key (did you mean 'aggregates'?); \
expected one of ['aggregates', 'description', 'drop', 'fields', 'functions', 'name', 'version']

The schema (durations are strings: ``"250ms"``, ``"30s"``, ``"10m"``, ``"1h"``, ``"1d"``,
``"1w"``; list positions in messages count from 0):

- ``[features]``: ``name`` (required), ``version`` (default 1), ``description``, ``drop``
  (raw fields to leave out when no fields are declared).
- ``[[features.fields]]``: ``name`` (required), ``type`` (``numeric`` | ``boolean`` |
  ``categorical``, default numeric), ``missing`` (``skip`` | ``zero`` | ``indicator`` |
  ``fill``, default skip), ``fill`` (the value for ``fill``), ``encoding`` (categorical:
  ``onehot`` | ``hash``), ``buckets`` (for ``hash``). Without any, every raw field passes
  through: numbers as is, booleans 0/1, strings one-hot.
- ``[[features.aggregates]]``, by ``kind`` (every kind but ``entity`` also takes ``prefix``,
  default ``"ent_"``; the stateful ones take ``key``, their state's name in the entity state):

  ========== ============================================== ===================================
  kind       keys (defaults)                                features
  ========== ============================================== ===================================
  decayed    on, half_lives (["1h", "1d"]), stats           <p>count_hl<hl>, <p><f>_<stat>_hl<hl>
             (count, mean, std; also sum, var, zscore,
             logratio)
  window     on, duration (required), stats (count, sum;    <p>count_w<d>, <p><f>_<stat>_w<d>
             also mean, min, max), buckets (10)
  distinct   on (one categorical field), k (16)             <p><f>_distinct
  count      --                                             <p>count, <p>log_count
  since_last --                                             <p>secs_since_last, <p>log_...
  entity     on, half_lives (["1h", "1d"])                  entity_v1's ent_* features
  ========== ============================================== ===================================

- ``[[features.functions]]``: ``fn`` (``"module:function"``, required), ``name`` (default:
  the function's name), ``stateful`` (default false), ``key`` (default ``fn:<name>``).
"""

from __future__ import annotations

import difflib
import json
import math
import random
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from streamlearn.featurestore.blocks import BLOCKS, Distinct, Window
from streamlearn.featurestore.definitions import FeatureView
from streamlearn.featurestore.errors import FeatureConfigError, FeatureError
from streamlearn.featurestore.fields import FIELD_TYPES, Field, parse_duration
from streamlearn.featurestore.functions import Function

Resolver = Callable[[str], Callable[..., Any]]

# value checkers: (python value, key path) -> value to pass on, or FeatureConfigError
Check = Callable[[Any, str], Any]


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise FeatureConfigError(path, f"expected a string, got {v!r}")
    return v


def _int(v: Any, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise FeatureConfigError(path, f"expected an integer, got {v!r}")
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise FeatureConfigError(path, f"expected true or false, got {v!r}")
    return v


def _strs(v: Any, path: str) -> Any:
    if isinstance(v, str):
        return v
    if not isinstance(v, list):
        raise FeatureConfigError(path, f"expected a string or a list of strings, got {v!r}")
    for i, s in enumerate(v):
        _str(s, f"{path}[{i}]")
    return v


def _durations(v: Any, path: str) -> list[str]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list):
        raise FeatureConfigError(path, f'expected durations like "1h", got {v!r}')
    for i, s in enumerate(items):
        parse_duration(s, f"{path}[{i}]", strict=True)
    return items


def _duration(v: Any, path: str) -> str:
    parse_duration(v, path, strict=True)
    return v


def _scalar(v: Any, path: str) -> Any:
    if isinstance(v, (str, int, float)) and not (isinstance(v, float) and not math.isfinite(v)):
        return v
    raise FeatureConfigError(path, f"expected a number or a string, got {v!r}")


_COMMON = {"prefix": _str, "key": _str}
BLOCK_KEYS: dict[str, dict[str, Check]] = {
    "entity": {"on": _strs, "half_lives": _durations},
    "decayed": {"on": _strs, "half_lives": _durations, "stats": _strs, **_COMMON},
    "window": {"on": _strs, "duration": _duration, "stats": _strs, "buckets": _int, **_COMMON},
    "distinct": {"on": _str, "k": _int, **_COMMON},
    "count": {"prefix": _str},
    "since_last": {"prefix": _str},
}
REQUIRED = {"decayed": ("on",), "window": ("duration",), "distinct": ("on",)}
FIELD_KEYS: dict[str, Check] = {"name": _str, "type": _str, "missing": _str, "fill": _scalar, "encoding": _str,
                                "buckets": _int}
FUNCTION_KEYS: dict[str, Check] = {"fn": _str, "name": _str, "stateful": _bool, "key": _str}
TOP_KEYS: dict[str, Check] = {"name": _str, "version": _int, "description": _str, "drop": _strs,
                              "fields": lambda v, p: v, "aggregates": lambda v, p: v, "functions": lambda v, p: v}


def _table(v: Any, path: str, allowed: Mapping[str, Check], required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise FeatureConfigError(path, f"expected a table, got {v!r}")
    out: dict[str, Any] = {}
    for k, val in v.items():
        if k not in allowed:
            close = difflib.get_close_matches(str(k), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FeatureConfigError(f"{path}.{k}", f"unknown key{hint}; expected one of {sorted(allowed)}")
        out[k] = allowed[k](val, f"{path}.{k}")
    for k in required:
        if k not in out:
            raise FeatureConfigError(path, f"missing required key {k!r}")
    return out


def _list(v: Any, path: str, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise FeatureConfigError(path, f"expected a list of tables ([[{path}]]) of {what}, got {v!r}")
    return v


def _build(path: str, make: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return make(**kwargs)
    except FeatureConfigError as exc:
        raise exc.under(path) from None


def view_from_dict(table: Mapping[str, Any], *, resolve: Resolver | None = None, path: str = "features") -> FeatureView:
    """A :class:`FeatureView` from a parsed ``[features]`` table.

    ``resolve`` turns a function's ``"module:function"`` into the function (the project
    loader passes one that also looks in the project's folder); by default it is imported
    with importlib. Every problem raises :class:`FeatureConfigError` naming the key path.
    """
    top = _table(table, path, TOP_KEYS, required=("name",))
    fields = None
    if "fields" in top:
        fields = []
        for i, f in enumerate(_list(top["fields"], f"{path}.fields", "fields")):
            where = f"{path}.fields[{i}]"
            spec = _table(f, where, FIELD_KEYS, required=("name",))
            if spec.get("type", "numeric") not in FIELD_TYPES:
                raise FeatureConfigError(f"{where}.type", f"unknown {spec['type']!r}; expected one of "
                                                          f"{list(FIELD_TYPES)}")
            fields.append(_build(where, Field, spec))
    blocks: list[Any] = []
    for i, b in enumerate(_list(top.get("aggregates", []), f"{path}.aggregates", "aggregates")):
        where = f"{path}.aggregates[{i}]"
        if not isinstance(b, Mapping):
            raise FeatureConfigError(where, f"expected a table, got {b!r}")
        kind = b.get("kind")
        if kind is None:
            raise FeatureConfigError(where, f"missing required key 'kind' (one of {sorted(BLOCK_KEYS)})")
        if kind not in BLOCK_KEYS:
            raise FeatureConfigError(f"{where}.kind", f"unknown block kind {kind!r}; expected one of "
                                                      f"{sorted(BLOCK_KEYS)}")
        spec = _table({k: v for k, v in b.items() if k != "kind"}, where, BLOCK_KEYS[kind], REQUIRED.get(kind, ()))
        blocks.append(_build(where, BLOCKS[kind], spec))
    for i, b in enumerate(_list(top.get("functions", []), f"{path}.functions", "functions")):
        where = f"{path}.functions[{i}]"
        spec = _table(b, where, FUNCTION_KEYS, required=("fn",))
        blocks.append(_build(where, Function, {**spec, "resolve": resolve}))
    kwargs: dict[str, Any] = {"fields": fields, "blocks": blocks, "drop": _drop(top.get("drop", []))}
    for k in ("version", "description"):
        if k in top:
            kwargs[k] = top[k]
    try:
        return FeatureView(top["name"], **kwargs)
    except FeatureConfigError as exc:
        if path != "features" and exc.path.startswith("features"):
            raise FeatureConfigError(path + exc.path[len("features"):], exc.reason) from None
        raise


def _drop(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def view_from_toml(file: str | Path, *, table: str = "features", resolve: Resolver | None = None) -> FeatureView:
    """A view from the ``[table]`` of a TOML file; errors name the file and the key."""
    p = Path(file)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FeatureConfigError(str(p), str(exc)) from None
    if table not in data:
        raise FeatureConfigError(str(p), f"no [{table}] table")
    try:
        return view_from_dict(data[table], resolve=resolve, path=table)
    except FeatureConfigError as exc:
        raise FeatureConfigError(f"{p}: {exc.path}", exc.reason) from None


# ------------------------------------------------------------------ plan
def _sources(view: FeatureView) -> list[tuple[str, Any]]:
    """(where it is declared, block) for every block, in the order the view runs them."""
    out: list[tuple[str, Any]] = [(f"features.aggregates[{i}] ({b.kind})", b) for i, b in enumerate(view.aggregates)]
    return out + [(f"features.functions[{i}] ({b.path})", b) for i, b in enumerate(view.functions)]


def _origins(view: FeatureView) -> list[tuple[str, str, str]]:
    """(feature, kind, source block) in vector order."""
    out: list[tuple[str, str, str]] = []
    if view.fields is None:
        out.append(("<every raw field>", "passthrough", "features (no fields declared)"))
    else:
        for i, f in enumerate(view.fields):
            out += [(n, k, f"features.fields[{i}]") for n, k in f.features()]
    for src, b in _sources(view):
        out += [(n, k, src) for n, k in b.features()]
    return out


def _synthetic(view: FeatureView, n: int = 256) -> list[dict[str, Any]]:
    """Events that fill every window slice, sketch and history of one entity."""
    categorical = {f.name for f in view.fields or () if f.type == "categorical"}
    categorical |= {b.on for b in view.aggregates if isinstance(b, Distinct)}
    numeric = {f.name for f in view.fields or () if f.type != "categorical"}
    numeric |= {name for b in view.aggregates for name in b.reads()} - categorical
    widths = [b.duration / b.buckets for b in view.aggregates if isinstance(b, Window)]
    step_ms = int(1000 * min(widths + [60.0]))
    rnd = random.Random(0)
    return [{"event_id": f"synthetic-{i}", "entity": "e", "event_time": 1_700_000_000_000 + i * step_ms,
             "features": {**{f: round(rnd.uniform(0, 1000), 2) for f in sorted(numeric)},
                          **{f: f"value-{i}" for f in sorted(categorical)}}} for i in range(n)]


def _replay(view: FeatureView, events: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], list[str], list[dict]]:
    """Entity states after ``events`` (in event-time order), problems found, vectors."""
    states: dict[str, Any] = {}
    problems: list[str] = []
    xs: list[dict] = []
    for ev in sorted(events, key=lambda e: e.get("event_time", 0)):
        try:
            x, states[ev["entity"]] = view.compute(ev, states.get(ev["entity"]))
            xs.append(x)
        except FeatureError as exc:
            if len(problems) < 3:
                problems.append(f"sample event {ev.get('event_id')!r}: {exc}")
        except (KeyError, TypeError) as exc:
            if len(problems) < 3:
                problems.append(f"sample event {ev.get('event_id')!r}: not an event ({type(exc).__name__}: {exc})")
    return states, problems, xs


def describe(view: FeatureView, sample: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """See :meth:`FeatureView.describe`."""
    synthetic = sample is None
    events = _synthetic(view) if synthetic else list(sample)
    states, problems, xs = _replay(view, events)
    sizes: list[int] = []
    largest: dict[str, Any] | None = None
    for st in states.values():
        try:
            size = len(orjson.dumps(st))
        except TypeError as exc:
            problems.append(f"entity state is not JSON-serialisable: {exc}")
            break
        if not sizes or size > max(sizes):
            largest = st
        sizes.append(size)
    basis = (f"{len(events)} synthetic events on one entity (every window slice, sketch and history full)"
             if synthetic else f"{len(events)} sample events, {len(states)} entities")
    redis = {"estimate": max(sizes) if sizes else None, "mean": (sum(sizes) / len(sizes)) if sizes else None,
             "basis": basis + "; orjson value bytes only, excluding the key and Redis per-key overhead"}
    if synthetic and view.functions:
        redis["basis"] += "; user functions' state is only measured from sample events"
    state_doc = {"n": "events seen (entity clock)", "t": "latest event time, seconds (entity clock)"}
    for src, b in _sources(view):
        for k in b.state_keys():
            state_doc[k] = src
    observed = sorted({k for x in xs for k in x}) if not synthetic else None
    return {
        "name": view.name, "version": view.version, "fingerprint": view.fingerprint,
        "features": [{"name": n, "kind": k, "block": src} for n, k, src in _origins(view)],
        "observed_features": observed,
        "trending": sorted(view.trending),
        "state_keys": list(view.state_keys) if view.stateful else [],
        "state": {k: v for k, v in state_doc.items() if k in view.state_keys},
        "example_state": largest,
        "redis_bytes_per_entity": redis,
        "problems": problems,
    }


def declared_fields(view: FeatureView) -> list[tuple[str, str]]:
    """(raw field, the key that declares it) for every field the view names."""
    out = [(f.name, f"features.fields[{i}]") for i, f in enumerate(view.fields or ())]
    for i, b in enumerate(view.aggregates):
        out += [(name, f"features.aggregates[{i}].on") for name in b.reads()]
    return out


def check_sample(view: FeatureView, events: Sequence[dict[str, Any]]) -> list[str]:
    """See :meth:`FeatureView.check_sample`."""
    if not events:
        return ["no sample events to check the view against"]
    seen: set[str] = set()
    for ev in events:
        feats = ev.get("features") if isinstance(ev, Mapping) else None
        if isinstance(feats, Mapping):
            seen.update(k for k, v in feats.items() if v is not None)
    problems = []
    for name, where in declared_fields(view):
        if name not in seen:
            close = difflib.get_close_matches(name, sorted(seen), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}: field {name!r} never appears in the {len(events)} sample events{hint}; "
                            f"they carry {sorted(seen)}")
    states, run_problems, _ = _replay(view, events)
    problems += run_problems
    for entity, st in states.items():
        try:
            orjson.dumps(st)
        except TypeError as exc:
            problems.append(f"entity {entity!r}: state is not JSON-serialisable ({exc}); a stateful function must "
                            "keep dicts, lists, numbers and strings")
            break
    return problems


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:  # declaration order
            sub = f"{path}.{k}"
            if k not in new:
                out.append(f"- {sub} = {json.dumps(old[k])}")
            elif k not in old:
                out.append(f"+ {sub} = {json.dumps(new[k])}")
            else:
                _diff(old[k], new[k], sub, out)
    elif isinstance(old, list) and isinstance(new, list) and (
            any(isinstance(v, dict) for v in old + new)):
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(new):
                out.append(f"- {sub} = {json.dumps(old[i])}")
            elif i >= len(old):
                out.append(f"+ {sub} = {json.dumps(new[i])}")
            else:
                _diff(old[i], new[i], sub, out)
    elif old != new:
        out.append(f"~ {path}: {json.dumps(old)} -> {json.dumps(new)}")


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two :meth:`FeatureView.record` s, one line per change, for ``plan``.

    >>> a = view_from_dict({"name": "v", "aggregates": [{"kind": "decayed", "on": "x", "half_lives": ["1h"]}]})
    >>> b = view_from_dict({"name": "v", "version": 2, "aggregates": [
    ...     {"kind": "decayed", "on": "x", "half_lives": ["2h"]}, {"kind": "since_last"}]})
    >>> for line in diff(a.record(), b.record()):
    ...     print(line)
    ~ features.version: 1 -> 2
    ~ features.aggregates[0].half_lives: ["1h"] -> ["2h"]
    + features.aggregates[1] = {"kind": "since_last", "prefix": "ent_"}
    """
    out: list[str] = []
    _diff(old.get("spec", {}), new.get("spec", {}), "features", out)
    old_code, new_code = old.get("code", {}), new.get("code", {})
    for path in sorted(set(old_code) & set(new_code)):
        if old_code[path] != new_code[path]:
            out.append(f"~ function {path}: source changed")
    if not out and old.get("fingerprint") != new.get("fingerprint"):
        out.append(f"~ fingerprint: {old.get('fingerprint')} -> {new.get('fingerprint')}")
    return out


__all__ = ["BLOCK_KEYS", "check_sample", "diff", "declared_fields", "describe", "view_from_dict",
           "view_from_toml"]
