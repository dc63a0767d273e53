"""Feature definitions, written once as code (or declared in a project's TOML).

A :class:`FeatureView` turns one event plus the state of its entity (as it was *before*
the event) into the feature vector the model sees, and returns the entity's new state.
It is a pure function: online scoring (state in Redis), backtests and batch retraining
(state in memory) call exactly this code, so there is no training/serving skew, and
point-in-time correctness holds by construction (features only read the past).

A view is declared raw fields (:mod:`streamlearn.featurestore.fields`) plus building
blocks (:mod:`streamlearn.featurestore.blocks`): decayed and windowed per-entity
aggregates, time since last event, distinct counts, and user functions
(:mod:`streamlearn.featurestore.functions`). Every aggregate
runs on *event time*, is bounded in size and deterministic under replay (no wall clock).

>>> view = VIEWS["entity_v1"]
>>> e1 = {"event_id": "a", "entity": "card1", "event_time": 0, "features": {"amount": 10.0}}
>>> x1, s1 = view.compute(e1, None)
>>> x1["amount"], x1["ent_count"]
(10.0, 0.0)
>>> e2 = {"event_id": "b", "entity": "card1", "event_time": 60_000, "features": {"amount": 30.0}}
>>> x2, s2 = view.compute(e2, s1)
>>> x2["ent_count"], x2["ent_secs_since_last"], round(x2["ent_amount_logratio_1h"], 3)
(1.0, 60.0, 1.036)

Declaring one's own, from Python (the same view can come from a TOML table, see
:mod:`streamlearn.featurestore.declare`):

>>> pay = FeatureView("payments", version=1,
...     fields=[Field("amount", "numeric", missing="zero"), Field("shop", "categorical")],
...     blocks=[Decayed("amount", half_lives=["1h"], stats=["mean"]), Window(duration="10m", stats=["count"]),
...             SinceLast()])
>>> x, s = pay.compute({"event_id": "1", "entity": "c", "event_time": 0,
...                     "features": {"amount": 5, "shop": "fuel", "note": "ignored"}}, None)
>>> x
{'amount': 5.0, 'shop=fuel': 1.0, 'ent_amount_mean_hl1h': 0.0, 'ent_count_w10m': 0.0, 'ent_secs_since_last': -1.0, \
'ent_log_secs_since_last': -1.0}
>>> sorted(s)  # the entity clock, then one key per stateful block
['d:amount', 'n', 't', 'w10m:count']
>>> len(pay.fingerprint)
16
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streamlearn.featurestore.blocks import Block, Count, Decayed, Distinct, EntityStats, SinceLast, Window
from streamlearn.featurestore.errors import FeatureConfigError, FeatureError
from streamlearn.featurestore.fields import EntityState, FeatureVector, Field, require_unique
from streamlearn.featurestore.functions import Function

__all__ = ["VIEWS", "Block", "Count", "Decayed", "Distinct", "EntityState", "EntityStats", "FeatureConfigError",
           "FeatureError", "FeatureVector", "FeatureView", "Field", "Function", "SinceLast", "Window", "get_view"]

CLOCK_KEYS = ("n", "t")  # the entity clock every stateful view keeps: events seen, latest event time (s)
_FRESH: dict[str, Any] = {}  # the state of an entity never seen; never mutated


class FeatureView:
    """Which raw fields pass through and which per-entity features are computed.

    ``fields`` declares the raw fields (type, encoding, missing-value policy); only those
    reach the vector. Without it (``None``) every raw field passes through: numbers as is,
    booleans as 0/1, strings one-hot as ``name=value``, minus the names in ``drop``.
    ``blocks`` are aggregates and user functions (functions run last, so their output can
    be checked against every other feature). ``name`` and ``version`` identify the view;
    ``fingerprint`` identifies its definition.
    """

    def __init__(self, name: str, version: int = 1, *, fields: Sequence[Field] | None = None,
                 blocks: Sequence[Block] = (), drop: Iterable[str] = (), description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise FeatureConfigError("features.name", f"expected a non-empty string, got {name!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise FeatureConfigError("features.version", f"expected an integer >= 1, got {version!r}")
        if not isinstance(description, str):
            raise FeatureConfigError("features.description", f"expected a string, got {description!r}")
        self.name, self.version, self.description = name, version, description
        self.drop = frozenset(drop)
        if fields is not None:
            fields = tuple(fields)
            if self.drop:
                raise FeatureConfigError("features.drop", "only applies without declared fields; leave the field out")
            for i, f in enumerate(fields):
                if not isinstance(f, Field):
                    raise FeatureConfigError(f"features.fields[{i}]", f"expected a Field, got {f!r}")
            require_unique(((f.name, f"features.fields[{i}]") for i, f in enumerate(fields)), "field")
        self.fields: tuple[Field, ...] | None = fields
        for i, b in enumerate(blocks):
            if not isinstance(b, Block):
                raise FeatureConfigError(f"features.blocks[{i}]", f"expected a building block, got {b!r}")
        self.aggregates: tuple[Block, ...] = tuple(b for b in blocks if not isinstance(b, Function))
        self.functions: tuple[Function, ...] = tuple(b for b in blocks if isinstance(b, Function))
        self.blocks: tuple[Block, ...] = self.aggregates + self.functions
        self._check_names()
        self.stateful = any(b.uses_clock or b.key for b in self.blocks)
        self.state_keys: tuple[str, ...] = (CLOCK_KEYS + tuple(k for b in self.blocks for k in b.state_keys())
                                            if self.stateful else ())
        self.trending: frozenset[str] = frozenset().union(*(b.trending for b in self.blocks))
        self._encoders = tuple(f.encoder() for f in fields) if fields is not None else None
        self._appliers = tuple(b.apply for b in self.blocks)
        self.fingerprint = self._fingerprint()

    def _check_names(self) -> None:
        where = [(f"features.aggregates[{i}]", b) for i, b in enumerate(self.aggregates)]
        where += [(f"features.functions[{i}]", b) for i, b in enumerate(self.functions)]
        keys = [(k, "the entity clock") for k in CLOCK_KEYS]
        keys += [(k, w) for w, b in where for k in b.state_keys()]
        require_unique(keys, "state key")
        names = [(n, f"features.fields[{i}]") for i, f in enumerate(self.fields or ()) for n in f.static_names()]
        names += [(n, w) for w, b in where if not isinstance(b, Function) for n, _ in b.features()]
        require_unique(names, "feature")

    # ------------------------------------------------------------------ the hot path
    def raw(self, features: dict[str, Any]) -> FeatureVector:
        """The raw fields as numbers: declared fields encoded, or every field passed through
        (numerics as is, booleans as 0/1, strings one-hot)."""
        x: FeatureVector = {}
        if self._encoders is not None:
            for encode in self._encoders:
                encode(features, x)
            return x
        drop = self.drop
        for k, v in features.items():
            if v is None or k in drop:
                continue
            if v is True or v is False:
                x[k] = 1.0 if v else 0.0
            elif isinstance(v, (int, float)):
                x[k] = float(v)
            else:
                x[f"{k}={v}"] = 1.0
        return x

    def compute(self, event: dict[str, Any], state: EntityState | None) -> tuple[FeatureVector, EntityState]:
        """Feature vector for ``event`` given its entity's prior state, and the new state.

        Raises :class:`FeatureError` for an event the view cannot featurise (a user function
        failed, a declared type does not match); the loop dead-letters it.
        """
        raw = event["features"]
        x = self.raw(raw)
        if not self.stateful:
            for apply in self._appliers:  # stateless functions only: they read neither clock nor state
                apply(event, raw, 0.0, 0.0, 0, _FRESH, x, {})
            return x, state or {}
        t = event["event_time"] / 1000.0
        if state:
            n, last = state["n"], state["t"]
        else:
            n, last, state = 0, t, _FRESH
        dt = max(0.0, t - last)  # out-of-order events do not rewind the clock
        te = max(t, last)
        new: EntityState = {"n": n + 1, "t": te}
        # blocks read the state as it was before this event: no look-ahead
        for apply in self._appliers:
            apply(event, raw, te, dt, n, state, x, new)
        return x, new

    # ------------------------------------------------------------------ declaration
    def spec(self) -> dict[str, Any]:
        """The declaration as a TOML-shaped table (``[features]``); :func:`declare.view_from_dict`
        rebuilds an equal view from it (user functions by their import path)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description:
            out["description"] = self.description
        if self.fields is not None:
            out["fields"] = [f.spec() for f in self.fields]
        if self.drop:
            out["drop"] = sorted(self.drop)
        if self.aggregates:
            out["aggregates"] = [b.spec() for b in self.aggregates]
        if self.functions:
            out["functions"] = [b.spec() for b in self.functions]
        return out

    def _fingerprint(self) -> str:
        # the definition only: name, version and description identify it, they are not it
        spec = {k: v for k, v in self.spec().items() if k not in ("name", "version", "description")}
        canonical = json.dumps({"definition": spec, "code": self.code()}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True, allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def code(self) -> dict[str, str]:
        """Import path -> hash of the source, for every user function the view runs."""
        return {path: h for b in self.functions for path, h in b.code().items()}

    def record(self) -> dict[str, Any]:
        """What a registry keeps of the view (plain JSON): compare a later definition with
        :func:`streamlearn.featurestore.declare.diff`."""
        return {"name": self.name, "version": self.version, "fingerprint": self.fingerprint, "spec": self.spec(),
                "code": self.code()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureView):
            return NotImplemented
        return (self.name, self.version, self.fingerprint) == (other.name, other.version, other.fingerprint)

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.fingerprint))

    def __repr__(self) -> str:
        return f"FeatureView(name={self.name!r}, version={self.version}, fingerprint={self.fingerprint!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its declaration: the compiled encoders are closures, which do not pickle
        return (_rebuild, (self.name, self.version, self.fields, self.blocks, tuple(sorted(self.drop)),
                           self.description))

    # ------------------------------------------------------------------ plan / checks
    def describe(self, sample: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
        """What ``streamlearn plan`` prints: features, entity state, Redis bytes per entity.

        The byte count is an **estimate**: the orjson size of entity states after replaying
        ``sample`` (or synthetic events that fill every window, sketch and history when no
        sample is given), without the Redis key and per-key overhead. User functions' state
        is only measured from a sample.
        """
        from streamlearn.featurestore.declare import describe

        return describe(self, sample)

    def check_sample(self, events: Sequence[dict[str, Any]]) -> list[str]:
        """One-line problems found by running sample events through the view: declared fields
        the events never carry, events it cannot featurise, state that is not JSON. Empty: fine."""
        from streamlearn.featurestore.declare import check_sample

        return check_sample(self, events)


def _rebuild(name: str, version: int, fields: Sequence[Field] | None, blocks: Sequence[Block],
             drop: Iterable[str], description: str) -> FeatureView:
    return FeatureView(name, version, fields=fields, blocks=blocks, drop=drop, description=description)


VIEWS: dict[str, FeatureView] = {
    # entity-keyed transactions (the demo's default scenario): amount aggregates per card
    "entity_v1": FeatureView("entity_v1", blocks=[EntityStats(on=("amount",), half_lives=("1h", "1d"))]),
    # the same raw fields without any per-entity state: the baseline the store must beat
    "raw_v1": FeatureView("raw_v1"),
}


def get_view(name: str) -> FeatureView:
    try:
        return VIEWS[name]
    except KeyError:
        raise ValueError(f"unknown feature view {name!r}; known: {sorted(VIEWS)}") from None


def as_view(view: str | FeatureView) -> FeatureView:
    """A view object, or a built-in view by name."""
    return view if isinstance(view, FeatureView) else get_view(view)


def state_bytes(state: EntityState) -> int:
    """Bytes of an entity state as the online loop stores it (orjson)."""
    return len(orjson.dumps(state))
