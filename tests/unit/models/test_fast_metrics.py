"""FastROCAUC equals River's ROCAUC exactly: values, state, key order and pickles."""

from __future__ import annotations

import copy
import math
import pickle
import random

import numpy as np
from river import metrics

from streamlearn.models import artifacts
from streamlearn.models.estimators.fast_metrics import FastROCAUC, fast_rocauc
from streamlearn.models.task import Task

from .test_artifacts import DATA, KEY


def _state(m: metrics.ROCAUC) -> list:
    """Every number of the matrices, with the order of their keys (River's repr hides both)."""
    return [(cm.n_samples, cm.total_weight, type(cm.total_weight), cm._total_true_positives,
             [(k, list(row.items())) for k, row in cm.data.items()], list(cm.sum_row.items()),
             list(cm.sum_col.items())) for cm in m.cms]


def _scores(rng: random.Random, n: int) -> list:
    th = metrics.ROCAUC().thresholds
    pool = [0.0, 1.0, 0.5, *th, 1 / 9, 2 / 9, math.nan, 0, 1, -0.2, 1.3]  # edges, ints, thresholds
    return [rng.choice(pool) if rng.random() < 0.3 else rng.random() for _ in range(n)]


def test_same_numbers_state_and_pickle_as_river_on_a_random_stream():
    rng = random.Random(3)
    river, fast = metrics.ROCAUC(), FastROCAUC()
    for i, p in enumerate(_scores(rng, 5000)):
        y = rng.choice([True, False, 1, 0])
        pred = {True: p, False: 1 - p} if i % 3 else p
        river.update(y, pred)
        fast.update(y, pred)
        if i % 97 == 0:
            assert fast.get() == river.get() or (math.isnan(fast.get()) and math.isnan(river.get()))
            assert _state(fast) == _state(river)
    assert fast.get() == river.get()
    assert _state(fast) == _state(river)
    # pickles are River's own, byte for byte: checkpoints keep their format
    assert pickle.dumps(fast) == pickle.dumps(river)
    loaded = pickle.loads(pickle.dumps(fast))
    assert type(loaded) is metrics.ROCAUC and loaded.get() == river.get()
    assert type(copy.deepcopy(fast)) is metrics.ROCAUC


def test_anything_the_fast_path_is_unsure_of_goes_through_river_in_order():
    river, fast = metrics.ROCAUC(), FastROCAUC()
    stream = [(True, 0.3, 1.0), (False, np.float64(0.7), 1.0), (True, 0.9, 2.5), (False, True, 1.0),
              (True, 0.95, 1.0), (False, 0.05, 0.5), (True, 0.6, 1.0)]
    for y, p, w in stream:
        river.update(y, p, w)
        fast.update(y, p, w)
        assert _state(fast) == _state(river) and fast.get() == river.get()
    river.revert(True, 0.6)
    fast.revert(True, 0.6)
    assert _state(fast) == _state(river) and fast.get() == river.get()


def test_a_river_rocauc_continues_identically_once_converted():
    rng = random.Random(5)
    scores = _scores(rng, 3000)
    labels = [rng.random() < 0.3 for _ in scores]
    river, other = metrics.ROCAUC(), metrics.ROCAUC()
    for y, p in zip(labels[:1000], scores[:1000]):
        river.update(y, {True: p})
        other.update(y, {True: p})
    fast = fast_rocauc(other)
    assert fast is other and type(fast) is FastROCAUC
    for y, p in zip(labels[1000:], scores[1000:]):
        river.update(y, {True: p})
        fast.update(y, {True: p})
    assert fast.get() == river.get() and _state(fast) == _state(river)
    # weighted state is not integer-valued: left to River
    weighted = metrics.ROCAUC()
    weighted.update(True, 0.4, 0.5)
    assert type(fast_rocauc(weighted)) is metrics.ROCAUC


def test_an_old_checkpoint_continues_identically():
    state = artifacts.load((DATA / "checkpoint-2026-11-26.bin").read_bytes(), KEY)
    champ = state["models"].champion_learner
    assert type(champ.metrics["roc_auc"]) is FastROCAUC  # converted on load
    reference = copy.deepcopy(champ.metrics["roc_auc"])  # River's own class, same state
    assert type(reference) is metrics.ROCAUC and reference.get() == champ.metrics["roc_auc"].get()
    rng = random.Random(9)
    for _ in range(2000):
        x = {"amount": rng.random() * 100, "ent_count": float(rng.randrange(20))}
        s = champ.predict(x).served()
        y = rng.random() < 0.2
        reference.update(y, {True: s["proba"].get("True", 0.0)} if s["proba"] else {})
        champ.learn(x, y, s)
    assert champ.metrics["roc_auc"].get() == reference.get()
    assert _state(champ.metrics["roc_auc"]) == _state(reference)


def test_only_binary_tasks_use_it():
    assert type(Task("binary").metrics()["roc_auc"]) is FastROCAUC
    assert "roc_auc" not in Task("regression").metrics()


def test_values_read_from_another_thread_while_learning_lose_nothing():
    # the model registry reads metric values in an executor thread while the loop learns
    import threading

    rng = random.Random(4)
    stream = [(rng.random() < 0.3, rng.random()) for _ in range(60000)]
    river, fast = metrics.ROCAUC(), FastROCAUC()
    stop = threading.Event()
    reads = []

    def reader():
        while not stop.is_set():
            reads.append(fast.get())

    th = threading.Thread(target=reader)
    th.start()
    try:
        for y, p in stream:
            fast.update(y, {True: p})
            river.update(y, {True: p})
    finally:
        stop.set()
        th.join()
    assert len(reads) > 1
    # River's get() itself adds zero entries to the matrices (defaultdict reads): the reader
    # thread called it on one of the two only, so compare the counts, not those zeros
    assert fast.get() == river.get() and _counts(fast) == _counts(river)


def _counts(m: metrics.ROCAUC) -> list:
    return [(cm.n_samples, cm.total_weight, cm._total_true_positives,
             {(r, c): v for r, row in cm.data.items() for c, v in row.items() if v},
             {k: v for k, v in cm.sum_row.items() if v}, {k: v for k, v in cm.sum_col.items() if v})
            for cm in m.cms]
