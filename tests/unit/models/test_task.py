"""Tasks: metrics, bounded gate losses, drift error signal, label checks (pure, no broker)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from streamlearn.models.estimators.spec import build_model
from streamlearn.models.governance.gate import GateConfig, event_loss, is_hit, loss_bound
from streamlearn.models.task import BINARY, LabelScale, Task, TaskScorer, infer_task, scale_schedule


# ---------------------------------------------------------------------- construction
def test_task_config_round_trips_and_bad_configs_are_refused():
    for t in (BINARY, Task("multiclass"), Task("regression"), Task("binary", ("ok", "fraud")),
              Task("multiclass", (1, 2, 3)), Task("binary", ("neg", "pos"), positive="neg")):
        assert Task.parse(t.to_json()) == t
    assert Task.parse("regression") == Task("regression") and Task.parse(None) == BINARY
    assert Task("binary", ("ok", "fraud")).positive == "fraud"  # (negative, positive)
    bad = [lambda: Task("ternary"), lambda: Task("binary", ("a", "b", "c")), lambda: Task("regression", (1, 2)),
           lambda: Task("multiclass", ("a", "a")), lambda: Task("binary", ("a", "b"), positive="c"),
           lambda: Task("multiclass", positive="a"), lambda: Task.parse({"kind": "binary", "clases": [0, 1]}),
           lambda: Task.parse(3), lambda: Task.parse({"kind": "multiclass", "classes": "abc"})]
    for make in bad:
        with pytest.raises(ValueError) as e:
            make()
        assert "\n" not in str(e.value)


def test_metric_sets_per_task():
    assert sorted(BINARY.metrics()) == ["accuracy", "log_loss", "roc_auc"]
    assert sorted(Task("multiclass").metrics()) == ["accuracy", "log_loss", "macro_f1"]
    assert sorted(Task("regression").metrics()) == ["mae", "r2", "rmse"]
    assert BINARY.metrics()["accuracy"] is not BINARY.metrics()["accuracy"]  # fresh each time


def test_task_inference_and_model_checks():
    assert infer_task(build_model("logreg")) == BINARY
    assert infer_task(build_model("hat")) == BINARY  # multiclass-capable, but multiclass must be declared
    assert infer_task(build_model("linreg")) == Task("regression")
    Task("multiclass").check_model(build_model("hat"))
    with pytest.raises(ValueError, match="binary-only.*OneVsRestClassifier"):
        Task("multiclass").check_model(build_model("logreg"))
    with pytest.raises(ValueError, match="needs a River regressor"):
        Task("regression").check_model(build_model("nb"))
    with pytest.raises(ValueError, match="needs a River classifier"):
        BINARY.check_model(build_model("linreg"))


# ---------------------------------------------------------------------- labels
@pytest.mark.parametrize("task,good,bad", [
    (BINARY, [(True, True), (False, False), (1, 1), (0, 0), (np.bool_(True), True)],
     [2, -1, "yes", 0.5, 1.0, None, [1]]),
    (Task("binary", ("no", "yes")), [("yes", "yes"), ("no", "no")], ["maybe", True, 1, None]),
    (Task("multiclass"), [("cat", "cat"), (3, 3), (np.int64(4), 4)], [True, 2.5, None, [1], {"a": 1}]),
    (Task("multiclass", (1, 2, 3)), [(2, 2), (np.int32(3), 3)], ["2", True, 4, 2.0]),
    (Task("regression"), [(3, 3.0), (2.5, 2.5), (np.float32(1.5), 1.5), (-7, -7.0)],
     [True, np.bool_(False), "3.5", math.nan, math.inf, None, [1.0]]),
])
def test_labels_of_the_wrong_type_are_refused_with_a_one_line_reason(task, good, bad):
    for y, expected in good:
        out = task.check_label(y)
        assert out == expected and type(out) is type(expected)
    for y in bad:
        with pytest.raises(ValueError) as e:
            task.check_label(y)
        msg = str(e.value)
        assert "\n" not in msg and task.kind in msg or "declared classes" in msg


# ---------------------------------------------------------------------- gate losses
def _served(rng, classes, empty=False):
    if empty:
        return {"score": 0.0, "pred": None, "proba": {}, "n": 0}
    p = rng.dirichlet(np.ones(len(classes)))
    proba = {str(c): float(v) for c, v in zip(classes, p)}
    pred = classes[int(np.argmax(p))]
    return {"score": float(p.max()), "pred": pred, "proba": proba, "n": 5}


@pytest.mark.parametrize("loss", ["brier", "log", "zero_one"])
def test_binary_scorer_gives_exactly_the_gates_numbers(loss):
    rng = np.random.default_rng(1)
    g = GateConfig(loss=loss)
    sc = TaskScorer(BINARY, g)
    for i in range(500):
        y = bool(rng.random() < 0.3)
        pred = _served(rng, [False, True], empty=i % 50 == 0)
        expected = event_loss(loss, y, pred.get("proba") or None, pred.get("pred"), g.eps, g.scale)
        assert sc.loss(y, pred) == expected
        assert sc.hit(y, pred) == is_hit(y, pred["pred"])
        assert sc.error(y, pred) == (0.0 if is_hit(y, pred["pred"]) else 1.0)
        sc.observe(y)


@pytest.mark.parametrize("task,loss", [(BINARY, "brier"), (BINARY, "log"), (Task("multiclass"), "brier"),
                                       (Task("multiclass"), "log"), (Task("multiclass"), "zero_one"),
                                       (Task("multiclass", ("a", "b", "c")), "brier"),
                                       (Task("regression"), "scaled_abs"), (Task("regression"), "abs")])
def test_losses_stay_within_the_gates_bound(task, loss):
    rng = np.random.default_rng(2)
    g = task.gate_config(GateConfig(loss=loss, scale=2.0))
    sc, b = TaskScorer(task, g), loss_bound(g.loss, g.eps, g.scale)
    classes = list(task.classes or ["a", "b", "c", "d"])
    for i in range(2000):
        if task.kind == "regression":
            y = float(rng.standard_cauchy())  # heavy tails: the loss must stay bounded anyway
            pred = {"score": float(rng.normal() * 50), "pred": None, "proba": {}, "n": 1}
            pred["pred"] = pred["score"]
        else:
            y = classes[rng.integers(len(classes))] if task.kind == "multiclass" else bool(rng.random() < 0.5)
            pred = _served(rng, classes if task.kind == "multiclass" else [False, True], empty=i % 97 == 0)
        loss_value = sc.loss(y, pred)
        assert 0.0 <= loss_value <= b
        sc.observe(y)


def test_multiclass_brier_is_summed_over_classes_and_an_untrained_model_is_not_flattered():
    sc = TaskScorer(Task("multiclass"))
    pred = {"pred": "b", "proba": {"a": 0.2, "b": 0.5, "c": 0.3}}
    assert sc.loss("b", pred) == pytest.approx(0.5**2 + 0.2**2 + 0.3**2)
    assert sc.loss("z", pred) == pytest.approx(1.0 + 0.2**2 + 0.5**2 + 0.3**2)  # a class never predicted
    assert sc.loss("a", {"pred": None, "proba": {}}) == 1.0  # nothing learned, classes unknown
    declared = TaskScorer(Task("multiclass", ("a", "b", "c")))
    assert declared.loss("a", {"pred": None, "proba": {}}) == pytest.approx(1 - 1 / 3)  # uniform over 3
    # a two-class multiclass task gives the binary numbers (the same Brier)
    two = {"pred": "y", "proba": {"n": 0.3, "y": 0.7}}
    assert TaskScorer(Task("multiclass")).loss("y", two) == TaskScorer(Task("binary", ("n", "y"))).loss("y", two)


def test_regression_loss_uses_the_label_spread_of_earlier_labels_only():
    sc = TaskScorer(Task("regression"), Task("regression").gate_config())
    assert sc.gate.loss == "scaled_abs" and sc.gate.floor_metric == "loss"
    rng = np.random.default_rng(3)
    ys = 100.0 + 5.0 * rng.standard_normal(3000)
    expected_scale = scale_schedule(ys)[0]
    for y, s in zip(ys, expected_scale):
        pred = {"score": y + 4.0, "pred": y + 4.0, "proba": {}}
        assert sc.scale.value == s  # before the label is observed
        assert sc.loss(y, pred) == min(4.0 / (3.0 * s), 1.0)
        assert sc.error(y, pred) == (1.0 if 4.0 > s else 0.0)
        assert sc.hit(y, pred) is None
        sc.observe(y)
    assert sc.scale.value == pytest.approx(5.0, rel=0.15)  # IQR/1.349 of N(100, 5^2)


def test_label_scale_is_the_vectorised_schedule_survives_pickling_and_handles_zero_spread():
    rng = np.random.default_rng(4)
    ys = np.exp(rng.standard_normal((3, 2500)))  # skewed labels
    sched = scale_schedule(ys, window=128)
    for r in range(3):
        s, out = LabelScale(window=128), []
        for i, y in enumerate(ys[r]):
            if i == 1000:
                s = pickle.loads(pickle.dumps(s))  # checkpointed mid-stream
            out.append(s.value)
            s.update(y)
        assert np.array_equal(np.array(out), sched[r])
    # mostly-zero labels: the IQR is 0, the standard deviation takes over; constant: keep the last
    s = LabelScale(window=8)
    for y in [0.0] * 7 + [4.0]:
        s.update(y)
    assert s.value == pytest.approx(np.std([0.0] * 7 + [4.0]))
    c = LabelScale(window=8)
    for _ in range(20):
        c.update(3.0)
    assert c.value == 1.0


def test_gate_config_per_task():
    assert BINARY.gate_config() == GateConfig()
    assert Task("multiclass").gate_config(GateConfig(loss="log")).loss == "log"
    reg = Task("regression").gate_config()
    assert (reg.loss, reg.floor_metric, reg.floor) == ("scaled_abs", "loss", 0.5)
    assert Task("regression").gate_config(GateConfig(loss="abs", scale=3.0)).floor == 3.0
    with pytest.raises(ValueError, match="does not fit a regression task"):
        Task("regression").gate_config(GateConfig(loss="log"))
    with pytest.raises(ValueError, match="does not fit a multiclass task"):
        Task("multiclass").gate_config(GateConfig(loss="scaled_abs"))


def test_bias_monitor_inputs_per_task():
    pred = {"score": 0.8, "pred": True, "proba": {"True": 0.8, "False": 0.2}}
    assert TaskScorer(BINARY).bias_pair(True, pred) == (0.8, 1.0)  # as the lifecycle always fed it
    named = TaskScorer(Task("binary", ("ok", "fraud")))
    assert named.bias_pair("ok", {"score": 0.3}) == (0.3, 0.0)
    assert TaskScorer(Task("multiclass")).bias_pair("a", {"score": 0.9, "pred": "a"}) is None
    reg = TaskScorer(Task("regression"))
    for y in (10.0, 14.0, 12.0, 16.0):
        reg.observe(y)
    s = reg.scale.value
    assert reg.bias_pair(12.0, {"score": 13.0}) == (13.0 / s, 12.0 / s)  # in label spreads


def test_multiclass_macro_f1_is_the_same_bits_in_every_process():
    """River sums over a set of classes: its last bit followed the string-hash seed, so a
    backtest in another process could miss the live value by one ulp."""
    import os
    import subprocess
    import sys

    code = ("import random; from streamlearn.models.task import Task\n"
            "m = Task('multiclass').metrics()['macro_f1']; r = random.Random(3)\n"
            "for _ in range(300): m.update(r.choice(['cat', 'dog', 'eel', 'fox', 'gnu']), "
            "r.choice(['cat', 'dog', 'eel', 'fox', 'gnu']))\n"
            "print(repr(m.get()))")
    outs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert len(outs) == 1
