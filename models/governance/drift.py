"""Streaming drift detection, and the actions alarms map to (returned as data).

Four kinds of detector, each a small object with plain state (it pickles into the
loop's checkpoint):

* **concept** (:class:`ConceptDriftDetector`): a River detector (ADWIN, DDM or
  Page-Hinkley, by name) on the champion's per-label error stream, with a grace period
  (a young model's falling error is not drift) and a minimum gap between alarms (one
  change, one alarm). Severity comes from how much the error rate moved: up is
  ``drift``, up by ``critical_delta`` or more is ``critical``; down (the model learning)
  is dropped, or reported as ``info`` with ``report_decreases``. With a budget
  (``false_alarms_per_100k``) half of its share goes to a strict ADWIN whose ``delta`` is
  the per-check alpha, half to confirming the configured detector's changes with a test
  of recent vs earlier errors; block means guard both against bursty errors.
* **data** (:class:`FeatureDriftMonitor`): per-feature two-sample Kolmogorov-Smirnov
  tests of a tumbling window against a reference window, plus a two-proportion test of
  each feature's missing rate (a field that goes all-missing has no values for KS to
  compare). KS rather than River's KSWIN because KSWIN decides inside each detector at
  its own alpha (50 features -> 50 budgets); here every check yields one p-value per
  hypothesis, and Holm's step-down procedure spends ONE family-wise budget over all of
  them. **The budget is a rate** (:data:`PER_EVENTS` = 100k events): with
  ``false_alarms_per_100k`` = B and a check every ``window`` events, each check gets
  ``alpha = B * window / 100_000``, so by the union bound a stationary stream raises at
  most B false alarms per 100k events in expectation, however long it runs (alpha is
  spent evenly over time, never per check). Streams are not the iid samples KS assumes,
  so four guards keep that promise on real feature views: nothing is collected during
  ``warmup`` (per-entity aggregates grow while entities accumulate history); the
  reference *slides* (each quiet window joins it and its oldest rows leave, so slow,
  harmless trends are compared over a short span only); a rejection also needs a KS
  distance (or missing-rate change) of at least ``min_effect``; and features that trend
  **by design** are not given to a test that assumes stationarity at all — cumulative
  counts and time axes (:func:`trending_features`: the view's own ``trending`` set, if
  it declares one, plus the names :func:`default_trending` matches). After an alarm the
  reference is re-collected (the new regime becomes normal).
* **label** (also a :class:`FeatureDriftMonitor`, on the one column ``label``): the
  label distribution (class balance, or a target's distribution), window vs sliding
  reference, on its own share of the budget.
* **bias** (:class:`BiasMonitor`): mean predicted score vs mean observed label over a
  tumbling window of labels, judged only once the champion has learned ``warmup`` labels
  (a young model is biased because it is young); alarm when they differ by more than
  ``threshold`` AND a z-test of the mean residual rejects at the window's share of the
  budget.

:func:`plan` maps events to actions (``warn``, ``start_challenger``, ``request_retrain``,
``rollback``) by ``"<kind>.<severity>"`` from configuration. The loop executes them; a
fresh challenger is only ever promoted through the gate, never swapped in here.

>>> det = ConceptDriftDetector("adwin", grace=200, min_gap=500)
>>> rng = np.random.default_rng(3)
>>> errors = np.r_[rng.random(3000) < 0.1, rng.random(3000) < 0.4]
>>> alarms = [e for e in map(det.update, errors.astype(float)) if e]
>>> [(a.severity, 3000 <= a.position < 3300) for a in alarms]
[('critical', True)]
>>> [a.kind for a in plan(alarms)]
['warn', 'start_challenger', 'request_retrain']
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift as rdrift
from scipy import special

SEVERITIES = ("info", "warning", "drift", "critical")
ACTIONS = ("warn", "start_challenger", "request_retrain", "rollback")

# Tuned with ``streamlearn drift-eval`` on 8 seeds x 20k events (abrupt, gradual, SEA) and
# 24 drift-free streams of 100k: ADWIN's delta 0.002 -> 0.01 raised F1 0.89 -> 0.96 on
# abrupt drift with ~0.01 false alarms per 10k; DDM's warm start 30 -> 1000 (River's
# default fires on the noise of its first estimate). Page-Hinkley watches increases only.
DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "adwin": {"delta": 0.01, "clock": 32, "grace_period": 10},
    "ddm": {"warm_start": 1000, "warning_threshold": 2.0, "drift_threshold": 3.0},
    "page_hinkley": {"min_instances": 30, "delta": 0.005, "threshold": 50.0, "mode": "up"},
}

DEFAULT_ACTIONS: dict[str, list[str]] = {
    "concept.warning": ["warn"],
    "concept.drift": ["warn", "start_challenger"],
    "concept.critical": ["warn", "start_challenger", "request_retrain"],
    "data.drift": ["warn"],
    "data.critical": ["warn", "start_challenger"],
    "bias.drift": ["warn"],
    "bias.critical": ["warn", "start_challenger"],
}


def make_detector(name: str, params: Mapping[str, Any] | None = None) -> rdrift.base.DriftDetector:
    """A River drift detector by short name, with our defaults overridden by ``params``."""
    classes = {"adwin": rdrift.ADWIN, "ddm": rdrift.binary.DDM, "page_hinkley": rdrift.PageHinkley}
    if name not in classes:
        raise ValueError(f"unknown concept-drift detector {name!r}; known: {sorted(classes)}")
    return classes[name](**{**DETECTOR_DEFAULTS[name], **(params or {})})


@dataclass(frozen=True)
class DriftEvent:
    detector: str  # concept:<name> | data:ks | bias
    feature: str | None
    statistic: float  # concept: error-rate change; data: KS distance; bias: mean score - mean label
    position: int  # labels (concept, bias) or events (data) seen when it fired
    severity: str  # info | warning | drift | critical
    p_value: float | None = None

    @property
    def kind(self) -> str:
        return self.detector.split(":", 1)[0]

    def record(self, model_name: str, version: int, action: str, at_ms: int) -> dict[str, Any]:
        """A drift-topic record (schemas/drift.v1.avsc)."""
        return {"model_name": model_name, "version": int(version), "detector": self.detector,
                "feature": self.feature, "statistic": float(self.statistic), "position": int(self.position),
                "severity": self.severity, "action": action, "at": int(at_ms)}


class ConceptDriftDetector:
    """A River detector on the error stream (1.0 = wrong / loss), with grace and alarm gap."""

    alpha: float | None = None  # confirmation off: how a detector from an old checkpoint behaves
    strict: Any = None  # the budgeted ADWIN (absent from checkpoints of older versions)

    def __init__(self, name: str = "adwin", params: Mapping[str, Any] | None = None, *, grace: int = 1000,
                 min_gap: int = 1000, critical_delta: float = 0.1, recent: int = 200,
                 report_decreases: bool = False, false_alarms_per_100k: float | None = None) -> None:
        self.name = name
        # a falling error rate is the model learning, not a problem: by default it only
        # re-bases the detector (and never uses up the gap an increase would need)
        self.report_decreases = report_decreases
        self.detector = make_detector(name, params)
        self.grace, self.min_gap, self.critical_delta = grace, min_gap, critical_delta
        # with a budget: ADWIN may decide every `clock` labels (DDM / Page-Hinkley every
        # label), and each decision gets the budget's per-check alpha, half of it spent two
        # ways. (1) A second, strict ADWIN whose delta (its false-alarm bound per check under
        # independent errors) is that half. (2) The configured, sensitive detector's changes
        # must pass a one-sided two-proportion test (recent errors vs the segment before),
        # tried as evidence accumulates, at the other half. Errors also arrive in bursts (a
        # fraud burst, an outage) that no independence assumption expects: when 50-label
        # block means vary more than independent errors would, changes are judged with the
        # block means' variance (the strict ADWIN's too).
        every = int(getattr(self.detector, "clock", 1) or 1)
        self.alpha = None if false_alarms_per_100k is None else budget_alpha(false_alarms_per_100k, every) / 2
        self.strict = None
        if self.alpha is not None:
            self.strict = make_detector("adwin", {"delta": self.alpha})
        self.n = 0
        self.last_alarm = -math.inf
        self.recent: deque[float] = deque(maxlen=recent)
        self.seg_sum, self.seg_n = 0.0, 0  # errors since the last alarm (the "before" level)
        self.in_warning = False

    @classmethod
    def from_settings(cls, s: Any) -> ConceptDriftDetector:
        return cls(**lifecycle_kwargs(s)["concept"])

    pending: list[float] | None = None  # [before sum, before n, after sum, after n, next check, tries]
    TRIES = 4  # confirmation tries per detector change (after 1x, 2x, 4x, 8x ``recent`` errors)

    def update(self, error: float) -> DriftEvent | None:
        """One labeled event's error (1.0 wrong / 0.0 right, or a loss in [0, 1])."""
        self.n += 1
        self.recent.append(error)
        self.seg_sum += error
        self.seg_n += 1
        if self.alpha is not None and self.n > self.grace:  # a learning model's errors are no baseline
            self._block(error)
        det = self.detector
        det.update(error)
        drift = det.drift_detected  # read once: nothing below updates the detector
        quiet = self.n <= self.grace or self.n - self.last_alarm < self.min_gap
        if self.alpha is not None and (self.n == self.grace or quiet and drift):
            # the "before" level starts after warm-up and after any change seen while quiet:
            # a young model's high early error would hide a later rise
            self.seg_sum, self.seg_n = sum(self.recent), len(self.recent)
        if self.strict is not None:
            self.strict.update(error)
            if self.strict.drift_detected and not quiet:
                change = self._change()
                k = len(self.recent)
                if change > 0 and self._p_increase(change, k, self.seg_n - k, self.seg_sum / self.seg_n,
                                                   clustered_only=True) <= self.alpha:
                    self.pending = None
                    return self._alarm(change)
        if self.pending is not None:
            return self._confirm(error)
        if drift and not quiet:
            change = self._change()
            if change > 0 and self.alpha is not None:
                # confirm it with a test the budget pays for: now, and as the errors after
                # the change accumulate (each try at alpha / TRIES: a union bound per change)
                k = len(self.recent)
                self.pending = [self.seg_sum - sum(self.recent), self.seg_n - k, sum(self.recent), k, k, 0]
                return self._confirm(None)
            return self._alarm(change)
        warning = bool(getattr(det, "warning_detected", False))
        if warning and not self.in_warning and not quiet:
            self.in_warning = True
            return DriftEvent(f"concept:{self.name}", None, self._change(), self.n, "warning")
        self.in_warning = warning
        return None

    def _alarm(self, change: float) -> DriftEvent | None:
        self.seg_sum, self.seg_n = sum(self.recent), len(self.recent)
        self.blocks = None
        self.in_warning = False
        if change <= 0 and not self.report_decreases:
            return None
        self.last_alarm = self.n
        severity = ("info" if change <= 0 else "critical" if change >= self.critical_delta else "drift")
        return DriftEvent(f"concept:{self.name}", None, change, self.n, severity)

    def _confirm(self, error: float | None) -> DriftEvent | None:
        pd = self.pending
        assert pd is not None
        if error is not None:
            pd[2] += error
            pd[3] += 1
        if pd[3] < pd[4]:
            return None
        change = pd[2] / pd[3] - pd[0] / max(pd[1], 1)
        if change > 0 and self._p_increase(change, int(pd[3]), int(pd[1]), (pd[0] + pd[2]) / (pd[1] + pd[3])
                                           ) <= self.alpha / self.TRIES:
            self.pending = None
            return self._alarm(change)
        pd[4] *= 2
        pd[5] += 1
        if pd[5] >= self.TRIES:
            self.pending = None  # not enough evidence for the budget: a false start
        return None

    BLOCK = 50  # errors come in bursts: their variance is estimated from means of 50-label blocks
    BLOCKS = 64  # ... over the most recent 64 blocks (3,200 labels)
    blocks: list[Any] | None = None  # [running block sum, block n, deque of recent block means]

    def _block(self, error: float) -> None:
        b = self.blocks if self.blocks is not None else [0.0, 0, deque(maxlen=self.BLOCKS)]
        b[0] += error
        b[1] += 1
        if b[1] == self.BLOCK:
            b[2].append(b[0] / self.BLOCK)
            b[0], b[1] = 0.0, 0
        self.blocks = b

    def _block_variance(self) -> tuple[float, int]:
        """Per-label error variance implied by recent block means, from successive
        differences (von Neumann): a level shift, the very change under test, adds one
        large difference rather than a variance of its own. (NaN, 0) without blocks."""
        means = np.asarray(self.blocks[2] if self.blocks is not None else (), dtype=float)
        if means.size < 2:
            return math.nan, int(means.size)
        return float(self.BLOCK * np.mean(np.diff(means) ** 2) / 2), int(means.size)

    def _p_increase(self, change: float, k: int, nb: int, pooled: float, clustered_only: bool = False) -> float:
        """One-sided p-value of ``k`` recent errors' rate exceeding the ``nb`` before by ``change``.

        The per-label variance is the larger of the binomial one and the one implied by
        the spread of block means (batch means), so clustered errors do not look like news.
        """
        if nb <= 0 or k <= 0 or math.isnan(change):
            return 1.0
        var = binomial = max(pooled * (1 - pooled), 1e-12)
        bvar, nblocks = self._block_variance()
        if nblocks >= 10:
            var = max(var, bvar)
        if clustered_only and (nblocks < 20 or var <= 1.5 * binomial):
            return 0.0  # no sign of clustering: the strict detector's own decision stands
        se = math.sqrt(var * (1 / k + 1 / nb))
        return float(0.5 * special.erfc(change / se / math.sqrt(2)))

    def _change(self) -> float:
        k = len(self.recent)
        if self.seg_n <= k:
            return math.nan
        before = (self.seg_sum - sum(self.recent)) / (self.seg_n - k)
        return sum(self.recent) / k - before


PER_EVENTS = 100_000  # the false-alarm budget is a rate: alarms per this many events

# features that grow by design are not fed to a two-sample test that assumes stationarity:
# cumulative counts (an entity's count only ever grows) and time axes (a window of 500
# events spans minutes, its reference other minutes: "hour" differs by construction)
TRENDING_NAMES = frozenset({"ent_count", "ent_log_count", "hour", "minute", "day_of_week", "dow", "weekday",
                            "event_time", "timestamp", "ts"})
TRENDING_SUFFIXES = ("_count", "_time", "_ts", "_timestamp")


def default_trending(names: Sequence[str]) -> frozenset[str]:
    """The names our default rule treats as trending by design.

    >>> sorted(default_trending(["amount", "ent_count", "ent_log_count", "refund_count", "hour", "ent_rate_1d"]))
    ['ent_count', 'ent_log_count', 'hour', 'refund_count']
    """
    return frozenset(n for n in names if n in TRENDING_NAMES or n.endswith(TRENDING_SUFFIXES))


def trending_features(view: Any, names: Sequence[str]) -> frozenset[str]:
    """What the feature view declares as trending (its ``trending`` attribute, if any),
    plus what :func:`default_trending` matches (raw time fields come from the event, not
    the view, so the view's own list is not enough)."""
    declared = getattr(view, "trending", None)
    return frozenset(declared or ()) | default_trending(names)


def budget_alpha(false_alarms_per_100k: float, every: int) -> float:
    """Per-check false-alarm probability when a check happens every ``every`` events and the
    budget is ``false_alarms_per_100k`` (union bound: spent evenly over time).

    >>> budget_alpha(1.0, 500)
    0.005
    """
    return min(0.5, max(1e-12, false_alarms_per_100k * every / PER_EVENTS))


class FeatureDriftMonitor:
    """KS per feature (+ missing rate), tumbling window vs reference, Holm over all of them.

    Attributes added after the first release have class-level defaults that reproduce the
    old behaviour, so a monitor unpickled from an old checkpoint keeps working unchanged.
    """

    # defaults for monitors unpickled from checkpoints written before these existed
    warmup = 0
    sliding = False
    min_effect = 0.0
    missing = False
    trending: frozenset[str] | None = frozenset()
    excluded: frozenset[str] = frozenset()
    detector = "data:ks"
    false_alarms_per_100k: float | None = None
    seen: set[str] | None = None
    calibrate = False
    exclude_trending = False
    history: np.ndarray | None = None  # standardised statistics of recent quiet checks (rows)
    CALIBRATION = 8  # quiet checks before a feature's own noise level is trusted
    HISTORY = 32

    def __init__(self, features: Sequence[str] | None = None, *, reference: int = 1000, window: int = 500,
                 alpha: float | None = None, correction: str = "holm", critical_fraction: float = 0.25,
                 false_alarms_per_100k: float = 1.0, warmup: int = 0, sliding: bool = True,
                 min_effect: float = 0.1, missing: bool = True, trending: frozenset[str] | None = None,
                 detector: str = "data:ks", calibrate: bool = True, exclude_trending: bool = True) -> None:
        if correction not in ("holm", "bonferroni", "none"):
            raise ValueError("correction must be holm, bonferroni or none")
        self.ref_size, self.win_size = reference, window
        # an explicit per-check alpha wins; otherwise it follows from the rate budget
        self.false_alarms_per_100k = None if alpha is not None else false_alarms_per_100k
        self.alpha = alpha if alpha is not None else budget_alpha(false_alarms_per_100k, window)
        self.correction, self.critical_fraction = correction, critical_fraction
        self.warmup, self.sliding, self.min_effect, self.missing = warmup, sliding, min_effect, missing
        self.trending = trending  # None: the default rule only (see trending_features)
        self.detector, self.calibrate, self.exclude_trending = detector, calibrate, exclude_trending
        self.history = None
        self.excluded = frozenset()
        self.features: list[str] | None = None
        if features is not None:
            self._fix(features, infer=False)
        self.n = 0
        self.checks = 0
        self.ref: list[np.ndarray] = []
        self.cur: list[np.ndarray] = []
        self.ref_rows = self.cur_rows = 0
        self.seen = None

    @classmethod
    def from_settings(cls, s: Any, features: Sequence[str] | None = None) -> FeatureDriftMonitor:
        return cls(features, **lifecycle_kwargs(s)["features"])

    def _fix(self, names: Sequence[str], infer: bool = True) -> None:
        """Fix the monitored features. Names read from the vectors (``infer``) lose those
        trending by design; an explicit list is monitored as given."""
        names = list(names)
        infer = infer and self.exclude_trending
        self.excluded = (frozenset(self.trending or ()) | default_trending(names)) if infer else frozenset()
        self.features = [n for n in names if n not in self.excluded]

    def update(self, x: Mapping[str, float]) -> list[DriftEvent]:
        """One served feature vector (features absent from it count as missing)."""
        return self.update_dicts([x])

    def update_dicts(self, xs: Sequence[Mapping[str, float]]) -> list[DriftEvent]:
        """Served feature vectors in order. Without an explicit feature list, the monitored
        features are every name seen until warm-up ends (one-hot columns appear late);
        names first seen after that are not monitored."""
        if not xs:
            return []
        if self.features is None:
            if self.seen is None:
                self.seen = set()
            for x in xs:
                self.seen.update(x)
            if self.n + len(xs) <= self.warmup:
                self.n += len(xs)
                return []
            self._fix(sorted(self.seen))
            self.seen = None
        cols = self.features or []
        if not cols:
            self.n += len(xs)
            return []
        rows = np.array([[x.get(f, math.nan) for f in cols] for x in xs], dtype=float)
        return self.update_many(rows)

    def update_many(self, rows: np.ndarray) -> list[DriftEvent]:
        """Rows in ``self.features`` column order (NaN = missing), oldest first."""
        rows = np.asarray(rows, dtype=float)
        events: list[DriftEvent] = []
        if self.n < self.warmup:  # young entity aggregates are not what normal looks like
            skip = min(self.warmup - self.n, rows.shape[0])
            self.n += skip
            rows = rows[skip:]
        while rows.shape[0]:
            if self.ref_rows < self.ref_size:
                take = min(self.ref_size - self.ref_rows, rows.shape[0])
                self.ref.append(rows[:take])
                self.ref_rows += take
            else:
                take = min(self.win_size - self.cur_rows, rows.shape[0])
                self.cur.append(rows[:take])
                self.cur_rows += take
            self.n += take
            rows = rows[take:]
            if self.cur_rows == self.win_size:
                events += self._check()
        return events

    def _calibrated(self, p: np.ndarray, m: int) -> tuple[np.ndarray, float]:
        """P-values corrected for each hypothesis' own dependence, and the effect floor.

        KS and the proportion test assume independent rows; entity aggregates and bursty
        streams are autocorrelated, which inflates their statistics on a perfectly
        stationary stream. Each hypothesis' standardised statistic (KS: sqrt(n1 n2 / (n1 +
        n2)) D; proportions: |z|) is divided by its inflation: the median over its recent
        quiet checks relative to the median under independence (0.8276, 0.6745), never
        below 1. Until ``CALIBRATION`` quiet checks exist the floor doubles instead.
        """
        if not self.calibrate:
            return p, self.min_effect
        p = np.clip(p, 1e-300, 1.0)
        is_ks = np.arange(p.size) < m
        stat = np.where(is_ks, special.kolmogi(p), math.sqrt(2) * special.erfcinv(p))
        hist = self.history
        calibrated = hist is not None and hist.shape[1] == p.size and hist.shape[0] >= self.CALIBRATION
        if calibrated:
            inflation = np.maximum(1.0, np.median(hist, axis=0) / np.where(is_ks, 0.8276, 0.6745))
            adj = stat / inflation
            p = np.where(is_ks, special.kolmogorov(adj), special.erfc(adj / math.sqrt(2)))
        self._pending = stat
        return p, self.min_effect if calibrated else 2 * self.min_effect

    def _remember(self) -> None:
        """A quiet check's statistics join the history the inflation is measured on."""
        stat = getattr(self, "_pending", None)
        if not self.calibrate or stat is None:
            return
        hist = self.history
        if hist is None or hist.shape[1] != stat.size:
            hist = np.empty((0, stat.size))
        self.history = np.vstack([hist, stat[None, :]])[-self.HISTORY:]
        self._pending = None

    def _check(self) -> list[DriftEvent]:
        ref, cur = np.concatenate(self.ref), np.concatenate(self.cur)
        self.cur, self.cur_rows = [], 0
        # a quiet window joins the reference (sliding: slow, harmless trends are compared
        # over a short span only); the old monitor kept the first reference for good
        self.ref = [np.concatenate([ref, cur])[-self.ref_size:]] if self.sliding else [ref]
        self.ref_rows = self.ref[0].shape[0]
        self.checks += 1
        m = ref.shape[1]
        d, p = ks_columns(ref, cur)
        effect, names = d, list(self.features or [str(i) for i in range(m)])
        detectors = [self.detector] * m
        if self.missing:
            md, mp = missing_rate_test(ref, cur)
            d, p, effect = np.r_[d, md], np.r_[p, mp], np.r_[d, np.abs(md)]
            names += names
            detectors += [self.detector.split(":", 1)[0] + ":missing"] * m
        p, floor = self._calibrated(p, m)
        rejected = reject(p, self.alpha, self.correction) & (effect >= floor)
        if not rejected.any():
            self._remember()
            return []
        hit = rejected[:m] | (rejected[m:] if self.missing else False)
        # critical: a broad change (several features at once), not one noisy column
        severity = "critical" if hit.mean() >= self.critical_fraction and hit.sum() >= 2 else "drift"
        self.ref, self.ref_rows = [], 0  # re-learn what normal looks like after the change
        return [DriftEvent(detectors[j], names[j], float(d[j]), self.n, severity, float(p[j]))
                for j in np.flatnonzero(rejected)]


# the budget is shared evenly by the four detector kinds, so all of them together stay within it
BUDGET_SHARE = 0.25


def feature_kwargs(s: Any, trending: frozenset[str] | None = None, share: float = BUDGET_SHARE) -> dict[str, Any]:
    """FeatureDriftMonitor arguments from settings: alpha from ``share`` of the budget,
    unless ``drift_feature_alpha`` pins it per check."""
    return {"reference": s.drift_feature_reference, "window": s.drift_feature_window,
            "alpha": getattr(s, "drift_feature_alpha", None), "correction": s.drift_feature_correction,
            "false_alarms_per_100k": share * getattr(s, "drift_false_alarms_per_100k", 1.0),
            "warmup": getattr(s, "drift_warmup", 0), "min_effect": getattr(s, "drift_feature_min_effect", 0.1),
            "trending": trending}


def view_trending(view_name: str) -> frozenset[str] | None:
    """The ``trending`` set a feature view declares (None if it declares none, or is unknown)."""
    from streamlearn.featurestore.definitions import VIEWS

    t = getattr(VIEWS.get(view_name), "trending", None)
    return frozenset(t) if t is not None else None


def lifecycle_kwargs(s: Any) -> dict[str, dict[str, Any]]:
    """The drift parts of a LifecycleConfig from settings: every detector's threshold
    follows from its share of ``drift_false_alarms_per_100k``."""
    budget = BUDGET_SHARE * s.drift_false_alarms_per_100k
    return {
        "concept": {"name": s.drift_concept_detector, "params": s.drift_concept_params, "grace": s.drift_grace,
                    "min_gap": s.drift_min_gap, "critical_delta": s.drift_critical_delta,
                    "false_alarms_per_100k": budget},
        "features": feature_kwargs(s, view_trending(s.feature_view)),
        "label": {"reference": s.drift_feature_reference, "window": s.drift_feature_window,
                  "false_alarms_per_100k": budget, "warmup": s.drift_warmup, "min_effect": s.drift_label_min_effect,
                  "missing": False, "detector": "label:ks"},
        "bias": {"window": s.drift_bias_window, "threshold": s.drift_bias_threshold, "warmup": s.drift_warmup,
                 "alpha": budget_alpha(budget, s.drift_bias_window)},
    }


def missing_rate_test(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Change in each column's missing (NaN) rate, and its two-sided two-proportion p-value.

    >>> d, p = missing_rate_test(np.zeros((1000, 1)), np.full((500, 1), np.nan))
    >>> float(d[0]), bool(p[0] < 1e-9)
    (1.0, True)
    """
    n1, n2 = ref.shape[0], cur.shape[0]
    m1, m2 = np.isnan(ref).sum(axis=0), np.isnan(cur).sum(axis=0)
    pooled = (m1 + m2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    diff = m2 / n2 - m1 / n1
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(diff) / se, 0.0)
    return diff, special.erfc(z / math.sqrt(2))


def ks_columns(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS statistic and p-value per column; NaNs (missing) are dropped per column."""
    if not (np.isnan(ref).any() or np.isnan(cur).any()):
        # all columns at once (scipy's ks_2samp loops over columns in Python): sort the
        # pooled sample, walk both empirical CDFs, and read them only where a run of ties
        # ends, which is what ks_2samp's searchsorted(side="right") evaluates
        n1, n2 = ref.shape[0], cur.shape[0]
        pooled = np.concatenate([ref, cur])
        order = np.argsort(pooled, axis=0, kind="stable")
        values = np.take_along_axis(pooled, order, axis=0)
        from_ref = order < n1
        diff = np.cumsum(from_ref, axis=0) / n1 - np.cumsum(~from_ref, axis=0) / n2
        run_end = np.ones_like(values, dtype=bool)
        run_end[:-1] = values[1:] != values[:-1]
        d = np.where(run_end, np.abs(diff), 0.0).max(axis=0)
        # Kolmogorov's limiting distribution of sqrt(n1 n2 / (n1 + n2)) D: microseconds, where
        # ks_2samp's finite-n kstwo.sf takes ~1 ms per feature; its p-values are slightly
        # larger (conservative: a few % at p = 0.01 for windows of 150 and 300)
        return d, special.kolmogorov(math.sqrt(n1 * n2 / (n1 + n2)) * d)
    d, p = np.zeros(ref.shape[1]), np.ones(ref.shape[1])
    for j in range(ref.shape[1]):
        a, b = ref[:, j][~np.isnan(ref[:, j])], cur[:, j][~np.isnan(cur[:, j])]
        if a.size >= 2 and b.size >= 2:  # too few observations: no evidence either way
            dj, pj = ks_columns(a[:, None], b[:, None])
            d[j], p[j] = dj[0], pj[0]
    return d, p


def reject(p: np.ndarray, alpha: float, correction: str = "holm") -> np.ndarray:
    """Which hypotheses to reject with family-wise error ``alpha`` over ``len(p)`` tests.

    >>> reject(np.array([0.001, 0.02, 0.04]), 0.05).tolist()
    [True, True, True]
    >>> reject(np.array([0.001, 0.02, 0.04]), 0.05, "bonferroni").tolist()
    [True, False, False]
    """
    p = np.nan_to_num(np.asarray(p, dtype=float), nan=1.0)
    m = p.size
    if correction == "none":
        return p <= alpha
    if correction == "bonferroni":
        return p <= alpha / m
    order = np.argsort(p)
    ok = p[order] <= alpha / (m - np.arange(m))  # Holm: step down, stop at the first failure
    passed = np.cumprod(ok).astype(bool)
    out = np.zeros(m, dtype=bool)
    out[order[passed]] = True
    return out


@dataclass
class BiasMonitor:
    """Mean predicted score vs mean observed label over tumbling windows of labels.

    With ``alpha`` set, a window alarms only if the mean residual is also significant (a
    z-test, so a small window's noise is not bias); with ``warmup``, a window is judged only
    if every label in it was scored by a model that had learned that many (it still
    accumulates, which the worker's prediction-bias gauge reads). Both default to off, which is how a
    monitor unpickled from an old checkpoint behaves; :meth:`from_settings` turns them on.
    """

    window: int = 1000
    threshold: float = 0.1
    n: int = 0
    sum_score: float = 0.0
    sum_label: float = 0.0
    count: int = 0
    warmup: int = 0
    alpha: float | None = None
    sum_sq: float = 0.0
    blocks: list[float] | None = None  # residuals of 50-label blocks: [sum, n, sum of means, squares, count]
    young: bool = False  # this window holds labels scored by a model still in its warm-up

    @classmethod
    def from_settings(cls, s: Any) -> BiasMonitor:
        return cls(**lifecycle_kwargs(s)["bias"])

    def update(self, score: float, label: float, learned: int | None = None) -> DriftEvent | None:
        """Predicted P(positive) (or estimate), the observed label (1/0, or the value) and
        how many labels the scoring model had learned when it predicted."""
        self.n += 1
        if learned is not None and learned < self.warmup:
            self.young = True  # a young model is biased because it is young, not because the world moved
        self.count += 1
        score, label = float(score), float(label)  # converted once per label, not three times
        self.sum_score += score
        self.sum_label += label
        r = score - label
        self.sum_sq += r * r
        b = self.blocks
        if b is None:
            b = self.blocks = [0.0, 0, 0.0, 0.0, 0]
        b[0] += r
        b[1] += 1
        if b[1] == 50:
            b[2] += b[0] / 50
            b[3] += (b[0] / 50) ** 2
            b[4] += 1
            b[0], b[1] = 0.0, 0
        if self.count < self.window:
            return None
        n, sq = self.count, self.sum_sq
        bias = (self.sum_score - self.sum_label) / n
        self.sum_score = self.sum_label = self.sum_sq = 0.0
        self.count = 0
        self.blocks = None
        young, self.young = self.young, False
        if abs(bias) <= self.threshold or young:  # (the window still feeds the bias gauge)
            return None
        p = None
        if self.alpha is not None:
            var = max(sq / n - bias * bias, 1e-12) / n  # variance of the mean residual, iid
            k = b[4]
            p = float(special.erfc(abs(bias) / math.sqrt(2 * var)))
            if k >= 5:  # labels come in bursts: batch means see the clustering iid misses (t, k-1 df)
                bm = b[2] / k
                bvar = (b[3] / k - bm * bm) / (k - 1)
                if bvar > var:
                    p = float(2 * special.stdtr(k - 1, -abs(bias) / math.sqrt(bvar)))
            if p > self.alpha:
                return None
        return DriftEvent("bias", None, bias, self.n, "critical" if abs(bias) > 2 * self.threshold else "drift", p)


@dataclass(frozen=True)
class Action:
    kind: str  # warn | start_challenger | request_retrain | rollback
    reason: str
    event: DriftEvent
    from_position: int  # a fresh challenger learns from here (the drift point)


@dataclass
class ActionConfig:
    by_severity: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    rollback_within: int = 2000  # labels after a promotion in which an error increase means rollback

    @classmethod
    def from_settings(cls, s: Any) -> ActionConfig:
        return cls(by_severity={k: list(v) for k, v in s.drift_actions.items()},
                   rollback_within=s.drift_rollback_within)


def plan(events: Sequence[DriftEvent], config: ActionConfig | None = None,
         labels_since_promotion: int | None = None) -> list[Action]:
    """The actions these events call for, one per kind, each caused by its most severe event.

    A concept-drift alarm (error up) shortly after a promotion points at the new champion:
    with ``labels_since_promotion`` within ``rollback_within``, it also asks for a rollback.
    """
    config = config or ActionConfig()
    chosen: dict[str, Action] = {}
    for ev in sorted(events, key=lambda e: -SEVERITIES.index(e.severity)):
        kinds = list(config.by_severity.get(f"{ev.kind}.{ev.severity}", []))
        if (ev.kind == "concept" and ev.severity in ("drift", "critical") and labels_since_promotion is not None
                and labels_since_promotion <= config.rollback_within):
            kinds.append("rollback")
        for k in kinds:
            if k not in ACTIONS:
                raise ValueError(f"unknown drift action {k!r}; known: {ACTIONS}")
            if k not in chosen:
                where = f" on {ev.feature}" if ev.feature else ""
                reason = f"{ev.detector}{where}: {ev.severity} (statistic {ev.statistic:.4g} at {ev.position})"
                chosen[k] = Action(k, reason, ev, ev.position)
    return [chosen[k] for k in ACTIONS if k in chosen]
