"""A fitted scikit-learn classifier behind River's interface, for the one scoring path.

:class:`BatchClassifier` maps River's feature dict onto the training vocabulary (unknown
features are ignored, missing ones are 0, exactly as in training), applies the fitted
scaler and returns ``predict_proba`` as a ``{class: probability}`` dict. So it can sit in
a :class:`~streamlearn.models.estimators.learner.Learner` (or a ModelSet as a challenger) and be
scored, evaluated in shadow and gated like any River model.

``learn_one`` is a no-op on purpose: a batch model is frozen between retrains (the next
periodic retrain replaces it). The Learner still updates the model's progressive metrics
with every label, which is what shadow evaluation and the gate look at. (River's
``compat.SKL2RiverClassifier`` would call ``partial_fit`` per label, which neither
HistGradientBoosting nor a scaled pipeline supports.)

>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([False, False, True, True])
>>> m = BatchClassifier(LogisticRegression().fit(X, y), None, ["amount"])
>>> p = m.predict_proba_one({"amount": 3.0, "unseen": 1.0})
>>> sorted(p), p[True] > 0.5
([False, True], True)
>>> bool(np.isclose(p[True], m.estimator.predict_proba([[3.0]])[0, 1]))  # the folded fast path
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sklearn
from river import base
from threadpoolctl import ThreadpoolController

_threads: ThreadpoolController | None = None


def _one_thread() -> Any:
    """OpenMP bounded to one thread for the call (a context manager, ~15 µs). A one-row
    prediction gains nothing from threads, and a HistGradientBoosting model enters one
    OpenMP region per tree: on a busy machine each region waits on spinning threads that
    are not running (measured: 1.8-2.4 ms of CPU per event with the default pool, 0.8-1.4
    with one thread, idle machine; much worse under load). The limit is the calling
    thread's (OpenMP's thread count is per thread), so nothing else in the process is bounded."""
    global _threads
    if _threads is None:  # made once the estimator's libraries are loaded (it lists them)
        _threads = ThreadpoolController()
    return _threads.limit(limits=1, user_api="openmp")


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


class BatchClassifier(base.Classifier):
    def __init__(self, estimator: Any, scaler: Any, features: list[str], model_id: str = "") -> None:
        self.estimator = estimator
        self.scaler = scaler
        self.features = list(features)
        self.model_id = model_id
        self._index = {name: i for i, name in enumerate(self.features)}
        self._classes = [_py(c) for c in estimator.classes_]
        self._linear = self._fold_linear()

    def _fold_linear(self) -> tuple[dict[str, float], float] | None:
        """For a binary linear model (SGD log loss, logistic regression): the scaler folded into
        the weights, so one prediction is a dot product over the event's features instead of a
        sklearn call (~1 ms of input validation per row)."""
        coef = getattr(self.estimator, "coef_", None)
        if coef is None or len(self._classes) != 2 or coef.shape[0] != 1:
            return None
        if getattr(self.estimator, "loss", "log_loss") != "log_loss":
            return None  # no probabilities to fold (hinge etc.)
        w = np.asarray(coef[0], dtype=float)
        b = float(np.asarray(self.estimator.intercept_, dtype=float)[0])
        if self.scaler is not None:
            mean = getattr(self.scaler, "mean_", None)
            scale = getattr(self.scaler, "scale_", None)
            w = w / (scale if scale is not None else 1.0)
            if mean is not None:
                b -= float(np.dot(mean, w))
        return dict(zip(self.features, w.tolist())), b

    def vector(self, x: dict[str, float]) -> np.ndarray:
        return self.matrix([x])

    def matrix(self, xs: list[dict[str, float]]) -> np.ndarray:
        """The rows scikit-learn takes: each feature dict on the training vocabulary (unknown
        features ignored, missing ones 0), scaled as in training."""
        rows = np.zeros((len(xs), len(self.features)))
        index = self._index
        for r, x in enumerate(xs):
            for k, v in x.items():
                i = index.get(k)
                if i is not None:
                    rows[r, i] = v
        return self.scaler.transform(rows) if self.scaler is not None else rows

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        if self._linear is not None:
            weights, z = self._linear
            for k, v in x.items():
                z += v * weights.get(k, 0.0)
            p = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
            return {self._classes[0]: 1.0 - p, self._classes[1]: p}
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True), _one_thread():
            proba = self.estimator.predict_proba(self.vector(x))[0]
        return {c: float(p) for c, p in zip(self._classes, proba)}

    def predict_proba_rows(self, xs: list[dict[str, float]]) -> list[dict[Any, float]]:
        """:meth:`predict_proba_one` of each row, in one scikit-learn call (its input checks and
        per-tree calls once per batch, not per row: ~1 ms each for HistGradientBoosting). Each
        row's probabilities are the same bits as alone: the scaler works element by element and
        a tree ensemble predicts every row on its own."""
        if self._linear is not None:  # a dot product per row already
            return [self.predict_proba_one(x) for x in xs]
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True), _one_thread():
            proba = self.estimator.predict_proba(self.matrix(xs))
        classes = self._classes
        return [{c: float(p) for c, p in zip(classes, row)} for row in proba]

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        """Frozen between retrains (see the module docstring)."""
