"""Batch retraining after drift, end to end over an 8,000-event archive (pure, no broker): a
model trained on recent history beats one trained on all, and the promotion gate agrees. The
training sets, fits and lineage: tests/unit/replay/test_retrain.py."""

from __future__ import annotations

from streamlearn import datasets
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import archive_items
from streamlearn.replay.retrain.challenge import gate_on_archive
from streamlearn.replay.retrain.retrainer import RetrainConfig, retrain
from tests.unit.replay.test_retrain import KEY


def test_after_drift_a_model_trained_on_recent_history_beats_one_trained_on_all(tmp_path):
    """cards with drift at 50%: fraud turns from large to tiny amounts. A linear model fitted
    on all history averages both regimes; one fitted after the drift wins on the held-out,
    post-drift window, and the promotion gate promotes it over the other, never the reverse."""
    n = 8000
    items = datasets.cards(n=n, seed=2, n_cards=400, fraud_rate=0.05, drift_at=0.5)
    store = LocalStorage(tmp_path)
    archive_items(store, items)
    archive = Archive(store)
    drift_t, cutoff = items[n // 2].event["event_time"], items[int(n * 0.8)].event["event_time"]
    everything = retrain(archive, RetrainConfig(cutoff=cutoff, name="all"), None, KEY)
    recent = retrain(archive, RetrainConfig(cutoff=cutoff, train_from=drift_t, name="recent"), None, KEY)
    assert everything.metrics["n"] == recent.metrics["n"] > 1000, "the same held-out window"
    assert recent.metrics["roc_auc"] > everything.metrics["roc_auc"] + 0.02
    assert recent.metrics["log_loss"] < everything.metrics["log_loss"]
    assert recent.lineage["data"]["train_examples"] < everything.lineage["data"]["train_examples"]

    # the promotion gate, fed paired losses from both models served side by side in one loop
    champ, chall = (everything.spec, everything.model), (recent.spec, recent.model)
    promote = gate_on_archive(archive, champ, chall, start=cutoff)
    assert promote.promote and promote.reason == "promote" and promote.n > 1000, promote
    keep = gate_on_archive(archive, chall, champ, start=cutoff)
    assert not keep.promote and keep.reason == "not_significant", "the worse model is never promoted"
