"""The loop's label path learns a batch per model and per lifecycle (labels.learn_many): it
must leave exactly what the label-by-label path left (learn_all per label, then its marker
and learn-log entry): predictions, lifecycle and drift records, models, metrics, detectors,
served records, learn log and counters, on a real stream with duplicates, labels that arrive
before their events (parked, then learned while serving), a challenger and a canary."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from streamlearn import datasets
from streamlearn.featurestore.backend import WriteBatch
from streamlearn.models.governance.lifecycle import LifecycleConfig
from streamlearn.replay.backtest.inprocess import memory_models_loop
from streamlearn.settings import Settings
from streamlearn.streams.loop import labels, served
from streamlearn.streams.loop.serde import dumps


def _label_by_label(loop, todo, wb: WriteBatch | None, report) -> None:
    """The loop's label path as it was: everything for one label, then the next (into a write
    batch applied at once where the loop writes its memory backend directly: wb None)."""
    direct, wb = wb is None, wb if wb is not None else WriteBatch()
    for eid, y, rec, raw in todo:
        labels.learn_all(loop, y, rec)
        served.mark_learned(loop, wb, eid, raw)
        wb.append(loop.keys.learn_log, dumps({"id": eid, "y": y}))
        report.learned.append(eid)
        loop.counters.labels_learned += 1
        loop.dirty = True
        if loop.on_learn is not None:
            loop.on_learn(eid, y, rec)
    if direct:
        loop.backend.apply(wb)


def _messy_stream(n: int) -> list[tuple[str, dict[str, Any]]]:
    stream = list(datasets.arrival_order(datasets.cards(n, seed=5, n_cards=300)))
    fbs = [i for i, (k, _) in enumerate(stream) if k == "feedback"]
    early = {stream[i][1]["event_id"]: stream[i][1] for i in fbs[::53]}
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (k, r) in enumerate(stream):
        if k == "feedback" and r["event_id"] in early:
            continue
        if k == "event" and r["event_id"] in early:
            out.append(("feedback", early[r["event_id"]]))  # before its event: parked
        out.append((k, r))
        if k == "feedback" and i % 41 == 0:
            out.append((k, r))  # a duplicate
    return out


async def _run(loop, stream, batch: int) -> tuple[list, list]:
    preds, reports = [], []
    i, n = 0, len(stream)
    while i < n:
        kind, j = stream[i][0], i
        while j < n and stream[j][0] == kind and j - i < batch:
            j += 1
        items = [r for _, r in stream[i:j]]
        if i >= n // 3 and len(loop.models.learners) == 1:
            loop.models.add_challenger("nb", "test")
        if i >= n // 2 and loop.models.canary is None and 2 in loop.models.learners and loop.models.champion == 1:
            loop.models.start_canary(2, 0.5, "test")
        if kind == "event":
            preds += [p.record() for p in await loop.score_batch(items)]
        else:
            r = await loop.learn_batch(items)
            reports.append((r.learned, r.duplicate, r.unmatched))
        i = j
    return preds, reports


def _last_vectors(loop) -> list[dict[str, float]]:
    raws = [v[0] for k, v in loop.backend._kv.items() if ":srv:" in k]  # bytes, or records the replay keeps
    recs = asyncio.run(served.decode_many(loop, raws, "test"))
    return [r["x"] for r in recs[-20:]]


def _state(loop) -> dict[str, Any]:
    lc = loop.lifecycle
    lc._flush_labels()
    return {
        "outbox": list(loop.outbox), "counters": loop.counters.as_dict(),
        "metrics": {v: lr.metric_values() for v, lr in loop.models.learners.items()},
        # the champion's pickle; the naive Bayes challenger pickles in no fixed order (even
        # run against itself), so it is compared by its predictions (above, and of the last vectors)
        "champion": pickle.dumps(loop.models.learners[1]),
        "learners": {v: (lr.labels_learned, lr.scored_labels, pickle.dumps(lr.metrics))
                     for v, lr in loop.models.learners.items()},
        "last_predictions": [[lr.predict(x) for lr in loop.models.learners.values()]
                             for x in _last_vectors(loop)],
        "model_set": (loop.models.champion, loop.models.canary, loop.models.history),
        "lifecycle": {k: pickle.dumps(v) for k, v in lc.__dict__.items() if k != "labels"},
        "label_rows": (lc.labels.n, lc.labels.ref_rows, lc.labels.cur_rows, lc.labels.checks),
        "kv": sorted((k, v[0]) for k, v in loop.backend._kv.items() if ":ckpt" not in k),
        "lists": sorted(loop.backend._lists.items()),
    }


# 2,500 events for batches of 1 and 5: every line and branch of the package the 4,000-event
# stream runs (coverage.py arcs, each batch size) and more: the first canary is rolled back and
# a second one starts. 4,000 for batches of 64, the longest run of the batched path.
@pytest.mark.parametrize(("batch", "n"), [(1, 2500), (5, 2500), (64, 4000)], ids=["1", "5", "64"])
def test_batched_labels_leave_what_label_by_label_left(batch: int, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _messy_stream(n)
    cfg = LifecycleConfig.from_settings(Settings(drift_warmup=100, drift_feature_reference=300,
                                                 drift_feature_window=150))
    results = []
    for path in (labels.learn_many, _label_by_label):
        monkeypatch.setattr(labels, "learn_many", path)
        loop = memory_models_loop("entity_v1", ["logreg"], lifecycle=cfg, clock=lambda: 0.0)
        preds, reports = asyncio.run(_run(loop, stream, batch))
        results.append((preds, reports, _state(loop)))
    (pa, ra, sa), (pb, rb, sb) = results
    assert pa == pb and ra == rb
    for k in sa:
        assert sa[k] == sb[k], k
    c = sa["counters"]
    assert c["labels_duplicate"] > 0 and c["labels_joined_late"] > 0 and len(sa["metrics"]) == 2
    assert sa["model_set"][1] is not None, "a canary serves"
