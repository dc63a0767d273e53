"""A named, versioned online model with its progressive-validation metrics.

The learner is what gets checkpointed: model, metrics and the label counter travel
together in one signed snapshot. Its :class:`~streamlearn.models.task.Task` decides the
metrics and what a prediction holds:

* binary: ``score`` = P(positive class) (``True``/``1``, or the declared positive), the
  predicted class, all class probabilities;
* multiclass: ``score`` = the probability of the predicted class, all class probabilities
  (declared classes the model has not seen yet at 0);
* regression: ``score`` = ``predicted`` = the estimate, no probabilities.

``spec`` is always a string: a preset name or a factory spec's canonical form
(:class:`~streamlearn.models.spec.ModelSpec`), so it rebuilds the same model.

>>> from streamlearn.models.task import Task
>>> lr = Learner("trips", "linreg", task=Task("regression"))
>>> lr.learn({"x": 1.0}, 2.0, served=lr.predict({"x": 1.0}).served())
>>> sorted(lr.metric_values())
['mae', 'r2', 'rmse']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from river import base, metrics, stats

from streamlearn.models.estimators.fast_metrics import fast_rocauc
from streamlearn.models.estimators.spec import ModelSpec, build_model
from streamlearn.models.task import Task, infer_task


@dataclass
class Scored:
    score: float
    predicted: Any
    probabilities: dict[str, float]

    def served(self, n: int = 0) -> dict[str, Any]:
        """The per-model record the loop serves (``{"score", "pred", "proba", "n"}``)."""
        return {"score": self.score, "pred": self.predicted, "proba": self.probabilities, "n": n}


@dataclass
class Learner:
    name: str
    spec: str
    version: int = 1
    model: base.Estimator | None = None
    labels_learned: int = 0
    metrics: dict[str, metrics.base.Metric] = field(default_factory=dict)
    # labels scored against this model's served prediction: the metrics' sample size (a
    # challenger started mid-stream learns labels of events it never scored)
    scored_labels: int = 0
    # None: inferred from the model (a classifier is binary, a regressor a regression), as
    # before tasks existed; checkpoints pickled then load with it inferred (__setstate__)
    task: Task | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str):
            self.spec = str(ModelSpec.parse(self.spec))
        if self.model is None:
            self.model = build_model(self.spec)
        if self.task is None:
            self.task = infer_task(self.model)
        else:
            self.task = Task.parse(self.task)
            self.task.check_model(self.model)
        self.classifier = self.task.is_classification
        if not self.metrics:
            self.metrics = self.task.metrics()
        _fast_metrics(self.metrics)

    def __getstate__(self) -> dict[str, Any]:
        # the pickled state is the fields as always (checkpoints): not the per-label updater
        state = self.__dict__
        if "_updater" in state:
            state = {k: v for k, v in state.items() if k != "_updater"}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.__dict__.get("task") is None:
            self.task = infer_task(self.model)
        _fast_metrics(self.__dict__.get("metrics") or {})

    def predict(self, x: dict[str, float]) -> Scored:
        task = self.task
        if task.kind == "regression":
            y = self.model.predict_one(x)
            return Scored(float(y or 0.0), float(y or 0.0), {})
        return self._scored(self.model.predict_proba_one(x))

    def predict_many(self, xs: Sequence[dict[str, float]]) -> list[Scored]:
        """:meth:`predict` of each, in order. A model with ``predict_proba_rows`` (a batch
        model: one scikit-learn call for all rows, which are predicted independently) is asked
        once; any other row by row."""
        rows = getattr(self.model, "predict_proba_rows", None)
        if rows is None or self.task.kind == "regression" or len(xs) < 2:
            return [self.predict(x) for x in xs]
        return [self._scored(proba) for proba in rows(xs)]

    def _scored(self, proba: dict[Any, float]) -> Scored:
        task = self.task
        if not proba:
            return Scored(0.0, None, {})
        predicted = max(proba, key=proba.get)  # the model's own order breaks ties
        if task.classes is not None:  # declared classes not seen yet: probability 0
            proba = {**proba, **{c: 0.0 for c in task.classes if c not in proba}}
        if task.kind == "multiclass":
            score = proba[predicted]
        elif task.positive is not None:
            score = proba.get(task.positive, 0.0)
        else:
            score = proba.get(True, proba.get(1, proba[predicted]))
        return Scored(float(score), predicted, {str(k): float(v) for k, v in proba.items()})

    def learn(self, x: dict[str, float], y: Any, served: dict[str, Any] | None = None) -> None:
        """Learn one label; ``served`` is the prediction published for it (progressive validation)."""
        if served is not None:
            self.scored_labels += 1
            if self.task.kind == "regression":
                for m in self.metrics.values():
                    m.update(y, served.get("score", 0.0))
            else:
                self._update_class_metrics(y, served)
        self.model.learn_one(x, y)
        self.labels_learned += 1

    def learn_many(self, items: Sequence[tuple[dict[str, float], Any, dict[str, Any] | None]]) -> None:
        """:meth:`learn` for each ``(x, y, served)`` in turn, with the per-label dispatch (task,
        metric names, bound methods) done once per batch: the same state, label for label."""
        if not items:
            return
        learn = self.model.learn_one
        scored = learned = 0
        try:
            if self.task.kind == "regression":
                ups = [m.update for m in self.metrics.values()]
                for x, y, served in items:
                    if served is not None:
                        scored += 1
                        s = served.get("score", 0.0)
                        for u in ups:
                            u(y, s)
                    learn(x, y)
                    learned += 1
            else:
                update = self._cached_updater()
                for x, y, served in items:
                    if served is not None:
                        scored += 1
                        update(y, served)
                    learn(x, y)
                    learned += 1
        finally:  # counted as they happen, written once (a model that raises keeps the count right)
            self.scored_labels += scored
            self.labels_learned += learned

    def _cached_updater(self) -> Callable[[Any, dict[str, Any]], None]:
        """:meth:`_class_metrics_updater`, built once and kept while the metric objects and the
        task it was built for are the ones this learner has (batches of a label or two would
        otherwise build it per label). It holds no state of its own that results depend on."""
        ms = self.metrics
        cached = self.__dict__.get("_updater")
        if cached is not None and cached[0] is ms and cached[1] is self.task \
                and cached[2] == tuple(ms.items()):
            return cached[3]
        update = self._class_metrics_updater()
        self.__dict__["_updater"] = (ms, self.task, tuple(ms.items()), update)
        return update

    def _class_metrics_updater(self) -> Callable[[Any, dict[str, Any]], None]:
        """``_update_class_metrics`` with the metrics sorted by what they take, once per batch
        (each metric is its own object: the order they are updated in changes nothing)."""
        with_pred, with_some_pred, with_proba = [], [], []
        positive = self.task.positive
        multiclass = self.task.kind == "multiclass"
        # River's own Accuracy and LogLoss are updated here, inline: their exact arithmetic
        # without ~7 calls per label (the same objects, so checkpoints are unchanged)
        accs: list[Any] = []  # plain Accuracy metrics (their confusion matrix read per label)
        losses: list[Any] = []  # plain LogLoss metrics' running means
        for name, m in self.metrics.items():
            if name == "accuracy":
                if _INLINE_RIVER and type(m) is metrics.Accuracy:
                    accs.append(m)
                else:
                    with_pred.append(m.update)
            elif name == "macro_f1":
                with_some_pred.append(m.update)
            elif _INLINE_RIVER and not multiclass and type(m) is metrics.LogLoss \
                    and type(m.__dict__.get("_mean")) is stats.Mean:
                losses.append(m._mean)
            else:
                with_proba.append(m.update)
        keys: dict[tuple[str, type], Any] = {}  # a served class name in the label's type
        # the served class names (all str, in order) -> the same names in the label's type
        names: dict[tuple[tuple[str, ...], type], tuple[Any, ...]] = {}

        def update(y: Any, served: dict[str, Any]) -> None:
            probas = served.get("proba")
            proba: dict[Any, float] | None = None
            if probas:
                ty = type(y)
                ck = names.get((tuple(probas), ty))
                if ck is not None:  # the loop below, as it went for these names before
                    proba = dict(zip(ck, probas.values()))
                elif ty in _CACHEABLE:
                    proba = {}
                    for k, v in probas.items():
                        if type(k) is str:
                            ck = keys.get((k, ty), keys)
                            if ck is keys:
                                ck = keys[(k, ty)] = _same_type(k, y)
                            proba[ck] = v
                        else:
                            proba[_same_type(k, y)] = v
                    if len(names) < 64 and all(type(k) is str for k in probas):
                        names[(tuple(probas), ty)] = tuple(keys[(k, ty)] for k in probas)
                else:
                    proba = _proba_from_served(served, y)
            pred = served.get("pred")
            if pred is not None and type(pred) is not type(y):
                pred = _same_type(pred, y)
            for u in with_pred:
                u(y, pred)
            for m in accs:
                cm = m.cm
                if type(cm) is not metrics.ConfusionMatrix:  # a replaced matrix: River's code
                    m.update(y, pred)
                    continue
                # ConfusionMatrix.update(y, pred, w=1.0), as Accuracy.update calls it
                cm.n_samples += 1
                cm.data[y][pred] += 1.0
                cm.total_weight += 1.0
                cm.sum_row[y] += 1.0
                cm.sum_col[pred] += 1.0
                if y == pred:
                    cm._total_true_positives += 1.0
            if pred is not None:
                for u in with_some_pred:
                    u(y, pred)
            if proba is not None and losses:
                # LogLoss.update(y_true, {True: p}): MeanMetric.update(w=1.0) of its _eval
                if positive is not None:
                    yt, p = y == positive, proba.get(positive, 0.0)
                else:
                    yt, p = y, proba.get(True, 0.0)
                p = max(min(p, _P_MAX), _P_MIN)  # River's _clamp_proba
                loss = -math.log(p) if yt else -math.log(1 - p)
                for mean in losses:
                    mean.n += 1.0
                    mean._mean += (1.0 / mean.n) * (loss - mean._mean)
            if proba is not None and with_proba:
                if positive is not None:
                    for u in with_proba:
                        u(y == positive, {True: proba.get(positive, 0.0)})
                elif multiclass and y not in proba:
                    for u in with_proba:
                        u(y, {**proba, y: 0.0})
                else:
                    for u in with_proba:
                        u(y, proba)

        return update

    def _update_class_metrics(self, y: Any, served: dict[str, Any]) -> None:
        proba = _proba_from_served(served, y)
        pred = _same_type(served.get("pred"), y)
        positive = self.task.positive
        for name, m in self.metrics.items():
            if name == "accuracy":
                m.update(y, pred)
            elif name == "macro_f1":
                # an untrained model predicts nothing; a None "class" would sit in the macro
                # average (F1 0) for good, so such labels count for accuracy only
                if pred is not None:
                    m.update(y, pred)
            elif proba is not None:
                if positive is not None:  # River's binary metrics score the class True
                    m.update(y == positive, {True: proba.get(positive, 0.0)})
                elif self.task.kind == "multiclass" and y not in proba:
                    # River's cross-entropy skips a class absent from the dict (loss 0): it got 0
                    m.update(y, {**proba, y: 0.0})
                else:
                    m.update(y, proba)

    def metric_values(self) -> dict[str, float]:
        return {k: float(m.get()) for k, m in self.metrics.items()}

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "version": self.version, "model": self.model,
                "labels_learned": self.labels_learned, "metrics": self.metrics, "scored_labels": self.scored_labels,
                "task": self.task}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Learner:
        return cls(**state)


def _fast_metrics(ms: dict[str, Any]) -> None:
    """River ROCAUCs (a checkpoint's, a caller's) continue as FastROCAUC: same state, same numbers."""
    for k, m in ms.items():
        ms[k] = fast_rocauc(m)


# River's updates that the learner's per-label updater inlines: only while they are the code
# it copies (a River that changes them is called as it is)
_INLINE_RIVER = (metrics.Accuracy.update is metrics.base.ClassificationMetric.update
                 and metrics.LogLoss.update is metrics.base.MeanMetric.update
                 and metrics.LogLoss._clamp_proba is metrics.base.ClassificationMetric._clamp_proba
                 and stats.Mean.update.__qualname__ == "Mean.update")
_P_MIN, _P_MAX = 1e-15, 1 - 1e-15  # River's _clamp_proba bounds

# label types whose conversion of a served class name (a str) depends on the name alone
_CACHEABLE = frozenset((bool, int, str))


def _same_type(pred: Any, y: Any) -> Any:
    # JSON round trips turn a predicted True into true/"True"; compare in the label's type.
    if pred is None or type(pred) is type(y):
        return pred
    if isinstance(y, bool):
        return pred in (True, 1, "True", "true", "1")
    try:
        return type(y)(pred)
    except (TypeError, ValueError):
        return pred


def _proba_from_served(served: dict[str, Any], y: Any) -> dict[Any, float] | None:
    probas = served.get("proba")
    if not probas:
        return None
    out: dict[Any, float] = {}
    for k, v in probas.items():
        out[_same_type(k, y)] = v
    return out
