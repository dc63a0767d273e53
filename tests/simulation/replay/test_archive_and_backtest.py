"""Arrival backtests of whole archived streams, each run twice (pure, no broker): the same
bytes out, models compared side by side, and the lifecycle's decisions over 8,000 events with
a concept change. Archive, reader and schedule logic: tests/unit/replay/test_archive_and_backtest.py."""

from __future__ import annotations

import json

import pytest

from streamlearn import datasets
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import archive_items
from streamlearn.replay.backtest.runner import run_backtest


def _unplotted(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a run repeated only to compare its outputs with the first run's: the PNG is not one
    of them (~0.6 s of matplotlib per run; the first run draws it, test_plot.py checks it)."""
    from streamlearn.replay.backtest import plot

    monkeypatch.setattr(plot, "plot_metrics", lambda metrics, path: [])


def test_arrival_backtest_is_deterministic_and_compares_models_side_by_side(tmp_path, monkeypatch):
    store = LocalStorage(tmp_path / "a")
    archive_items(store, datasets.cards(n=3000, seed=8), partitions=2, roll_bytes=50_000)
    r1 = run_backtest(tmp_path / "a", ["logreg", "hat"], out=tmp_path / "o1", rows=10)
    assert (tmp_path / "o1" / "metrics.png").stat().st_size > 0
    _unplotted(monkeypatch)
    # bare=False: the bare River loop is timed and compared on r1; none of the compared outputs holds it
    r2 = run_backtest(tmp_path / "a", ["logreg", "hat"], out=tmp_path / "o2", rows=10, bare=False)
    assert r2.final == r1.final
    assert r1.plan.mode == "arrival" and r1.plan.n_events == 3000
    for name in ("predictions.jsonl", "metrics.json", "metrics.csv"):
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes(), name
    metrics = json.loads((tmp_path / "o1" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"logreg", "hat"} and 10 <= len(metrics["rows"]) <= 11
    last = metrics["rows"][-1]["models"]
    assert last["logreg"]["cumulative"] == r1.final["logreg"]
    assert sum(r["models"]["hat"]["window"]["labels"] for r in metrics["rows"]) == r1.counters["hat"]["labels_learned"]
    assert metrics["lifecycle_events"] == [] and metrics["lifecycle"].startswith("not evaluated")
    header = (tmp_path / "o1" / "metrics.csv").read_text().splitlines()[0]
    assert "logreg.window.roc_auc" in header and "hat.cumulative.log_loss" in header
    assert r1.bare["scores_identical"] is True
    lines = (tmp_path / "o1" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3000


def test_backtest_takes_the_lifecycle_decisions_the_live_system_would(tmp_path, monkeypatch):
    """prior (champion) vs logreg (shadow) on SEA with a concept change at event 4000: the
    gate starts logreg as a canary, the canary is promoted, and the concept detector fires
    after the change, not before; decided on event time, so two runs agree byte for byte."""
    from streamlearn.models.governance.lifecycle import LifecycleConfig
    from streamlearn.settings import Settings

    items = datasets.drift(n=8000, position=4000, seed=7)
    archive_items(LocalStorage(tmp_path / "a"), items, partitions=2)
    cfg = LifecycleConfig.from_settings(Settings(canary_fraction=0.5, canary_window=500))
    r1 = run_backtest(tmp_path / "a", ["prior", "logreg"], out=tmp_path / "o1", rows=20, lifecycle=cfg, bare=False)
    _unplotted(monkeypatch)
    run_backtest(tmp_path / "a", ["prior", "logreg"], out=tmp_path / "o2", rows=20, lifecycle=cfg, bare=False)
    for name in ("predictions.jsonl", "metrics.json", "metrics.csv"):
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes(), name

    decisions = [(e["action"], e["model"]) for e in r1.lifecycle_events if e["kind"] == "lifecycle"]
    assert decisions.index(("canary_started", "logreg")) < decisions.index(("promoted", "logreg"))
    assert r1.stages["logreg"] == "champion" and r1.stages["prior"] == "shadow"
    change_at = items[4000].event["event_time"]
    concept = [e for e in r1.lifecycle_events if e["kind"] == "drift" and e["detector"].startswith("concept")]
    assert concept and all(e["event_time"] >= change_at for e in concept), concept
    promoted = next(e for e in r1.lifecycle_events if e.get("action") == "promoted")
    assert promoted["at"] == promoted["event_time"]  # the lifecycle's clock is event time

    metrics = json.loads((tmp_path / "o1" / "metrics.json").read_text())
    assert metrics["lifecycle"].startswith("evaluated") and metrics["lifecycle_events"] == r1.lifecycle_events
    in_rows = [e for row in metrics["rows"] for e in row["lifecycle_events"]]
    assert in_rows == r1.lifecycle_events  # every decision shows up in exactly one row
    stages = [row["models"]["logreg"]["stage"] for row in metrics["rows"]]
    assert stages[0] == "shadow" and "canary" in stages and stages[-1] == "champion"
