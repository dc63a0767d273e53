"""A batch of events is scored model by model, a batch model (scikit-learn) in one call for
all rows: the same predictions, bit for bit, as event by event. Over a whole stream through the
loop: tests/simulation/streams/test_batch_scoring.py."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

from streamlearn.models.estimators.batch import BatchClassifier


def _rows(n: int, names: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(names))) * rng.uniform(0.5, 50, size=len(names))
    y = X[:, 0] / X[:, 0].std() - X[:, -1] / X[:, -1].std() + rng.normal(size=n) > 0
    return X, y


def test_rows_in_one_call_equal_one_at_a_time() -> None:
    names = ["a", "b", "c", "d", "e"]
    X, y = _rows(2000, names, 1)
    scaler = StandardScaler().fit(X)
    rng = np.random.default_rng(2)
    xs = []
    for row in _rows(400, names, 3)[0]:
        x = {k: float(v) for k, v in zip(names, row) if rng.random() > 0.1}  # some features missing
        x["unknown"] = 1.0  # not in the vocabulary: ignored
        xs.append(x)
    for est, sc in ((HistGradientBoostingClassifier(max_iter=30).fit(X, y), None),
                    (HistGradientBoostingClassifier(max_iter=30).fit(scaler.transform(X), y), scaler),
                    (SGDClassifier(loss="log_loss", random_state=0).fit(scaler.transform(X), y), scaler)):
        model = BatchClassifier(est, sc, names)
        assert model.predict_proba_rows(xs) == [model.predict_proba_one(x) for x in xs], type(est).__name__
