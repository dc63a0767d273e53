"""A batch model scores one row with one OpenMP thread, and scores it exactly as sklearn does."""

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_info, threadpool_limits

from streamlearn.models.estimators.batch import BatchClassifier


def _openmp_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]


class _Watching(HistGradientBoostingClassifier):
    """Notes the OpenMP thread counts in force while it predicts."""

    seen: list[list[int]] = []

    def predict_proba(self, X):  # noqa: ANN001, ANN201
        _Watching.seen.append(_openmp_threads())
        return super().predict_proba(X)


def test_one_row_is_predicted_with_one_openmp_thread_and_the_same_probabilities() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 4))
    y = X[:, 0] - X[:, 2] + rng.normal(size=600) > 0
    est = _Watching(max_iter=20).fit(X, y)  # with the pure tiers' one thread (tests/conftest.py)
    model = BatchClassifier(est, None, ["a", "b", "c", "d"])
    _Watching.seen = []
    # a pool of two threads whatever the machine or the tier's bound, so the bound is the model's
    with threadpool_limits(limits=2, user_api="openmp"):
        before = _openmp_threads()
        assert before and set(before) == {2}, "scikit-learn's OpenMP runtime is loaded, with 2 threads"
        got = [model.predict_proba_one(dict(zip("abcd", row.tolist()))) for row in X[:25]]
        assert _openmp_threads() == before  # the bound ends with the call
    for p, row in zip(got, X[:25]):
        want = HistGradientBoostingClassifier.predict_proba(est, row.reshape(1, -1))[0]
        assert [p[False], p[True]] == want.tolist()  # bit for bit, thread count aside
    assert len(_Watching.seen) == 25 and all(t and set(t) == {1} for t in _Watching.seen)
