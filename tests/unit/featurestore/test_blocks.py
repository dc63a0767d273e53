"""Each building block: hand-computed values, a brute-force reference, no look-ahead,
determinism, bounded state, and a state that survives the JSON round trip Redis imposes."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.featurestore.definitions import (
    Count,
    Decayed,
    Distinct,
    FeatureError,
    FeatureView,
    Field,
    Function,
    SinceLast,
    Window,
    get_view,
)


def ev(t_ms: int, entity: str = "a", i: int = 0, **features: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "entity": entity, "event_time": t_ms, "features": features}


def run(view: FeatureView, events: list[dict[str, Any]], *, via_json: bool = False):
    """Vectors and final states; ``via_json`` stores every state as the online loop does."""
    states: dict[str, Any] = {}
    xs = []
    for e in events:
        prior = states.get(e["entity"])
        x, new = view.compute(e, orjson.loads(orjson.dumps(prior)) if via_json and prior is not None else prior)
        states[e["entity"]] = new
        xs.append(x)
    return xs, states


def stream(n: int, seed: int, *, late: float = 0.1, entities: int = 3) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    t, out = 1_700_000_000_000, []
    for i in range(n):
        t += rnd.choice([0, 500, 20_000, 90_000, 600_000, 7_200_000])
        when = t - rnd.randrange(1_000_000) if rnd.random() < late else t
        f: dict[str, Any] = {"shop": rnd.choice([f"s{k}" for k in range(40)]), "ok": rnd.random() < 0.3}
        if rnd.random() < 0.85:
            f["amount"] = round(rnd.lognormvariate(3, 1), 2)
        if rnd.random() < 0.7:
            f["qty"] = rnd.randrange(1, 5)
        out.append(ev(when, f"c{rnd.randrange(entities)}", i, **f))
    return out


RICH = FeatureView(
    "rich", fields=[Field("amount", missing="indicator"), Field("qty", missing="zero"), Field("ok", "boolean"),
                    Field("shop", "categorical", encoding="hash", buckets=8)],
    blocks=[Count(), SinceLast(),
            Decayed(["amount", "qty", "ok"], half_lives=["10m", "1d"], stats=Decayed.STATS),
            Window(["amount", "qty"], "30m", stats=Window.STATS, buckets=6),
            Distinct("shop", k=8)])


# one view per block (and the built-in and rich views): the generic checks below run on each,
# as River's check_estimator runs one suite over every estimator
def _stateful_fn(event, state):
    seen = (state or {}).get("seen", 0)
    return {"seen_before": float(seen)}, {"seen": seen + 1}


ALL_VIEWS = {
    "entity_v1": get_view("entity_v1"),
    "raw_v1": get_view("raw_v1"),
    "fields": FeatureView("fields", fields=RICH.fields),
    "count": FeatureView("c", blocks=[Count()]),
    "since_last": FeatureView("s", blocks=[SinceLast()]),
    "decayed": FeatureView("d", blocks=[Decayed(["amount", "qty"], stats=Decayed.STATS)]),
    "window": FeatureView("w", blocks=[Window(["amount"], "1h", stats=Window.STATS)]),
    "distinct": FeatureView("u", blocks=[Distinct("shop", k=4)]),
    "function": FeatureView("f", blocks=[Function(_stateful_fn, stateful=True)]),
    "rich": RICH,
}
each_view = pytest.mark.parametrize("view", list(ALL_VIEWS.values()), ids=list(ALL_VIEWS))


# ------------------------------------------------------------------ fields
def test_fields_encode_declared_types_and_missing_policies():
    view = FeatureView("f", fields=[
        Field("a"), Field("b", missing="zero"), Field("c", missing="fill", fill=2.5), Field("d", missing="indicator"),
        Field("ok", "boolean", missing="indicator"), Field("s", "categorical", missing="fill", fill="none"),
        Field("h", "categorical", encoding="hash", buckets=4, missing="indicator")])
    x, state = view.compute(ev(0, a=1, d=4.5, ok=1, s=True, h="x", extra="dropped"), None)
    assert x == {"a": 1.0, "b": 0.0, "c": 2.5, "d": 4.5, "d_missing": 0.0, "ok": 1.0, "ok_missing": 0.0,
                 "s=True": 1.0, x_h(x): 1.0, "h_missing": 0.0}
    assert state == {} and not view.stateful
    x, _ = view.compute(ev(0, a=None), None)
    assert x == {"b": 0.0, "c": 2.5, "d": 0.0, "d_missing": 1.0, "ok": 0.0, "ok_missing": 1.0, "s=none": 1.0,
                 "h_missing": 1.0}


def x_h(x: dict[str, float]) -> str:
    (name,) = [k for k in x if k.startswith("h#")]
    assert 0 <= int(name[2:]) < 4
    return name


def test_hashed_categorical_is_bounded_and_stable():
    f = Field("shop", "categorical", encoding="hash", buckets=16)
    enc, names = f.encoder(), set()
    for i in range(2000):
        x: dict[str, float] = {}
        enc({"shop": f"shop-{i}"}, x)
        names |= set(x)
    assert len(names) == 16 and names == {f"shop#{k}" for k in range(16)}
    x1: dict[str, float] = {}
    f.encoder()({"shop": "fuel"}, x1)
    assert x1 == {"shop#7": 1.0}  # blake2b, not hash(): the same bucket in every process


@pytest.mark.parametrize("field, value, message", [
    (Field("amount"), "12.5", "field 'amount' is declared numeric but got str '12.5'"),
    (Field("ok", "boolean"), "yes", "field 'ok' is declared boolean but got str 'yes'"),
])
def test_a_value_of_the_wrong_type_is_a_feature_error(field, value, message):
    view = FeatureView("v", fields=[field])
    with pytest.raises(FeatureError, match=message) as info:
        view.compute(ev(0, **{field.name: value}), None)
    assert info.value.reason == "feature_error"


def test_passthrough_without_declared_fields_and_drop():
    view = FeatureView("p", drop={"secret"})
    x, _ = view.compute(ev(0, amount=3, ok=False, shop="m", secret=1.0, none=None), None)
    assert x == {"amount": 3.0, "ok": 0.0, "shop=m": 1.0}


# ------------------------------------------------------------------ clock blocks
def test_count_and_since_last_read_the_clock_and_do_not_rewind():
    view = FeatureView("c", fields=[], blocks=[Count(), SinceLast(prefix="")])
    xs, states = run(view, [ev(0), ev(30_000), ev(10_000), ev(90_000)])
    assert [x["ent_count"] for x in xs] == [0.0, 1.0, 2.0, 3.0]
    assert [x["secs_since_last"] for x in xs] == [-1.0, 30.0, 0.0, 60.0]  # the late event reads 0
    assert xs[1]["log_secs_since_last"] == math.log1p(30.0)
    assert states["a"] == {"n": 4, "t": 90.0}
    assert view.trending == {"ent_count", "ent_log_count"}


# ------------------------------------------------------------------ decayed
def test_decayed_hand_computed():
    view = FeatureView("d", fields=[], blocks=[
        Decayed("v", half_lives=["1h"], stats=["count", "sum", "mean", "var", "std", "zscore", "logratio"])])
    xs, _ = run(view, [ev(0, v=10.0), ev(3_600_000, v=30.0), ev(3_600_000, v=20.0)])
    assert xs[0] == {"ent_count_hl1h": 0.0, "ent_v_sum_hl1h": 0.0, "ent_v_mean_hl1h": 0.0, "ent_v_var_hl1h": 0.0,
                     "ent_v_std_hl1h": 0.0, "ent_v_zscore_hl1h": 0.0, "ent_v_logratio_hl1h": 0.0}
    # one event of weight 1/2 (one half-life ago): sum 5, mean 10, no spread yet
    assert xs[1]["ent_count_hl1h"] == 0.5 and xs[1]["ent_v_sum_hl1h"] == 5.0 and xs[1]["ent_v_mean_hl1h"] == 10.0
    assert xs[1]["ent_v_var_hl1h"] == 0.0 and xs[1]["ent_v_zscore_hl1h"] == 0.0
    assert xs[1]["ent_v_logratio_hl1h"] == pytest.approx(math.log(31 / 11))
    # weights 0.5 (v=10) and 1 (v=30): mean 70/3, variance (0.5*(40/3)^2 + (20/3)^2)/1.5 = 800/9
    x = xs[2]
    assert x["ent_count_hl1h"] == 1.5
    assert x["ent_v_mean_hl1h"] == pytest.approx(70 / 3) and x["ent_v_sum_hl1h"] == pytest.approx(35.0)
    assert x["ent_v_var_hl1h"] == pytest.approx(800 / 9) and x["ent_v_std_hl1h"] == pytest.approx(math.sqrt(800 / 9))
    assert x["ent_v_zscore_hl1h"] == pytest.approx((20 - 70 / 3) / math.sqrt(800 / 9))


def _decayed_reference(events, field, h):
    """Brute force: the weighted moments of every earlier value, weight 2^-(age / h)."""
    out, hist, clock = [], [], None
    for e in events:
        t = e["event_time"] / 1000
        clock = t if clock is None else max(clock, t)
        ws = [(2 ** (-(clock - ti) / h), v) for ti, v in hist]
        wsum = sum(w for w, _ in ws)
        mean = sum(w * v for w, v in ws) / wsum if wsum > 1e-12 else 0.0
        var = sum(w * (v - mean) ** 2 for w, v in ws) / wsum if wsum > 1e-12 else 0.0
        out.append((wsum, mean, var))
        v = e["features"].get(field)
        if v is not None:
            hist.append((clock, float(v)))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_decayed_matches_a_brute_force_reference(seed):
    events = [e for e in stream(300, seed) if e["entity"] == "c0"]
    view = FeatureView("d", fields=[], blocks=[Decayed(["amount"], half_lives=["1h"], stats=["sum", "mean", "var"])])
    xs, _ = run(view, events)
    for x, (wsum, mean, var) in zip(xs, _decayed_reference(events, "amount", 3600.0)):
        assert x["ent_amount_sum_hl1h"] == pytest.approx(wsum * mean, rel=1e-9, abs=1e-9)
        if wsum > 1e-6:
            assert x["ent_amount_mean_hl1h"] == pytest.approx(mean, rel=1e-9)
            assert x["ent_amount_var_hl1h"] == pytest.approx(var, rel=1e-6, abs=1e-6)


def test_decayed_refuses_text_and_reads_booleans_as_0_1():
    view = FeatureView("d", fields=[], blocks=[Decayed("ok", half_lives=["1h"], stats=["mean"])])
    xs, _ = run(view, [ev(0, ok=True), ev(0, ok=False), ev(0, ok=True)])
    assert xs[2]["ent_ok_mean_hl1h"] == 0.5
    with pytest.raises(FeatureError, match="decayed aggregate over 'ok' needs a number, got str 'no'"):
        view.compute(ev(0, ok="no"), None)


# ------------------------------------------------------------------ window
def _window_reference(events, field, duration, buckets):
    """Brute force over every earlier event, with the documented slice-aligned far edge."""
    width, out, hist, clock = duration / buckets, [], [], None
    for e in events:
        t = e["event_time"] / 1000
        clock = t if clock is None else max(clock, t)
        oldest = int(clock // width) - buckets + 1
        inside = [(ti, v) for ti, v in hist if int(ti // width) >= oldest]
        vals = [v for _, v in inside if v is not None]
        out.append((len(inside), sum(vals), min(vals, default=0.0), max(vals, default=0.0)))
        v = e["features"].get(field)
        hist.append((clock, None if v is None else float(v)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_window_matches_a_brute_force_reference_and_never_reaches_past_its_duration(seed):
    events = [e for e in stream(400, seed) if e["entity"] == "c1"]
    view = FeatureView("w", fields=[], blocks=[Window("amount", "30m", stats=["count", "sum", "min", "max"],
                                                      buckets=6)])
    xs, _ = run(view, events)
    for x, (n, total, lo, hi) in zip(xs, _window_reference(events, "amount", 1800.0, 6)):
        assert (x["ent_count_w30m"], x["ent_amount_min_w30m"], x["ent_amount_max_w30m"]) == (n, lo, hi)
        assert x["ent_amount_sum_w30m"] == pytest.approx(total)
    # nothing older than the duration: a lone event 30 min + 1 ms earlier is out, 25 min earlier is in
    assert run(view, [ev(0, amount=1.0), ev(1_800_001, amount=1.0)])[0][1]["ent_count_w30m"] == 0.0
    assert run(view, [ev(0, amount=1.0), ev(1_500_000, amount=1.0)])[0][1]["ent_count_w30m"] == 1.0


# ------------------------------------------------------------------ distinct
def test_distinct_is_exact_below_k_and_close_above():
    view = FeatureView("u", fields=[], blocks=[Distinct("shop", k=64)])
    values = [f"shop-{i % 40}" for i in range(200)]
    xs, _ = run(view, [ev(i, shop=v) for i, v in enumerate(values)])
    assert [x["ent_shop_distinct"] for x in xs[:45]] == [float(min(i, 40)) for i in range(45)]
    xs, states = run(view, [ev(i, shop=f"s{i}") for i in range(5001)])
    assert xs[-1]["ent_shop_distinct"] == pytest.approx(5000, rel=0.4)  # ~1/sqrt(62) = 13 % typical error
    assert len(states["a"]["u:shop"]) == 64
    assert view.trending == {"ent_shop_distinct"}


# ------------------------------------------------------------------ user functions
def ratio_to_last(event, state):
    v = event["features"].get("amount", 0.0)
    last = (state or {}).get("last")
    return {"to_last": v / last if last else 0.0}, {"last": v}


def test_a_function_state_comes_back_as_json_gives_it_in_memory_too():
    def pairs(event, state):
        return {"n": float(len(state or []))}, tuple(state or ()) + ((1, 2),)

    view = FeatureView("f", fields=[], blocks=[Function(pairs, stateful=True)])
    events = [ev(i) for i in range(3)]
    assert run(view, events) == run(view, events, via_json=True)
    assert run(view, events)[1]["a"]["fn:pairs"] == [[1, 2], [1, 2], [1, 2]]


def test_stateful_function_keeps_its_own_state_under_its_key():
    view = FeatureView("f", fields=[], blocks=[Function(ratio_to_last, stateful=True)])
    xs, states = run(view, [ev(0, amount=2.0), ev(1, amount=6.0)], via_json=True)
    assert [x["to_last"] for x in xs] == [0.0, 3.0]
    assert states["a"] == {"n": 2, "t": 0.001, "fn:ratio_to_last": {"last": 6.0}}


def test_a_raising_function_is_a_feature_error_naming_it():
    def boom(event, state):
        raise KeyError("merchant")

    view = FeatureView("f", blocks=[Function(boom, name="boom")])
    with pytest.raises(FeatureError) as info:
        view.compute(ev(0), None)
    assert str(info.value) == ("feature function tests.unit.featurestore.test_blocks:"
                               "test_a_raising_function_is_a_feature_error_naming_it.<locals>.boom failed: "
                               "KeyError: 'merchant'")
    assert info.value.reason == "feature_error"


@pytest.mark.parametrize("fn, stateful, message", [
    (lambda e, s: [1.0], False, "must return a dict of features, got list"),
    (lambda e, s: ({}, None), False, "returned a \\(features, state\\) pair; declare it stateful"),
    (lambda e, s: {}, True, "is stateful and must return \\(features, state\\), got dict"),
    (lambda e, s: {"r": float("nan")}, False, "returned 'r' = nan: features must be finite"),
    (lambda e, s: {"r": "x"}, False, "feature 'r' needs a number, got str 'x'"),
    (lambda e, s: {"amount": 1.0}, False, "returned feature 'amount', which the view already computes"),
    (lambda e, s: {1: 1.0}, False, "returned a feature named 1: names must be strings"),
    (lambda e, s: ({}, {"seen": {1, 2}}), True, "returned a state that is not JSON-serialisable: Type is not JSON"),
])
def test_a_function_returning_the_wrong_thing_is_a_feature_error(fn, stateful, message):
    view = FeatureView("f", blocks=[Function(fn, stateful=stateful)])
    with pytest.raises(FeatureError, match=message):
        view.compute(ev(0, amount=1.0), None)


# ------------------------------------------------------------------ properties of every block together
@each_view
def test_state_is_bounded_whatever_the_rate(view):
    """10k events on one entity, every shop new: the state stops growing."""
    sizes = []
    state = None
    for i in range(10_000):
        _, state = view.compute(ev(i * 50, shop=f"s{i}", amount=float(i % 97), qty=i % 5, ok=i % 2 == 0), state)
        if i in (1_000, 9_999):
            sizes.append(len(orjson.dumps(state)))
    assert abs(sizes[1] - sizes[0]) < 64 and sizes[1] < 1500, sizes
    if view is RICH:
        assert len(state["w30m:amount,qty"]) <= 6 and len(state["u:shop"]) == 8


@each_view
@pytest.mark.parametrize("seed", [1, 2])
def test_json_round_trip_of_the_state_changes_nothing(view, seed):
    events = stream(500, seed)
    assert run(view, events) == run(view, events, via_json=True)


@each_view
def test_compute_never_mutates_the_prior_state_or_the_event(view):
    events = stream(300, 5)
    states: dict[str, Any] = {}
    for e in events:
        before_e, prior = orjson.dumps(e), states.get(e["entity"])
        before_s = orjson.dumps(prior)
        _, states[e["entity"]] = view.compute(e, prior)
        assert orjson.dumps(prior) == before_s and orjson.dumps(e) == before_e


gaps = st.integers(min_value=0, max_value=10**7)
amounts = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(gaps, amounts, st.integers(0, 30)), min_size=1, max_size=40), amounts,
       st.integers(0, 30))
def test_no_look_ahead_the_current_event_only_moves_its_own_value_features(history, other, other_shop):
    """Changing the last event's values changes no earlier vector, and in its own vector only
    the raw fields and the comparisons of the current value (z-score, log ratio)."""
    t, events = 0, []
    for i, (gap, amount, shop) in enumerate(history):
        t += gap
        events.append(ev(t, "a", i, amount=amount, qty=1, ok=True, shop=f"s{shop}"))
    xs, _ = run(RICH, events)
    changed = [dict(e, features=dict(e["features"])) for e in events]
    changed[-1]["features"].update(amount=other, shop=f"s{other_shop}")
    ys, _ = run(RICH, changed)
    assert xs[:-1] == ys[:-1]

    def past(x):
        return {k: v for k, v in x.items() if not (k.startswith(("amount", "shop#")) or "zscore" in k
                                                   or "logratio" in k)}
    assert past(xs[-1]) == past(ys[-1])


@each_view
def test_deterministic_and_independent_per_entity(view):
    events = stream(600, 9, entities=5)
    xs, states = run(view, events)
    assert (xs, states) == run(view, events)
    one = [e for e in events if e["entity"] == "c2"]
    alone, _ = run(view, one)
    assert alone == [x for x, e in zip(xs, events) if e["entity"] == "c2"]
