"""Batch retraining from the archive: point-in-time training sets, fit, held-out metric, lineage.
(After drift, over a whole archive: tests/simulation/replay/test_retrain.py.)"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamlearn import datasets
from streamlearn.featurestore.backend import MemoryBackend
from streamlearn.featurestore.definitions import get_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.artifacts import ArtifactError
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.estimators.spec import build_model
from streamlearn.models.registry.versions import DirectoryStore, ModelRegistry
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import archive_items, records_for
from streamlearn.replay.archive.writer import write_records
from streamlearn.replay.retrain.retrainer import RetrainConfig, load_batch_model, retrain
from streamlearn.replay.retrain.training import examples, label_index
from streamlearn.streams.loop import OnlineLoop

KEY = b"test-artifact-key"
VIEW = get_view("entity_v1")


def _ev(eid: str, t: int, amount: float, entity: str = "card-1") -> dict:
    return {"event_id": eid, "entity": entity, "event_time": t, "features": {"amount": amount}}


def test_training_features_are_as_of_event_time_even_when_the_archive_order_is_not(tmp_path):
    """The future value (amount 1000 at t=2 s) sits at offset 0 of partition 0, before the
    earlier events of partition 1. An offset-order or final-state join would show it to the
    t=1 s example; the point-in-time join does not."""
    store = LocalStorage(tmp_path)
    early, future, late = _ev("a", 1_000, 10.0), _ev("b", 2_000, 1000.0), _ev("c", 3_000, 20.0)
    fb = [{"event_id": e, "label": lab, "label_time": 10_000} for e, lab in (("a", False), ("b", True), ("c", False))]
    recs = records_for([("event", future)], partitions=1) + [
        replace(r, partition=1) for r in records_for([("event", early), ("event", late)], partitions=1)
    ] + records_for([("feedback", f) for f in fb], partitions=1)
    write_records(store, recs)
    archive = Archive(store)
    assert [r["offset"] for r in archive.partition_records("event", "streamlearn.events.v1", 0)] == [0]

    got = {ex.event_id: ex for ex in examples(archive, VIEW, label_index(archive))}
    assert got["a"].x["ent_count"] == 0.0 and got["a"].x["ent_amount_mean_1h"] == 0.0, "no look-ahead"
    assert got["b"].x["ent_count"] == 1.0 and got["b"].x["ent_amount_mean_1h"] == pytest.approx(10.0)
    assert got["c"].x["ent_count"] == 2.0 and got["c"].x["ent_amount_mean_1h"] > 100, "the past is used"
    # the same numbers the online view computes event by event in event-time order
    x_a, s = VIEW.compute(early, None)
    x_b, s = VIEW.compute(future, s)
    assert got["a"].x == x_a and got["b"].x == x_b
    assert (got["b"].y, got["b"].label_time) == (True, 10_000)


def test_examples_equal_a_brute_force_replay_of_each_events_past_and_ignore_labels(tmp_path):
    """Every example's features = the view over exactly the events before it (recomputed from
    scratch per example), whatever the labels say."""
    items = datasets.cards(n=300, seed=3, n_cards=20)
    store = LocalStorage(tmp_path)
    archive_items(store, items, partitions=3)
    archive = Archive(store)
    labels = label_index(archive)
    got = list(examples(archive, VIEW, labels))
    ordered = sorted((it.event for it in items), key=lambda e: e["event_time"])
    assert [ex.event_id for ex in got] == [e["event_id"] for e in ordered]
    for i in range(0, len(ordered), 7):
        ev = ordered[i]
        state = None
        for past in ordered[:i]:
            if past["entity"] == ev["entity"]:
                _, state = VIEW.compute(past, state)
        assert got[i].x == VIEW.compute(ev, state)[0], ev["event_id"]
    flipped = {k: (not y if isinstance(y, bool) else y, t) for k, (y, t) in labels.items()}
    assert [ex.x for ex in examples(archive, VIEW, flipped)] == [ex.x for ex in got], "labels never reach features"


def test_labels_not_known_at_the_cutoff_are_not_trained_on(tmp_path):
    items = datasets.cards(n=2000, seed=4, label_delay_s=600)
    store = LocalStorage(tmp_path)
    archive_items(store, items)
    cutoff = items[1500].event["event_time"]
    r = retrain(Archive(store), RetrainConfig(cutoff=cutoff, epochs=1), None, KEY)
    late = sum(1 for it in items if it.label is not None and it.event["event_time"] < cutoff
               and it.label_time > cutoff)
    assert late > 10 and r.lineage["data"]["label_after_cutoff"] == late
    known = sum(1 for it in items if it.label is not None and it.event["event_time"] < cutoff
                and it.label_time <= cutoff)
    assert r.lineage["data"]["train_examples"] == known


def test_retrain_registers_a_signed_model_with_lineage_served_by_the_online_loop(tmp_path):
    items = datasets.cards(n=6000, seed=5, n_cards=300, fraud_rate=0.05)
    store = LocalStorage(tmp_path / "archive")
    archive_items(store, items, roll_bytes=100_000)
    registry = ModelRegistry(DirectoryStore(tmp_path / "registry"), key=KEY)
    registry.register("fraud", build_model("logreg"), spec="logreg", stage="champion", reason="bootstrap")
    r = retrain(tmp_path / "archive", RetrainConfig(chunk_size=1000), tmp_path / "models", KEY,
                registry=registry, register_as="fraud")
    mv = registry.get("fraud", 2)
    assert (mv.stage, mv.parent, mv.spec) == ("shadow", 1, r.spec) and r.registered == mv
    assert mv.metrics["held_out_roc_auc"] == r.metrics["roc_auc"] and mv.params["loss"] == "log_loss"
    assert sorted(f["sha256"] for f in mv.trained_on["files"]) == sorted(m.sha256 for m in Archive(store).files())
    assert mv.trained_on["windows"]["cutoff"] == r.lineage["windows"]["cutoff"]
    assert registry.history("fraud", 2)[0].by == "retrainer"
    from_registry = registry.load("fraud", 2)
    lineage = json.loads((r.directory / "lineage.json").read_text())
    held = lineage["metrics"]["held_out"]
    assert held["n"] > 500 and 0.8 < held["roc_auc"] <= 1.0 and held["log_loss"] > 0
    assert lineage["windows"]["cutoff"] < lineage["windows"]["eval_to"]
    manifests = Archive(store).files()
    assert sorted(f["sha256"] for f in lineage["archive"]["files"]) == sorted(m.sha256 for m in manifests)
    assert lineage["params"]["loss"] == "log_loss" and lineage["data"]["train_examples"] > 3000
    assert lineage["artifact"]["sha256"] and r.spec == f"batch:{r.model_id}"
    with pytest.raises(ArtifactError):
        load_batch_model(r.directory / "model.sla", b"another key")
    spec, model = load_batch_model(r.directory / "model.sla", KEY)
    assert spec == r.spec and type(from_registry) is type(model)
    again = retrain(tmp_path / "archive", RetrainConfig(chunk_size=1000), None, KEY)
    assert again.model_id == r.model_id and again.metrics == r.metrics, "same inputs, same model"

    # what the wrapper serves is the fitted sklearn model's probability
    sample = [ex for ex, _ in zip(examples(Archive(store), VIEW, {}), range(200))][::10]
    direct = model.estimator.predict_proba(np.vstack([model.vector(ex.x) for ex in sample]))[:, 1]
    assert np.allclose([model.predict_proba_one(ex.x)[True] for ex in sample], direct, rtol=0, atol=1e-12)
    assert [from_registry.predict_proba_one(ex.x) for ex in sample] == [model.predict_proba_one(ex.x) for ex in sample]

    # served through the same scoring path as the River models
    loop = OnlineLoop(VIEW, Learner("batch", spec, model=model), MemoryBackend(), Keys("t", "batch"),
                      artifact_key=KEY)
    tail = items[-300:]
    preds = asyncio.run(loop.score_batch([it.event for it in tail]))
    asyncio.run(loop.learn_batch([it.feedback for it in tail if it.feedback]))
    assert len(preds) == 300 and all(0.0 <= p.score <= 1.0 for p in preds)
    assert loop.champion.labels_learned == sum(1 for it in tail if it.feedback)
    assert 0 < loop.champion.metric_values()["accuracy"] <= 1


def test_corrupt_archive_file_is_named_and_retraining_uses_the_rest(tmp_path):
    store = LocalStorage(tmp_path)
    archive_items(store, datasets.cards(n=3000, seed=6, fraud_rate=0.05), roll_bytes=30_000)
    victim = Archive(store).files("event")[2]
    path = Path(store.describe(victim.path))
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    r = retrain(tmp_path, RetrainConfig(epochs=1), None, KEY)
    problems = r.lineage["archive"]["problems"]
    assert len(problems) == 1 and victim.path in problems[0] and "sha256" in problems[0]
    total = sum(m.record_count for m in Archive(store).files("event"))
    seen = r.lineage["data"]["train_examples"] + r.lineage["data"]["held_out_examples"] + \
        r.lineage["data"]["unlabeled"] + r.lineage["data"]["label_after_cutoff"]
    assert seen == total - victim.record_count


def test_hist_gradient_boosting_fits_in_memory_and_is_served_like_the_rest(tmp_path):
    items = datasets.cards(n=3000, seed=8, n_cards=200, fraud_rate=0.05)
    store = LocalStorage(tmp_path)
    archive_items(store, items)
    r = retrain(Archive(store), RetrainConfig(estimator="hgb", threads=1), None, KEY)
    assert r.metrics["n"] > 300 and r.metrics["roc_auc"] > 0.8 and r.lineage["params"]["random_state"] == 42
    sample = [ex.x for ex, _ in zip(examples(Archive(store), VIEW, {}), range(40))]
    direct = r.model.estimator.predict_proba(np.vstack([r.model.vector(x) for x in sample]))[:, 1]
    assert [r.model.predict_proba_one(x)[True] for x in sample] == direct.tolist()
    with pytest.raises(ValueError, match="max_in_memory_rows"):
        retrain(Archive(store), RetrainConfig(estimator="hgb", max_in_memory_rows=100), None, KEY)
