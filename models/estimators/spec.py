"""Model specs: a short, persistent name -> a fresh River estimator.

Specs are names, not pickles, so a spec recorded with a run rebuilds the same model
later (backtests, retraining, registry lineage). Every estimator is seeded: the same
spec on the same stream gives the same predictions, which replay relies on.

>>> model = build_model("logreg")
>>> model.learn_one({"x": 1.0}, True)
>>> 0.0 < model.predict_proba_one({"x": 1.0})[True] < 1.0
True
"""

from __future__ import annotations

from collections.abc import Callable

from river import base, compose, dummy, forest, linear_model, naive_bayes, optim, preprocessing, tree

SEED = 42


def _logreg() -> base.Estimator:
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(0.05)),
    )


def _hat() -> base.Estimator:
    return tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, seed=SEED)


def _arf() -> base.Estimator:
    return forest.ARFClassifier(n_models=5, seed=SEED)


def _ht() -> base.Estimator:
    # grows but never prunes: cannot unlearn an old concept (the case drift challengers fix)
    return tree.HoeffdingTreeClassifier(grace_period=100)


def _nb() -> base.Estimator:
    return naive_bayes.GaussianNB()


def _prior() -> base.Estimator:
    # predicts the class frequencies: the floor any real model must beat
    return dummy.PriorClassifier()


def _linreg() -> base.Estimator:
    return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())


SPECS: dict[str, Callable[[], base.Estimator]] = {
    "logreg": _logreg,
    "hat": _hat,
    "arf": _arf,
    "ht": _ht,
    "nb": _nb,
    "prior": _prior,
    "linreg": _linreg,
}


def build_model(spec: str) -> base.Estimator:
    try:
        return SPECS[spec]()
    except KeyError:
        raise ValueError(f"unknown model spec {spec!r}; known: {sorted(SPECS)}") from None


def is_classifier(model: base.Estimator) -> bool:
    # River pipelines report the type of their last step.
    return isinstance(model, base.Classifier)
