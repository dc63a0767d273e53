"""The promotion gate: a challenger replaces the champion only on sequential evidence.

Champion and challenger score the same events and learn the same labels, so each
labeled event gives a *paired* loss difference ``d = loss(champion) - loss(challenger)``
(positive = the challenger did better). The gate keeps an anytime-valid lower
confidence bound on the mean of ``d`` (:mod:`streamlearn.models.governance.sequential`: an
empirical-Bernstein confidence sequence, exact for bounded ``d``), so it may be checked
after every event: if the challenger is not truly better by more than ``margin``, the
probability that it is *ever* promoted is at most ``alpha``. Losses are bounded by
construction (log loss clips probabilities to ``[eps, 1 - eps]``). The default loss is
the Brier score: proper like log loss, bounded without clipping (``B = 2``) and, in
``streamlearn gate-eval``, the one that needs the fewest events to promote a better
model (the bound's width scales with ``B``; clipped log loss has ``B = 6.9``).

A challenger is promoted when all hold:

* at least ``min_samples`` paired events (reason ``insufficient_samples`` otherwise);
* the lower bound of ``mean(d)`` exceeds ``margin`` (``not_significant``);
* its rolling-window metric passes the absolute quality floor (``below_floor``):
  accuracy at least ``floor``, or with ``floor_metric="loss"`` mean loss at most ``floor``.

Rate limits and the kill switch are a separate policy (:class:`ActionLimits`): the gate
says whether the evidence is there, the policy whether an action may happen now.

>>> gate = PromotionGate(GateConfig(loss="zero_one", min_samples=200, floor=0.6))
>>> rng = np.random.default_rng(1)
>>> champ_err, chall_err = rng.random(3000) < 0.30, rng.random(3000) < 0.15
>>> gate.update_many(champ_err * 1.0, chall_err * 1.0, ~champ_err, ~chall_err)
>>> d = gate.decision()
>>> d.promote, d.reason, d.lower_bound > 0.05
(True, 'promote', True)
>>> PromotionGate(GateConfig(min_samples=10)).decision().reason
'insufficient_samples'
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streamlearn.models.governance.sequential import ConfidenceSequence

ArrayLike = Sequence[Any] | np.ndarray
LossKind = Literal["log", "brier", "zero_one", "abs", "squared", "scaled_abs"]
LOSSES: tuple[str, ...] = ("log", "brier", "zero_one", "abs", "squared", "scaled_abs")
CLIP_SPREADS = 3.0  # scaled_abs: an error of 3 label spreads or more is as bad as it gets


def loss_bound(kind: str, eps: float = 1e-3, scale: float = 1.0) -> float:
    """The largest value a per-event loss can take (so differences lie in [-B, B]).

    ``scale`` bounds regression errors (``abs``/``squared``), which are clipped to it;
    ``scaled_abs`` divides the error by a spread of the labels and is clipped to 1.
    """
    bounds = {"log": -math.log(eps), "brier": 2.0, "zero_one": 1.0, "abs": scale, "squared": scale**2,
              "scaled_abs": 1.0}
    try:
        return bounds[kind]
    except KeyError:
        raise ValueError(f"unknown loss {kind!r}; known: {LOSSES}") from None


def event_loss(kind: str, y: Any, proba: Mapping[Any, float] | None = None, predicted: Any = None,
               eps: float = 1e-3, scale: float = 1.0) -> float:
    """One event's loss, bounded by :func:`loss_bound`.

    ``proba`` maps classes (or their ``str``, as served on the wire) to probabilities; an
    empty one (a model that has learned nothing yet) counts as a coin flip. ``brier`` is
    the sum over all classes (binary and multiclass alike, in [0, 2]). For ``scaled_abs``
    ``scale`` is the labels' current spread (:class:`~streamlearn.models.task.LabelScale`):
    ``min(|error| / (CLIP_SPREADS * scale), 1)``.

    >>> round(event_loss("log", True, {"True": 0.8, "False": 0.2}), 4)
    0.2231
    >>> event_loss("zero_one", 1, predicted=0), event_loss("abs", 3.0, predicted=10.0, scale=5.0)
    (1.0, 5.0)
    >>> event_loss("scaled_abs", 3.0, predicted=4.5, scale=1.0), event_loss("scaled_abs", 3.0, predicted=99.0)
    (0.5, 1.0)
    """
    if kind in ("log", "brier"):
        proba = proba or {}
        p = _p_of(proba, y) if proba else 0.5
        if kind == "log":
            return -math.log(min(max(p, eps), 1.0 - eps))
        others = sum(v * v for k, v in proba.items() if str(k) != str(y))
        return min((1.0 - p) ** 2 + others, 2.0)
    if kind == "zero_one":
        return 0.0 if is_hit(y, predicted) else 1.0
    if kind in ("abs", "squared"):
        err = min(abs(float(predicted if predicted is not None else 0.0) - float(y)), scale)
        return err if kind == "abs" else err * err
    if kind == "scaled_abs":
        err = abs(float(predicted if predicted is not None else 0.0) - float(y))
        return min(err / (CLIP_SPREADS * scale), 1.0)
    raise ValueError(f"unknown loss {kind!r}; known: {LOSSES}")


def _p_of(proba: Mapping[Any, float], y: Any) -> float:
    p = proba.get(y)
    return float(proba.get(str(y), 0.0) if p is None else p)


def is_hit(y: Any, predicted: Any) -> bool:
    """Whether a classifier's prediction equals the label (wire labels may be strings)."""
    return predicted is not None and (predicted == y or str(predicted) == str(y))


@dataclass(frozen=True)
class GateConfig:
    """Defaults equal the settings' ``gate_*`` defaults (checked in tests/unit/models/test_gate.py)."""

    alpha: float = 0.05
    margin: float = 0.0
    min_samples: int = 500
    floor: float = 0.5
    floor_metric: Literal["accuracy", "loss"] = "accuracy"
    loss: LossKind = "brier"
    eps: float = 1e-3
    scale: float = 1.0
    window: int = 1000

    @property
    def bound(self) -> float:
        return loss_bound(self.loss, self.eps, self.scale)

    @classmethod
    def from_settings(cls, s: Any) -> GateConfig:
        return cls(alpha=s.gate_alpha, margin=s.gate_margin, min_samples=s.gate_min_samples, floor=s.gate_floor,
                   floor_metric=s.gate_floor_metric, loss=s.gate_loss, eps=s.gate_log_eps, scale=s.gate_loss_scale,
                   window=s.gate_window)


@dataclass(frozen=True)
class WindowSummary:
    n: int
    loss: float
    accuracy: float | None  # None when no hits were recorded (regression)

    def metric(self, name: str) -> float | None:
        return self.loss if name == "loss" else self.accuracy


class RollingWindow:
    """The last ``size`` values of one model's loss and hit, for reports and the floor.

    Running sums make appends and summaries O(1) (the gate may be asked after every event).
    """

    def __init__(self, size: int) -> None:
        self.losses: deque[float] = deque(maxlen=size)
        self.hits: deque[float] = deque(maxlen=size)  # NaN when unknown
        self.loss_sum = self.hit_sum = 0.0
        self.hit_n = 0

    def append(self, loss: float, hit: Any = None) -> None:
        h = math.nan if hit is None else float(hit)
        if len(self.losses) == self.losses.maxlen:
            self.loss_sum -= self.losses[0]
            if not math.isnan(self.hits[0]):
                self.hit_sum -= self.hits[0]
                self.hit_n -= 1
        self.losses.append(loss)
        self.hits.append(h)
        self.loss_sum += loss
        if not math.isnan(h):
            self.hit_sum += h
            self.hit_n += 1

    def extend(self, losses: ArrayLike, hits: ArrayLike | None) -> None:
        n = self.losses.maxlen or 0
        losses = np.asarray(losses, dtype=float)[-n:]
        h = [None] * len(losses) if hits is None else np.asarray(hits, dtype=float)[-n:].tolist()
        for loss, hit in zip(losses.tolist(), h):
            self.append(loss, hit)

    def summary(self) -> WindowSummary:
        n = len(self.losses)
        if n == 0:
            return WindowSummary(0, math.nan, None)
        return WindowSummary(n, self.loss_sum / n, self.hit_sum / self.hit_n if self.hit_n else None)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str  # promote | insufficient_samples | not_significant | below_floor | floor_unavailable
    n: int
    lower_bound: float  # anytime-valid lower bound of mean(champion loss - challenger loss)
    mean_diff: float
    champion: WindowSummary
    challenger: WindowSummary

    def details(self) -> dict[str, str]:
        """Flat strings for the lifecycle topic's ``details`` map."""
        return {"n": str(self.n), "lower_bound": f"{self.lower_bound:.6g}", "mean_diff": f"{self.mean_diff:.6g}",
                "champion_loss": f"{self.champion.loss:.6g}", "challenger_loss": f"{self.challenger.loss:.6g}",
                "champion_accuracy": str(self.champion.accuracy), "challenger_accuracy": str(self.challenger.accuracy)}


class PromotionGate:
    """Evidence for one (champion, challenger) pair; make a new one when either changes."""

    def __init__(self, config: GateConfig | None = None) -> None:
        self.config = config or GateConfig()
        self.cs = ConfidenceSequence(self.config.alpha)
        self.champion = RollingWindow(self.config.window)
        self.challenger = RollingWindow(self.config.window)

    @property
    def n(self) -> int:
        return self.cs.n

    def update(self, champion_loss: float, challenger_loss: float,
               champion_hit: bool | None = None, challenger_hit: bool | None = None) -> None:
        """One labeled event both models scored."""
        b = self.config.bound
        lc, lh = min(max(float(champion_loss), 0.0), b), min(max(float(challenger_loss), 0.0), b)
        self.cs.update((lc - lh + b) / (2.0 * b))
        self.champion.append(lc, champion_hit)
        self.challenger.append(lh, challenger_hit)

    def update_many(self, champion_losses: ArrayLike, challenger_losses: ArrayLike,
                    champion_hits: ArrayLike | None = None, challenger_hits: ArrayLike | None = None) -> None:
        """A batch of paired events, in order (same result as calling :meth:`update` per event)."""
        b = self.config.bound
        lc = np.clip(np.asarray(champion_losses, dtype=float), 0.0, b)
        lh = np.clip(np.asarray(challenger_losses, dtype=float), 0.0, b)
        if lc.shape != lh.shape:
            raise ValueError("champion and challenger losses must be paired (same length)")
        self.cs.update_many((lc - lh + b) / (2.0 * b))  # d in [-B, B] -> [0, 1]
        self.champion.extend(lc, champion_hits)
        self.challenger.extend(lh, challenger_hits)

    @property
    def lower_bound(self) -> float:
        """Anytime-valid lower bound of mean(champion loss - challenger loss)."""
        b = self.config.bound
        return 2.0 * b * self.cs.lower_bound - b

    def decision(self) -> GateDecision:
        c = self.config
        champ, chall = self.champion.summary(), self.challenger.summary()
        mean_diff = 2.0 * c.bound * self.cs.mean - c.bound if self.n else math.nan
        if self.n < c.min_samples:
            reason = "insufficient_samples"
        elif not self.lower_bound > c.margin:
            reason = "not_significant"
        else:
            value = chall.metric(c.floor_metric)
            if value is None:
                reason = "floor_unavailable"  # e.g. an accuracy floor on a regressor
            elif (value < c.floor) if c.floor_metric == "accuracy" else (value > c.floor):
                reason = "below_floor"
            else:
                reason = "promote"
        return GateDecision(reason == "promote", reason, self.n, self.lower_bound, mean_diff, champ, chall)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str  # allowed | frozen | cooldown | rate_limited
    retry_at: float | None = None  # earliest time the action could be allowed (None: frozen)


@dataclass
class ActionLimits:
    """At most ``max_actions`` per ``window_s``, ``cooldown_s`` after each, and a kill switch.

    Times are whatever clock the caller passes (wall seconds online, event time in
    replays), so the policy is deterministic. It governs promotions; rollbacks are safety
    actions and are never rate limited.

    >>> lim = ActionLimits(max_actions=2, window_s=100, cooldown_s=10)
    >>> [lim.acquire(t).reason for t in (0, 5, 10, 20, 50, 100)]
    ['allowed', 'cooldown', 'allowed', 'rate_limited', 'rate_limited', 'allowed']
    >>> lim.frozen = True
    >>> lim.acquire(500).reason
    'frozen'
    """

    max_actions: int = 1
    window_s: float = 3600.0
    cooldown_s: float = 600.0
    frozen: bool = False
    granted: list[float] = field(default_factory=list)  # times of allowed actions in the window

    @classmethod
    def from_settings(cls, s: Any) -> ActionLimits:
        return cls(max_actions=s.promotion_max, window_s=s.promotion_window_s, cooldown_s=s.promotion_cooldown_s,
                   frozen=s.promotions_frozen)

    def check(self, now: float) -> Verdict:
        if self.frozen:
            return Verdict(False, "frozen")
        recent = [t for t in self.granted if t > now - self.window_s]
        if recent and now < recent[-1] + self.cooldown_s:
            return Verdict(False, "cooldown", recent[-1] + self.cooldown_s)
        if len(recent) >= self.max_actions:
            return Verdict(False, "rate_limited", recent[-self.max_actions] + self.window_s)
        return Verdict(True, "allowed")

    def acquire(self, now: float) -> Verdict:
        """Check and, if allowed, record the action at ``now``."""
        verdict = self.check(now)
        if verdict.allowed:
            self.granted = [t for t in self.granted if t > now - self.window_s] + [now]
        return verdict
