"""Drift detectors are judged, not trusted (``streamlearn drift-eval``).

Runs the configured detectors on seeded synthetic streams with known drift points and
scores them beside dummy detectors that simply fire every ``period`` events:

* ``concept``: a Bernoulli error stream (a model's mistakes) whose error rate jumps
  from 0.15 to 0.30 at random positions (``abrupt``) or ramps up over 2,000 events
  (``gradual``), then decays back as the model re-learns, or never changes (``none``);
  and ``sea``, the real thing: a River
  logistic regression learning River's ``ConceptDriftStream`` of SEA concepts, whose
  prediction errors are the stream.
* ``data``: Gaussian features (50 in the report) of which 3 shift by 0.5 sd at each
  drift point, with Holm's correction and without; and single-change scenarios on 10 raw
  features, one of which (a positive, amount-like field) shifts by one sd
  (``covariate``), freezes (``constant``), goes missing (``missing``) or changes unit
  (``unit``, x1000), or nothing happens (``none``); and ``entities``: the entity_v1
  features of a stationary card stream (100k events, warm-up included), where every
  alarm is a false one.
* ``label``: a binary label whose positive rate moves from 0.3 to 0.5.

Each suite scores the detectors as they were before the false-alarm budget
("previous") beside the budgeted ones the lifecycle now runs, and the dummy.

Scoring: a detection at ``s`` is a true positive for the latest drift ``t`` with
``t <= s <= t + max_delay`` if that drift has no detection yet; everything else is a
false alarm. Precision = TP / detections, recall = detected drifts / drifts, delay =
mean ``s - t`` over detected drifts, false alarms per 10k events. The dummy fires with a
random phase; the best dummy (highest F1 over its periods) is the bar to beat.

>>> stream = error_stream("abrupt", 20_000, seed=0)
>>> stream.drifts
[5876, 10342, 15027]
>>> s = score(run_concept(stream.values, "adwin"), stream)
>>> s.tp, s.detections, s.delays
(3, 3, [171, 281, 204])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlearn.models.governance.drift import (
    BUDGET_SHARE,
    DETECTOR_DEFAULTS,
    PER_EVENTS,
    BiasMonitor,
    ConceptDriftDetector,
    FeatureDriftMonitor,
    budget_alpha,
    trending_features,
)

DUMMY_PERIODS = (250, 500, 1000, 2000, 4000)


@dataclass
class Stream:
    name: str
    values: np.ndarray  # (n,) errors or (n, features) rows
    drifts: list[int]  # 0-based positions where a change starts
    max_delay: int
    names: list[str] | None = None  # column names (data streams whose names matter)


def _drift_points(rng: np.random.Generator, length: int, n: int, gap: int) -> list[int]:
    # evenly spread segments with jitter: every drift has room to be detected before the next
    seg = length // (n + 1)
    return [int(seg * (k + 1) + rng.integers(-seg // 4, seg // 4)) for k in range(n)] if seg > gap else []


def error_stream(kind: str, length: int = 20_000, seed: int = 0, n_drifts: int = 3, width: int = 2000,
                 base: float = 0.15, jump: float = 0.15, recover: float = 1500.0) -> Stream:
    """A model's 0/1 errors: at each drift the error rate rises by ``jump`` (at once for
    ``abrupt``, linearly over ``width`` for ``gradual``), then decays back as the model
    re-learns (time constant ``recover``); ``none`` stays at ``base``."""
    rng = np.random.default_rng(seed)
    drifts = [] if kind == "none" else _drift_points(rng, length, n_drifts, width + 500)
    rate = np.full(length, base)
    t = np.arange(length, dtype=float)
    rise = width if kind == "gradual" else 1
    for d in drifts:
        up = np.clip((t - d) / rise, 0.0, 1.0)
        down = np.exp(-np.clip(t - d - rise, 0.0, None) / recover)
        rate += np.where(t >= d, jump * up * down, 0.0)
    delay = 1000 + (width if kind == "gradual" else 0)
    return Stream(f"concept/{kind}", (rng.random(length) < rate).astype(float), drifts, delay)


def sea_error_stream(length: int = 20_000, seed: int = 0, n_drifts: int = 3) -> Stream:
    """Errors of a River logistic regression learning a ConceptDriftStream of SEA concepts."""
    from river import compose, linear_model, optim, preprocessing
    from river.datasets import synth

    rng = np.random.default_rng(seed)
    drifts = _drift_points(rng, length, n_drifts, 1000)
    stream: Any = synth.SEA(variant=0, seed=seed)
    # nest: each drift switches to the next SEA concept. River's sigmoid overflows for
    # narrow widths on long streams, so "abrupt" here is a ~100-event switch centred on d.
    for k, d in enumerate(drifts):
        stream = synth.ConceptDriftStream(stream, synth.SEA(variant=(k + 1) % 4, seed=seed + k + 1),
                                          position=d, width=max(150, length // 150), seed=seed)
    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(optim.SGD(0.05)))
    errors = np.empty(length)
    for i, (x, y) in enumerate(stream.take(length)):
        errors[i] = float(model.predict_one(x) != y)
        model.learn_one(x, y)
    return Stream("concept/sea", errors, drifts, 1000)


def feature_stream(kind: str, length: int = 20_000, seed: int = 0, n_features: int = 20, n_shifted: int = 3,
                   shift: float = 0.5, n_drifts: int = 3) -> Stream:
    """Gaussian feature rows; at each drift ``n_shifted`` features move by ``shift`` sd."""
    rng = np.random.default_rng(seed)
    drifts = [] if kind == "none" else _drift_points(rng, length, n_drifts, 2500)
    x = rng.standard_normal((length, n_features))
    for k, d in enumerate(drifts):
        cols = rng.choice(n_features, n_shifted, replace=False)
        x[d:, cols] += shift * (1 if k % 2 == 0 else -1)
    return Stream(f"data/{kind}", x, drifts, 1500)


SCENARIOS = ("covariate", "constant", "missing", "unit", "none")


def scenario_stream(kind: str, length: int = 20_000, seed: int = 0, n_features: int = 10) -> Stream:
    """Raw feature rows; column 0 is a positive amount-like field (log-normal). One change
    at a random point in the middle of the stream (after any warm-up) hits column 0:
    ``covariate`` (+1 sd), ``constant`` (frozen at its median), ``missing`` (NaN from
    there on), ``unit`` (x1000, say cents instead of euros), or ``none``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((length, n_features))
    x[:, 0] = np.exp(rng.normal(3.0, 0.5, length))
    drifts: list[int] = []
    if kind != "none":
        d = int(rng.integers(length // 2, length * 7 // 10))
        drifts = [d]
        col = x[d:, 0]
        if kind == "covariate":
            x[d:, 0] = col + col.std()
        elif kind == "constant":
            x[d:, 0] = float(np.median(x[:d, 0]))
        elif kind == "missing":
            x[d:, 0] = np.nan
        elif kind == "unit":
            x[d:, 0] = col * 1000
        else:
            raise ValueError(f"unknown scenario {kind!r}; known: {SCENARIOS}")
    return Stream(f"raw/{kind}", x, drifts, 1500, [f"f{j}" for j in range(n_features)])


def entity_stream(length: int = 100_000, seed: int = 0, n_cards: int = 2_000) -> Stream:
    """The entity_v1 feature vectors of a stationary card stream (no drift at all): counts,
    rates and per-card means grow while cards accumulate history, ``hour`` cycles."""
    from streamlearn import datasets
    from streamlearn.featurestore.definitions import get_view

    view = get_view("entity_v1")
    states: dict[str, Any] = {}
    xs = []
    for it in datasets.cards(length, seed=seed, drift_at=None, n_cards=n_cards):
        e = it.event
        x, states[e["entity"]] = view.compute(e, states.get(e["entity"]))
        xs.append(x)
    names = sorted({k for x in xs[:5000] for k in x})
    rows = np.array([[x.get(f, np.nan) for f in names] for x in xs], dtype=float)
    return Stream("data/entities", rows, [], 1500, names)


def label_stream(kind: str, length: int = 20_000, seed: int = 0, base: float = 0.3, shift: float = 0.2) -> Stream:
    """0/1 labels, positive rate ``base``; ``shift`` (the class balance moves by ``shift`` at
    a random point in the middle) or ``none``."""
    rng = np.random.default_rng(seed)
    rate = np.full(length, base)
    drifts: list[int] = []
    if kind == "shift":
        d = int(rng.integers(length // 2, length * 7 // 10))
        rate[d:] += shift
        drifts = [d]
    return Stream(f"label/{kind}", (rng.random(length) < rate).astype(float), drifts, 1500)


def run_labels(labels: np.ndarray, **kwargs: Any) -> list[int]:
    mon = FeatureDriftMonitor(["label"], missing=False, detector="label:ks", **kwargs)
    return [ev.position - 1 for i, y in enumerate(labels.tolist()) for ev in mon.update_many(np.array([[y]]))]


def run_bias(labels: np.ndarray, tau: float = 1000.0, **kwargs: Any) -> list[int]:
    """The bias monitor on a model that tracks the positive rate with time constant ``tau``."""
    mon = BiasMonitor(**kwargs)
    out, score = [], float(labels[: int(tau)].mean()) if labels.size else 0.0
    for y in labels.tolist():
        ev = mon.update(score, y, None)
        if ev is not None:
            out.append(ev.position - 1)
        score += (y - score) / tau
    return out


def run_concept(errors: np.ndarray, name: str = "adwin", **kwargs: Any) -> list[int]:
    det = ConceptDriftDetector(name, **kwargs)
    # alarms (DDM's warnings are not) as 0-based indices of the triggering observation
    return [ev.position - 1 for ev in map(det.update, errors.tolist())
            if ev is not None and ev.severity in ("drift", "critical")]


def run_data(rows: np.ndarray, names: Sequence[str] | None = None, exclude_trending: bool = False,
             **kwargs: Any) -> list[int]:
    """The data monitor on ``rows`` in micro-batches; with ``exclude_trending``, the columns
    :func:`~streamlearn.models.drift.trending_features` names are not monitored."""
    names = list(names) if names is not None else [f"f{j}" for j in range(rows.shape[1])]
    if exclude_trending:
        from streamlearn.featurestore.definitions import get_view

        trending = trending_features(get_view("entity_v1"), names)
        keep = [j for j, n in enumerate(names) if n not in trending]
        rows, names = rows[:, keep], [names[j] for j in keep]
    mon = FeatureDriftMonitor(names, **kwargs)
    out: list[int] = []
    for start in range(0, rows.shape[0], 100):  # as micro-batches, like the loop would
        out += sorted({ev.position - 1 for ev in mon.update_many(rows[start:start + 100])})
    return out


def run_dummy(length: int, period: int, seed: int = 0) -> list[int]:
    phase = int(np.random.default_rng(seed).integers(0, period))
    return list(range(phase, length, period))


@dataclass
class Score:
    detections: int = 0
    tp: int = 0
    drifts: int = 0
    length: int = 0
    delays: list[int] = field(default_factory=list)

    def add(self, other: Score) -> Score:
        return Score(self.detections + other.detections, self.tp + other.tp, self.drifts + other.drifts,
                     self.length + other.length, self.delays + other.delays)

    @property
    def precision(self) -> float:
        return self.tp / self.detections if self.detections else (1.0 if not self.drifts else 0.0)

    @property
    def recall(self) -> float:
        return self.tp / self.drifts if self.drifts else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if self.drifts and p + r > 0 else (math.nan if not self.drifts else 0.0)

    @property
    def mean_delay(self) -> float:
        return float(np.mean(self.delays)) if self.delays else math.nan

    @property
    def false_alarms_per_10k(self) -> float:
        return (self.detections - self.tp) * 10_000 / self.length if self.length else math.nan

    @property
    def false_alarms_per_100k(self) -> float:
        return (self.detections - self.tp) * PER_EVENTS / self.length if self.length else math.nan


def score(detections: Sequence[int], stream: Stream) -> Score:
    matched: set[int] = set()
    delays = []
    for s in detections:
        past = [d for d in stream.drifts if d <= s]
        if past and past[-1] not in matched and s - past[-1] <= stream.max_delay:
            matched.add(past[-1])
            delays.append(s - past[-1])
    return Score(len(detections), len(matched), len(stream.drifts), len(stream.values), delays)


def evaluate(streams: Sequence[Stream], detector: Callable[[Stream], list[int]]) -> Score:
    total = Score()
    for st in streams:
        total = total.add(score(detector(st), st))
    return total


def best_dummy(streams: Sequence[Stream]) -> tuple[int, Score]:
    """The periodic dummy with the highest F1 (fewest false alarms on drift-free streams)."""
    results = [(p, evaluate(streams, lambda st, p=p: run_dummy(len(st.values), p, len(st.drifts) + p)))
               for p in DUMMY_PERIODS]
    if streams and streams[0].drifts:
        return max(results, key=lambda r: r[1].f1)
    return min(results, key=lambda r: r[1].false_alarms_per_10k)


PREVIOUS_DATA: dict[str, Any] = {"alpha": 0.01, "warmup": 0, "sliding": False, "min_effect": 0.0,
                                 "missing": False, "calibrate": False}


def report(seeds: int = 5, length: int = 20_000, concept: Sequence[tuple[str, dict[str, Any]]] | None = None,
           sea: bool = True, data_kwargs: dict[str, Any] | None = None, features: int = 50,
           budget: float = 1.0, warmup: int = 5000, label_min_effect: float = 0.05,
           entities_length: int = 100_000) -> str:
    """The table ``streamlearn drift-eval`` prints: each ``(detector name, kwargs)`` in
    ``concept`` (default: all three at our defaults), alone ("previous") and confirmed
    at its share of the false-alarm ``budget`` per 100k events; the data monitor as it was
    and budgeted; the label monitor and the bias monitor; each beside the best dummy."""
    concept = concept or [(n, {}) for n in DETECTOR_DEFAULTS]
    share = BUDGET_SHARE * budget
    dk = {k: v for k, v in (data_kwargs or {}).items() if k != "alpha" or v is not None}
    suites: list[tuple[list[Stream], list[tuple[str, Callable[[Stream], list[int]]]]]] = []
    concept_runs = [(f"concept:{n}", lambda st, n=n, kw=kw: run_concept(st.values, n, **kw)) for n, kw in concept]
    concept_runs += [(f"concept:{n}+budget", lambda st, n=n, kw=kw: run_concept(
        st.values, n, **{**kw, "false_alarms_per_100k": share})) for n, kw in concept[:1]]
    for kind in ("abrupt", "gradual", "none"):
        suites.append(([error_stream(kind, length, s) for s in range(seeds)], concept_runs))
    if sea:
        suites.append(([sea_error_stream(length, s) for s in range(seeds)], concept_runs))
    previous = {**dk, **PREVIOUS_DATA}
    budgeted = {**dk, "false_alarms_per_100k": share, "warmup": warmup}
    data_runs = [("data:ks+holm (previous)", lambda st: run_data(st.values, **previous)),
                 ("data:ks uncorrected", lambda st: run_data(st.values, **{**previous, "correction": "none"})),
                 ("data:ks budgeted", lambda st: run_data(st.values, **{**budgeted, "warmup": 0}))]
    for kind in ("abrupt", "none"):
        suites.append(([feature_stream(kind, length, s, n_features=features) for s in range(seeds)], data_runs))
    scenario_runs = [("data:ks+holm (previous)", lambda st: run_data(st.values, st.names, **previous)),
                     ("data:ks budgeted", lambda st: run_data(st.values, st.names, **budgeted))]
    for kind in SCENARIOS:
        suites.append(([scenario_stream(kind, length, s) for s in range(seeds)], scenario_runs))
    entity_runs = [("data:ks+holm (previous)", lambda st: run_data(st.values, st.names, **previous)),
                   ("data:ks budgeted", lambda st: run_data(st.values, st.names, exclude_trending=True, **budgeted))]
    suites.append(([entity_stream(entities_length, s) for s in range(max(1, seeds // 2))], entity_runs))
    label_runs = [("bias (previous)", lambda st: run_bias(st.values)),
                  ("bias budgeted", lambda st: run_bias(st.values, alpha=budget_alpha(share, 1000))),
                  ("label:ks budgeted", lambda st: run_labels(
                      st.values, false_alarms_per_100k=share, warmup=warmup, min_effect=label_min_effect))]
    for kind in ("shift", "none"):
        suites.append(([label_stream(kind, length, s) for s in range(seeds)], label_runs))
    head = (f"{'stream':<16}{'detector':<26}{'drifts':>7}{'alarms':>7}{'precision':>10}{'recall':>8}"
            f"{'F1':>7}{'delay':>8}{'FA/100k':>9}")
    lines = [f"{seeds} seeded streams of {length} events each ({features} features for data/abrupt|none, "
             f"{entities_length:,} events for data/entities); false-alarm budget {budget:g} per 100k events "
             f"(a quarter per detector kind), warm-up {warmup:,}; dummy = fires every N events, best N shown", head]
    for streams, runs in suites:
        rows = [(label, evaluate(streams, run)) for label, run in runs] + _dummy_row(streams)
        for label, sc in rows:
            lines.append(f"{streams[0].name:<16}{label:<26}{sc.drifts:>7}{sc.detections:>7}{sc.precision:>10.3f}"
                         f"{sc.recall:>8.3f}{sc.f1:>7.3f}{sc.mean_delay:>8.0f}{sc.false_alarms_per_100k:>9.1f}")
    return "\n".join(lines)


def _dummy_row(streams: Sequence[Stream]) -> list[tuple[str, Score]]:
    period, sc = best_dummy(streams)
    return [(f"dummy every {period}", sc)]


def report_from_settings(s: Any, seeds: int = 5, length: int = 20_000, sea: bool = True) -> str:
    """The report for the configured detectors (the configured concept detector first); the
    live-like runs through the online loop are :mod:`streamlearn.replay.backtest.drift_live`."""
    # the synthetic error streams start from a trained model (no learning transient to sit
    # out), and their first drift may come at 3,750: a grace beyond 1,000 would only hide it
    common = {"grace": min(s.drift_grace, 1000), "min_gap": s.drift_min_gap, "critical_delta": s.drift_critical_delta}
    names = [s.drift_concept_detector] + [n for n in DETECTOR_DEFAULTS if n != s.drift_concept_detector]
    concept = [(n, {**common, "params": s.drift_concept_params if n == names[0] else None}) for n in names]
    data = {"reference": s.drift_feature_reference, "window": s.drift_feature_window, "alpha": s.drift_feature_alpha,
            "correction": s.drift_feature_correction, "min_effect": s.drift_feature_min_effect}
    out = report(seeds, length, concept, sea, data, budget=s.drift_false_alarms_per_100k, warmup=s.drift_warmup,
                 label_min_effect=s.drift_label_min_effect)
    return out
