"""Drift detectors judged on long seeded streams with known drift points, and their false
alarms on drift-free ones, beside the best periodic dummy (pure, no broker). The detectors'
rules and records: tests/unit/models/test_drift.py."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from streamlearn.models.governance.drift import DETECTOR_DEFAULTS, FeatureDriftMonitor
from streamlearn.models.governance.drift_eval import (
    best_dummy,
    error_stream,
    evaluate,
    feature_stream,
    run_concept,
    run_data,
    score,
    sea_error_stream,
)

SEEDS = range(4)


@functools.cache
def _concept_streams(kind: str) -> tuple[list, tuple]:
    """The seeded streams of ``kind`` and their best dummy, made once for every detector (the
    SEA streams train a River model over 4 x 20,000 events); the tests only read them."""
    streams = [sea_error_stream(20_000, s) if kind == "sea" else error_stream(kind, 20_000, s) for s in SEEDS]
    return streams, best_dummy(streams)


@pytest.mark.parametrize("name", sorted(DETECTOR_DEFAULTS))
@pytest.mark.parametrize("kind", ["abrupt", "gradual", "sea"])
def test_every_concept_detector_beats_the_best_periodic_dummy_at_its_defaults(name, kind):
    streams, (period, dummy) = _concept_streams(kind)
    sc = evaluate(streams, lambda st: run_concept(st.values, name))
    print(f"\n{kind:8} {name:13} P={sc.precision:.2f} R={sc.recall:.2f} F1={sc.f1:.2f} delay={sc.mean_delay:.0f} "
          f"FA/10k={sc.false_alarms_per_10k:.2f} | dummy/{period} F1={dummy.f1:.2f}")
    assert sc.f1 > dummy.f1
    assert sc.mean_delay <= streams[0].max_delay


@functools.cache
def _drift_free_streams() -> tuple[list, tuple]:
    streams = [error_stream("none", 50_000, s, base=b) for s in SEEDS for b in (0.05, 0.3)]
    return streams, best_dummy(streams)


@pytest.mark.parametrize("name", sorted(DETECTOR_DEFAULTS))
def test_drift_free_error_streams_raise_few_false_alarms(name):
    streams, (_, dummy) = _drift_free_streams()
    sc = evaluate(streams, lambda st: run_concept(st.values, name))
    print(f"\n{name}: {sc.detections} false alarms in {sc.length} drift-free events "
          f"({sc.false_alarms_per_10k:.2f}/10k; dummy {dummy.false_alarms_per_10k:.2f}/10k)")
    assert sc.false_alarms_per_10k <= 0.5 < dummy.false_alarms_per_10k


def test_river_concept_drift_stream_is_detected_within_a_bounded_delay():
    st = sea_error_stream(10_000, seed=0, n_drifts=1)  # River's ConceptDriftStream, a live logistic regression
    alarms = run_concept(st.values, "adwin")
    s = score(alarms, st)
    assert s.tp == 1 and s.detections == 1
    assert 0 <= s.delays[0] <= 500


def test_many_features_share_one_false_alarm_budget():
    """50 features, no drift: Holm keeps the per-check family-wise rate near alpha, uncorrected does not."""
    rows = np.random.default_rng(0).standard_normal((300 * 150 + 300, 50))
    rates = {}
    for correction in ("holm", "none"):
        mon = FeatureDriftMonitor([f"f{j}" for j in range(50)], reference=300, window=150, alpha=0.05,
                                  correction=correction)
        alarmed = 0
        for start in range(0, rows.shape[0], 150):
            alarmed += bool(mon.update_many(rows[start:start + 150]))
        rates[correction] = alarmed / mon.checks
    se = math.sqrt(0.05 * 0.95 / 250)
    print(f"\nfamily-wise false-alarm rate per check, 50 features: holm {rates['holm']:.3f}, "
          f"uncorrected {rates['none']:.3f} (budget 0.05)")
    assert rates["holm"] <= 0.05 + 3 * se
    assert rates["none"] > 0.5


def test_data_drift_names_the_shifted_features_and_beats_the_dummy():
    streams = [feature_stream("abrupt", 20_000, s, n_features=20) for s in SEEDS]
    sc = evaluate(streams, lambda st: run_data(st.values))
    _, dummy = best_dummy(streams)
    assert sc.f1 > dummy.f1 and sc.recall == 1.0
    x = np.random.default_rng(2).standard_normal((3000, 5))
    x[2000:, 3] += 1.0
    mon = FeatureDriftMonitor(list("abcde"))
    events = mon.update_many(x)
    assert {e.feature for e in events} == {"d"} and all(2000 < e.position <= 2500 for e in events)
    assert events[0].p_value < 0.01 / 5 and events[0].kind == "data"
