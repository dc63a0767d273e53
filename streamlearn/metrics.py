"""The one metrics module: every Prometheus family the system exposes, on a registry you pass.

Each worker runtime (and each test) builds its own :class:`Metrics` on a fresh
``CollectorRegistry``, so nothing is registered twice and several runtimes can live in one
process. Every worker serves its own registry on ``GET /metrics`` (streams/web.py);
Prometheus scrapes each worker, so no multiprocess mode is needed.

Hot paths never look labels up per event: callers hand over batches, labelled children
are resolved once per batch (or cached) and incremented by the batch's counts.

Label semantics worth knowing when writing queries and alerts:

* ``streamlearn_labels_total{outcome}`` partitions what happened to labels:
  ``learned`` (joined to its served vector on arrival), ``duplicate`` (already learned,
  ignored), ``unmatched`` (its event not scored yet: parked), ``joined_late`` (a parked
  label learned when its event arrived). Labels learned = learned + joined_late.
* ``streamlearn_model_batch_seconds{op}`` is the online loop's time for a batch *minus*
  the feature-store time spent inside it: feature computation plus model predict
  (``op="score"``) or learn (``op="learn"``).
* ``streamlearn_consumer_offset_gaps_total{topic}`` counts holes in a partition's offsets
  that the consumer refused to skip and re-fetched (the embedded broker's fault under
  concurrent producers); a gap that never fills stops the worker instead.
* ``streamlearn_consumer_lag`` = fetch high watermark - the group's committed offset
  (tansu's ListOffsets "latest" is unreliable; the fetch high watermark is not).

>>> m = Metrics()
>>> m.dead_letter("events", "schema")
>>> m.set_model_metrics("fraud", 1, "champion", {"roc_auc": 0.91})
>>> text = m.exposition().decode()
>>> 'streamlearn_dead_letters_total{reason="schema",source="events"} 1.0' in text
True
>>> 'streamlearn_model_metric{metric="roc_auc",model="fraud",stage="champion",version="1"} 0.91' in text
True
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "DEAD_LETTER_REASONS", "DEAD_LETTER_SOURCES", "DRIFT_STATES", "LABEL_OUTCOMES",
           "LIFECYCLE_ACTIONS", "Metrics"]

# event (Kafka timestamp) -> prediction published: tens of ms normally, minutes when behind
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
STORE_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MODEL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LABEL_OUTCOMES = ("learned", "duplicate", "unmatched", "joined_late")
LIFECYCLE_ACTIONS = ("promoted", "refused", "rolled_back")
# The dead-letter reason codes (``InvalidRecord.reason``; tests/integration/streams/test_worker_edges.py checks this
# list against the code). Their series exist at 0 from the start, so "dead letters in the last
# hour" reads 0, not "No data"; an unlisted reason still gets its own series when it happens.
DEAD_LETTER_REASONS = ("empty", "unknown_format", "invalid_json", "schema", "truncated", "bad_avro",
                       "unknown_schema", "wrong_subject", "non_finite", "limit",
                       "feature_error", "label")  # a user feature function raised; a label of the wrong type
DEAD_LETTER_SOURCES = ("events", "feedback")
DRIFT_STATES = {"stable": 0, "warning": 1, "drift": 2}


class LoopCounters(Protocol):
    """What :meth:`Metrics.sync_counters` reads (``streams.loop.Counters``)."""

    events_duplicate: int
    labels_joined_late: int
    checkpoints: int
    store_retries: int


class Metrics:
    """All metric families of one worker, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, model: str = "default") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.model = model
        r = self.registry

        # --- throughput ------------------------------------------------------------
        self.events_received = Counter(
            "streamlearn_events_received", "Event messages received (valid or not)", ["path"], registry=r)
        self.feedback_received = Counter(
            "streamlearn_feedback_received", "Feedback (label) messages received (valid or not)", registry=r)
        self.predictions = Counter(
            "streamlearn_predictions", "Predictions published, by the model version that served them",
            ["model", "version", "stage", "path"], registry=r)
        self.events_duplicate = Counter(
            "streamlearn_events_duplicate", "Re-delivered events answered from their stored served vector",
            registry=r)
        self.labels = Counter(
            "streamlearn_labels", "Labels by outcome: learned on arrival, duplicate, unmatched (parked), "
            "joined_late (parked, then learned)", ["outcome"], registry=r)
        self.dead_letters = Counter(
            "streamlearn_dead_letters", "Messages sent to the dead-letter topic", ["source", "reason"], registry=r)
        self.checkpoints = Counter("streamlearn_checkpoints", "Model checkpoints written", registry=r)
        self.store_retries = Counter(
            "streamlearn_store_retries", "Feature-store operations retried (store unavailable)", registry=r)
        self.http_requests = Counter(
            "streamlearn_http_requests", "HTTP API requests", ["endpoint", "code"], registry=r)

        # --- latency ---------------------------------------------------------------
        self.event_latency = Histogram(
            "streamlearn_event_to_prediction_seconds",
            "Event Kafka timestamp (or HTTP request arrival) to prediction published",
            ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.store_latency = Histogram(
            "streamlearn_feature_store_seconds", "Feature/state store call latency", ["op"],
            buckets=STORE_BUCKETS, registry=r)
        self.store_errors = Counter(
            "streamlearn_feature_store_errors", "Feature/state store calls that raised", ["op"], registry=r)
        self.model_latency = Histogram(
            "streamlearn_model_batch_seconds",
            "Online-loop batch time excluding store I/O: features + predict (score) or learn",
            ["op"], buckets=MODEL_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "streamlearn_batch_size", "Records per batch handed to the online loop", ["op"],
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500), registry=r)

        # --- consumer ----------------------------------------------------------------
        self.consumer_lag = Gauge(
            "streamlearn_consumer_lag", "Records not yet committed by this worker's group: "
            "fetch high watermark - committed offset", ["topic", "partition"], registry=r)
        self.consumer_highwater = Gauge(
            "streamlearn_consumer_highwater", "Fetch high watermark of an assigned partition",
            ["topic", "partition"], registry=r)
        self.consumer_committed = Gauge(
            "streamlearn_consumer_committed_offset", "Group's committed offset of an assigned partition",
            ["topic", "partition"], registry=r)
        self.offset_gaps = Counter(
            "streamlearn_consumer_offset_gaps", "Offset gaps the consumer found in a partition (a broker "
            "returned a later record before earlier ones) and closed by fetching again", ["topic"], registry=r)

        # --- models ------------------------------------------------------------------
        self.model_metric = Gauge(
            "streamlearn_model_metric", "Online (progressive-validation) metric of a model version",
            ["model", "version", "stage", "metric"], registry=r)
        self.model_labels = Gauge(
            "streamlearn_model_labels_learned", "Labels a model version has learned",
            ["model", "version", "stage"], registry=r)
        self.prediction_bias = Gauge(
            "streamlearn_prediction_bias", "Mean prediction minus mean label over the recent window",
            ["model", "version", "stage"], registry=r)
        self.promotions = Counter("streamlearn_model_promotions", "Model versions promoted to champion",
                                  ["model"], registry=r)
        self.refusals = Counter("streamlearn_model_refusals", "Promotions or commands refused (gate, operator)",
                                ["model"], registry=r)
        self.rollbacks = Counter("streamlearn_model_rollbacks", "Rollbacks to a previous champion or canary ends",
                                 ["model"], registry=r)

        # --- drift ---------------------------------------------------------------------
        self.drift_state = Gauge(
            "streamlearn_drift_state", "Drift detector state: 0 stable, 1 warning, 2 drift",
            ["detector", "feature"], registry=r)
        self.drift_last_position = Gauge(
            "streamlearn_drift_last_position", "Stream position (labels seen) of the detector's last drift",
            ["detector", "feature"], registry=r)
        self.drift_detections = Counter(
            "streamlearn_drift_detections", "Drifts detected", ["detector", "feature"], registry=r)

        # --- worker --------------------------------------------------------------------
        self.ready = Gauge("streamlearn_ready", "1 when the worker passes its readiness checks", registry=r)
        self.info = Gauge("streamlearn_worker_info", "Static facts about this worker (value 1)",
                          ["app_id", "model", "spec", "feature_view"], registry=r)

        # children resolved once: hot paths only call inc/observe
        self._label_children = {o: self.labels.labels(o) for o in LABEL_OUTCOMES}
        self._latency = {p: self.event_latency.labels(p) for p in ("kafka", "http")}
        self._received = {p: self.events_received.labels(p) for p in ("kafka", "http")}
        self._model_latency = {op: self.model_latency.labels(op) for op in ("score", "learn")}
        self._batch_size = {op: self.batch_size.labels(op) for op in ("score", "learn")}
        self._dead: dict[tuple[str, str], Any] = {
            (src, reason): self.dead_letters.labels(src, reason)
            for src in DEAD_LETTER_SOURCES for reason in DEAD_LETTER_REASONS}
        self._pred_children: dict[tuple[str, int, str, str], Any] = {}
        self._counter_base: tuple[int, ...] | None = None
        self._model_series: dict[tuple[str, str, str], set[str]] = {}  # -> metric names exported
        self._drift_positions: dict[tuple[str, str], int] = {}
        self._offset_series: set[tuple[str, str]] = set()
        # lifecycle counters start at 0 so increase() sees their first event
        self.lifecycle(model, None)

    # ------------------------------------------------------------------ exposition
    def exposition(self) -> bytes:
        """The registry in Prometheus text format (content type ``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ batches
    def received(self, n: int, path: str = "kafka") -> None:
        self._received[path].inc(n)

    def predictions_delivered(
        self,
        versions: Iterable[int],
        received_at_s: Sequence[float],
        delivered_at_s: float,
        stage_of: Callable[[int], str],
        path: str = "kafka",
    ) -> None:
        """Count a published batch per serving version and observe each event's latency (the
        producer has the predictions; the broker has them before the input is committed)."""
        by_version = collections.Counter(versions)
        for version, n in by_version.items():
            key = (self.model, version, stage_of(version), path)
            child = self._pred_children.get(key)
            if child is None:
                child = self._pred_children[key] = self.predictions.labels(self.model, str(version), key[2], path)
            child.inc(n)
        observe = self._latency[path].observe
        for t in received_at_s:
            observe(max(0.0, delivered_at_s - t))

    @contextmanager
    def loop_batch(self, op: str, n: int, store: Any) -> Iterator[None]:
        """Time one online-loop call, minus the store time spent inside it.

        ``store`` exposes ``busy_s`` (the instrumented backend's running total of time in
        calls). Other coroutines' store calls during this await are rare (the loop holds its
        lock for scoring, learning and checkpoints), so the subtraction is close.
        """
        t0, s0 = time.perf_counter(), store.busy_s
        yield
        elapsed = time.perf_counter() - t0
        self._model_latency[op].observe(max(0.0, elapsed - (store.busy_s - s0)))
        self._batch_size[op].observe(n)

    def dead_letter(self, source: str, reason: str) -> None:
        child = self._dead.get((source, reason))
        if child is None:
            child = self._dead[(source, reason)] = self.dead_letters.labels(source, reason)
        child.inc()

    def learn_report(self, learned: int, duplicate: int, unmatched: int) -> None:
        """Outcomes of one learn batch (``LearnReport`` list lengths)."""
        for outcome, n in (("learned", learned), ("duplicate", duplicate), ("unmatched", unmatched)):
            if n:
                self._label_children[outcome].inc(n)

    def sync_counters(self, counters: LoopCounters) -> None:
        """Add what the loop counted since the last call (the first call only sets the baseline).

        Called after each batch and before each scrape; cheap (a few integer subtractions).
        Only counters that nothing but traffic moves are read here; label outcomes come from
        each batch's report (:meth:`learn_report`), because a restore resets the label count.
        """
        now = (counters.events_duplicate, counters.labels_joined_late, counters.checkpoints,
               counters.store_retries)
        base, self._counter_base = self._counter_base, now
        if base is None:
            return
        families = (self.events_duplicate, self._label_children["joined_late"], self.checkpoints,
                    self.store_retries)
        for fam, n, b in zip(families, now, base):
            if n > b:  # smaller means the counters object was replaced: new baseline
                fam.inc(n - b)

    # ------------------------------------------------------------------ models
    def set_model_metrics(self, name: str, version: int, stage: str, values: Mapping[str, float],
                          labels_learned: int | None = None) -> None:
        """Publish one model version's online metrics under its current stage."""
        v = str(version)
        for metric, value in values.items():
            self.model_metric.labels(name, v, stage, metric).set(value)
        if labels_learned is not None:
            self.model_labels.labels(name, v, stage).set(labels_learned)
        self._model_series.setdefault((name, v, stage), set()).update(values)

    def set_models(self, rows: Iterable[tuple[str, int, str, Mapping[str, float], int]]) -> None:
        """Replace all model series with ``(name, version, stage, metrics, labels_learned)`` rows.

        A version that changed stage or was retired loses its old series, so dashboards
        never show a stale "champion".
        """
        rows = list(rows)
        keep = {(n, str(v), s) for n, v, s, _, _ in rows}
        for key in set(self._model_series) - keep:
            self._remove_model_series(key, self._model_series.pop(key))
        for name, version, stage, values, learned in rows:
            self.set_model_metrics(name, version, stage, values, learned)

    def _remove_model_series(self, key: tuple[str, str, str], metric_names: set[str]) -> None:
        for gauge in (self.model_labels, self.prediction_bias):
            _remove(gauge, *key)
        for metric in metric_names:
            _remove(self.model_metric, *key, metric)

    def set_prediction_bias(self, name: str, version: int, stage: str, bias: float) -> None:
        self.prediction_bias.labels(name, str(version), stage).set(bias)

    def lifecycle(self, model: str, action: str | None) -> None:
        """Count a lifecycle decision (``promoted``, ``refused``, ``rolled_back``); None only creates series."""
        families = {"promoted": self.promotions, "refused": self.refusals, "rolled_back": self.rollbacks}
        for fam in families.values():
            fam.labels(model)  # make the series exist at 0
        if action is not None:
            if action not in families:
                raise ValueError(f"unknown lifecycle action {action!r}; known: {sorted(families)}")
            families[action].labels(model).inc()

    def announced(self, subject: str, record: Mapping[str, Any]) -> None:
        """Count a record the worker published on the lifecycle or drift topic."""
        if subject == "lifecycle":
            if record["action"] in LIFECYCLE_ACTIONS:
                self.lifecycle(record["model_name"], record["action"])
        elif subject == "drift":
            # severities (models/governance/drift.py): info (error fell), warning, drift, critical
            severity = str(record.get("severity", "drift"))
            state = {"info": "stable", "warning": "warning"}.get(severity, "drift")
            position = record.get("position") if state == "drift" else None  # only drifts are detections
            self.set_drift(record["detector"], record.get("feature") or "", state, position)

    # ------------------------------------------------------------------ drift
    def set_drift(self, detector: str, feature: str, state: str, last_position: int | None = None) -> None:
        """Detector state (``stable``/``warning``/``drift``); a new drift position counts a detection."""
        if state not in DRIFT_STATES:
            raise ValueError(f"unknown drift state {state!r}; known: {sorted(DRIFT_STATES)}")
        self.drift_state.labels(detector, feature).set(DRIFT_STATES[state])
        if last_position is not None and self._drift_positions.get((detector, feature)) != last_position:
            self._drift_positions[(detector, feature)] = last_position
            self.drift_last_position.labels(detector, feature).set(last_position)
            self.drift_detections.labels(detector, feature).inc()

    # ------------------------------------------------------------------ consumer
    def offset_gap(self, topic: str) -> None:
        """Count one offset gap (``streams/gapguard.py``); never fires on Apache Kafka with our topics."""
        self.offset_gaps.labels(topic).inc()

    def set_consumer_offsets(self, rows: Iterable[tuple[str, int, int | None, int | None]]) -> None:
        """Replace the per-partition series with ``(topic, partition, highwater, committed)`` rows.

        Only partitions this worker owns are exported (each worker reports its own), so
        ``sum by (topic) (streamlearn_consumer_lag)`` over workers is the group's lag.
        A partition with no fetch yet (highwater None) is skipped; nothing committed yet
        counts from offset 0 (``auto_offset_reset=earliest``).
        """
        keep: set[tuple[str, str]] = set()
        for topic, partition, highwater, committed in rows:
            if highwater is None:
                continue
            key = (topic, str(partition))
            keep.add(key)
            done = committed if committed is not None and committed >= 0 else 0
            self.consumer_highwater.labels(*key).set(highwater)
            self.consumer_committed.labels(*key).set(done)
            self.consumer_lag.labels(*key).set(max(0, highwater - done))
        for key in self._offset_series - keep:
            for gauge in (self.consumer_lag, self.consumer_highwater, self.consumer_committed):
                _remove(gauge, *key)
        self._offset_series = keep


def _remove(family: Any, *labels: str) -> None:
    try:
        family.remove(*labels)
    except KeyError:  # never created: nothing to remove
        pass
