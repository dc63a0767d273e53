"""The promotion gate's and the canary's error rates over many simulated runs (vectorised,
pure, no broker): equal models are falsely promoted at most alpha, better ones are found,
worse ones never. The rules themselves: tests/unit/models/test_gate.py."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from streamlearn.models.governance.canary import CanaryConfig, CanaryMonitor
from streamlearn.models.governance.gate import GateConfig
from streamlearn.models.governance.gate_eval import first_promotion, simulate
from streamlearn.models.task import Task

ALPHA = 0.05


@pytest.mark.parametrize("loss,runs", [("brier", 2000), ("zero_one", 1000)])
def test_equal_models_are_falsely_promoted_at_most_alpha_when_checked_after_every_event(loss, runs):
    cfg = GateConfig(loss=loss, alpha=ALPHA)
    r = simulate(cfg, runs=runs, horizon=5000, skill_champion=1.0, skill_challenger=1.0, seed=11)
    print(f"\n{loss}: gate false-promotion rate {r.promoted_rate:.4f} over {runs} runs x 5000 events; "
          f"naive z-test checked every event {r.naive_rate:.4f}; one z-test at the end {r.one_shot_rate:.4f}")
    assert r.promoted_rate <= ALPHA
    # the point: the same z-test is fine once (about alpha), but checked continuously it is not
    se = math.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert r.one_shot_rate <= ALPHA + 3 * se
    assert r.naive_rate > 3 * ALPHA


def test_a_challenger_better_by_less_than_the_margin_is_promoted_at_most_alpha():
    # composite null: mean(champion loss - challenger loss) == margin exactly
    rng = np.random.default_rng(5)
    runs, horizon, margin = 600, 4000, 0.05
    lc = (rng.random((runs, horizon)) < 0.30) * 1.0
    lh = (rng.random((runs, horizon)) < 0.25) * 1.0
    cfg = GateConfig(loss="zero_one", margin=margin, min_samples=100, floor=0.0)
    promoted = first_promotion(lc, 1 - lc, lh, 1 - lh, cfg) > 0
    assert promoted.mean() <= ALPHA
    # with no margin the same (truly better, noisy: independent errors) challenger is mostly found
    assert (first_promotion(lc, 1 - lc, lh, 1 - lh, replace(cfg, margin=0.0)) > 0).mean() > 0.75


def test_a_better_challenger_is_promoted_and_the_events_needed_are_reported():
    cfg = GateConfig(alpha=ALPHA)
    r = simulate(cfg, runs=250, horizon=6000, skill_champion=1.0, skill_challenger=1.1, seed=3)
    print(f"\nbetter by +0.1 skill (~1.5 accuracy points): promoted {r.promoted_rate:.3f}, "
          f"median {r.median_events:.0f} events, p90 {r.p90_events:.0f}")
    assert r.promoted_rate >= 0.95
    assert cfg.min_samples <= r.median_events <= 3000


@pytest.mark.parametrize("loss", ["brier", "log"])
def test_a_worse_challenger_is_never_promoted_however_long_it_runs(loss):
    r = simulate(GateConfig(loss=loss), runs=250, horizon=20_000, skill_champion=1.0, skill_challenger=0.8, seed=7)
    assert r.promoted_rate == 0.0


def _run_canary(rng, canary_err: float, champion_err: float, cfg: CanaryConfig, gate: GateConfig):
    """Labeled events arrive in batches of 100, split by fraction; decide after each batch."""
    mon = CanaryMonitor(cfg, gate)
    while True:
        arm = rng.random(100) < cfg.fraction
        err = rng.random(100) < np.where(arm, canary_err, champion_err)
        mon.observe_many("canary", err[arm] * 1.0, ~err[arm])
        mon.observe_many("champion", err[~arm] * 1.0, ~err[~arm])
        d = mon.decision()
        if d.action != "continue":
            return d


def test_canary_rolls_back_a_worse_model_and_promotes_an_equal_one():
    gate, cfg = GateConfig(loss="zero_one"), CanaryConfig(fraction=0.2, window=1000, threshold=0.02)
    rng = np.random.default_rng(8)
    worse = [_run_canary(rng, 0.30, 0.15, cfg, gate) for _ in range(30)]
    assert all(d.action == "rollback" for d in worse)
    assert all(d.reason == "canary_worse" and d.canary.n < cfg.window for d in worse)  # early, not at the end
    equal = [_run_canary(rng, 0.15, 0.15, cfg, gate) for _ in range(200)]
    rolled = np.mean([d.action == "rollback" for d in equal])
    assert rolled <= 0.1
    passed = [d for d in equal if d.action == "promote"]
    assert passed and all(d.reason == "canary_passed" and d.canary.n >= cfg.window for d in passed)
    floor = _run_canary(rng, 0.6, 0.7, cfg, replace(gate, floor=0.5))  # better than a bad champion, still bad
    assert (floor.action, floor.reason) == ("rollback", "below_floor")


@pytest.mark.parametrize("task,skill,loss", [("multiclass", 2.0, "brier"), ("multiclass", 2.0, "zero_one"),
                                             ("regression", 1.0, "scaled_abs")])
def test_other_tasks_equal_models_are_falsely_promoted_at_most_alpha(task, skill, loss):
    cfg = Task(task).gate_config(GateConfig(loss=loss, alpha=ALPHA))
    r = simulate(cfg, runs=600, horizon=3000, skill_champion=skill, skill_challenger=skill, seed=21, task=task)
    print(f"\n{task}/{loss} equal: gate {r.promoted_rate:.4f} over 600 runs x 3000 events; "
          f"naive z every event {r.naive_rate:.4f}; one z-test at the end {r.one_shot_rate:.4f}")
    assert r.promoted_rate <= ALPHA
    assert r.naive_rate > 2 * ALPHA  # the same data, tested naively, would promote often


@pytest.mark.parametrize("task,skill", [("multiclass", 2.0), ("regression", 1.0)])
def test_other_tasks_a_better_challenger_is_promoted_and_a_worse_one_never(task, skill):
    cfg = Task(task).gate_config(GateConfig(alpha=ALPHA))
    better = simulate(cfg, runs=150, horizon=4000, skill_champion=skill, skill_challenger=skill + 0.3, seed=22,
                      task=task)
    print(f"\n{task} better by +0.3 skill: promoted {better.promoted_rate:.3f}, "
          f"median {better.median_events:.0f} events, p90 {better.p90_events:.0f}")
    assert better.promoted_rate >= 0.95 and better.median_events <= 1500
    worse = simulate(cfg, runs=150, horizon=4000, skill_champion=skill, skill_challenger=skill - 0.2, seed=23,
                     task=task)
    assert worse.promoted_rate == 0.0
