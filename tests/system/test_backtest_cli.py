"""`streamlearn backtest`, `replay inspect` and `retrain` as processes: byte-identical across
processes and string-hash seeds (the pure backtest logic: tests/unit/replay)."""

from __future__ import annotations

import json

from streamlearn import datasets
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import archive_items
from tests.unit.replay.test_archive_and_backtest import _cli


def test_cli_backtest_is_byte_identical_across_processes_and_inspect_and_retrain_run(tmp_path):
    archive_items(LocalStorage(tmp_path / "a"), datasets.cards(n=800, seed=10, fraud_rate=0.1), partitions=2)
    outs = []
    for i, hashseed in enumerate(("1", "2")):  # a different str-hash seed per process
        out = tmp_path / f"o{i}"
        text = _cli("backtest", "--archive", str(tmp_path / "a"), "--model", "logreg", "--model", "arf",
                    "--out", str(out), "--no-progress", "--rows", "8", env={"PYTHONHASHSEED": hashseed})
        assert "events/s" in text and "bare River loop (logreg, one model)" in text and "identical scores" in text
        assert "lifecycle (event time):" in text  # on by default (settings.lifecycle_auto)
        outs.append(out)
    for name in ("predictions.jsonl", "metrics.json", "metrics.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    summary = json.loads(_cli("replay", "inspect", "--archive", str(tmp_path / "a"), "--json", "--verify"))
    assert sum(p["records"] for p in summary["partitions"] if p["kind"] == "event") == 800
    assert all(p["gaps"] == [] and p["verified_records"] == p["records"] for p in summary["partitions"])
    assert summary["problems"] == []
    text = _cli("retrain", "--archive", str(tmp_path / "a"), "--out", str(tmp_path / "m"), "--register", "fraud",
                env={"STREAMLEARN_REGISTRY_URL": f"file://{tmp_path / 'reg'}"})
    assert "registered fraud v1 (shadow" in text and "roc_auc=" in text
    assert list((tmp_path / "m").glob("*/lineage.json"))
