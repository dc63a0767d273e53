"""The automatic model lifecycle: gate, canary, drift detectors and their actions, together.

The online loop feeds it every labeled event (with what each model predicted for it)
and every scored batch of feature vectors; :meth:`Lifecycle.decide` then changes the
:class:`~streamlearn.models.modelset.ModelSet` only through these doors:

* a challenger whose paired gate says *promote* (anytime-valid test, floor) and that the
  action limits allow becomes a **canary** (or champion directly when canaries are off);
* a canary that is provably worse is **rolled back**; one that survives its window
  becomes **champion**;
* drift alarms map to actions: ``warn`` (announce only), ``start_challenger`` (a fresh
  model of the champion's spec, learning from now on), ``request_retrain`` (announced for
  the batch retrainer), ``rollback`` (an error jump right after a promotion).

Nothing is ever swapped in silently: a fresh challenger still has to pass the gate.
Every decision returns a record for the lifecycle topic, every alarm one for the drift
topic. Its state pickles with the ModelSet into the signed checkpoint, so a restart
resumes the same evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlearn.models.governance.canary import CanaryConfig, CanaryMonitor
from streamlearn.models.governance.drift import (
    ActionConfig,
    BiasMonitor,
    ConceptDriftDetector,
    FeatureDriftMonitor,
    lifecycle_kwargs,
    plan,
)
from streamlearn.models.governance.gate import ActionLimits, GateConfig, PromotionGate
from streamlearn.models.modelset import ModelSet
from streamlearn.models.task import BINARY, Task, TaskScorer

Record = tuple[str, dict[str, Any]]  # (subject: "lifecycle" | "drift", record)
_UNSET: Any = object()


def record(models: ModelSet, version: int, action: str, reason: str, now_ms: int, **details: Any) -> dict[str, Any]:
    """A lifecycle-topic record (schemas/lifecycle.v1.avsc): one format for every decision."""
    return {
        "model_name": models.name, "version": int(version), "action": action, "reason": reason,
        "champion": models.champion, "labels_learned": models.champion_learner.labels_learned,
        "details": {k: str(v) for k, v in details.items()}, "at": int(now_ms),
    }


@dataclass
class LifecycleConfig:
    gate: GateConfig = field(default_factory=GateConfig)
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    actions: ActionConfig = field(default_factory=ActionConfig)
    use_canary: bool = True
    max_challengers: int = 3
    concept: dict[str, Any] = field(default_factory=dict)  # ConceptDriftDetector kwargs
    features: dict[str, Any] = field(default_factory=dict)  # FeatureDriftMonitor kwargs
    bias: dict[str, Any] = field(default_factory=dict)  # BiasMonitor kwargs
    limits: dict[str, Any] = field(default_factory=dict)  # ActionLimits kwargs
    task: Task = BINARY  # the gate's loss, hits and the drift error signal follow it
    challenger_spec: str | None = None  # what drift starts (None: a fresh copy of the champion's spec)
    label: dict[str, Any] | None = None  # FeatureDriftMonitor kwargs for the label distribution (None: off)

    @classmethod
    def from_settings(cls, s: Any, task: Task | None = None, challenger_spec: str | None = None) -> LifecycleConfig:
        return cls(
            task=task or BINARY, challenger_spec=challenger_spec,
            gate=GateConfig.from_settings(s), canary=CanaryConfig.from_settings(s),
            actions=ActionConfig.from_settings(s), use_canary=s.lifecycle_canary,
            max_challengers=s.lifecycle_max_challengers,
            **lifecycle_kwargs(s),  # concept, features, label, bias: thresholds from the false-alarm budget
            limits={"max_actions": s.promotion_max, "window_s": s.promotion_window_s,
                    "cooldown_s": s.promotion_cooldown_s, "frozen": s.promotions_frozen},
        )


def _rows_until_check(m: FeatureDriftMonitor) -> int:
    """Rows the monitor takes until (and with) the one on which its next check runs:
    warm-up rows, then the reference fills, then the window; 1 if in doubt."""
    try:
        n = max(m.warmup - m.n, 0) + max(m.ref_size - m.ref_rows, 0) + (m.win_size - m.cur_rows)
    except (AttributeError, TypeError):
        return 1
    return n if n >= 1 else 1


class Lifecycle:
    def __init__(self, config: LifecycleConfig | None = None) -> None:
        self.config = c = config or LifecycleConfig()
        if c.task.kind != "binary":  # e.g. regression: scaled loss, floor on the loss
            c.gate = c.task.gate_config(c.gate)
        self.gates: dict[int, PromotionGate] = {}
        self.canary_monitor: CanaryMonitor | None = None
        self.concept = ConceptDriftDetector(**c.concept)
        self.features = FeatureDriftMonitor(**c.features)
        self.bias = BiasMonitor(**c.bias)
        label = getattr(c, "label", None)
        self.labels = FeatureDriftMonitor(["label"], **label) if label is not None else None
        self.limits = ActionLimits(**c.limits)
        self.labels_since_promotion: int | None = None
        self.champion_seen: int | None = None
        self.canary_seen: int | None = None
        self.drift_events: list = []
        self.announced: dict[int, str] = {}  # last refusal reason announced per challenger

    # ------------------------------------------------------------------ observations
    @property
    def scorer(self) -> TaskScorer:
        """Loss, hit and drift error per the task (lazy: checkpoints from before tasks lack it)."""
        sc = self.__dict__.get("_scorer")
        if sc is None:
            sc = self.__dict__["_scorer"] = TaskScorer(self.config.task, self.config.gate)
        return sc

    def _loss(self, y: Any, pred: dict[str, Any]) -> float:
        return self.scorer.loss(y, pred)

    def on_label(self, models: ModelSet, y: Any, served: dict[str, dict[str, Any]], serving: int | None) -> None:
        """One learned label; ``served`` maps str(version) -> that model's prediction."""
        self.on_labels(models, ((y, served, serving),))

    def on_labels(self, models: ModelSet, items: Sequence[tuple[Any, dict[str, dict[str, Any]], int | None]]) -> None:
        """:meth:`on_label` for each ``(y, served, serving)`` in turn. The model set does not
        change within a batch (only :meth:`decide` and operator commands change it, between
        batches), so what depends on it alone (versions, keys, arms) is looked up once."""
        if not items:
            return
        self._sync(models)
        sc = self.scorer
        champ_key = str(models.champion)
        challengers = [(v, str(v)) for v in models.challengers()]
        canary = self.canary_monitor if models.canary is not None else None
        canary_v = models.canary.version if models.canary is not None else None
        concept, bias, events = self.concept.update, self.bias.update, self.drift_events
        error, bias_pair, observe = sc.error, sc.bias_pair, sc.observe
        labels = self.__dict__.get("labels")  # absent from checkpoints of older versions
        buf: list[float] = []
        need = 0
        if labels is not None:
            buf = self.__dict__.get("_label_buf")
            if buf is None:
                buf = self._label_buf = []
            need = _rows_until_check(labels)  # changes only when the monitor takes rows (a flush)
        for y, served, serving in items:
            champ = served.get(champ_key)
            if self.labels_since_promotion is not None:
                self.labels_since_promotion += 1
            if champ is None:
                observe(y)
                continue
            if challengers:  # the champion's loss and hit only feed the gates (pure: computed when needed)
                lc = hit_c = _UNSET
                for v, key in challengers:
                    pred = served.get(key)
                    if pred is not None:
                        if lc is _UNSET:
                            lc, hit_c = sc.loss(y, champ), sc.hit(y, champ)
                        self._gate(v).update(lc, sc.loss(y, pred), hit_c, sc.hit(y, pred))
            if canary is not None:
                arm = "canary" if serving == canary_v else "champion"
                pred = served.get(str(serving)) if serving is not None else None
                if pred is not None:
                    canary.observe(arm, sc.loss(y, pred), sc.hit(y, pred))
            ev = concept(error(y, champ))
            if ev is not None:
                events.append(ev)
            pair = bias_pair(y, champ)
            if pair is not None:
                bev = bias(pair[0], pair[1], champ.get("n"))
                if bev is not None:
                    events.append(bev)
            if labels is not None and isinstance(y, (bool, int, float)):
                # the label monitor's chunk (see _flush_labels), its check due after ``need`` rows
                buf.append(float(y))
                if len(buf) >= need:
                    self._flush_labels()
                    buf = self._label_buf
                    need = _rows_until_check(labels)
            observe(y)  # after the losses: the regression scale only ever uses earlier labels

    # The label monitor takes its labels in chunks: a one-row numpy array per label cost more
    # than the monitor itself. Chunks give the same state (rows are concatenated) and the
    # same events in the same place: a chunk ends at the label on which the monitor's next
    # check is due (the only label that can raise an event), and before anything else reads
    # or adds to the drift events (decide, on_scored, pickling).
    def _flush_labels(self) -> None:
        buf = self.__dict__.get("_label_buf")
        if buf:
            self._label_buf = []
            self.drift_events += self.labels.update_many(np.array(buf, dtype=float).reshape(-1, 1))

    def __getstate__(self) -> dict[str, Any]:
        self._flush_labels()
        return {k: v for k, v in self.__dict__.items() if k != "_label_buf"}

    def on_scored(self, xs: list[dict[str, float]]) -> None:
        """Served feature vectors, for data drift (one family-wise budget over features)."""
        self._flush_labels()
        self.drift_events += self.features.update_dicts(xs)

    def _gate(self, v: int) -> PromotionGate:
        if v not in self.gates:
            self.gates[v] = PromotionGate(self.config.gate)
        return self.gates[v]

    def _sync(self, models: ModelSet) -> None:
        """Evidence is about a (champion, challenger) pair: a new champion starts it afresh."""
        if self.champion_seen != models.champion:
            if self.champion_seen is not None:
                self.labels_since_promotion = 0
            self.champion_seen = models.champion
            self.gates = {}
            self.announced = {}
        for v in list(self.gates):
            if v not in models.learners:
                del self.gates[v]
        canary = models.canary.version if models.canary else None
        if canary != self.canary_seen:  # a canary began or ended (gate or operator)
            self.canary_seen = canary
            self.canary_monitor = CanaryMonitor(self.config.canary, self.config.gate) if canary else None

    # ------------------------------------------------------------------ decisions
    def decide(self, models: ModelSet, now_s: float) -> list[Record]:
        self._flush_labels()
        self._sync(models)
        now_ms = int(now_s * 1000)
        out: list[Record] = []

        # drift first: it may start a challenger or roll a fresh champion back
        events, self.drift_events = self.drift_events, []
        actions = plan(events, self.config.actions, self.labels_since_promotion)
        for ev in events:
            kinds = [a.kind for a in actions if a.event is ev] or ["warn"]
            out.append(("drift", ev.record(models.name, models.champion, "+".join(kinds), now_ms)))
        for a in actions:
            if a.kind == "start_challenger":
                self._make_room(models, now_ms, out)
                spec = getattr(self.config, "challenger_spec", None) or models.champion_learner.spec
                v = models.add_challenger(spec, f"drift: {a.reason}")
                out.append(("lifecycle", record(models, v, "challenger_started", f"drift: {a.reason}", now_ms,
                                                from_position=a.from_position)))
            elif a.kind == "request_retrain":
                out.append(("lifecycle", record(models, models.champion, "retrain_requested", a.reason, now_ms)))
            elif a.kind == "rollback":
                before = models.canary.version if models.canary else models.champion
                if models.rollback(f"drift after promotion: {a.reason}") is not None:
                    self.canary_monitor = None
                    out.append(("lifecycle", record(models, before, "rolled_back", a.reason, now_ms, by="drift")))

        # a running canary: roll back early if provably worse, promote at the end of its window
        if models.canary is not None and self.canary_monitor is not None:
            d = self.canary_monitor.decision()
            v = models.canary.version
            if d.action == "rollback":
                models.rollback(d.reason)
                self.canary_monitor = None
                out.append(("lifecycle", record(models, v, "rolled_back", d.reason, now_ms, by="canary",
                                                **d.details())))
            elif d.action == "promote":
                models.promote(v, d.reason)
                self.canary_monitor = None
                self._sync(models)
                out.append(("lifecycle", record(models, v, "promoted", d.reason, now_ms, by="canary",
                                                **d.details())))
            return out

        # challengers: the best one with a passing gate, if the limits allow an action now
        ready = []
        for v in models.challengers():
            d = self._gate(v).decision()
            if d.promote:
                ready.append((d.lower_bound, v, d))
            elif d.reason == "below_floor" and self.announced.get(v) != d.reason:
                self.announced[v] = d.reason
                out.append(("lifecycle", record(models, v, "refused", d.reason, now_ms, **d.details())))
        if ready:
            _, v, d = max(ready, key=lambda r: r[0])
            verdict = self.limits.acquire(now_s)
            if not verdict.allowed:
                if self.announced.get(v) != verdict.reason:
                    self.announced[v] = verdict.reason
                    out.append(("lifecycle", record(models, v, "refused", verdict.reason, now_ms, **d.details())))
            elif self.config.use_canary:
                models.start_canary(v, self.config.canary.fraction, "gate passed")
                self.canary_monitor = CanaryMonitor(self.config.canary, self.config.gate)
                out.append(("lifecycle", record(models, v, "canary_started", "gate passed", now_ms,
                                                fraction=self.config.canary.fraction, **d.details())))
            else:
                models.promote(v, "gate passed")
                self._sync(models)
                out.append(("lifecycle", record(models, v, "promoted", "gate passed", now_ms, by="gate",
                                                **d.details())))
        return out

    def _make_room(self, models: ModelSet, now_ms: int, out: list[Record]) -> None:
        """At most ``max_challengers``: retire the one the gate thinks least of."""
        while len(models.challengers()) >= self.config.max_challengers:
            worst = min(models.challengers(), key=lambda v: self._gate(v).lower_bound if self._gate(v).n else 0.0)
            models.retire(worst, "making room for a drift challenger")
            self.gates.pop(worst, None)
            out.append(("lifecycle", record(models, worst, "retired", "making room for a drift challenger", now_ms)))
