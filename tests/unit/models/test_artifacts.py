"""Persistent data survives code moves: artifacts pickled before a class moved still load.

The two files under ``tests/data/`` were written on 2026-11-26 by the code as it was before
the models and replay packages were split into subpackages (``streamlearn.models.learner``,
``streamlearn.models.lifecycle``, ``streamlearn.replay.batchmodel``, ...). A checkpoint in
Redis or a version in the model registry written then must load and score the same today.
"""

from __future__ import annotations

from pathlib import Path

from streamlearn.models import artifacts
from streamlearn.models.estimators.batch import BatchClassifier
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.governance.lifecycle import Lifecycle
from streamlearn.models.modelset import ModelSet

DATA = Path(__file__).resolve().parents[2] / "data"
KEY = b"legacy-fixture-key"


def test_a_checkpoint_written_before_the_restructure_loads_and_scores_the_same():
    state = artifacts.load((DATA / "checkpoint-2026-11-26.bin").read_bytes(), KEY)
    models, lifecycle = state["models"], state["lifecycle"]
    assert isinstance(models, ModelSet) and isinstance(lifecycle, Lifecycle)
    champion = models.champion_learner
    assert isinstance(champion, Learner) and champion.spec == "logreg" and champion.labels_learned == 371
    assert champion.predict({"amount": 12.0, "ent_count": 3.0}).score == 0.24378715631999603
    assert sorted(lr.spec for lr in models.learners.values()) == ["logreg", "nb"]


def test_a_batch_model_registered_before_the_restructure_loads_and_scores_the_same():
    model = artifacts.load((DATA / "batchmodel-2026-11-26.bin").read_bytes(), KEY)
    assert isinstance(model, BatchClassifier)
    assert model.predict_proba_one({"amount": 3.0})[True] == 0.8080539778236905


def test_every_moved_module_is_importable_and_still_defines_what_it_did():
    import importlib

    for old, new in artifacts.MOVED_MODULES.items():
        assert importlib.import_module(new), (old, new)
