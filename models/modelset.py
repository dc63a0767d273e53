"""The models one loop runs: a champion, shadow challengers and at most one canary.

All of them score every event and learn every label, so they are always compared on
exactly the same labeled events (paired). Which one *serves* an event is decided here:
the canary for a deterministic fraction of entities (stable hash of the entity key, so
an entity does not flip between models), the champion for the rest.

>>> ms = ModelSet.fresh("fraud", "logreg")
>>> v = ms.add_challenger("hat", reason="test")
>>> sorted(ms.learners), ms.champion, ms.stage(v)
([1, 2], 1, 'shadow')
>>> ms.serving_version("card-1")
1
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from streamlearn.models.estimators.learner import Learner

HISTORY_MAX = 200  # stage changes kept in the model set (and its checkpoints)


def in_canary(entity: str, fraction: float) -> bool:
    """Stable across processes and restarts (unlike ``hash()``)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(entity.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


@dataclass
class Canary:
    version: int
    fraction: float
    previous: int  # the champion it would replace; serves the rest meanwhile
    started_at_label: int  # labels learned when the canary began


@dataclass
class ModelSet:
    name: str
    learners: dict[int, Learner]
    champion: int
    canary: Canary | None = None
    next_version: int = 2
    history: list[dict[str, Any]] = field(default_factory=list)  # stage changes, newest last

    @classmethod
    def fresh(cls, name: str, spec: str, task: Any = None) -> ModelSet:
        return cls(name=name, learners={1: Learner(name, spec, version=1, task=task)}, champion=1)

    # ------------------------------------------------------------------ queries
    @property
    def champion_learner(self) -> Learner:
        return self.learners[self.champion]

    def stage(self, version: int) -> str:
        if version == self.champion:
            return "champion"
        if self.canary is not None and version == self.canary.version:
            return "canary"
        return "shadow" if version in self.learners else "retired"

    def challengers(self) -> list[int]:
        return [v for v in self.learners if v != self.champion and (self.canary is None or v != self.canary.version)]

    def serving_version(self, entity: str) -> int:
        c = self.canary
        if c is not None and in_canary(entity, c.fraction):
            return c.version
        return self.champion

    # ------------------------------------------------------------------ changes
    def _record(self, version: int, stage: str, reason: str, **extra: Any) -> None:
        self.history.append({"version": version, "stage": stage, "reason": reason, **extra})
        if len(self.history) > HISTORY_MAX:
            # bounded: it travels in every checkpoint. The full audit trail is the registry's;
            # rollback needs only the current champion's last promotion, which is kept.
            keep = next((i for i in range(len(self.history) - 1, -1, -1)
                         if self.history[i]["stage"] == "champion" and self.history[i]["version"] == self.champion),
                        None)
            cut = len(self.history) - HISTORY_MAX
            self.history = [h for i, h in enumerate(self.history) if i >= cut or i == keep]

    def add_challenger(self, spec: str, reason: str, model: Any = None, version: int | None = None) -> int:
        """A new shadow model; ``version`` keeps a number the registry already gave it."""
        if version is not None and version in self.learners:
            raise ValueError(f"version {version} of {self.name} is already running")
        v = self.next_version if version is None else version
        self.next_version = max(self.next_version, v + 1)
        # a challenger solves the champion's task (its metrics, predictions and checks follow it)
        self.learners[v] = Learner(self.name, spec, version=v, model=model, task=self.champion_learner.task)
        self._record(v, "shadow", reason, spec=spec)
        return v

    def start_canary(self, version: int, fraction: float, reason: str) -> None:
        if version not in self.learners or version == self.champion:
            raise ValueError(f"version {version} is not a challenger of {self.name}")
        self.canary = Canary(version, fraction, self.champion, self.champion_learner.labels_learned)
        self._record(version, "canary", reason, fraction=fraction)

    def promote(self, version: int, reason: str) -> int:
        """Make ``version`` the champion; the old champion stays in shadow (for rollback)."""
        if version not in self.learners:
            raise ValueError(f"version {version} is not loaded for {self.name}")
        old = self.champion
        self.champion = version
        if self.canary is not None and self.canary.version == version:
            self.canary = None
        self._record(version, "champion", reason, previous=old)
        self._record(old, "shadow", f"replaced by v{version}")
        return old

    def rollback(self, reason: str) -> int | None:
        """End a canary, or restore the previous champion. Returns the version now serving."""
        if self.canary is not None:
            v = self.canary.version
            self.canary = None
            self._record(v, "shadow", f"canary rolled back: {reason}")
            return self.champion
        previous = next((h.get("previous") for h in reversed(self.history)
                         if h["stage"] == "champion" and h["version"] == self.champion), None)
        if previous is None or previous not in self.learners:
            return None
        self.promote(previous, f"rollback: {reason}")
        return previous

    def retire(self, version: int, reason: str) -> None:
        if version == self.champion:
            raise ValueError("cannot retire the champion; promote another version first")
        if self.canary is not None and self.canary.version == version:
            self.canary = None
        self.learners.pop(version, None)
        self._record(version, "retired", reason)
