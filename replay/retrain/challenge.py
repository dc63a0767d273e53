"""A challenger against the champion on archived history, through the promotion gate.

Both models go into one :class:`~streamlearn.models.modelset.ModelSet` (champion +
shadow challenger) in an :class:`~streamlearn.streams.loop.OnlineLoop`, exactly as a
worker runs them; the archive is replayed with labels joined by arrival; every label of
an event in ``[start, end)`` gives a paired loss to
:class:`~streamlearn.models.governance.gate.PromotionGate`. The result is the gate's decision, the
same rule the lifecycle applies online. (Wiring the retrainer's output into a running
worker's ModelSet is the lifecycle integration's job; this is the offline half.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from streamlearn.featurestore.backend import MemoryBackend
from streamlearn.featurestore.definitions import get_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.governance.gate import GateConfig, GateDecision, PromotionGate, event_loss, is_hit
from streamlearn.models.modelset import ModelSet
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.backtest.plan import plan_arrival
from streamlearn.streams.loop import OnlineLoop


def gate_on_archive(
    archive: Archive,
    champion: tuple[str, Any],
    challenger: tuple[str, Any],
    *,
    view: str = "entity_v1",
    start: int | None = None,
    end: int | None = None,
    config: GateConfig | None = None,
) -> GateDecision:
    """``champion``/``challenger``: (spec, River-compatible model). Events before ``start``
    are replayed too (entity state needs its history) but do not count."""
    cfg = config or GateConfig()
    models = ModelSet("challenge", {1: Learner("challenge", champion[0], version=1, model=champion[1])}, champion=1)
    v = models.add_challenger(challenger[0], "offline challenge", model=challenger[1])
    gate = PromotionGate(cfg)

    def on_learn(eid: str, y: Any, rec: dict[str, Any]) -> None:
        if start is not None and rec["t"] < start:
            return
        served = [rec["m"][str(k)] for k in (1, v)]
        losses = [event_loss(cfg.loss, y, s["proba"], s["pred"], cfg.eps, cfg.scale) for s in served]
        gate.update(losses[0], losses[1], is_hit(y, served[0]["pred"]), is_hit(y, served[1]["pred"]))

    loop = OnlineLoop(get_view(view), models, MemoryBackend(keep_objects=True), Keys("challenge", "challenge"),
                      artifact_key=b"in-process", on_learn=on_learn)
    plan = plan_arrival(archive, None, end, task=models.champion_learner.task)  # the worker's label check

    async def run() -> None:
        for step in plan.steps:
            if step.kind == "score":
                await loop.score_batch(step.items)
            else:
                await loop.learn_batch(step.items)

    asyncio.run(run())
    return gate.decision()
