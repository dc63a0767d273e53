"""Learner per task: predictions, recorded probabilities and metrics equal a plain River loop.

River's bundled datasets (no download): ImageSegments (7 classes), TrumpApproval (regression).
"""

from __future__ import annotations

import itertools
import json
import pickle

import pytest
from river import datasets, metrics

from streamlearn.models.estimators.learner import Learner
from streamlearn.models.estimators.spec import build_model
from streamlearn.models.task import BINARY, Task

SEGMENTS = list(itertools.islice(datasets.ImageSegments(), 600))
CLASSES = ("brickface", "cement", "foliage", "grass", "path", "sky", "window")
TRUMP = list(datasets.TrumpApproval())


def _wire(served: dict) -> dict:
    # what the loop stores and reads back: a JSON round trip (keys and labels become str/...)
    return json.loads(json.dumps(served))


def test_multiclass_learner_serves_all_class_probabilities_and_matches_plain_river():
    task = Task("multiclass", CLASSES)
    learner = Learner("seg", "hat", task=task)
    plain = build_model("hat")
    acc, f1, ce = metrics.Accuracy(), metrics.MacroF1(), metrics.CrossEntropy()
    for i, (x, y) in enumerate(SEGMENTS):
        y = task.check_label(y)
        s = learner.predict(x)
        proba = plain.predict_proba_one(x)
        if i == 0:
            assert (s.score, s.predicted, s.probabilities) == (0.0, None, {})  # nothing learned yet
            acc.update(y, None)  # a miss for accuracy; macro-F1 and log loss skip it (no class, no proba)
        else:
            assert set(s.probabilities) == set(CLASSES)  # unseen declared classes at 0
            assert all(s.probabilities[str(c)] == pytest.approx(p) for c, p in proba.items())
            assert s.predicted == max(proba, key=proba.get)
            assert s.score == pytest.approx(max(proba.values()))  # the predicted class's probability
            acc.update(y, s.predicted)
            f1.update(y, s.predicted)
            ce.update(y, {**proba, y: proba.get(y, 0.0)})  # a class the model never saw got 0
        learner.learn(x, y, _wire(s.served(learner.labels_learned)))
        plain.learn_one(x, y)
    got = learner.metric_values()
    assert got["accuracy"] == pytest.approx(acc.get()) and got["accuracy"] > 0.6
    assert got["macro_f1"] == pytest.approx(f1.get())
    assert got["log_loss"] == pytest.approx(ce.get())
    assert learner.scored_labels == len(SEGMENTS) and learner.labels_learned == len(SEGMENTS)


def test_regression_learner_scores_the_estimate_and_matches_plain_river():
    learner = Learner("approval", "linreg", task="regression")
    plain = build_model("linreg")
    mae, rmse, r2 = metrics.MAE(), metrics.RMSE(), metrics.R2()
    for x, y in TRUMP:
        s = learner.predict(x)
        est = plain.predict_one(x)
        assert s.score == s.predicted == pytest.approx(est) and s.probabilities == {}
        for m in (mae, rmse, r2):
            m.update(y, est)
        learner.learn(x, y, _wire(s.served()))
        plain.learn_one(x, y)
    got = learner.metric_values()
    assert got == pytest.approx({"mae": mae.get(), "rmse": rmse.get(), "r2": r2.get()})


def test_binary_learner_is_unchanged_and_a_declared_positive_class_is_the_score():
    # default binary: exactly River's numbers (score = P(True))
    stream = [({"a": float(i % 7), "b": float(i % 3)}, (i % 7) > 3) for i in range(400)]
    learner, plain = Learner("m", "logreg"), build_model("logreg")
    assert learner.task == BINARY and learner.classifier
    auc, ll = metrics.ROCAUC(), metrics.LogLoss()
    for x, y in stream:
        s = learner.predict(x)
        p = plain.predict_proba_one(x)
        if p:
            assert s.score == p[True]
            auc.update(y, p)
            ll.update(y, p)
        learner.learn(x, y, _wire(s.served()))
        plain.learn_one(x, y)
    assert learner.metric_values()["roc_auc"] == auc.get() and learner.metric_values()["log_loss"] == ll.get()
    # string classes: the score is P(positive), ROC AUC and log loss are about the positive class
    task = Task("binary", ("legit", "fraud"))
    named = Learner("m", "hat", task=task)
    mirror = Learner("m", "hat")
    for x, y in stream:
        s, t = named.predict(x), mirror.predict(x)
        if t.probabilities:
            assert s.score == pytest.approx(t.probabilities.get("True", 0.0))
        label = "fraud" if y else "legit"
        named.learn(x, label, _wire(s.served()))
        mirror.learn(x, y, _wire(t.served()))
    assert named.metric_values() == pytest.approx(mirror.metric_values())


def test_old_checkpoints_without_a_task_load_and_behave_as_before():
    for spec, kind in (("logreg", "binary"), ("linreg", "regression")):
        learner = Learner("m", spec)
        for i in range(50):
            x = {"a": float(i % 5)}
            learner.learn(x, i % 5 > 2 if kind == "binary" else float(i % 5), learner.predict(x).served())
        state = dict(learner.__dict__)
        del state["task"]  # the pickled state of a Learner from before tasks existed
        old = Learner.__new__(Learner)
        old.__dict__.update(state)
        loaded = pickle.loads(pickle.dumps(old))
        assert loaded.task == Task(kind) and loaded.spec == spec
        x = {"a": 3.0}
        assert loaded.predict(x) == learner.predict(x)
        loaded.learn(x, True if kind == "binary" else 3.0, loaded.predict(x).served())
        assert loaded.labels_learned == 51


def test_an_explicit_task_is_authoritative_and_checked_against_the_model():
    assert Learner("m", "hat", task="multiclass").task.kind == "multiclass"
    with pytest.raises(ValueError, match="binary-only"):
        Learner("m", "logreg", task="multiclass")
    with pytest.raises(ValueError, match="regressor"):
        Learner("m", "hat", task="regression")
    state = Learner("m", "nb", task=Task("multiclass", ("a", "b", "c"))).state()
    assert Learner.from_state(state).task == Task("multiclass", ("a", "b", "c"))
