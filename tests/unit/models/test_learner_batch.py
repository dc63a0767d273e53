"""Learner.learn_many (the learner's per-batch path) equals Learner.learn label by label: the
same models, metrics and counters, and the same pickles (checkpoints), for every task.

Served predictions go through a JSON round trip, as the loop stores them (class names become
str); some labels have no served prediction (a challenger that had not scored the event).
"""

from __future__ import annotations

import itertools
import json
import pickle
import random

import pytest
from river import datasets

from streamlearn import datasets as sl_datasets
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.task import Task
from streamlearn.project import Project
from streamlearn.settings import Settings

SEGMENTS = list(itertools.islice(datasets.ImageSegments(), 500))
TRUMP = list(itertools.islice(datasets.TrumpApproval(), 500))


def _cards() -> list[tuple[dict, bool]]:
    """The built-in project's feature vectors of a cards stream, with their labels."""
    view = Project.from_settings(Settings()).view
    states: dict = {}
    out = []
    for it in sl_datasets.cards(1500, seed=4, n_cards=200):
        x, states[it.event["entity"]] = view.compute(it.event, states.get(it.event["entity"]))
        if it.label is not None:
            out.append((x, it.label))
    return out


CASES = {
    "binary": (lambda: Learner("m", "logreg"), _cards),
    "binary_hat": (lambda: Learner("m", "hat"), _cards),
    "binary_int_positive": (lambda: Learner("m", "logreg", task=Task("binary", (0, 1))),
                            lambda: [(x, int(y)) for x, y in _cards()]),
    "multiclass": (lambda: Learner("m", "hat", task=Task("multiclass", (
        "brickface", "cement", "foliage", "grass", "path", "sky", "window"))), lambda: SEGMENTS),
    "multiclass_undeclared": (lambda: Learner("m", "hat", task=Task("multiclass")), lambda: SEGMENTS),
    "regression": (lambda: Learner("m", "linreg", task=Task("regression")), lambda: TRUMP),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_learn_many_equals_learn_label_by_label(case: str) -> None:
    make, data = CASES[case]
    rows = data()
    one, many = make(), make()
    rng = random.Random(11)
    i = 0
    while i < len(rows):
        batch = []
        for x, y in rows[i:i + rng.choice([1, 3, 50, 128])]:
            y = one.task.check_label(y)
            # both learners are in the same state here: one prediction, served to both
            served = json.loads(json.dumps(one.predict(x).served(one.labels_learned), default=str))
            if rng.random() < 0.1:
                served = None
            batch.append((x, y, served))
        for x, y, served in batch:
            one.learn(x, y, served)
        many.learn_many(batch)
        i += len(batch)
        assert many.metric_values() == one.metric_values()
        assert (many.labels_learned, many.scored_labels) == (one.labels_learned, one.scored_labels)
    assert one.labels_learned == len(rows) and one.scored_labels > 0.8 * len(rows)
    if case != "binary_hat" and not case.startswith("multiclass"):  # trees pickle in no fixed order
        assert pickle.dumps(many.state()) == pickle.dumps(one.state())
    x0 = rows[0][0]
    assert many.predict(x0) == one.predict(x0)
    assert pickle.dumps(many.metrics) == pickle.dumps(one.metrics)


def test_batch_updater_is_kept_out_of_pickles_and_follows_the_metrics() -> None:
    """learn_many keeps its per-label updater between batches; a checkpoint's pickle is the
    learner's fields as before, and a copy (or new metric objects) gets an updater of its own."""
    rows = _cards()[:300]
    one, many = Learner("m", "logreg"), Learner("m", "logreg")
    served = [one.predict(x).served() for x, _ in rows]
    for (x, y), s in zip(rows, served):
        one.learn(x, y, s)
    many.learn_many([(x, y, s) for (x, y), s in zip(rows[:100], served[:100])])
    assert "_updater" in many.__dict__
    assert pickle.dumps(many).count(b"_updater") == 0
    copy = pickle.loads(pickle.dumps(many))  # a restored checkpoint: its own metric objects
    for learner in (many, copy):
        learner.learn_many([(x, y, s) for (x, y), s in zip(rows[100:], served[100:])])
        assert learner.metric_values() == one.metric_values()
    many.metrics = many.task.metrics()  # replaced metrics are the ones updated
    many.learn_many([(x, y, s) for (x, y), s in zip(rows[:1], served[:1])])
    assert many.metrics["accuracy"].cm.n_samples == 1


@pytest.mark.parametrize("task", [Task("binary"), Task("binary", (0, 1))])
def test_inlined_accuracy_and_log_loss_equal_rivers_updates(task: Task) -> None:
    """The batch updater inlines River's Accuracy (ConfusionMatrix) and LogLoss (running mean)
    updates: the same state bit for bit as River's own ``update``, also at the clamped edges
    (probabilities 0 and 1, a missing class), with no prediction, and continuing from a
    checkpoint's metric objects."""
    rng = random.Random(5)
    classes = (False, True) if task.positive is None else (0, 1)
    rows = []
    for i in range(2000):
        y = classes[rng.random() < 0.3]
        p = rng.choice([0.0, 1.0, 1e-18, 1 - 1e-17, rng.random(), rng.random()])
        proba = {str(classes[0]): 1.0 - p, str(classes[1]): p}
        if i % 97 == 0:
            proba = {str(classes[0]): 1.0}  # the positive class absent
        pred = None if i % 89 == 0 else classes[p > 0.5]
        rows.append((y, {"score": p, "pred": pred, "proba": proba, "n": i}))
    river_side, fast = Learner("m", "logreg", task=task), Learner("m", "logreg", task=task)
    update = fast._class_metrics_updater()
    for k, (y, served) in enumerate(rows):
        river_side._update_class_metrics(y, served)
        update(y, served)
        if k == 1000:  # restored from a checkpoint: River's objects, a fresh updater
            fast = pickle.loads(pickle.dumps(fast))
            update = fast._class_metrics_updater()
    for name in ("accuracy", "log_loss", "roc_auc"):
        assert pickle.dumps(fast.metrics[name]) == pickle.dumps(river_side.metrics[name]), name
    assert fast.metric_values() == river_side.metric_values()


def test_metrics_other_than_rivers_own_keep_their_update() -> None:
    """A subclass (or a metric on a shared matrix) is not inlined: its own update runs."""
    from river import metrics

    calls = []

    class Counting(metrics.LogLoss):
        def update(self, y_true, y_pred, w=1.0):  # noqa: ANN001, ANN202
            calls.append(y_true)
            super().update(y_true, y_pred, w)

    lr = Learner("m", "logreg")
    lr.metrics = {"accuracy": metrics.Accuracy(), "log_loss": Counting()}
    lr.learn_many([({"a": 1.0}, True, {"score": 0.7, "pred": True, "proba": {"False": 0.3, "True": 0.7}, "n": 0})])
    assert calls == [True]
    assert lr.metrics["accuracy"].cm.n_samples == 1
