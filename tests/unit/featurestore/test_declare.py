"""Views declared as a TOML table: round trip, precise errors, fingerprint, describe, sample checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from streamlearn.featurestore.declare import view_from_dict, view_from_toml
from streamlearn.featurestore.definitions import (
    Decayed,
    FeatureConfigError,
    FeatureView,
    Field,
    Function,
    Window,
    get_view,
)

ROOT = Path(__file__).resolve().parents[3]


def big_spender(event, state):
    """A user feature function referenced by import path from the TOML below."""
    return {"big": event["features"].get("amount", 0.0) > 100}


def running_max(event, state):
    v = event["features"].get("amount") or 0.0
    top = max(v, (state or {}).get("max", 0.0))
    return {"max_before": (state or {}).get("max", 0.0)}, {"max": top}


PROJECT = """
[features]
name = "payments"
version = 3
description = "card payments"

[[features.fields]]
name = "amount"
type = "numeric"
missing = "indicator"

[[features.fields]]
name = "online"
type = "boolean"
missing = "zero"

[[features.fields]]
name = "shop"
type = "categorical"
encoding = "hash"
buckets = 32

[[features.fields]]
name = "country"
type = "categorical"
missing = "fill"
fill = "unknown"

[[features.aggregates]]
kind = "count"

[[features.aggregates]]
kind = "since_last"

[[features.aggregates]]
kind = "decayed"
on = ["amount", "online"]
half_lives = ["1h", "1d"]
stats = ["count", "mean", "std", "zscore", "logratio"]

[[features.aggregates]]
kind = "window"
on = "amount"
duration = "10m"
stats = ["count", "sum", "max"]
buckets = 5

[[features.aggregates]]
kind = "distinct"
on = "shop"
k = 32

[[features.functions]]
fn = "tests.unit.featurestore.test_declare:big_spender"

[[features.functions]]
fn = "tests.unit.featurestore.test_declare:running_max"
stateful = true
"""


def project_view() -> FeatureView:
    return view_from_dict(tomllib.loads(PROJECT)["features"])


def sample_events(n: int = 50) -> list[dict]:
    return [{"event_id": f"e{i}", "entity": f"c{i % 4}", "event_time": 1_700_000_000_000 + 45_000 * i,
             "features": {"amount": float(i * 7 % 130), "online": i % 3 == 0, "shop": f"s{i % 9}",
                          "country": "FR" if i % 5 else None}} for i in range(n)]


def test_toml_table_builds_the_view_and_round_trips():
    view = project_view()
    assert (view.name, view.version, view.description) == ("payments", 3, "card payments")
    assert [type(b).__name__ for b in view.blocks] == ["Count", "SinceLast", "Decayed", "Window", "Distinct",
                                                       "Function", "Function"]
    again = view_from_dict(view.spec())
    assert again.spec() == view.spec() and again.fingerprint == view.fingerprint
    # the spec is plain TOML data: booleans, ints, strings, lists, tables
    assert json.loads(json.dumps(view.spec())) == view.spec()
    x, state = view.compute(sample_events(1)[0], None)
    assert x["big"] == 0.0 and x["max_before"] == 0.0 and x["country=unknown"] == 1.0
    assert list(state) == ["n", "t", "d:amount,online", "w10m:amount", "u:shop", "fn:running_max"]


def test_python_and_toml_declarations_are_the_same_view():
    from streamlearn.featurestore.definitions import Count, Distinct, SinceLast

    py = FeatureView("payments", 3, description="card payments", fields=[
        Field("amount", missing="indicator"), Field("online", "boolean", missing="zero"),
        Field("shop", "categorical", encoding="hash", buckets=32),
        Field("country", "categorical", missing="fill", fill="unknown")],
        blocks=[Count(), SinceLast(), Decayed(["amount", "online"], half_lives=["60m", "24h"],
                                              stats=["count", "mean", "std", "zscore", "logratio"]),
                Window("amount", "600s", stats=["count", "sum", "max"], buckets=5), Distinct("shop", k=32),
                Function(big_spender), Function(running_max, stateful=True)])
    toml = project_view()
    assert py.fingerprint == toml.fingerprint and py == toml  # "60m" is "1h": canonical durations
    events = sample_events()
    states_a: dict = {}
    states_b: dict = {}
    for e in events:
        xa, states_a[e["entity"]] = py.compute(e, states_a.get(e["entity"]))
        xb, states_b[e["entity"]] = toml.compute(e, states_b.get(e["entity"]))
        assert xa == xb


@pytest.mark.parametrize("table, message", [
    ({"name": "v", "aggregates": [{"kind": "decayed", "on": "a", "half_lives": ["1h", 5]}]},
     'features.aggregates[0].half_lives[1]: expected durations like "1h", got 5'),
    ({"name": "v", "aggregates": [{"kind": "window", "duration": "10 minutes"}]},
     "features.aggregates[0].duration: expected durations like \"1h\", got '10 minutes'"),
    ({"name": "v", "aggregates": [{"kind": "window", "duration": "0s"}]},
     "features.aggregates[0].duration: a duration must be positive, got '0s'"),
    ({"name": "v", "aggregates": [{"kind": "rolling"}]},
     "features.aggregates[0].kind: unknown block kind 'rolling'; expected one of ['count', 'decayed', 'distinct', "
     "'entity', 'since_last', 'window']"),
    ({"name": "v", "aggregates": [{"on": "a"}]}, "features.aggregates[0]: missing required key 'kind'"),
    ({"name": "v", "aggregates": [{"kind": "count"}, {"kind": "window", "duration": "1h", "size": 3}]},
     "features.aggregates[1].size: unknown key; expected one of ['buckets', 'duration', 'key', 'on', 'prefix', "
     "'stats']"),
    ({"name": "v", "aggregates": [{"kind": "decayed"}]}, "features.aggregates[0]: missing required key 'on'"),
    ({"name": "v", "aggregates": [{"kind": "decayed", "on": "a", "stats": ["mean", "median"]}]},
     "features.aggregates[0].stats[1]: unknown 'median'; expected one of ['count', 'sum', 'mean', 'var', 'std', "
     "'zscore', 'logratio']"),
    ({"name": "v", "aggregates": [{"kind": "window", "duration": "1h", "buckets": "10"}]},
     "features.aggregates[0].buckets: expected an integer, got '10'"),
    ({"name": "v", "aggregates": [{"kind": "window", "duration": "1h", "buckets": 0}]},
     "features.aggregates[0].buckets: expected an integer in [1, 1000], got 0"),
    ({"name": "v", "aggregates": [{"kind": "distinct", "on": ["a", "b"]}]},
     "features.aggregates[0].on: expected a string, got ['a', 'b']"),
    ({"name": "v", "aggregates": [{"kind": "decayed", "on": "a"}, {"kind": "decayed", "on": "a"}]},
     "features.aggregates[1]: state key 'd:a' is also used by features.aggregates[0]; give one a different name, "
     "'prefix' or 'key'"),
    ({"name": "v", "aggregates": [{"kind": "decayed", "on": "a"}, {"kind": "decayed", "on": "a", "key": "d2"}]},
     "features.aggregates[1]: feature 'ent_count_hl1h' is also used by features.aggregates[0]"),
    ({"name": "v", "aggregates": "count"},
     "features.aggregates: expected a list of tables ([[features.aggregates]]) of aggregates, got 'count'"),
    ({"name": "v", "agregates": []}, "features.agregates: unknown key (did you mean 'aggregates'?)"),
    ({"version": 2}, "features: missing required key 'name'"),
    ({"name": "v", "version": "2"}, "features.version: expected an integer, got '2'"),
    ({"name": "v", "version": 0}, "features.version: expected an integer >= 1, got 0"),
    ({"name": "v", "fields": [{"name": "a", "type": "float"}]},
     "features.fields[0].type: unknown 'float'; expected one of ['numeric', 'boolean', 'categorical']"),
    ({"name": "v", "fields": [{"type": "numeric"}]}, "features.fields[0]: missing required key 'name'"),
    ({"name": "v", "fields": [{"name": "a", "missing": "fill"}]},
     "features.fields[0].fill: missing = 'fill' needs a finite number, got None"),
    ({"name": "v", "fields": [{"name": "a", "type": "categorical", "missing": "zero"}]},
     "features.fields[0].missing: 'zero' has no meaning for a categorical"),
    ({"name": "v", "fields": [{"name": "a", "type": "categorical", "encoding": "hash"}]},
     "features.fields[0].buckets: expected an integer in [2, 65536], got 0"),
    ({"name": "v", "fields": [{"name": "a"}, {"name": "a", "type": "boolean"}]},
     "features.fields[1]: field 'a' is also used by features.fields[0]"),
    ({"name": "v", "fields": [{"name": "a"}], "drop": ["b"]}, "features.drop: only applies without declared fields"),
    ({"name": "v", "functions": [{"fn": "no_such_module_xyz:f"}]},
     "features.functions[0].fn: cannot import 'no_such_module_xyz:f': ModuleNotFoundError: No module named "
     "'no_such_module_xyz'"),
    ({"name": "v", "functions": [{"fn": "tests.unit.featurestore.test_declare:nope"}]},
     "features.functions[0].fn: cannot import 'tests.unit.featurestore.test_declare:nope': AttributeError: "),
    ({"name": "v", "functions": [{"fn": "tests.unit.featurestore.test_declare"}]},
     "features.functions[0].fn: expected 'module:function', got 'tests.unit.featurestore.test_declare'"),
    ({"name": "v", "functions": [{"fn": "tests.unit.featurestore.test_declare:PROJECT"}]},
     "features.functions[0].fn: 'tests.unit.featurestore.test_declare:PROJECT' is not callable"),
    ({"name": "v", "functions": [{"fn": "tests.unit.featurestore.test_declare:big_spender", "stateful": "yes"}]},
     "features.functions[0].stateful: expected true or false, got 'yes'"),
    ({"name": "v", "functions": [{"fn": "tests.unit.featurestore.test_declare:big_spender", "key": "k"}]},
     "features.functions[0].key: only a stateful function keeps state"),
])
def test_declaration_errors_name_the_key_path(table, message):
    with pytest.raises(FeatureConfigError) as info:
        view_from_dict(table)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_a_resolver_from_the_project_loader_is_used_and_its_failure_is_one_line():
    calls = []

    def resolve(path):
        calls.append(path)
        if path == "proj:ok":
            return big_spender
        raise ImportError("no module named proj\n(searched /tmp/project)")

    view = view_from_dict({"name": "v", "functions": [{"fn": "proj:ok"}]}, resolve=resolve)
    assert view.functions[0].fn is big_spender and view.spec()["functions"][0]["fn"] == "proj:ok"
    with pytest.raises(FeatureConfigError, match=r"^features.functions\[0\].fn: cannot import 'proj:bad': "
                                                 r"ImportError: no module named proj \(searched /tmp/project\)$"):
        view_from_dict({"name": "v", "functions": [{"fn": "proj:bad"}]}, resolve=resolve)
    assert calls == ["proj:ok", "proj:bad"]


def test_toml_file_errors_name_the_file(tmp_path):
    good = tmp_path / "streamlearn.toml"
    good.write_text(PROJECT)
    assert view_from_toml(good).fingerprint == project_view().fingerprint
    bad = tmp_path / "bad.toml"
    bad.write_text('[features]\nname = "v"\n[[features.aggregates]]\nkind = "window"\nduration = 10\n')
    with pytest.raises(FeatureConfigError, match=rf"^{bad}: features.aggregates\[0\].duration: expected durations"):
        view_from_toml(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text('[features]\nname = "v\n')
    with pytest.raises(FeatureConfigError, match=rf"^{broken}: .*line 2"):
        view_from_toml(broken)


# ------------------------------------------------------------------ fingerprint
FINGERPRINT_SCRIPT = """
import json, tomllib
from streamlearn.featurestore.declare import view_from_dict
from streamlearn.featurestore.definitions import get_view
from tests.unit.featurestore.test_declare import PROJECT, sample_events
view = view_from_dict(tomllib.loads(PROJECT)["features"])
state, xs = None, []
for e in sample_events(20):
    x, state = view.compute(dict(e, entity="one"), state)
    xs.append(x)
print(json.dumps({"fp": view.fingerprint, "entity_v1": get_view("entity_v1").fingerprint,
                  "raw_v1": get_view("raw_v1").fingerprint, "xs": xs, "state": state}))
"""


def _in_subprocess(seed: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", FINGERPRINT_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_fingerprint_and_hashed_features_are_stable_across_processes_and_hash_seeds():
    a, b = _in_subprocess("1"), _in_subprocess("4242")
    assert a == b
    assert a["fp"] == project_view().fingerprint
    assert a["entity_v1"] == get_view("entity_v1").fingerprint and a["raw_v1"] == get_view("raw_v1").fingerprint
    assert len(a["fp"]) == 16 and int(a["fp"], 16) >= 0


def test_fingerprint_tracks_the_definition_not_the_name_or_version():
    base = {"name": "v", "aggregates": [{"kind": "decayed", "on": "amount", "half_lives": ["1h"]}]}
    fp = view_from_dict(base).fingerprint
    assert view_from_dict({**base, "name": "w", "version": 7, "description": "x"}).fingerprint == fp
    assert view_from_dict({**base, "aggregates": [{"kind": "decayed", "on": "amount", "half_lives": ["2h"]}]}) \
        .fingerprint != fp
    assert view_from_dict({**base, "fields": []}).fingerprint != fp  # no raw fields vs every raw field
    assert view_from_dict({**base, "aggregates": [{"kind": "decayed", "on": "amount", "half_lives": "60m"}]}) \
        .fingerprint == fp  # the same duration written differently


def test_fingerprint_covers_the_source_of_user_functions(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    fps = []
    for i, body in enumerate(["return {'f': 1.0}", "return {'f': 2.0}"]):
        (tmp_path / f"userfeat{i}.py").write_text(textwrap.dedent(f"""
            def feature(event, state):
                {body}
        """))
        fps.append(view_from_dict({"name": "v", "functions": [{"fn": f"userfeat{i}:feature"}]}).fingerprint)
    # only the body differs (the path too; pin that the body alone matters with a resolver)
    assert fps[0] != fps[1]
    import userfeat0
    import userfeat1

    same_path = [view_from_dict({"name": "v", "functions": [{"fn": "user:feature"}]},
                                resolve=lambda p, m=m: m.feature).fingerprint for m in (userfeat0, userfeat1)]
    assert same_path[0] != same_path[1]


# ------------------------------------------------------------------ describe / check_sample
def test_describe_lists_features_state_and_an_estimate_of_redis_bytes():
    view = project_view()
    d = view.describe()
    names = {f["name"]: f for f in d["features"]}
    assert names["ent_amount_zscore_hl1d"] == {"name": "ent_amount_zscore_hl1d", "kind": "decayed zscore",
                                               "block": "features.aggregates[2] (decayed)"}
    assert names["shop#<0..31>"]["kind"] == "hashed(32)" and names["amount_missing"]["kind"] == "indicator"
    assert names["<returned by tests.unit.featurestore.test_declare:big_spender>"]["block"] == \
        "features.functions[0] (tests.unit.featurestore.test_declare:big_spender)"
    assert d["state_keys"] == ["n", "t", "d:amount,online", "w10m:amount", "u:shop", "fn:running_max"]
    assert d["trending"] == ["ent_count", "ent_log_count", "ent_shop_distinct"]
    assert d["fingerprint"] == view.fingerprint and d["problems"] == []
    est = d["redis_bytes_per_entity"]
    assert 300 < est["estimate"] < 2000 and "estimate" not in est["basis"] and "synthetic" in est["basis"]
    with_sample = view.describe(sample_events())
    assert "big" in with_sample["observed_features"] and "4 entities" in with_sample["redis_bytes_per_entity"]["basis"]


def test_describe_entity_v1():
    d = get_view("entity_v1").describe()
    assert d["state_keys"] == ["n", "t", "w", "s"] and d["trending"] == ["ent_count", "ent_log_count"]
    assert [f["name"] for f in d["features"]][:2] == ["<every raw field>", "ent_count"]
    assert 60 < d["redis_bytes_per_entity"]["estimate"] < 200
    assert get_view("raw_v1").describe()["state_keys"] == []


def test_check_sample_reports_fields_the_events_never_carry():
    view = view_from_dict({"name": "v", "fields": [{"name": "amount"}, {"name": "shop", "type": "categorical"}],
                           "aggregates": [{"kind": "decayed", "on": ["amout"]}]})
    assert view.check_sample(sample_events(10)) == [
        "features.aggregates[0].on: field 'amout' never appears in the 10 sample events (did you mean 'amount'?); "
        "they carry ['amount', 'country', 'online', 'shop']"]
    events = [dict(e, features={k: v for k, v in e["features"].items() if k != "shop"}) for e in sample_events(10)]
    assert view.check_sample(events) == [
        "features.fields[1]: field 'shop' never appears in the 10 sample events; they carry ['amount', 'country', "
        "'online']",
        "features.aggregates[0].on: field 'amout' never appears in the 10 sample events (did you mean 'amount'?); "
        "they carry ['amount', 'country', 'online']",
    ]
    assert project_view().check_sample(sample_events()) == []
    assert view.check_sample([]) == ["no sample events to check the view against"]


def test_check_sample_runs_the_events_through_the_view():
    def picky(event, state):
        if event["features"]["amount"] > 100:
            raise ValueError("amount too large")
        return {}

    def leaky(event, state):
        return {}, {"at": {1, 2}}  # a set: not JSON

    view = FeatureView("v", blocks=[Function(picky, name="picky")])
    (problem,) = view.check_sample([{"event_id": "x", "entity": "a", "event_time": 0, "features": {"amount": 500}}])
    assert problem.startswith("sample event 'x': feature function ") and problem.endswith(
        "picky failed: ValueError: amount too large")
    leak = FeatureView("v", blocks=[Function(leaky, stateful=True)]).check_sample(sample_events(3))
    assert leak[0].startswith("sample event 'e0': feature function ") and \
        "leaky returned a state that is not JSON-serialisable" in leak[0]


def test_the_card_demo_view_declared_in_toml_is_entity_v1():
    table = tomllib.loads('[features]\nname = "entity_v1"\n[[features.aggregates]]\nkind = "entity"\non = ["amount"]\n'
                          'half_lives = ["1h", "1d"]\n')["features"]
    view = view_from_dict(table)
    assert view == get_view("entity_v1") and view.fingerprint == get_view("entity_v1").fingerprint
    assert view_from_dict({"name": "raw_v1"}).fingerprint == get_view("raw_v1").fingerprint


def test_a_view_pickles_and_copies_to_the_same_view():
    import copy
    import pickle

    view = project_view()
    for clone in (pickle.loads(pickle.dumps(view)), copy.deepcopy(view)):
        assert clone == view and clone.spec() == view.spec()
        e = sample_events(1)[0]
        assert clone.compute(e, None) == view.compute(e, None)


@pytest.mark.parametrize("written, seconds, label", [
    ("30s", 30.0, "30s"), ("10m", 600.0, "10m"), ("60m", 3600.0, "1h"), ("1.5h", 5400.0, "90m"), ("1d", 86400.0, "1d"),
    ("1w", 604800.0, "7d"), ("250ms", 0.25, "250ms"), ("1.1h", 3960.0, "66m"),
])
def test_durations_have_one_canonical_label_that_parses_back(written, seconds, label):
    from streamlearn.featurestore.fields import duration_label, parse_duration

    assert parse_duration(written, strict=True) == seconds
    assert duration_label(seconds) == label and parse_duration(label, strict=True) == seconds


@pytest.mark.parametrize("value, message", [
    ("2.5ms", "a duration must be a whole number of milliseconds, got '2.5ms'"),
    ("-1h", "expected durations like \"1h\", got '-1h'"),
    ("1 h", "expected durations like \"1h\", got '1 h'"),
    ("1H", "expected durations like \"1h\", got '1H'"),
    (True, "expected durations like \"1h\", got True"),
    (3600, "expected durations like \"1h\", got 3600"),
])
def test_bad_durations_are_refused(value, message):
    with pytest.raises(FeatureConfigError, match=f"^features.aggregates\\[0\\].duration: {message}$".replace("(", "\\(")
                       .replace(")", "\\)")):
        view_from_dict({"name": "v", "aggregates": [{"kind": "window", "duration": value}]})


def test_record_is_json_and_diff_says_what_changed(tmp_path, monkeypatch):
    from streamlearn.featurestore.declare import diff

    view = project_view()
    rec = json.loads(json.dumps(view.record()))  # what a registry stores and reads back
    assert rec["fingerprint"] == view.fingerprint and rec["spec"] == view.spec()
    assert set(rec["code"]) == {f"{__name__}:big_spender", f"{__name__}:running_max"}
    assert diff(rec, view.record()) == []

    table = tomllib.loads(PROJECT)["features"]
    table["fields"] = table["fields"][:3]
    table["aggregates"][3]["duration"] = "5m"
    changed = view_from_dict(table)
    assert diff(rec, changed.record()) == [
        '- features.fields[3] = {"name": "country", "type": "categorical", "missing": "fill", "fill": "unknown", '
        '"encoding": "onehot"}',
        '~ features.aggregates[3].duration: "10m" -> "5m"',
    ]
    # a function whose source changed under the same import path
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fmod.py").write_text("def f(event, state):\n    return {'a': 1.0}\n")
    before = view_from_dict({"name": "v", "functions": [{"fn": "fmod:f"}]}).record()
    (tmp_path / "fmod2.py").write_text("def f(event, state):\n    return {'a': 2.0}\n")
    import fmod2

    after = view_from_dict({"name": "v", "functions": [{"fn": "fmod:f"}]}, resolve=lambda p: fmod2.f).record()
    assert diff(before, after) == ["~ function fmod:f: source changed"]
    assert before["fingerprint"] != after["fingerprint"]
