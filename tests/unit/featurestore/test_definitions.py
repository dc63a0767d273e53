"""Feature views are pure, deterministic and point-in-time correct."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.featurestore.definitions import get_view

view = get_view("entity_v1")

amounts = st.floats(min_value=0, max_value=1e6, allow_nan=False)
gaps = st.integers(min_value=0, max_value=10**8)


def _events(history):
    t, out = 0, []
    for i, (gap, amount) in enumerate(history):
        t += gap
        out.append({"event_id": str(i), "entity": "a", "event_time": t, "features": {"amount": amount}})
    return out


def _run(events):
    state, xs = None, []
    for ev in events:
        x, state = view.compute(ev, state)
        xs.append(x)
    return xs, state


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(gaps, amounts), min_size=1, max_size=30), amounts)
def test_entity_features_never_see_the_current_or_future_values(history, other):
    """Changing the last event's amount changes only its raw field and its ratio to the past:
    every aggregate of the past is the same, and earlier vectors do not change at all."""
    events = _events(history)
    xs, _ = _run(events)
    changed = [dict(e, features=dict(e["features"])) for e in events]
    changed[-1]["features"]["amount"] = other
    ys, _ = _run(changed)
    assert xs[:-1] == ys[:-1]
    own = {"amount"} | {k for k in xs[-1] if "logratio" in k}
    assert {k: v for k, v in xs[-1].items() if k not in own} == {k: v for k, v in ys[-1].items() if k not in own}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(gaps, amounts), min_size=1, max_size=30))
def test_compute_is_deterministic_and_does_not_mutate_its_input(history):
    events = _events(history)
    before = repr(events)
    assert _run(events) == _run(events)
    assert repr(events) == before


def test_raw_view_has_no_entity_state_and_encodes_types():
    raw = get_view("raw_v1")
    x, state = raw.compute({"event_id": "1", "entity": "a", "event_time": 0,
                            "features": {"amount": 3, "ok": True, "merchant": "m", "none": None}}, None)
    assert x == {"amount": 3.0, "ok": 1.0, "merchant=m": 1.0}
    assert state == {}


def test_out_of_order_event_does_not_rewind_the_clock():
    xs, state = _run(_events([(10_000, 1.0), (0, 2.0)]))
    late = {"event_id": "x", "entity": "a", "event_time": 0, "features": {"amount": 1.0}}
    x, s2 = view.compute(late, state)
    assert x["ent_secs_since_last"] == 0.0 and s2["t"] == state["t"]
