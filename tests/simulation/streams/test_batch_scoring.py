"""A batch challenger (scikit-learn) scores a backlog's batch in one call: over a whole stream,
the same predictions, bit for bit, as event by event (pure, no broker). Rows in one call:
tests/unit/streams/test_batch_scoring.py."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from streamlearn import datasets
from streamlearn.featurestore.definitions import as_view
from streamlearn.models.estimators.batch import BatchClassifier
from streamlearn.replay.backtest.inprocess import memory_models_loop, run_stream


class _Counting(BatchClassifier):
    calls: list[int] = []

    def predict_proba_rows(self, xs: list[dict[str, float]]) -> list[dict[Any, float]]:
        _Counting.calls.append(len(xs))
        return super().predict_proba_rows(xs)


def _flat(preds: list[Any]) -> list[tuple[Any, ...]]:
    return [(q.event_id, q.model_version, q.labels_learned, q.score, q.predicted, q.probabilities)
            for p in preds for q in (p, *p.shadows)]


def test_a_batch_challenger_scores_a_batch_in_one_call_with_event_by_event_results() -> None:
    stream = list(datasets.arrival_order(datasets.cards(1500, seed=4, n_cards=100)))
    view = as_view("entity_v1")
    # an hgb model over the view's own features, trained on the first events' features
    states: dict[str, Any] = {}
    xs = []
    for kind, ev in stream[:2000]:
        if kind == "event":
            x, states[ev["entity"]] = view.compute(ev, states.get(ev["entity"]))
            xs.append(x)
    names = sorted({k for x in xs for k in x})
    X = np.array([[x.get(k, 0.0) for k in names] for x in xs])
    y = X[:, names.index(names[0])] > np.median(X[:, names.index(names[0])])
    est = HistGradientBoostingClassifier(max_iter=20).fit(X, y)

    def run(batch: int) -> list[Any]:
        loop = memory_models_loop("entity_v1", ["logreg"])
        loop.models.add_challenger("batch:test", "test", model=_Counting(est, None, names))
        return _flat(asyncio.run(run_stream(loop, stream, batch)))

    _Counting.calls = []
    one_by_one = run(1)
    assert _Counting.calls == []  # a batch of one: predict_proba_one
    _Counting.calls = []
    batched = run(500)
    assert max(_Counting.calls) > 100  # backlog-sized batches went to scikit-learn at once
    assert batched == one_by_one and len(batched) == 2 * sum(1 for k, _ in stream if k == "event")
