"""A named, versioned online model with its progressive-validation metrics.

The learner is what gets checkpointed: model, metrics and the label counter travel
together in one signed snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from river import base, metrics

from streamlearn.models.estimators.spec import build_model, is_classifier


@dataclass
class Scored:
    score: float
    predicted: Any
    probabilities: dict[str, float]


def _metric_set(classifier: bool) -> dict[str, metrics.base.Metric]:
    if classifier:
        return {"accuracy": metrics.Accuracy(), "roc_auc": metrics.ROCAUC(), "log_loss": metrics.LogLoss()}
    return {"mae": metrics.MAE(), "rmse": metrics.RMSE()}


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

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = build_model(self.spec)
        self.classifier = is_classifier(self.model)
        if not self.metrics:
            self.metrics = _metric_set(self.classifier)

    def predict(self, x: dict[str, float]) -> Scored:
        if self.classifier:
            proba = self.model.predict_proba_one(x)
            if not proba:
                return Scored(0.0, None, {})
            predicted = max(proba, key=proba.get)
            score = proba.get(True, proba.get(1, proba[predicted]))
            return Scored(float(score), predicted, {str(k): float(v) for k, v in proba.items()})
        y = self.model.predict_one(x)
        return Scored(float(y or 0.0), float(y or 0.0), {})

    def learn(self, x: dict[str, float], y: Any, served: dict[str, Any] | None = None) -> None:
        """Learn one label; ``served`` is the prediction published for it (progressive validation)."""
        if served is not None:
            self.scored_labels += 1
            if self.classifier:
                proba = _proba_from_served(served, y)
                pred = served.get("pred")
                for name, m in self.metrics.items():
                    if name == "accuracy":
                        m.update(y, _same_type(pred, y))
                    elif proba is not None:
                        m.update(y, proba)
            else:
                for m in self.metrics.values():
                    m.update(y, served.get("score", 0.0))
        self.model.learn_one(x, y)
        self.labels_learned += 1

    def metric_values(self) -> dict[str, float]:
        return {k: float(m.get()) for k, m in self.metrics.items()}

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "version": self.version, "model": self.model,
                "labels_learned": self.labels_learned, "metrics": self.metrics, "scored_labels": self.scored_labels}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Learner:
        return cls(**state)


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
