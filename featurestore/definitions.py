"""Feature definitions, written once as code.

A :class:`FeatureView` turns one event plus the state of its entity (as it was *before*
the event) into the feature vector the model sees, and returns the entity's new state.
It is a pure function: online scoring (state in Redis), backtests and batch retraining
(state in memory) call exactly this code, so there is no training/serving skew, and
point-in-time correctness holds by construction (features only read the past).

Entity aggregates are exponentially decayed over *event time*, so they are bounded in
size and deterministic under replay (no wall clock).

>>> view = VIEWS["entity_v1"]
>>> e1 = {"event_id": "a", "entity": "card1", "event_time": 0, "features": {"amount": 10.0}}
>>> x1, s1 = view.compute(e1, None)
>>> x1["amount"], x1["ent_count"]
(10.0, 0.0)
>>> e2 = {"event_id": "b", "entity": "card1", "event_time": 60_000, "features": {"amount": 30.0}}
>>> x2, s2 = view.compute(e2, s1)
>>> x2["ent_count"], x2["ent_secs_since_last"], round(x2["ent_amount_logratio_1h"], 3)
(1.0, 60.0, 1.036)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

EntityState = dict[str, Any]
FeatureVector = dict[str, float]

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class FeatureView:
    """Which raw fields pass through and which per-entity aggregates are computed.

    ``aggregates`` names numeric raw fields whose decayed per-entity mean is tracked for
    every half-life in ``half_lives_s``; ``entity_features=False`` gives the raw-only view
    (the no-feature-store baseline).
    """

    name: str
    version: int = 1
    entity_features: bool = True
    aggregates: tuple[str, ...] = ()
    half_lives_s: tuple[tuple[str, float], ...] = (("1h", 3600.0), ("1d", 86400.0))
    drop: frozenset[str] = field(default_factory=frozenset)

    def raw(self, features: dict[str, Any]) -> FeatureVector:
        """Raw fields as numbers: numerics as is, booleans as 0/1, strings one-hot."""
        x: FeatureVector = {}
        for k, v in features.items():
            if v is None or k in self.drop:
                continue
            if v is True or v is False:
                x[k] = 1.0 if v else 0.0
            elif isinstance(v, (int, float)):
                x[k] = float(v)
            else:
                x[f"{k}={v}"] = 1.0
        return x

    def compute(self, event: dict[str, Any], state: EntityState | None) -> tuple[FeatureVector, EntityState]:
        """Feature vector for ``event`` given its entity's prior state, and the new state."""
        raw = event["features"]
        x = self.raw(raw)
        if not self.entity_features:
            return x, state or {}
        t = event["event_time"] / 1000.0
        if not state:
            state = {"n": 0, "t": t, "w": [0.0] * len(self.half_lives_s), "s": {}}
        n, last, weights, sums = state["n"], state["t"], state["w"], state["s"]
        dt = max(0.0, t - last)  # out-of-order events do not rewind the clock
        decays = [math.exp(-_LN2 * dt / h) for _, h in self.half_lives_s]
        # features read the state as it was before this event: no look-ahead
        x["ent_count"] = float(n)
        x["ent_log_count"] = math.log1p(n)
        x["ent_secs_since_last"] = dt if n else -1.0
        x["ent_log_secs_since_last"] = math.log1p(dt) if n else -1.0
        new_w = []
        for (label, _), d, w in zip(self.half_lives_s, decays, weights):
            wd = w * d
            x[f"ent_rate_{label}"] = wd
            new_w.append(wd + 1.0)
        new_s: dict[str, list[float]] = {}
        for name in self.aggregates:
            v = raw.get(name)
            prev = sums.get(name) or [0.0] * len(self.half_lives_s)
            cur = []
            for (label, _), d, w, s in zip(self.half_lives_s, decays, weights, prev):
                wd, sd = w * d, s * d
                mean = sd / wd if wd > 1e-12 else 0.0
                x[f"ent_{name}_mean_{label}"] = mean
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    # log scale: ratios are heavy-tailed both ways, which SGD handles badly
                    ratio = (abs(v) + 1.0) / (abs(mean) + 1.0) if wd > 1e-12 else 1.0
                    x[f"ent_{name}_logratio_{label}"] = math.log(ratio)
                    sd += v
                cur.append(sd)
            new_s[name] = cur
        return x, {"n": n + 1, "t": max(t, last), "w": new_w, "s": new_s}


VIEWS: dict[str, FeatureView] = {
    # entity-keyed transactions (the demo's default scenario): amount aggregates per card
    "entity_v1": FeatureView(name="entity_v1", aggregates=("amount",)),
    # the same raw fields without any per-entity state: the baseline the store must beat
    "raw_v1": FeatureView(name="raw_v1", entity_features=False),
}


def get_view(name: str) -> FeatureView:
    try:
        return VIEWS[name]
    except KeyError:
        raise ValueError(f"unknown feature view {name!r}; known: {sorted(VIEWS)}") from None
