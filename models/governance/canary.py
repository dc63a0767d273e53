"""Canary: a promoted model first serves a fraction of entities; roll back if it is worse.

Traffic is split by a stable hash of the entity key (:func:`in_canary`, the one
implementation, in :mod:`streamlearn.models.modelset`), so the canary and the old
champion serve *different* events: the comparison is two-sample, not paired. Each arm
keeps an anytime-valid bound on its mean loss (the gate's confidence sequence, at
``alpha/2`` each, so the pair holds jointly at ``alpha``):

* **during the window**, roll back as soon as the canary's loss is provably worse:
  ``LCB(canary loss) - UCB(champion loss) > threshold`` (reason ``canary_worse``); checked
  after every event, a canary as good as the champion is rolled back this way with
  probability at most ``alpha``;
* **at the end** (``window`` labeled canary events) the burden of proof flips to the
  canary: roll back if its mean loss exceeds the champion's by more than ``threshold``
  (``canary_worse_at_end``) or it fails the gate's quality floor (``below_floor``),
  otherwise it becomes champion (``canary_passed``).

>>> mon = CanaryMonitor(CanaryConfig(window=400, threshold=0.05), GateConfig(loss="zero_one", floor=0.5))
>>> rng = np.random.default_rng(0)
>>> mon.observe_many("champion", (rng.random(3600) < 0.2) * 1.0)
>>> mon.observe_many("canary", (rng.random(400) < 0.45) * 1.0)
>>> d = mon.decision()
>>> d.action, d.reason
('rollback', 'canary_worse')
>>> in_canary("card-7", 0.1) == in_canary("card-7", 0.1)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.models.governance.gate import GateConfig
from streamlearn.models.governance.sequential import ConfidenceSequence
from streamlearn.models.modelset import in_canary

__all__ = ["ArmSummary", "CanaryConfig", "CanaryDecision", "CanaryMonitor", "in_canary"]

ARMS = ("canary", "champion")


@dataclass(frozen=True)
class CanaryConfig:
    """Defaults equal the settings' ``canary_*`` defaults (checked in tests/unit/models/test_gate.py)."""

    fraction: float = 0.1
    window: int = 1000  # labeled events served by the canary before it can be promoted
    threshold: float = 0.02  # how much worse (mean loss) the canary may be
    alpha: float = 0.05

    @classmethod
    def from_settings(cls, s: Any) -> CanaryConfig:
        return cls(fraction=s.canary_fraction, window=s.canary_window, threshold=s.canary_threshold,
                   alpha=s.canary_alpha)


@dataclass(frozen=True)
class ArmSummary:
    n: int
    loss: float
    accuracy: float | None


@dataclass(frozen=True)
class CanaryDecision:
    action: str  # continue | rollback | promote
    reason: str  # in_window | canary_worse | canary_worse_at_end | below_floor | floor_unavailable | canary_passed
    canary: ArmSummary
    champion: ArmSummary
    worse_by_at_least: float  # anytime-valid lower bound of canary loss - champion loss

    def details(self) -> dict[str, str]:
        return {"canary_n": str(self.canary.n), "canary_loss": f"{self.canary.loss:.6g}",
                "champion_n": str(self.champion.n), "champion_loss": f"{self.champion.loss:.6g}",
                "worse_by_at_least": f"{self.worse_by_at_least:.6g}"}


class _Arm:
    def __init__(self, alpha: float, bound: float, upper: bool) -> None:
        self.cs = ConfidenceSequence(alpha)
        self.bound, self.upper = bound, upper
        self.n = 0
        self.loss_sum = 0.0
        self.hits = 0.0
        self.n_hits = 0

    def add(self, losses: np.ndarray, hits: np.ndarray | None) -> None:
        x = np.clip(losses, 0.0, self.bound) / self.bound
        self.cs.update_many(1.0 - x if self.upper else x)  # an upper bound is a lower bound of 1 - x
        self.n += losses.size
        self.loss_sum += float(np.clip(losses, 0.0, self.bound).sum())
        if hits is not None:
            self.hits += float(np.sum(hits))
            self.n_hits += losses.size

    def add_one(self, loss: float, hit: bool | None) -> None:
        x = min(max(loss, 0.0), self.bound)
        self.cs.update(1.0 - x / self.bound if self.upper else x / self.bound)
        self.n += 1
        self.loss_sum += x
        if hit is not None:
            self.hits += float(hit)
            self.n_hits += 1

    def bound_on_loss(self) -> float:
        lb = self.cs.lower_bound
        return (1.0 - lb) * self.bound if self.upper else lb * self.bound

    def summary(self) -> ArmSummary:
        return ArmSummary(self.n, self.loss_sum / self.n if self.n else math.nan,
                          self.hits / self.n_hits if self.n_hits else None)


class CanaryMonitor:
    """Live evidence for one canary; a fresh one per canary (plain state: it pickles)."""

    def __init__(self, config: CanaryConfig | None = None, gate: GateConfig | None = None) -> None:
        self.config = config or CanaryConfig()
        self.gate = gate or GateConfig()
        b = self.gate.bound
        self.arms = {"canary": _Arm(self.config.alpha / 2, b, upper=False),
                     "champion": _Arm(self.config.alpha / 2, b, upper=True)}

    def observe(self, arm: str, loss: float, hit: bool | None = None) -> None:
        """One labeled event served by ``arm`` (``canary`` or ``champion``)."""
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
        self.arms[arm].add_one(float(loss), hit)

    def observe_many(self, arm: str, losses: Sequence[float] | np.ndarray,
                     hits: Sequence[Any] | np.ndarray | None = None) -> None:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
        self.arms[arm].add(np.asarray(losses, dtype=float), None if hits is None else np.asarray(hits, dtype=float))

    def decision(self) -> CanaryDecision:
        c, g = self.config, self.gate
        can, champ = self.arms["canary"], self.arms["champion"]
        cs, hs = can.summary(), champ.summary()
        worse = can.bound_on_loss() - champ.bound_on_loss() if can.n and champ.n else -math.inf
        action, reason = "continue", "in_window"
        if worse > c.threshold:
            action, reason = "rollback", "canary_worse"
        elif can.n >= c.window:
            value = cs.loss if g.floor_metric == "loss" else cs.accuracy
            if champ.n and cs.loss - hs.loss > c.threshold:
                action, reason = "rollback", "canary_worse_at_end"
            elif value is None:
                action, reason = "rollback", "floor_unavailable"
            elif (value > g.floor) if g.floor_metric == "loss" else (value < g.floor):
                action, reason = "rollback", "below_floor"
            else:
                action, reason = "promote", "canary_passed"
        return CanaryDecision(action, reason, cs, hs, worse)
