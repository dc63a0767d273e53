"""The promotion gate's rules, action limits and canary (pure, no broker); the vectorised
simulation agrees with the gate event by event. Their error rates over many simulated runs:
tests/simulation/models/test_gate.py."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from streamlearn.models.governance.canary import CanaryConfig, in_canary
from streamlearn.models.governance.gate import ActionLimits, GateConfig, PromotionGate, event_loss, loss_bound
from streamlearn.models.governance.gate_eval import (
    first_promotion,
    flood,
    multiclass_losses,
    multiclass_sample,
    paired_losses,
    regression_losses,
    regression_sample,
)
from streamlearn.models.governance.sequential import ConfidenceSequence
from streamlearn.models.task import Task, TaskScorer
from streamlearn.settings import Settings


def test_config_defaults_are_the_settings_defaults():
    s = Settings()
    assert GateConfig.from_settings(s) == GateConfig()
    assert CanaryConfig.from_settings(s) == CanaryConfig()
    assert ActionLimits.from_settings(s) == ActionLimits()


def test_a_challenger_below_the_floor_is_refused_even_when_it_beats_the_champion():
    cfg = GateConfig(min_samples=200, floor=0.5)  # both models are bad: ~16% vs ~31% accuracy
    lc, hc, lh, hh = paired_losses(np.random.default_rng(2), 200, 3000, -1.0, -0.5, cfg)
    assert (first_promotion(lc, hc, lh, hh, cfg) > 0).sum() == 0
    gate = PromotionGate(cfg)
    gate.update_many(lc[0], lh[0], hc[0], hh[0])
    d = gate.decision()
    assert d.lower_bound > 0 and (d.promote, d.reason) == (False, "below_floor")
    assert d.challenger.accuracy < 0.5


def test_the_vectorised_rule_is_the_gates_rule_event_by_event():
    cfg = GateConfig(min_samples=150, window=100, floor=0.87)  # floor near the challenger's accuracy
    lc, hc, lh, hh = paired_losses(np.random.default_rng(9), 4, 2500, 1.0, 1.3, cfg)
    expected = first_promotion(lc, hc, lh, hh, cfg)
    for run in range(4):
        gate, first = PromotionGate(cfg), -1
        for t in range(lc.shape[1]):
            gate.update(lc[run, t], lh[run, t], bool(hc[run, t]), bool(hh[run, t]))
            if gate.decision().promote:
                first = t + 1
                break
        assert first == expected[run]
    assert (expected > 0).any()


def test_batch_updates_equal_per_event_updates_and_survive_pickling():
    rng = np.random.default_rng(4)
    xs = rng.random(700)
    one, many = ConfidenceSequence(0.05), ConfidenceSequence(0.05)
    for x in xs:
        one.update(x)
    many.update_many(xs[:300])
    many = pickle.loads(pickle.dumps(many))  # checkpointed mid-stream
    many.update_many(xs[300:])
    assert one.n == many.n == 700
    assert one.lower_bound == pytest.approx(many.lower_bound, rel=1e-12)
    assert one.state.sum_psi == pytest.approx(many.state.sum_psi, rel=1e-12)


def test_rolling_window_running_sums_equal_the_window_means():
    rng = np.random.default_rng(12)
    losses, hits = rng.random(5000) * 2, rng.random(5000) < 0.7
    gate = PromotionGate(GateConfig(window=300))
    for i in range(2500):
        gate.update(losses[i], 0.5, bool(hits[i]), None if i % 2 else True)  # challenger hits partly unknown
    gate.update_many(losses[2500:], np.full(2500, 0.5), hits[2500:], None)
    champ, chall = gate.decision().champion, gate.decision().challenger
    assert champ.n == 300 and champ.loss == pytest.approx(losses[-300:].mean(), rel=1e-9)
    assert champ.accuracy == pytest.approx(hits[-300:].mean(), rel=1e-9)
    assert chall.accuracy is None  # the last 300 challenger hits are all unknown


def test_decision_reasons_and_losses():
    g = PromotionGate(GateConfig(min_samples=10, loss="abs", scale=2.0))
    g.update_many([1.0] * 50, [0.0] * 50)  # regression: no hits, accuracy floor cannot be judged
    assert g.decision().reason == "floor_unavailable"
    g2 = PromotionGate(GateConfig(min_samples=10, loss="abs", scale=2.0, floor_metric="loss", floor=0.5))
    g2.update_many([1.0] * 50, [0.0] * 50)
    assert g2.decision().promote
    g3 = PromotionGate(GateConfig(min_samples=10, loss="zero_one"))
    g3.update_many([0.0, 1.0] * 50, [1.0, 0.0] * 50, [1, 0] * 50, [0, 1] * 50)
    assert g3.decision().reason == "not_significant"
    # wire probabilities have string keys; labels may be bools
    assert event_loss("log", True, {"True": 0.9}) == pytest.approx(-math.log(0.9))
    assert event_loss("log", False, {"True": 1.0}) == pytest.approx(loss_bound("log"))
    assert event_loss("brier", 1, {1: 0.5, 0: 0.5}) == pytest.approx(0.5)
    assert event_loss("brier", True, {}) == pytest.approx(0.25)  # an untrained model: coin flip
    with pytest.raises(ValueError):
        event_loss("hinge", 1, predicted=1)


def test_action_limits_hold_under_a_flood_of_candidates():
    lim = ActionLimits(max_actions=2, window_s=3600.0, cooldown_s=600.0)
    granted, reasons = flood(lim, n=5000, span_s=86400.0, seed=1)
    assert all(sum(1 for u in granted if t - 3600.0 < u <= t) <= 2 for t in granted)
    assert all(b - a >= 600.0 for a, b in zip(granted, granted[1:]))
    assert reasons["cooldown"] > 0 and reasons["rate_limited"] > 0
    assert 24 * 2 * 0.8 <= len(granted) <= 24 * 2 + 1  # the limit is reached, not just respected
    # the refusal says when to come back, and coming back then works
    lim2 = ActionLimits(max_actions=1, window_s=100.0, cooldown_s=10.0)
    assert lim2.acquire(0.0).allowed
    v = lim2.acquire(50.0)
    assert (v.allowed, v.reason) == (False, "rate_limited") and lim2.acquire(v.retry_at).allowed
    frozen = ActionLimits(frozen=True)
    _, reasons = flood(frozen, n=200, seed=2)
    assert reasons == {"frozen": 200}


def test_canary_split_is_a_stable_hash_of_the_entity_key():
    keys = [f"card-{i}" for i in range(20_000)]
    share = np.mean([in_canary(k, 0.1) for k in keys])
    assert 0.09 < share < 0.11
    assert not any(in_canary(k, 0.0) for k in keys[:100]) and all(in_canary(k, 1.0) for k in keys[:100])
    # the same split in another interpreter with another string-hash seed (so not hash())
    code = ("from streamlearn.models.governance.canary import in_canary; "
            "print(sum(in_canary(f'card-{i}', 0.1) << (i % 60) for i in range(2000)))")
    mine = sum(in_canary(f"card-{i}", 0.1) << (i % 60) for i in range(2000))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert int(out.stdout) == mine


# ---------------------------------------------------------------------- multiclass and regression
REGRESSION = Task("regression")


def test_the_vectorised_regression_rule_is_the_gates_rule_event_by_event():
    cfg = REGRESSION.gate_config(GateConfig(min_samples=150, window=100, floor=0.12))
    y, pc, ph = regression_sample(np.random.default_rng(30), 4, 2500, (1.0, 1.3))
    lc, lh = regression_losses(y, pc, cfg), regression_losses(y, ph, cfg)
    nan = np.full_like(lc, np.nan)
    expected = first_promotion(lc, nan, lh, nan, cfg)
    for run in range(4):
        gate, scorer, first = PromotionGate(cfg), TaskScorer(REGRESSION, cfg), -1
        for t in range(y.shape[1]):
            champ = {"score": float(pc[run, t]), "pred": float(pc[run, t]), "proba": {}}
            chall = {"score": float(ph[run, t]), "pred": float(ph[run, t]), "proba": {}}
            a, b = scorer.loss(y[run, t], champ), scorer.loss(y[run, t], chall)
            assert (a, b) == pytest.approx((lc[run, t], lh[run, t]), rel=1e-12)
            gate.update(a, b, scorer.hit(y[run, t], champ), scorer.hit(y[run, t], chall))
            scorer.observe(y[run, t])
            if first < 0 and gate.decision().promote:
                first = t + 1
        assert first == expected[run]
    assert (expected > 0).any()


@pytest.mark.parametrize("loss", ["brier", "log", "zero_one"])
def test_the_multiclass_simulation_scores_as_the_task_scorer_does(loss):
    cfg = Task("multiclass").gate_config(GateConfig(loss=loss))
    pc, _ = multiclass_sample(np.random.default_rng(31), 2, 200, (2.0, 2.0), k=4)
    lc, hc = multiclass_losses(pc, cfg)
    scorer = TaskScorer(Task("multiclass"), cfg)
    for run, t in np.ndindex(lc.shape):
        proba = {f"c{k}": float(v) for k, v in enumerate(pc[run, t])}  # as served on the wire
        served = {"score": max(proba.values()), "pred": max(proba, key=proba.get), "proba": proba}
        assert scorer.loss("c0", served) == pytest.approx(lc[run, t], rel=1e-12)
        assert scorer.hit("c0", served) == bool(hc[run, t])
    assert ((lc >= 0) & (lc <= cfg.bound)).all()
