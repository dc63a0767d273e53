"""The backtest PNG says what each vertical line is (pure, no broker)."""

from __future__ import annotations


def test_alarms_and_decisions_are_labelled_by_kind(tmp_path):
    # imported here, not at collection: matplotlib costs every xdist worker ~0.5 s CPU
    from streamlearn.replay.backtest.plot import marker_label, plot_metrics

    t0 = 1_700_000_000_000
    rows = [{"event_time": t0 + i * 60_000,
             "models": {"v1": {"window": {"accuracy": 0.9}, "cumulative": {"accuracy": 0.9}}}} for i in range(10)]
    events = [
        {"kind": "drift", "event_time": t0 + 120_000, "detector": "concept:adwin", "severity": "critical"},
        {"kind": "drift", "event_time": t0 + 120_000, "detector": "data:ks", "severity": "drift", "feature": "amount"},
        {"kind": "lifecycle", "event_time": t0 + 121_000, "action": "challenger_started"},
        {"kind": "lifecycle", "event_time": t0 + 400_000, "action": "promoted"},
    ]
    metrics = {"rows": rows, "lifecycle_events": events, "mode": "test", "events": 10, "range": {}}
    path = tmp_path / "metrics.png"
    kinds = plot_metrics(metrics, path)
    assert kinds == ["concept:adwin critical", "data:ks drift", "challenger_started", "promoted"]
    assert path.stat().st_size > 10_000
    assert [marker_label(e) for e in events] == kinds
