"""The worker's retrain schedule: archive -> batch model -> registry -> adopted in shadow -> gate."""

from __future__ import annotations

from streamlearn import datasets
from streamlearn.models.registry.versions import open_registry
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import archive_items
from tests.helpers import TopicReader, wait_for


def test_scheduled_retrain_registers_a_batch_model_that_runs_as_a_challenger(make_settings, start_worker, tmp_path):
    s = make_settings(archive_dir=str(tmp_path / "archive"), retrain_interval_s=1.0)
    archive_items(LocalStorage(tmp_path / "archive"), datasets.cards(n=4000, seed=71),
                  topics={"event": s.topic_events, "feedback": s.topic_feedback})
    # another deployment's records in the same directory: not trained on
    archive_items(LocalStorage(tmp_path / "archive"), datasets.cards(n=300, seed=72),
                  topics={"event": "other.events.v1", "feedback": "other.feedback.v1"})
    worker = start_worker(s)
    lifecycle = TopicReader(s, s.topic_lifecycle, "lifecycle")
    started = wait_for(lambda: [r for r in lifecycle.poll() if r["action"] == "challenger_started"], 120,
                       "the retrained model to be adopted")[0]
    assert started["details"]["by"] == "registry" and started["reason"] == "scheduled batch retrain"
    mv = open_registry(s).get(s.model_name, started["version"])
    assert mv.stage == "shadow" and mv.parent == 1
    assert mv.trained_on and mv.metrics, "lineage and held-out metrics are recorded"
    assert {f["path"].split("/")[1] for f in mv.trained_on["files"]} == {s.topic_events, s.topic_feedback}
    models = {m["version"]: m for m in worker.status()["models"]}
    assert models[started["version"]]["stage"] == "shadow"
