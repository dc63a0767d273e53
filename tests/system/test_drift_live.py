"""Drift alarms an operator can trust: quiet on stationary streams through the live loop,
each kind of change detected, and a lifecycle that pays off (in-process, no broker)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from streamlearn import datasets
from streamlearn.models.governance.drift import BiasMonitor, ConceptDriftDetector, FeatureDriftMonitor, default_trending
from streamlearn.models.governance.drift_eval import (
    error_stream,
    label_stream,
    run_concept,
    run_data,
    run_labels,
    scenario_stream,
    score,
)
from streamlearn.models.governance.lifecycle import LifecycleConfig
from streamlearn.replay.backtest.drift_live import payoff_run, previous_config, stationary_run
from streamlearn.settings import Settings


def test_stationary_entity_stream_through_the_live_loop_raises_no_critical_alarm_and_starts_no_challenger():
    """Cards with per-card features, no drift at all, logreg champion, lifecycle as the
    worker configures it: nothing critical after warm-up, no challenger, and (the same
    stream, the detectors as they were) the old configuration does fail this."""
    s = Settings()
    items = datasets.cards(10_000, seed=5, drift_at=None)
    r = stationary_run("cards", items, LifecycleConfig.from_settings(s), s.drift_warmup)
    print(f"\nbudgeted: {dict(r.alarms)} decisions {dict(r.decisions)}")
    assert r.critical_after_warmup == 0 and r.challengers == 0
    assert sum(r.alarms.values()) <= 1  # a warning at most: the budget is 1 per 100k events
    old = stationary_run("cards", items[:5_000], previous_config(s), s.drift_warmup)
    print(f"previous: {dict(old.alarms)} decisions {dict(old.decisions)}")
    assert old.challengers >= 1 and sum(old.alarms.values()) >= 5


def test_trending_features_are_not_monitored_and_a_views_declaration_is_honoured():
    names = ["amount", "ent_count", "ent_log_count", "ent_rate_1d", "hour", "refunds_count"]
    assert default_trending(names) == {"ent_count", "ent_log_count", "hour", "refunds_count"}
    mon = FeatureDriftMonitor(warmup=0, trending=frozenset({"ent_rate_1d"}))
    mon.update_dicts([dict.fromkeys(names, 1.0)])
    assert mon.features == ["amount"]
    # a growing count (and a clock) fed to the monitor raise nothing: they are not tested at all
    rows = [{"amount": float(a), "ent_count": float(i), "hour": float(i // 400 % 24)}
            for i, a in enumerate(np.random.default_rng(0).normal(size=6000))]
    mon = FeatureDriftMonitor(warmup=500)
    assert sum((mon.update_dicts(rows[i:i + 100]) for i in range(0, 6000, 100)), []) == []
    assert mon.features == ["amount"]


@pytest.mark.parametrize("kind", ["covariate", "constant", "missing", "unit"])
def test_every_broken_or_shifted_raw_field_is_detected_with_a_bounded_delay(kind):
    for seed in range(2):
        st = scenario_stream(kind, 20_000, seed)
        sc = score(run_data(st.values, st.names, false_alarms_per_100k=0.25, warmup=5000), st)
        assert (sc.tp, sc.detections) == (1, 1), f"{kind} seed {seed}: {sc}"
        assert sc.delays[0] <= 1000
        quiet = scenario_stream("none", 20_000, seed)
        assert run_data(quiet.values, quiet.names, false_alarms_per_100k=0.25, warmup=5000) == []


def test_a_label_distribution_shift_is_detected_and_a_stable_one_is_not():
    for seed in range(3):
        st = label_stream("shift", 20_000, seed)
        sc = score(run_labels(st.values, false_alarms_per_100k=0.25, warmup=5000, min_effect=0.05), st)
        assert sc.tp == 1 and sc.detections == 1 and sc.delays[0] <= 1500
        assert run_labels(label_stream("none", 20_000, seed).values, false_alarms_per_100k=0.25, warmup=5000) == []


@pytest.mark.parametrize("kind", ["abrupt", "gradual"])
def test_budgeted_concept_detector_still_finds_abrupt_and_gradual_drift(kind):
    tp = drifts = late = 0
    for seed in range(4):
        st = error_stream(kind, 20_000, seed)
        sc = score(run_concept(st.values, "adwin", false_alarms_per_100k=0.25), st)
        tp, drifts, late = tp + sc.tp, drifts + sc.drifts, late + sc.detections - sc.tp
    assert tp / drifts >= 0.6 and late <= 1  # (a gradual drift found after max_delay counts as late)
    quiet = [run_concept(error_stream("none", 50_000, s).values, "adwin", false_alarms_per_100k=0.25)
             for s in range(2)]
    assert quiet == [[], []]


def test_the_lifecycle_pays_off_for_a_champion_that_cannot_adapt():
    s = Settings()
    ht = payoff_run("ht", s, n=14_000, position=8_000, as_configured=False)
    print(f"\nht: before {ht.acc_before:.3f} off {ht.acc_off:.3f} lifecycle {ht.acc_on_no_canary:.3f} "
          f"recover {ht.recover_off} -> {ht.recover_on_no_canary}, alarm {ht.first_alarm} labels, {ht.decisions}")
    assert ht.first_alarm is not None and ht.first_alarm <= 600
    assert ht.acc_on_no_canary > ht.acc_off + 0.01
    assert ht.recover_on_no_canary is not None and (ht.recover_off is None
                                                     or ht.recover_on_no_canary < ht.recover_off)
    # (logistic regression, which adapts by itself, neither gains nor loses: drift-eval prints it)


def test_detectors_from_old_checkpoints_keep_working():
    """Checkpoints pickle these objects: one written before the new attributes existed
    (simulated by removing them) loads and runs with the old behaviour."""
    mon = FeatureDriftMonitor(list("ab"), reference=200, window=100)
    bias = BiasMonitor(window=100)
    det = ConceptDriftDetector("adwin", grace=10, min_gap=10)
    for obj, attrs in ((mon, ("warmup", "sliding", "min_effect", "missing", "trending", "excluded", "detector",
                              "false_alarms_per_100k", "seen", "calibrate", "history", "exclude_trending")),
                       (det, ("alpha",))):
        for a in attrs:
            obj.__dict__.pop(a, None)
    for a in ("warmup", "alpha", "sum_sq", "blocks"):
        bias.__dict__.pop(a, None)
    mon, bias, det = (pickle.loads(pickle.dumps(o)) for o in (mon, bias, det))
    x = np.random.default_rng(1).normal(size=(1000, 2))
    x[600:, 1] += 2.0
    events = mon.update_many(x)
    assert events and events[0].feature == "b" and events[0].detector == "data:ks"
    assert [bias.update(0.9, 0.0) for _ in range(100)][-1].severity == "critical"
    errors = np.r_[np.zeros(500), np.ones(500)]
    assert any(det.update(e) for e in errors)
