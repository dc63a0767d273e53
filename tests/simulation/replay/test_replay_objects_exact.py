"""An in-process replay's loop reads and writes its memory backend directly, keeping entity
states and served records as objects (streams/loop/scoring.py ``_read_objects`` /
``_write_objects``, labels.py; batches where every item is plain by ``_score_plain`` and
labels' ``_plain``): it must compute exactly what the loop computes through the
backend's generic reads and write batches with every value stored as bytes, the path a live
worker takes on Redis. Compared on a real stream (cards) with what a live feedback topic
brings: re-sent events and labels, labels ahead of their events, events whose features
cannot be computed, a stateful user function, several models, a canary and the lifecycle
(gate, canary, drift) deciding on its own: every prediction (with its shadows and
labels_learned/label_joined), models, metrics, lifecycle, counters, dead letters, learn log,
served records and entity states."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import random
from typing import Any

import pytest

from streamlearn import datasets
from streamlearn.featurestore.backend import MemoryBackend
from streamlearn.featurestore.definitions import EntityStats, FeatureView, Function, Window, get_view
from streamlearn.models.governance.lifecycle import LifecycleConfig
from streamlearn.replay.backtest.inprocess import memory_models_loop, run_stream
from streamlearn.settings import Settings
from streamlearn.streams.loop import OnlineLoop, labels, scoring, served
from streamlearn.streams.loop.serde import loads


def _seen(event: dict[str, Any], state: Any) -> tuple[dict[str, float], dict[str, Any]]:
    seen, last = (state or {}).get("seen", 0), (state or {}).get("last", (0.0, 0))
    # a tuple in the state: the view gives it back as JSON would (a list), as Redis does
    return {"seen_before": float(seen), "last_hour": float(last[1])}, \
        {"seen": seen + 1, "last": (event["features"].get("hour", 0) * 1.5, event["features"].get("hour", 0))}


VIEWS = {
    "entity_v1": get_view("entity_v1"),
    # a window over amount refuses a text amount (a feature error, dead-lettered)
    "window+fn": FeatureView("bt", blocks=[EntityStats(on=("amount",)), Window(["amount"], "1h"),
                                           Function(_seen, stateful=True)]),
}


def _messy(n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    stream = list(datasets.arrival_order(datasets.cards(n, seed=seed, n_cards=200)))
    rng = random.Random(seed)
    labels = {r["event_id"]: r for k, r in stream if k == "feedback"}
    early = {r["event_id"] for k, r in stream if k == "event" and rng.random() < 0.04 and r["event_id"] in labels}
    out: list[tuple[str, dict[str, Any]]] = []
    for kind, rec in stream:
        if kind == "event":
            if rec["event_id"] in early:
                out.append(("feedback", labels[rec["event_id"]]))  # parked, learned when its event is served
            if rng.random() < 0.02:  # a text amount: the window cannot use it
                rec = {**rec, "features": {**rec["features"], "amount": "n/a"}}
        elif rec["event_id"] in early:
            continue
        out.append((kind, rec))
        if rng.random() < 0.03:
            out.insert(len(out) - rng.randint(0, 20), (kind, rec))  # re-sent, a little later
    return out


def _loop(view: FeatureView, objects: bool, lifecycle: LifecycleConfig | None) -> OnlineLoop:
    clock = itertools.count(1_700_000_000, 7).__next__  # the same calls give the same times
    loop = memory_models_loop(view, ["logreg", "ht"], lifecycle=lifecycle, clock=clock)
    if not objects:  # every value stored as bytes, through read_many/write_batch, as on Redis
        loop.backend = MemoryBackend(keep_objects=False)
    return loop


def _run(loop: OnlineLoop, stream: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    third = len(stream) // 3
    preds = asyncio.run(run_stream(loop, stream[:third], batch=8))
    loop.models.add_challenger("logreg", "test: started mid-stream")
    preds += asyncio.run(run_stream(loop, stream[third:2 * third]))
    if loop.models.canary is None and 2 in loop.models.learners and loop.models.champion == 1:
        loop.models.start_canary(2, 0.5, "test")
    preds += asyncio.run(run_stream(loop, stream[2 * third:]))
    return preds


def _stored(loop: OnlineLoop) -> dict[str, Any]:
    kv = loop.backend._kv  # type: ignore[attr-defined]
    srv = sorted(k for k in kv if ":srv:" in k)
    recs = asyncio.run(served.decode_many(loop, [kv[k][0] for k in srv], "test"))
    learned = [served.ServedCodec.is_learned(kv[k][0]) for k in srv]
    ents = {k: (v if type(v) is not bytes else loads(v)) for k, (v, _) in kv.items() if ":ent:" in k}
    pend = {k: v for k, (v, _) in kv.items() if ":pend:" in k}
    return {"served": list(zip(srv, recs, learned)), "entities": ents, "pending": pend,
            "learn_log": asyncio.run(loop.backend.read_list(loop.keys.learn_log))}


def _state(loop: OnlineLoop) -> dict[str, Any]:
    out: dict[str, Any] = {
        "counters": loop.counters.as_dict(), "outbox": list(loop.outbox), "log_len": loop.log_len,
        "feature_errors": loop.feature_errors,
        # a Hoeffding tree pickles in no fixed order (even against itself): compared by what it
        # predicts on the last vectors served, below; the linear models bit for bit
        "learners": {v: (pickle.dumps(lr.model) if lr.spec == "logreg" else lr.spec, pickle.dumps(lr.metrics),
                         lr.labels_learned, lr.scored_labels) for v, lr in loop.models.learners.items()},
        "model_set": (loop.models.champion, loop.models.canary, loop.models.history),
        **_stored(loop),
    }
    out["last_predictions"] = [[lr.predict(rec["x"]) for lr in loop.models.learners.values()]
                               for _, rec, _ in out["served"][-200:]]
    lc = loop.lifecycle
    if lc is not None:
        lc._flush_labels()
        out["lifecycle"] = {k: pickle.dumps(v) for k, v in lc.__dict__.items() if k != "labels"}
        out["label_rows"] = (lc.labels.n, lc.labels.ref_rows, lc.labels.cur_rows, lc.labels.checks)
    return out


def _flat(preds: list[Any]) -> list[Any]:
    return [(p.record(), [s.record() for s in p.shadows]) for p in preds]


@pytest.mark.parametrize("lifecycle", [False, True])
@pytest.mark.parametrize("view", list(VIEWS), ids=list(VIEWS))
def test_objects_kept_in_memory_replay_exactly_as_bytes_through_the_backend(
        view: str, lifecycle: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _messy(2500, seed=3)
    cfg = LifecycleConfig.from_settings(Settings(drift_warmup=100, drift_feature_reference=300,
                                                 drift_feature_window=150)) if lifecycle else None
    # batches served and learned by the direct path's plain shortcut, and by its general path
    taken: dict[str, list[bool]] = {"score": [], "learn": []}
    for name, module, fn in (("score", scoring, "_score_plain"), ("learn", labels, "_plain")):
        def counted(*a: Any, _f: Any = getattr(module, fn), _n: str = name) -> Any:
            out = _f(*a)
            taken[_n].append(out is not None)
            return out
        monkeypatch.setattr(module, fn, counted)
    results = []
    for objects in (True, False):
        loop = _loop(VIEWS[view], objects, cfg)
        results.append((_flat(_run(loop, stream)), _state(loop), loop))
    for name, outcomes in taken.items():  # (the bytes side never asks)
        assert outcomes.count(True) > 100 and outcomes.count(False) > 10, (name, outcomes.count(True))
    (pa, sa, fast), (pb, sb, ref) = results
    # the paths are the ones meant: records kept as objects on one side, bytes on the other
    assert any(type(v) is tuple for v, _ in fast.backend._kv.values())  # type: ignore[attr-defined]
    assert all(type(v) is bytes for v, _ in ref.backend._kv.values())  # type: ignore[attr-defined]
    assert len(pa) == len(pb) and pa == pb
    for k in sb:
        assert sa[k] == sb[k], k
    c = sa["counters"]
    # the stream reaches every rule it is meant to
    assert c["events_duplicate"] > 0 and c["labels_duplicate"] > 0 and c["labels_joined_late"] > 0
    assert (len(sa["feature_errors"]) > 0) == (view == "window+fn")
    assert len(sa["learners"]) == 3 and any(lbl for *_, lbl in sa["served"])
    if lifecycle:
        assert sa["outbox"] and sa["lifecycle"]


@pytest.mark.parametrize("name", ["trips", "segments"])
def test_direct_replay_of_a_regression_and_a_multiclass_project_equals_bytes(name: str) -> None:
    """The same on a user's project of another task (examples/: a regression, a multiclass
    one with declared classes), its own stream, champion and a challenger of its own specs,
    some labels re-sent: records of a regression (no probabilities) and of seven classes."""
    from pathlib import Path

    from streamlearn.project import Project

    p = Project.load(Path(__file__).resolve().parents[3] / "examples" / name)
    stream = list(datasets.arrival_order(p.demo_items(1500, 7)))
    stream += [item for item in stream[500:900:7] if item[0] == "feedback"]  # re-sent labels
    specs = [p.champion, next(s for s in p.specs.values() if s != p.champion)]
    results = []
    for objects in (True, False):
        loop = memory_models_loop(p.view, specs, task=p.task)
        if not objects:
            loop.backend = MemoryBackend(keep_objects=False)
        preds = asyncio.run(run_stream(loop, stream, batch=16))
        # metrics by value (and their classes' order): a pickle also records which strings are
        # one object, and a kept record's class names are shared where decoded ones are not
        results.append((_flat(preds), {v: ({k: (m.get(), [(c, list(row.items())) for c, row in m.cm.data.items()]
                                                if hasattr(m, "cm") else None) for k, m in lr.metrics.items()},
                                           lr.labels_learned, lr.scored_labels)
                                       for v, lr in loop.models.learners.items()},
                        loop.counters.as_dict(), _stored(loop), loop))
    (*a, fast), (*b, ref) = results
    assert any(type(v) is tuple for v, _ in fast.backend._kv.values())  # type: ignore[attr-defined]
    assert a == b
    assert a[2]["labels_duplicate"] > 0 and a[2]["labels_learned"] > 1000
