"""The loop's status: counters, online metrics and models, as the status key and /models show them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamlearn.streams.loop.core import OnlineLoop


def status(loop: OnlineLoop, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    champion, models = loop.champion, loop.models
    out = {
        "model_name": champion.name, "model_spec": champion.spec,
        "model_version": champion.version, "labels_learned": champion.labels_learned,
        "metrics": champion.metric_values(), "counters": loop.counters.as_dict(),
        "models": [
            {"version": v, "spec": lr.spec, "stage": models.stage(v),
             "labels_learned": lr.labels_learned, "scored_labels": lr.scored_labels,
             "metrics": lr.metric_values()}
            for v, lr in sorted(models.learners.items())
        ],
        "canary": dict(models.canary.__dict__) if models.canary else None,
        "history": models.history[-50:],
        "updated_at": loop.clock(),
    }
    out.update(extra or {})
    return out
