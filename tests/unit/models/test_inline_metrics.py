"""The learner's per-label updater updates River's Accuracy and LogLoss inline: the metrics
must stay River's own objects, in River's own state, bit for bit, as River's update would
leave them (checked against plain River metrics fed the same labels on a cards stream), and
a checkpoint pickled before loads and continues identically."""

from __future__ import annotations

import json
import pickle

from river import metrics

from streamlearn import datasets as sl_datasets
from streamlearn.models.estimators import learner as learner_mod
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.task import Task
from streamlearn.project import Project
from streamlearn.settings import Settings


def _cards(n: int = 3000) -> list[tuple[dict, bool]]:
    view = Project.from_settings(Settings()).view
    states: dict = {}
    out = []
    for it in sl_datasets.cards(n, seed=9, n_cards=300):
        x, states[it.event["entity"]] = view.compute(it.event, states.get(it.event["entity"]))
        if it.label is not None:
            out.append((x, it.label))
    return out


def _served(learner: Learner, x: dict) -> dict:
    # as the loop stores and reads it back: class names become str
    return json.loads(json.dumps(learner.predict(x).served(learner.labels_learned), default=str))


def test_inline_accuracy_and_log_loss_equal_plain_river() -> None:
    assert learner_mod._INLINE_RIVER  # the River this runs on is the one the inline code copies
    rows = _cards()
    lr = Learner("m", "logreg")
    acc, loss, auc = metrics.Accuracy(), metrics.LogLoss(), metrics.ROCAUC()
    for i in range(0, len(rows), 7):  # batches of 7, as learn_many takes them
        batch = [(x, y, _served(lr, x)) for x, y in rows[i:i + 7]]
        for _, y, s in batch:
            proba = {k == "True": v for k, v in s["proba"].items()}
            pred = s["pred"] == "True" if isinstance(s["pred"], str) else s["pred"]
            acc.update(y, pred)
            loss.update(y, proba)
            auc.update(y, proba)
        lr.learn_many(batch)
    assert lr.scored_labels == len(rows) > 1000
    assert type(lr.metrics["accuracy"]) is metrics.Accuracy and type(lr.metrics["log_loss"]) is metrics.LogLoss
    assert pickle.dumps(lr.metrics["accuracy"]) == pickle.dumps(acc)
    assert pickle.dumps(lr.metrics["log_loss"]) == pickle.dumps(loss)
    assert pickle.dumps(lr.metrics["roc_auc"]) == pickle.dumps(auc)
    assert lr.metrics["log_loss"].get() == loss.get() and lr.metrics["accuracy"].get() == acc.get()


def test_inline_metrics_with_a_declared_positive_class() -> None:
    rows = [(x, int(y)) for x, y in _cards(1500)]
    lr = Learner("m", "logreg", task=Task("binary", (0, 1)))
    acc, loss = metrics.Accuracy(), metrics.LogLoss()
    for i in range(0, len(rows), 3):
        batch = [(x, y, _served(lr, x)) for x, y in rows[i:i + 3]]
        for _, y, s in batch:
            # a served class name in the label's type, as the learner compares it
            acc.update(y, learner_mod._same_type(s["pred"], y))
            proba = {learner_mod._same_type(k, y): v for k, v in s["proba"].items()}
            loss.update(y == 1, {True: proba.get(1, 0.0)})
        lr.learn_many(batch)
    assert pickle.dumps(lr.metrics["accuracy"]) == pickle.dumps(acc)
    assert pickle.dumps(lr.metrics["log_loss"]) == pickle.dumps(loss)


def test_checkpoint_pickled_before_loads_and_continues_identically() -> None:
    """A learner pickled mid-stream (plain River metric objects, as every checkpoint holds)
    continues through the inline path exactly as label-by-label ``learn`` (River's calls)."""
    rows = _cards(2000)
    a = Learner("m", "logreg")
    for x, y in rows[:500]:
        a.learn(x, y, _served(a, x))
    blob = pickle.dumps(a)
    inline, reference = pickle.loads(blob), pickle.loads(blob)
    for i in range(500, len(rows), 5):
        batch = [(x, y, _served(reference, x)) for x, y in rows[i:i + 5]]
        inline.learn_many(batch)
        for x, y, s in batch:
            reference.learn(x, y, s)
    assert pickle.dumps(inline.metrics) == pickle.dumps(reference.metrics)
    assert pickle.dumps(inline) == pickle.dumps(reference)


def test_replaced_confusion_matrix_goes_through_river() -> None:
    """A metric whose matrix is not River's plain ConfusionMatrix is updated by River's own call."""

    class Counting(metrics.ConfusionMatrix):
        calls = 0

        def update(self, y_true, y_pred, w=1.0):  # noqa: ANN001, ANN201
            Counting.calls += 1
            super().update(y_true, y_pred, w)

    rows = _cards(600)
    lr = Learner("m", "logreg")
    lr.metrics["accuracy"].cm = Counting()
    lr.learn_many([(x, y, _served(lr, x)) for x, y in rows])
    assert Counting.calls == len(rows) == lr.metrics["accuracy"].cm.n_samples
