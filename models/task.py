"""The prediction task: binary, multiclass or regression, and everything that depends on it.

A :class:`Task` decides, for one model name:

* the progressive-validation **metrics** (River metrics): binary accuracy, ROC AUC, log
  loss (as always); multiclass accuracy, macro-F1, log loss (cross-entropy); regression
  MAE, RMSE, R²;
* the **gate's paired loss** per event, bounded as the gate's confidence sequence needs
  (:func:`~streamlearn.models.gate.loss_bound`): Brier for classification, a clipped,
  label-scaled absolute error for regression (``scaled_abs``, see :class:`LabelScale`);
* the **error signal** the concept-drift detectors watch: 0/1 for every task;
* which **labels** are valid (:meth:`Task.check_label`, for dead-lettering) and which
  **estimators** fit (:meth:`Task.check_model`).

An explicit task (project config) is authoritative; without one it is inferred from the
estimator (:func:`infer_task`): a River regressor is a regression, a classifier binary,
as streamlearn always treated it (multiclass must be declared: most River classifiers
handle both, so the estimator cannot tell).

>>> t = Task("multiclass", classes=("cat", "dog", "eel"))
>>> t.check_label("dog")
'dog'
>>> t.check_label("cow")
Traceback (most recent call last):
...
ValueError: label 'cow' is not one of the declared classes ['cat', 'dog', 'eel']
>>> sorted(Task("regression").metrics())
['mae', 'r2', 'rmse']
>>> Task("regression").check_label(True)
Traceback (most recent call last):
...
ValueError: regression label must be a finite number, got bool True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from river import base, metrics

from streamlearn.models.estimators.fast_metrics import FastROCAUC
from streamlearn.models.governance.gate import GateConfig, event_loss, is_hit, loss_bound

TaskKind = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
CLASSIFICATION_LOSSES: tuple[str, ...] = ("brier", "log", "zero_one")
REGRESSION_LOSSES: tuple[str, ...] = ("scaled_abs", "abs", "squared")


class MacroF1(metrics.MacroF1):
    """River's macro-F1 summed over the classes in a fixed (sorted) order. River iterates a
    set of classes, so the float sum's last bit followed the process's string-hash seed, and
    a backtest in another process could differ from the live value by one ulp."""

    def get(self) -> float:
        total, b2 = 0.0, self.beta**2
        classes = sorted(self.cm.classes, key=lambda c: (type(c).__name__, str(c)))
        for c in classes:
            p = self.cm[c][c] / self.cm.sum_col[c] if self.cm.sum_col[c] else 0.0
            r = self.cm[c][c] / self.cm.sum_row[c] if self.cm.sum_row[c] else 0.0
            if b2 * p + r:
                total += (1 + b2) * p * r / (b2 * p + r)
        return total / len(classes) if classes else 0.0


@dataclass(frozen=True)
class Task:
    """What is predicted. ``classes`` (optional) declares the label set; for binary it is
    ``(negative, positive)`` and ``positive`` (default: the second) is the class whose
    probability is the served score."""

    kind: TaskKind = "binary"
    classes: tuple[Any, ...] | None = None
    positive: Any = None

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise ValueError(f"unknown task {self.kind!r}; known: {list(TASKS)}")
        if self.classes is not None:
            classes = tuple(self.classes)
            object.__setattr__(self, "classes", classes)
            if self.kind == "regression":
                raise ValueError("a regression task has no classes")
            if len(set(classes)) != len(classes) or any(isinstance(c, float) for c in classes):
                raise ValueError(f"task classes must be distinct str/int/bool values, got {list(classes)}")
            if self.kind == "binary" and len(classes) != 2:
                raise ValueError(f"a binary task declares two classes (negative, positive), got {list(classes)}")
            if self.kind == "multiclass" and len(classes) < 2:
                raise ValueError(f"a multiclass task declares at least two classes, got {list(classes)}")
        if self.positive is not None:
            if self.kind != "binary":
                raise ValueError("only a binary task has a positive class")
            if self.classes is not None and self.positive not in self.classes:
                raise ValueError(f"positive class {self.positive!r} is not one of {list(self.classes)}")
        elif self.kind == "binary" and self.classes is not None:
            object.__setattr__(self, "positive", self.classes[1])

    # ------------------------------------------------------------------ config
    @classmethod
    def parse(cls, value: Task | str | Mapping[str, Any] | None) -> Task:
        """A task from config: ``"multiclass"`` or ``{"kind": ..., "classes": [...], "positive": ...}``."""
        if value is None:
            return BINARY
        if isinstance(value, Task):
            return value
        if isinstance(value, str):
            return cls(value)  # type: ignore[arg-type]
        if isinstance(value, Mapping):
            unknown = set(value) - {"kind", "classes", "positive"}
            if unknown:
                raise ValueError(f"unknown task key(s) {sorted(unknown)}; known: ['classes', 'kind', 'positive']")
            classes = value.get("classes")
            if classes is not None and (isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__")):
                raise ValueError(f"task classes must be a list, got {classes!r}")
            return cls(value.get("kind", "binary"), None if classes is None else tuple(classes), value.get("positive"))
        raise ValueError(f"a task is a name {list(TASKS)} or a table with kind/classes/positive, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.positive is not None:
            out["positive"] = self.positive
        return out

    def __str__(self) -> str:
        return self.kind

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> dict[str, metrics.base.Metric]:
        """Fresh progressive-validation metrics (names are stable: reports and panels use them)."""
        if self.kind == "binary":
            # FastROCAUC: River's ROCAUC, same numbers and pickles, a fraction of the per-label cost
            return {"accuracy": metrics.Accuracy(), "roc_auc": FastROCAUC(), "log_loss": metrics.LogLoss()}
        if self.kind == "multiclass":
            return {"accuracy": metrics.Accuracy(), "macro_f1": MacroF1(), "log_loss": metrics.CrossEntropy()}
        return {"mae": metrics.MAE(), "rmse": metrics.RMSE(), "r2": metrics.R2()}

    # ------------------------------------------------------------------ labels and models
    def check_label(self, y: Any) -> Any:
        """The label as the model should learn it, or ValueError with a one-line reason."""
        if type(y) is bool and self.kind == "binary" and self.classes is None:
            return y  # the common case, per label: what the checks below return for it
        if self.kind == "regression":
            if isinstance(y, (bool, np.bool_)) or not isinstance(y, numbers.Real):
                raise ValueError(f"regression label must be a finite number, got {type(y).__name__} {y!r}")
            v = float(y)
            if not math.isfinite(v):
                raise ValueError(f"regression label must be a finite number, got {v!r}")
            return v
        if self.classes is not None:
            y = y.item() if isinstance(y, np.generic) else y
            # the type must match too: True is not the class 1, "1" is not 1
            for c in self.classes:
                if type(c) is type(y) and c == y:
                    return c
            raise ValueError(f"label {y!r} is not one of the declared classes {list(self.classes)}")
        if self.kind == "binary":
            if isinstance(y, (bool, np.bool_)):
                return bool(y)
            if isinstance(y, numbers.Integral) and int(y) in (0, 1):
                return int(y)
            raise ValueError(f"binary label must be a bool or 0/1 (or declare two classes), got {type(y).__name__} "
                             f"{y!r}")
        if isinstance(y, (bool, np.bool_)) or not isinstance(y, (str, numbers.Integral)):
            raise ValueError(f"multiclass label must be a str or an int, got {type(y).__name__} {y!r}")
        return int(y) if isinstance(y, numbers.Integral) else y

    def check_model(self, model: base.Estimator) -> None:
        """ValueError if ``model`` cannot do this task (checked when a learner is built)."""
        if self.kind == "regression":
            if not isinstance(model, base.Regressor):
                raise ValueError(f"a regression task needs a River regressor, got {type(model).__name__}")
            return
        if not isinstance(model, base.Classifier):
            raise ValueError(f"a {self.kind} task needs a River classifier, got {type(model).__name__}")
        if self.kind == "multiclass" and not getattr(model, "_multiclass", False):
            raise ValueError(f"{type(model).__name__} is binary-only; wrap it for a multiclass task, e.g. "
                             "river.multiclass.OneVsRestClassifier(...)")

    # ------------------------------------------------------------------ gate
    @property
    def losses(self) -> tuple[str, ...]:
        return REGRESSION_LOSSES if self.kind == "regression" else CLASSIFICATION_LOSSES

    @property
    def default_loss(self) -> str:
        return "scaled_abs" if self.kind == "regression" else "brier"

    def check_loss(self, kind: str) -> str:
        if kind not in self.losses:
            raise ValueError(f"gate loss {kind!r} does not fit a {self.kind} task; use one of {list(self.losses)}")
        return kind

    def gate_config(self, base_config: GateConfig | None = None, **overrides: Any) -> GateConfig:
        """Gate settings for this task from ``base_config`` (the settings') and ``overrides``.

        Regression has no accuracy, so its floor is on the loss: mean ``scaled_abs`` at most
        0.5 (typical error within 1.5 label spreads: refuses only garbage). A regression
        config still carrying the classification defaults (loss ``brier``, accuracy floor)
        gets these; any other loss that does not fit the task is refused.
        """
        from dataclasses import replace

        cfg = replace(base_config or GateConfig(), **overrides)
        if self.kind == "regression" and cfg.loss == "brier" and "loss" not in overrides:
            cfg = replace(cfg, loss="scaled_abs")
        if self.kind == "regression" and cfg.floor_metric == "accuracy":
            if "floor_metric" in overrides:
                raise ValueError("a regression task has no accuracy: use floor_metric='loss'")
            floor = 0.5 if cfg.loss == "scaled_abs" else loss_bound(cfg.loss, cfg.eps, cfg.scale)
            cfg = replace(cfg, floor_metric="loss", floor=floor)
        self.check_loss(cfg.loss)
        return cfg


BINARY = Task("binary")


def infer_task(model: base.Estimator) -> Task:
    """The task an estimator implies when none is declared (multiclass must be declared)."""
    if isinstance(model, base.Regressor):
        return Task("regression")
    if isinstance(model, base.Classifier):
        return BINARY
    raise ValueError(f"{type(model).__name__} is neither a River classifier nor a regressor")


# ---------------------------------------------------------------------- regression scale
@dataclass
class LabelScale:
    """A robust spread of the labels seen so far: IQR / 1.349 (a normal's standard deviation).

    Why: a regression error has no natural bound, but the gate's confidence sequence needs
    one. Errors are divided by the label's spread and clipped (``scaled_abs``: at
    :data:`~streamlearn.models.gate.CLIP_SPREADS` spreads), so the loss is unit-free, in [0, 1], and a few outlier
    labels cannot dominate (the IQR ignores them, unlike a standard deviation).

    Both models' losses on an event use the same value, computed only from *earlier*
    labels (predictable), so a paired difference still has mean zero when the models are
    equally good: the gate's guarantee holds while the scale moves. It is recomputed
    exactly (numpy quantiles) when the label count reaches 2, 4, 8, ... ``window`` and then
    every ``window`` labels from the last ``window``: cheap (amortised O(1)), a pure
    function of the label order (so a replay reproduces it), follows a drifting label
    range with a lag of one window, and can be vectorised for ``gate-eval``.
    Zero spread (e.g. mostly-zero labels) falls back to the standard deviation, then to
    the previous value, then to 1.0 (label units).

    >>> s = LabelScale(window=8)
    >>> for y in [1.0, 2.0, 3.0, 4.0]:
    ...     s.update(y)
    >>> round(s.value, 4)  # IQR of 1..4 is 1.5
    1.1119
    """

    window: int = 1024
    value: float = 1.0
    n: int = 0
    buffer: list[float] = field(default_factory=list)

    def update(self, y: float) -> None:
        self.n += 1
        self.buffer.append(float(y))
        if self.n <= self.window:
            if self.n >= 2 and self.n & (self.n - 1) == 0 or self.n == self.window:
                self.value = robust_spread(np.asarray(self.buffer), self.value)
                if self.n == self.window:
                    self.buffer = []
        elif len(self.buffer) >= self.window:
            self.value = robust_spread(np.asarray(self.buffer), self.value)
            self.buffer = []


def robust_spread(labels: np.ndarray, previous: float = 1.0) -> float:
    """IQR / 1.349 along the last axis; zero -> standard deviation -> ``previous``."""
    q25, q75 = np.quantile(labels, [0.25, 0.75], axis=-1)
    iqr = (q75 - q25) / 1.349
    std = labels.std(axis=-1)
    return np.where(iqr > 0, iqr, np.where(std > 0, std, previous)) if np.ndim(iqr) else (
        float(iqr) if iqr > 0 else float(std) if std > 0 else float(previous))


def scale_schedule(labels: np.ndarray, window: int = 1024, fallback: float = 1.0) -> np.ndarray:
    """:class:`LabelScale`'s value *before* each label, vectorised over rows: shape of ``labels``."""
    labels = np.atleast_2d(np.asarray(labels, dtype=float))
    runs, horizon = labels.shape
    out = np.empty_like(labels)
    current = np.full(runs, fallback)
    points = sorted({n for n in (2 ** k for k in range(1, 63)) if n <= window} | {window}
                    | set(range(2 * window, horizon + 1, window)))
    start = 0
    for n in points:
        if n > horizon:
            break
        out[:, start:n] = current[:, None]
        lo = 0 if n <= window else n - window
        current = robust_spread(labels[:, lo:n], current)
        start = n
    out[:, start:] = current[:, None]
    return out


# ---------------------------------------------------------------------- per-event scoring
class TaskScorer:
    """Per-label loss, hit and drift error of a served prediction, for one task.

    One per lifecycle (its state pickles with it): call :meth:`loss`/:meth:`hit`/
    :meth:`error` for every model's prediction of a label, then :meth:`observe` the label
    once. Binary gives exactly the numbers the gate always used.
    """

    def __init__(self, task: Task | None = None, gate: GateConfig | None = None) -> None:
        self.task = task or BINARY
        self.gate = gate or GateConfig()
        self.scale = LabelScale()

    def loss(self, y: Any, pred: Mapping[str, Any]) -> float:
        g, kind = self.gate, self.task.kind
        if kind == "binary":
            return event_loss(g.loss, y, pred.get("proba") or None, pred.get("pred"), g.eps, g.scale)
        if kind == "multiclass":
            proba = pred.get("proba") or self._uniform()
            if not proba:  # nothing learned and no declared classes: the true class got 0
                return {"brier": 1.0, "zero_one": 1.0}.get(g.loss, -math.log(g.eps))
            return event_loss(g.loss, y, proba, pred.get("pred"), g.eps, g.scale)
        predicted = pred.get("score") if pred.get("pred") is None else pred.get("pred")
        scale = self.scale.value if g.loss == "scaled_abs" else g.scale
        return event_loss(g.loss, y, None, predicted, g.eps, scale)

    def hit(self, y: Any, pred: Mapping[str, Any]) -> bool | None:
        """Right or wrong (classification); None for regression (its floor is on the loss)."""
        return None if self.task.kind == "regression" else is_hit(y, pred.get("pred"))

    def error(self, y: Any, pred: Mapping[str, Any]) -> float:
        """The concept-drift detectors' stream: 1.0 = a miss.

        0/1 for every task, because every configured detector takes it (DDM accepts only
        0/1) and their defaults are tuned on error *rates*. For regression a miss is an
        error larger than one label spread (:class:`LabelScale`): a fixed yardstick in
        label units, so errors that grow after a change raise the rate ADWIN watches.
        """
        if self.task.kind != "regression":
            return 0.0 if is_hit(y, pred.get("pred")) else 1.0
        predicted = pred.get("score") if pred.get("pred") is None else pred.get("pred")
        return 1.0 if abs(float(predicted or 0.0) - float(y)) > self.scale.value else 0.0

    def bias_pair(self, y: Any, pred: Mapping[str, Any]) -> tuple[float, float] | None:
        """(score, label) for the bias monitor, in comparable units; None when meaningless.

        Binary: P(positive) vs 1/0. Regression: estimate and label in label spreads, so the
        monitor's threshold means the same for any unit. Multiclass: no single score.
        """
        score = float(pred.get("score") or 0.0)
        if self.task.kind == "multiclass":
            return None
        if self.task.kind == "regression":
            return score / self.scale.value, float(y) / self.scale.value
        if self.task.positive is not None:
            return score, float(y == self.task.positive)
        return (score, float(y)) if isinstance(y, (bool, int, float)) else None

    def observe(self, y: Any) -> None:
        """After every model's loss for this label: the scale learns the label."""
        if self.task.kind == "regression":
            self.scale.update(float(y))

    def _uniform(self) -> dict[str, float]:
        classes = self.task.classes or ()
        return {str(c): 1.0 / len(classes) for c in classes}
