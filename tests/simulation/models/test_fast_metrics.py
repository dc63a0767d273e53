"""FastROCAUC equals River's ROCAUC over a whole stream served and learned by the online loop
(pure, no broker). Equality on random and edge-case streams: tests/unit/models/test_fast_metrics.py."""

from __future__ import annotations

import pickle

from river import metrics

from streamlearn.models.estimators.fast_metrics import FastROCAUC
from tests.unit.models.test_fast_metrics import _state


def test_learner_metrics_equal_the_plain_river_path_on_the_cards_stream():
    import asyncio

    from streamlearn import datasets
    from streamlearn.replay.backtest.inprocess import memory_models_loop, run_stream

    stream = list(datasets.arrival_order(datasets.cards(6000, seed=11, n_cards=300)))
    loop = memory_models_loop("entity_v1", ["logreg", "nb"])
    # the old path beside the new in each learner: River's own ROCAUC gets every label the
    # FastROCAUC gets, by the same per-label updater (one loop, not a second identical one)
    for lr in loop.models.learners.values():
        assert type(lr.metrics["roc_auc"]) is FastROCAUC
        lr.metrics["river_roc_auc"] = metrics.ROCAUC()
    checked = 0
    for i in range(0, len(stream), 1500):  # the same labels, compared batch after batch
        asyncio.run(run_stream(loop, stream[i:i + 1500]))
        for lr in loop.models.learners.values():
            values = lr.metric_values()
            assert values["roc_auc"] == values["river_roc_auc"]
            checked += 1
    assert loop.champion.scored_labels > 1000 and checked >= 8
    for lr in loop.models.learners.values():
        fast, river = lr.metrics["roc_auc"], lr.metrics["river_roc_auc"]
        assert type(fast) is FastROCAUC and type(river) is metrics.ROCAUC
        assert _state(fast) == _state(river) and pickle.dumps(fast) == pickle.dumps(river)
    # a checkpoint round trip continues with the same numbers
    again = pickle.loads(pickle.dumps(loop.champion))
    assert type(again.metrics["roc_auc"]) is FastROCAUC
    assert again.metric_values()["roc_auc"] == loop.champion.metrics["river_roc_auc"].get()
