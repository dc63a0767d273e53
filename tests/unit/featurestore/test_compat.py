"""``entity_v1`` and ``raw_v1`` are exactly what they were before views were composable.

The reference below is the previous implementation of ``FeatureView.compute``, copied
verbatim: stored entity states (``{"n","t","w","s"}`` in Redis) and archived vectors must
keep their meaning, so vectors, their key order and the serialised state bytes must match.
"""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest

from streamlearn.featurestore.definitions import VIEWS, get_view

_LN2 = math.log(2.0)


class LegacyView:
    def __init__(self, entity_features: bool, aggregates: tuple[str, ...] = ()) -> None:
        self.entity_features = entity_features
        self.aggregates = aggregates
        self.half_lives_s = (("1h", 3600.0), ("1d", 86400.0))
        self.drop: frozenset[str] = frozenset()

    def raw(self, features):
        x = {}
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

    def compute(self, event, state):
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
                    ratio = (abs(v) + 1.0) / (abs(mean) + 1.0) if wd > 1e-12 else 1.0
                    x[f"ent_{name}_logratio_{label}"] = math.log(ratio)
                    sd += v
                cur.append(sd)
            new_s[name] = cur
        return x, {"n": n + 1, "t": max(t, last), "w": new_w, "s": new_s}


LEGACY = {"entity_v1": LegacyView(True, ("amount",)), "raw_v1": LegacyView(False)}


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    """Mixed traffic: bursts, long gaps, out-of-order times, odd and missing amounts."""
    rnd = random.Random(seed)
    t, out = 1_700_000_000_000, []
    for i in range(n):
        t += rnd.choice([0, 1, 250, 10_000, 3_600_000, 86_400_000 * 3, rnd.randrange(10**7)])
        when = t - rnd.randrange(7_200_000) if rnd.random() < 0.1 else t  # late events
        amount = rnd.choice([round(rnd.uniform(0, 500), 2), rnd.randrange(1000), None, True, "12.5", 0, -3.5,
                             1e9, rnd.lognormvariate(3, 2)])
        feats: dict[str, Any] = {"kind": rnd.choice("abc"), "flag": rnd.random() < 0.5, "none": None}
        if rnd.random() < 0.9:
            feats["amount"] = amount
        out.append({"event_id": f"e{i}", "entity": f"ent-{rnd.randrange(7)}", "event_time": when, "features": feats})
    return out


@pytest.mark.parametrize("name", ["entity_v1", "raw_v1"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_views_reproduce_the_previous_implementation_bit_for_bit(name, seed):
    new, old = get_view(name), LEGACY[name]
    s_new: dict[str, Any] = {}
    s_old: dict[str, Any] = {}
    for ev in _events(400, seed):
        e = ev["entity"]
        x_new, s_new[e] = new.compute(ev, s_new.get(e))
        x_old, s_old[e] = old.compute(ev, s_old.get(e))
        assert list(x_new.items()) == list(x_old.items()), ev  # same values, same order
        assert orjson.dumps(x_new) == orjson.dumps(x_old)
        assert orjson.dumps(s_new[e]) == orjson.dumps(s_old[e]), ev  # same Redis bytes


def test_entity_v1_continues_from_a_state_the_previous_code_stored():
    """A Redis state written before the change, read back as JSON, continues identically."""
    events = _events(300, seed=7)
    old, new = LEGACY["entity_v1"], get_view("entity_v1")
    stored: dict[str, bytes] = {}
    for ev in events[:150]:
        e = ev["entity"]
        _, st = old.compute(ev, orjson.loads(stored[e]) if e in stored else None)
        stored[e] = orjson.dumps(st)
    s_old = {e: orjson.loads(b) for e, b in stored.items()}
    s_new = {e: orjson.loads(b) for e, b in stored.items()}
    for ev in events[150:]:
        e = ev["entity"]
        x_old, s_old[e] = old.compute(ev, s_old.get(e))
        x_new, s_new[e] = new.compute(ev, orjson.loads(orjson.dumps(s_new[e])) if e in s_new else None)
        assert x_new == x_old
        assert orjson.dumps(s_new[e]) == orjson.dumps(s_old[e])
    assert set(next(iter(s_new.values()))) == {"n", "t", "w", "s"}


def test_built_in_views_keep_their_names_and_trending_features():
    assert sorted(VIEWS) == ["entity_v1", "raw_v1"]
    assert get_view("entity_v1").trending == {"ent_count", "ent_log_count"}
    assert get_view("raw_v1").trending == frozenset() and not get_view("raw_v1").stateful
    with pytest.raises(ValueError, match="unknown feature view 'nope'"):
        get_view("nope")
