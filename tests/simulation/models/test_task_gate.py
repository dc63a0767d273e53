"""Real River models through the lifecycle's gate, per task, on River's bundled datasets.

The models score every event, the lifecycle sees each label with every model's served
record (as the online loop hands it over), then every model learns it: the loop's order.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from river import datasets

from streamlearn.models.governance.gate import GateConfig
from streamlearn.models.governance.lifecycle import Lifecycle, LifecycleConfig
from streamlearn.models.modelset import ModelSet
from streamlearn.models.task import Task

SEGMENTS = list(datasets.ImageSegments())  # 2310 events, 7 classes
CLASSES = ("brickface", "cement", "foliage", "grass", "path", "sky", "window")
TRUMP = list(datasets.TrumpApproval())  # 1001 events


@pytest.fixture()
def factories(tmp_path, monkeypatch):
    (tmp_path / "taskgate_factories.py").write_text(textwrap.dedent('''
        from river import dummy, forest, linear_model, preprocessing, stats


        def mean():
            return dummy.StatisticRegressor(stats.Mean())


        def linreg(intercept_lr):
            return preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=intercept_lr)


        def arf(seed):
            return forest.ARFClassifier(n_models=5, seed=seed)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "taskgate_factories"


def run(task: Task, champion: str, challenger: str, stream, min_samples: int):
    models = ModelSet.fresh("m", champion, task=task)
    v = models.add_challenger(challenger, reason="test")
    life = Lifecycle(LifecycleConfig(gate=GateConfig(min_samples=min_samples), task=task, use_canary=False,
                                     actions=_no_drift_actions()))
    records = []
    for i, (x, y) in enumerate(stream):
        y = task.check_label(y)
        served = {str(k): json.loads(json.dumps(lr.predict(x).served(lr.labels_learned)))
                  for k, lr in models.learners.items()}
        life.on_label(models, y, served, serving=models.champion)
        for k, lr in models.learners.items():
            lr.learn(x, y, served[str(k)])
        if i % 50 == 49:
            records += [r for kind, r in life.decide(models, float(i)) if kind == "lifecycle"]
    promoted = [r for r in records if r["action"] == "promoted"]
    gate = life.gates.get(v)
    return models, v, promoted, gate


def _no_drift_actions():
    # drift alarms on these small ordered datasets would start extra challengers or roll a
    # promotion back; this test is about the gate, so alarms only warn
    from streamlearn.models.governance.drift import ActionConfig

    return ActionConfig(by_severity={}, rollback_within=0)


def test_multiclass_a_real_model_replaces_the_prior_and_the_prior_never_replaces_it():
    task = Task("multiclass", CLASSES)
    models, v, promoted, _ = run(task, "prior", "hat", SEGMENTS[:1500], min_samples=300)
    assert [r["version"] for r in promoted] == [v] and models.champion == v
    assert models.learners[v].metric_values()["accuracy"] > 0.6
    assert set(models.learners[v].metrics) == {"accuracy", "macro_f1", "log_loss"}
    models, v, promoted, gate = run(task, "hat", "prior", SEGMENTS[:1500], min_samples=300)
    assert promoted == [] and models.champion == 1 and gate.lower_bound < 0


def test_multiclass_two_equally_good_forests_are_not_promoted(factories):
    task = Task("multiclass", CLASSES)
    models, _, promoted, gate = run(task, f"{factories}:arf?seed=1", f"{factories}:arf?seed=2", SEGMENTS,
                                    min_samples=300)
    assert promoted == [] and gate.n == len(SEGMENTS)
    d = gate.decision()
    print(f"\nARF seed 1 vs seed 2 on ImageSegments: mean Brier diff {d.mean_diff:.4f}, "
          f"lower bound {d.lower_bound:.4f}, accuracies {d.champion.accuracy} / {d.challenger.accuracy}")
    assert d.reason == "not_significant"


def test_regression_linear_model_replaces_the_mean_and_not_the_reverse(factories):
    task, linreg = Task("regression"), f"{factories}:linreg?intercept_lr=0.1"
    models, v, promoted, _ = run(task, f"{factories}:mean", linreg, TRUMP, min_samples=200)
    mae = {k: lr.metric_values()["mae"] for k, lr in models.learners.items()}
    print(f"\nlinear model vs running mean on TrumpApproval: promoted at {promoted[0]['labels_learned']} labels, "
          f"MAE {mae}")
    assert [r["version"] for r in promoted] == [v] and models.champion == v and mae[v] < mae[1]
    assert set(models.learners[v].metrics) == {"mae", "rmse", "r2"}
    models, v, promoted, gate = run(task, linreg, f"{factories}:mean", TRUMP, min_samples=200)
    assert promoted == [] and models.champion == 1
    assert gate.decision().reason in ("not_significant", "below_floor")


def test_regression_identical_models_are_never_promoted():
    models, _, promoted, gate = run(Task("regression"), "linreg", "linreg", TRUMP, min_samples=100)
    assert promoted == [] and gate.decision().mean_diff == 0.0
