"""The replay path (run_stream over OnlineLoop + MemoryBackend) computes exactly what it
computed before it was made faster, on a real stream (cards): the same predictions, counts,
learn log and metrics as the loop on the previous MemoryBackend (the reference in
tests/unit/featurestore/test_memory_backend.py) driven one batch per run of items, and the
same scores as a plain River loop."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from streamlearn import datasets
from streamlearn.featurestore.definitions import as_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.estimators.spec import build_model
from streamlearn.models.modelset import ModelSet
from streamlearn.replay.backtest.inprocess import memory_loop, memory_models_loop, run_stream
from streamlearn.streams.loop import OnlineLoop
from tests.unit.featurestore.test_memory_backend import ReferenceBackend


def _cards(n: int, perturb: bool) -> list[tuple[str, dict[str, Any]]]:
    stream = list(datasets.arrival_order(datasets.cards(n, seed=11, n_cards=300)))
    if not perturb:
        return stream
    # the cases a live feedback topic has too: labels re-sent, labels ahead of their event
    rng = random.Random(5)
    early = {r["event_id"] for k, r in stream if k == "event" and rng.random() < 0.03}
    labels = {r["event_id"]: r for k, r in stream if k == "feedback"}
    out: list[tuple[str, dict[str, Any]]] = []
    for kind, rec in stream:
        if kind == "event" and rec["event_id"] in early and rec["event_id"] in labels:
            out.append(("feedback", labels[rec["event_id"]]))  # parked, learned when its event is served
        if kind == "feedback" and rec["event_id"] in early:
            continue
        out.append((kind, rec))
        if kind == "feedback" and rng.random() < 0.05:
            out.insert(len(out) - rng.randint(0, 30), (kind, rec))  # a re-sent label
    return out


async def _reference_run(loop: OnlineLoop, stream: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The plain driver: each run of consecutive items of one kind is one loop call."""
    preds: list[Any] = []
    i = 0
    while i < len(stream):
        j = i
        while j < len(stream) and stream[j][0] == stream[i][0]:
            j += 1
        items = [r for _, r in stream[i:j]]
        if stream[i][0] == "event":
            preds += await loop.score_batch(items)
        else:
            await loop.learn_batch(items)
        i = j
    return preds


def _flat(preds: list[Any]) -> list[tuple[Any, ...]]:
    return [(q.event_id, q.model_version, q.labels_learned, q.score, q.predicted, q.probabilities, q.label_joined)
            for p in preds for q in (p, *p.shadows)]


@pytest.mark.parametrize("perturb", [False, True])
@pytest.mark.parametrize("specs", [["logreg"], ["logreg", "ht"]])
def test_replay_path_equals_the_reference_backend_on_cards(specs: list[str], perturb: bool) -> None:
    stream = _cards(2500, perturb)
    fast = memory_models_loop("entity_v1", specs)
    models = ModelSet.fresh("replay", specs[0])
    for spec in specs[1:]:
        models.add_challenger(spec, "backtest: compared side by side")
    ref = OnlineLoop(as_view("entity_v1"), models, ReferenceBackend(), Keys("replay", "replay"),
                     artifact_key=b"in-process")
    got = asyncio.run(run_stream(fast, stream))
    want = asyncio.run(_reference_run(ref, stream))
    # the replay keeps its served records as objects, the reference stores their bytes
    kept = [v for v, _ in fast.backend._kv.values() if type(v) is tuple]
    assert len(kept) > 2000 and not any(type(v) is tuple for v, _ in ref.backend._kv.values())
    assert len(got) == sum(1 for k, _ in stream if k == "event")
    assert _flat(got) == _flat(want)
    assert fast.counters.as_dict() == ref.counters.as_dict()
    if perturb:  # the perturbation reaches the join rules it is meant to
        assert fast.counters.labels_duplicate > 0 and fast.counters.labels_joined_late > 0
    for v, learner in fast.models.learners.items():
        assert learner.labels_learned == ref.models.learners[v].labels_learned
        assert learner.metric_values() == ref.models.learners[v].metric_values()
    learn_log = fast.keys.learn_log
    assert asyncio.run(fast.backend.read_list(learn_log)) == asyncio.run(ref.backend.read_list(learn_log))


def test_replay_path_scores_as_a_plain_river_loop_on_cards() -> None:
    """Each prediction equals River's predict_proba_one after the labels the loop says it had
    learned, learned in arrival order on the vector its event was served with."""
    stream = _cards(3000, perturb=False)
    loop = memory_loop("entity_v1", "logreg")
    preds = {p.event_id: p for p in asyncio.run(run_stream(loop, stream))}
    view, model = as_view("entity_v1"), build_model("logreg")
    states: dict[str, Any] = {}
    served: dict[str, dict[str, float]] = {}
    learned = 0
    for kind, rec in stream:
        if kind == "event":
            x, states[rec["entity"]] = view.compute(rec, states.get(rec["entity"]))
            served[rec["event_id"]] = x
            p = preds[rec["event_id"]]
            assert p.labels_learned == learned
            assert p.probabilities == {str(k): v for k, v in model.predict_proba_one(x).items()}
        else:
            model.learn_one(served[rec["event_id"]], rec["label"])
            learned += 1
    assert loop.champion.labels_learned == learned == loop.counters.labels_learned
    assert isinstance(loop.champion, Learner)


def test_restore_from_kept_records_equals_restore_from_bytes() -> None:
    """Snapshot + learn-log replay reads the served records back: kept ones give the same models."""
    stream = _cards(1500, perturb=False)
    half = len(stream) // 2
    loops = []
    for keep in (True, False):
        loop = memory_loop("entity_v1", "logreg")
        if not keep:
            loop.backend.keep_objects = False
        asyncio.run(run_stream(loop, stream[:half]))
        asyncio.run(loop.checkpoint())
        asyncio.run(run_stream(loop, stream[half:]))  # learned after the snapshot: in the learn log
        again = OnlineLoop(as_view("entity_v1"), Learner("replay", "logreg"), loop.backend, loop.keys,
                           artifact_key=b"in-process")
        assert asyncio.run(again.restore()) == loop.log_len > 100
        loops.append((loop, again))
    (kept, kept_again), (raw, raw_again) = loops
    assert any(type(v) is tuple for v, _ in kept.backend._kv.values())
    assert not any(type(v) is tuple for v, _ in raw.backend._kv.values())
    x = {"amount": 12.5, "hour": 3.0}
    for a, b in ((kept, kept_again), (raw, raw_again), (kept_again, raw_again)):
        assert a.champion.labels_learned == b.champion.labels_learned
        assert a.champion.metric_values() == b.champion.metric_values()
        assert a.champion.predict(x).probabilities == b.champion.predict(x).probabilities


def test_a_replay_hides_older_objects_from_the_collector_only_while_it_runs() -> None:
    """The stream and everything before it are frozen during run_stream and given back after;
    a process that froze objects itself keeps exactly its own freeze."""
    import gc

    from streamlearn.replay.backtest.inprocess import older_objects_frozen

    seen: list[int] = []
    loop = memory_loop("entity_v1", "logreg")
    # a few samples: get_freeze_count walks the frozen objects (~20 ms each under pytest)
    loop.on_learn = lambda *_: len(seen) < 5 and seen.append(gc.get_freeze_count())
    before = gc.get_freeze_count()  # 0, unless another test in this process froze objects
    asyncio.run(run_stream(loop, _cards(200, perturb=False)))
    assert seen and min(seen) > 0 and gc.get_freeze_count() == before
    if before:
        return
    gc.freeze()
    try:
        own = gc.get_freeze_count()
        with older_objects_frozen():
            assert gc.get_freeze_count() == own
        assert gc.get_freeze_count() == own
    finally:
        gc.unfreeze()


def test_a_replays_own_objects_are_frozen_as_it_goes_unless_it_makes_cyclic_garbage() -> None:
    """What a replay keeps is frozen every few batches (the young collections found nothing
    there); a stream whose processing leaves cycles behind is seen by the periodic check and
    handed back to the collector's policy, and its cycles are collected once it ends."""
    import gc
    import weakref

    from streamlearn.replay.backtest.inprocess import YoungFrozen

    if gc.get_freeze_count():  # another test in this process froze objects: nothing to see
        return
    counts: list[int] = []
    learned = [0]

    def note(*_: Any) -> None:  # a sample: get_freeze_count walks the frozen objects (~20 ms under pytest)
        learned[0] += 1
        if learned[0] % 250 == 1:
            counts.append(gc.get_freeze_count())

    loop = memory_loop("entity_v1", "logreg")
    loop.on_learn = note
    asyncio.run(run_stream(loop, _cards(1500, perturb=False)))
    assert counts[-1] > counts[0] and gc.get_freeze_count() == 0  # grew while it ran, given back after

    class Node:
        pass

    made: list[weakref.ref[Node]] = []

    def cycle(*_: Any) -> None:
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        made.append(weakref.ref(a))

    seen: list[bool] = []
    stays = YoungFrozen.batch_done

    def spy(self: YoungFrozen) -> None:
        stays(self)
        seen.append(self.active)

    loop = memory_loop("entity_v1", "logreg")
    loop.on_learn = cycle
    YoungFrozen.batch_done = spy  # type: ignore[method-assign]
    try:
        asyncio.run(run_stream(loop, _cards(3000, perturb=False)))
    finally:
        YoungFrozen.batch_done = stays  # type: ignore[method-assign]
    assert seen[0] and not seen[-1]  # found by the check, the collector's policy from then on
    gc.collect()
    assert made and all(r() is None for r in made)


def test_replay_metrics_equal_plain_river_metrics_on_cards() -> None:
    """The champion's progressive metrics after a replay (the learner's per-label updater,
    River's Accuracy and LogLoss updated inline, FastROCAUC) pickle exactly as River's own
    metrics fed each learned label with the prediction its event was served with."""
    import pickle

    from river import metrics

    stream = _cards(3000, perturb=False)
    loop = memory_loop("entity_v1", "logreg")
    preds = {p.event_id: p for p in asyncio.run(run_stream(loop, stream))}
    acc, loss, auc = metrics.Accuracy(), metrics.LogLoss(), metrics.ROCAUC()
    for kind, rec in stream:
        if kind == "feedback":
            p, y = preds[rec["event_id"]], rec["label"]
            proba = {k == "True": v for k, v in p.probabilities.items()}
            acc.update(y, p.predicted)
            loss.update(y, proba)
            auc.update(y, proba)
    ms = loop.champion.metrics
    assert loop.champion.scored_labels > 2000
    assert pickle.dumps(ms["accuracy"]) == pickle.dumps(acc)
    assert pickle.dumps(ms["log_loss"]) == pickle.dumps(loss)
    assert pickle.dumps(ms["roc_auc"]) == pickle.dumps(auc)
