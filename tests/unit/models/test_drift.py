"""Drift detectors: settings, statistics, monitors, actions and records (pure, no broker).
Judged on long seeded streams with known drift points: tests/simulation/models/test_drift.py."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import stats

from streamlearn.models.governance.drift import (
    DEFAULT_ACTIONS,
    DETECTOR_DEFAULTS,
    ActionConfig,
    BiasMonitor,
    ConceptDriftDetector,
    DriftEvent,
    FeatureDriftMonitor,
    ks_columns,
    plan,
    reject,
)
from streamlearn.models.governance.drift_eval import error_stream, report, run_concept
from streamlearn.schemas import AvroCodec
from streamlearn.settings import Settings


def test_defaults_come_from_settings():
    s = Settings()
    det = ConceptDriftDetector.from_settings(s)
    assert det.name == s.drift_concept_detector
    assert det.detector._get_params() == {**det.detector._get_params(), **DETECTOR_DEFAULTS[det.name]}
    assert (det.grace, det.min_gap) == (s.drift_grace, s.drift_min_gap)
    # every threshold follows from a quarter of the rate budget: alpha per check = B/4 * every / 100k
    b = s.drift_false_alarms_per_100k / 4
    assert det.alpha == pytest.approx(b * 32 / 100_000 / 2)  # ADWIN may decide every 32 labels; two halves
    assert det.strict.delta == det.alpha
    mon = FeatureDriftMonitor.from_settings(s)
    assert (mon.ref_size, mon.win_size, mon.correction, mon.warmup) == (1000, 500, "holm", s.drift_warmup)
    assert mon.alpha == pytest.approx(b * 500 / 100_000)
    assert BiasMonitor.from_settings(s) == BiasMonitor(warmup=s.drift_warmup, alpha=pytest.approx(b * 1000 / 100_000))
    assert ActionConfig.from_settings(s) == ActionConfig(by_severity=DEFAULT_ACTIONS)


def _check_against_scipy(d: float, p: float, a: np.ndarray, b: np.ndarray) -> None:
    r = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(r.statistic)
    assert r.pvalue <= p <= r.pvalue * 1.5 + 1e-12  # the limiting law: close, and never less conservative


def test_vectorised_ks_matches_scipy_ks_2samp():
    rng = np.random.default_rng(6)
    ref = np.c_[rng.normal(size=400), rng.integers(0, 3, 400), np.zeros(400), rng.normal(size=400)]
    cur = np.c_[rng.normal(0.3, size=150), rng.integers(0, 4, 150), np.zeros(150), rng.normal(size=150)]
    d, p = ks_columns(ref, cur)  # continuous + shifted, ties, constant, no change
    for j in range(4):
        _check_against_scipy(d[j], p[j], ref[:, j], cur[:, j])
    ref[::7, 0] = np.nan  # missing values take the per-column path
    d2, p2 = ks_columns(ref, cur)
    _check_against_scipy(d2[0], p2[0], ref[~np.isnan(ref[:, 0]), 0], cur[:, 0])


def test_holm_rejects_what_bonferroni_does_and_more():
    p = np.random.default_rng(1).random((500, 20)) ** 3
    for row in p:
        assert (reject(row, 0.05, "bonferroni") <= reject(row, 0.05, "holm")).all()
        assert (reject(row, 0.05, "holm") <= reject(row, 0.05, "none")).all()


def test_dict_updates_fix_the_features_and_tolerate_missing_values():
    rng = np.random.default_rng(3)
    mon = FeatureDriftMonitor(reference=200, window=100)
    events = []
    for i in range(600):
        x = {"amount": float(rng.normal(5.0 if i >= 300 else 0.0)), "n": float(rng.normal())}
        if i % 3 == 0:
            del x["n"]  # absent from some vectors
        x["late"] = 1.0  # a feature that is new after the first vector is not monitored
        events += mon.update(x) if i else mon.update({"amount": x["amount"], "n": 0.0})
    assert mon.features == ["amount", "n"]
    assert [e.feature for e in events] == ["amount"]


def test_bias_monitor_alarms_on_miscalibration_only():
    rng = np.random.default_rng(4)
    p = rng.random(5000)
    y = (rng.random(5000) < p) * 1.0
    calibrated = BiasMonitor(window=1000, threshold=0.05)
    assert [e for e in map(calibrated.update, p, y) if e] == []
    biased = BiasMonitor(window=1000, threshold=0.05)
    events = [e for e in map(biased.update, np.minimum(p + 0.15, 1.0), y) if e]
    assert len(events) == 5 and all(e.statistic > 0.05 and e.severity == "critical" for e in events)


def test_actions_follow_severity_and_config_and_a_recent_promotion_rolls_back():
    concept = DriftEvent("concept:adwin", None, 0.2, 5000, "critical")
    data = [DriftEvent("data:ks", f"f{i}", 0.3, 4000, "drift", 1e-5) for i in range(10)]
    acts = plan([*data, concept])
    assert [a.kind for a in acts] == ["warn", "start_challenger", "request_retrain"]
    assert all(a.event is concept and a.from_position == 5000 for a in acts)  # the most severe cause
    assert [a.kind for a in plan(data)] == ["warn"]  # ten drifting features, one warning
    assert [a.kind for a in plan([concept], labels_since_promotion=300)][-1] == "rollback"
    assert "rollback" not in [a.kind for a in plan([concept], labels_since_promotion=30_000)]
    assert plan([DriftEvent("concept:adwin", None, -0.1, 9, "info")]) == []
    quiet = ActionConfig(by_severity={"concept.critical": ["warn"]})
    assert [a.kind for a in plan([concept], quiet)] == ["warn"]
    with pytest.raises(ValueError):
        plan([concept], ActionConfig(by_severity={"concept.critical": ["auto_swap"]}))


def test_a_drift_event_is_a_valid_drift_topic_record():
    reg = AvroCodec.default()
    ev = DriftEvent("data:ks", "amount", 0.31, 1234, "drift", 1e-6)
    rec = ev.record("fraud", 3, "warn", 1_700_000_000_000)
    assert reg.decode("drift", reg.encode("drift", rec)) == rec


def test_detectors_pickle_mid_stream_and_continue_identically():
    st = error_stream("abrupt", 20_000, seed=1)
    ref = run_concept(st.values, "adwin")
    det = ConceptDriftDetector("adwin")
    alarms = [e.position - 1 for e in map(det.update, st.values[:8000].tolist()) if e]
    det = pickle.loads(pickle.dumps(det))
    alarms += [e.position - 1 for e in map(det.update, st.values[8000:].tolist()) if e]
    assert alarms == ref and len(ref) >= 2


def test_report_prints_every_detector_beside_the_dummy():
    out = report(seeds=1, length=8000, sea=False, features=10, entities_length=8000)
    for label in ("concept:adwin", "concept:ddm", "concept:page_hinkley", "concept:adwin+budget", "data:ks+holm",
                  "data:ks budgeted", "label:ks budgeted", "bias budgeted", "dummy every", "FA/100k"):
        assert label in out
    for stream in ("raw/covariate", "raw/constant", "raw/missing", "raw/unit", "data/entities", "label/shift"):
        assert stream in out
