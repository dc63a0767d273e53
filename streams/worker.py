"""What a worker does with a batch of Kafka messages: decode -> online loop -> emit.

Kept apart from the Faust wiring (``streams/app.py``) so it can be driven by any
consumer that hands over (value, key, partition, offset, timestamp) batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from streamlearn.featurestore import catalog
from streamlearn.featurestore.backend import Backend, RedisBackend, WriteBatch
from streamlearn.featurestore.instrumented import InstrumentedBackend
from streamlearn.metrics import Metrics
from streamlearn.models.governance.lifecycle import Lifecycle, LifecycleConfig
from streamlearn.models.modelset import ModelSet
from streamlearn.models.registry.mirror import RegistryMirror
from streamlearn.models.registry.versions import open_registry
from streamlearn.project import project_for
from streamlearn.schemas import AvroCodec, InvalidRecord
from streamlearn.schemas.records import KafkaRecord
from streamlearn.schemas.validation import Limits, check_label, decode_event, feedback_decoder
from streamlearn.settings import Settings
from streamlearn.streams.loop import OnlineLoop, commands
from streamlearn.streams.transport import BatchProducer, ensure_topics, make_producer

log = logging.getLogger(__name__)


def build_loop(settings: Settings, backend: Backend) -> OnlineLoop:
    """The online loop exactly as the worker runs it (also used by /score and tests): the
    project's feature view, its champion spec and task (the built-in project without one)."""
    project = project_for(settings)
    lifecycle = None
    if settings.lifecycle_auto:
        lifecycle = Lifecycle(LifecycleConfig.from_settings(settings, task=project.task,
                                                            challenger_spec=project.challenger))
    return OnlineLoop(
        project.view,
        ModelSet.fresh(settings.model_name, project.champion, task=project.task),
        backend,
        project.keys,
        artifact_key=settings.artifact_key.get_secret_value().encode(),
        entity_ttl_s=settings.entity_ttl_s,
        served_ttl_s=settings.served_ttl_s,
        lifecycle=lifecycle,
        model_loader=registry_loader(settings),
        resolve_spec=project.resolve_spec,
    )


def registry_loader(settings: Settings):
    """version -> (spec, model) from the model registry; the signature is verified on load."""
    def load(version: int) -> tuple[str, Any]:
        reg = open_registry(settings)
        return reg.get(settings.model_name, version).spec, reg.load(settings.model_name, version)

    return load


class WorkerRuntime:
    def __init__(self, settings: Settings, codec: AvroCodec | None = None,
                 retrain: Callable[[Settings], int] | None = None, producer_config: dict[str, Any] | None = None
                 ) -> None:
        """``retrain``: fits a model from the archive and registers it, returning its registry
        version (handed in by the composition root, so transport never imports replay).
        ``producer_config``: more confluent-kafka settings for its producer (a harness's quiet
        logger)."""
        self.settings = settings
        self.retrain_fn = retrain
        self.codec = codec or AvroCodec.default()
        self.limits = Limits.from_settings(settings)
        self.decode_feedback = feedback_decoder(self.codec, self.limits)
        self.metrics = Metrics(model=settings.model_name)  # own registry, served on GET /metrics
        self.backend = InstrumentedBackend(RedisBackend(settings.redis_url), self.metrics)
        self.loop = build_loop(settings, self.backend)
        self.loop.is_learner = False  # until it owns the feedback partition (on_assigned)
        # a view version is bound to its definition: refused here, before any consumer joins
        self._view_checked = self._check_view(wait=False)
        # outputs are not flushed per batch (deliver() before each commit), so they leave after
        # linger.ms: short, as an event's prediction is due as soon as it is scored
        self.out = BatchProducer(make_producer(settings, **{"linger.ms": 1, **(producer_config or {})}))
        self.encode_prediction = self.codec.encoder("prediction")
        self.encode_deadletter = self.codec.encoder("deadletter")
        self.encoders = {"lifecycle": self.codec.encoder("lifecycle"), "drift": self.codec.encoder("drift"),
                         "feedback": self.codec.encoder("feedback")}
        self.outbox_topics = {"lifecycle": settings.topic_lifecycle, "drift": settings.topic_drift,
                              "feedback": settings.topic_feedback}
        self.ready = asyncio.Event()
        self.store_released = False  # set by close() once the final checkpoint is written
        self.deadlettered = 0
        self.assigned: list[tuple[str, int]] = []  # set by the transport on rebalance
        self.mirror = RegistryMirror(open_registry(settings), {
            "source": "live", "events": settings.topic_events, "feedback": settings.topic_feedback})
        self.registry_errors = 0
        self._retrain_task: asyncio.Task | None = None
        self._last_retrain = time.monotonic()
        self.retrains = 0

    def _check_view(self, wait: bool) -> bool:
        """Bind the feature view version to its definition in Redis (or refuse: ViewChanged).
        False if Redis did not answer and ``wait`` is False (checked again in start())."""
        client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            if catalog.check_and_record(client, self.settings.redis_prefix, self.loop.view):
                log.info("feature view %s v%d (fingerprint %s) recorded", self.loop.view.name,
                         self.loop.view.version, self.loop.view.fingerprint)
            return True
        except redis.exceptions.ConnectionError:
            if wait:
                raise
            return False
        finally:
            client.close()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, ensure_topics, self.settings)
        if not self._view_checked:
            await self.loop.io(lambda: asyncio.get_running_loop().run_in_executor(None, self._check_view, True),
                               "feature view catalog")
        replayed = await self.loop.restore()
        log.info("model %s (%s) restored: %d labels learned, %d replayed from the learn log",
                 self.loop.champion.name, self.loop.champion.spec, self.loop.champion.labels_learned, replayed)
        await self._registry(self.mirror.bootstrap, self.loop.models)
        self.metrics.sync_counters(self.loop.counters)  # baseline: counts before now are not this run's traffic
        s = self.settings
        self.metrics.info.labels(s.app_id, s.model_name, s.model_spec, s.feature_view).set(1)
        self.ready.set()

    # ---------------------------------------------------------------- dead letters
    def _dead_letter(self, msg: KafkaRecord, err: InvalidRecord) -> None:
        raw = (msg.value or b"")[: self.settings.max_message_bytes]
        record = {
            "source_topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
            "reason": err.reason, "detail": err.detail[:2000], "key": msg.key, "raw": raw,
            "failed_at": int(time.time() * 1000),
        }
        self.out.produce(self.settings.topic_deadletter, self.encode_deadletter(record), msg.key)
        self.deadlettered += 1
        self.metrics.dead_letter("events" if msg.topic == self.settings.topic_events else "feedback", err.reason)

    # ---------------------------------------------------------------- batches
    async def on_events(self, batch: Sequence[KafkaRecord]) -> int:
        await self.ready.wait()
        good: list[dict[str, Any]] = []
        sources: list[KafkaRecord] = []
        for msg in batch:
            try:
                good.append(decode_event(msg.value, self.codec, self.limits))
                sources.append(msg)
            except InvalidRecord as err:
                self._dead_letter(msg, err)
        with self.metrics.loop_batch("score", len(good), self.backend):
            preds = await self.loop.score_batch(good)
        if self.loop.feature_errors:  # a user feature function raised: those events are dead letters
            failed = {id(ev): (reason, detail) for ev, reason, detail in self.loop.feature_errors}
            self.loop.feature_errors.clear()
            for ev, msg in zip(good, sources):
                if id(ev) in failed:
                    self._dead_letter(msg, InvalidRecord(*failed[id(ev)]))
            sources = [msg for ev, msg in zip(good, sources) if id(ev) not in failed]
        stamps = [float(msg.timestamp) for msg in sources]
        now_ms = time.time() * 1000
        topic, shadow_topic = self.settings.topic_predictions, self.settings.topic_shadow
        for p, ts in zip(preds, stamps):
            p.served_at = int(now_ms)
            p.latency_ms = max(0.0, now_ms - ts)
            key = p.entity.encode()
            self.out.produce(topic, self.encode_prediction(p.record()), key)
            for sp in p.shadows:  # challengers: their own topic, never the served one
                sp.served_at, sp.latency_ms = p.served_at, p.latency_ms
                self.out.produce(shadow_topic, self.encode_prediction(sp.record()), key)
        self.out.serve()  # delivered before this input's offset is committed (deliver(), by the consumer)
        m = self.metrics  # counted once published; children resolved per batch, not per event
        m.received(len(batch))
        m.predictions_delivered((p.model_version for p in preds), [ts / 1000.0 for ts in stamps], time.time(),
                                self.loop.models.stage)
        m.sync_counters(self.loop.counters)
        return len(preds)

    async def on_feedback(self, batch: Sequence[KafkaRecord]) -> int:
        await self.ready.wait()
        good: list[dict[str, Any]] = []
        bad = 0
        task = self.loop.champion.task
        decode = self.decode_feedback
        for msg in batch:
            try:
                good.append(check_label(decode(msg.value), task))
            except InvalidRecord as err:
                self._dead_letter(msg, err)
                bad += 1
        with self.metrics.loop_batch("learn", len(good), self.backend):
            report = await self.loop.learn_batch(good)
        if bad:
            await self.out.flush()
        self.metrics.feedback_received.inc(len(batch))
        self.metrics.learn_report(len(report.learned), len(report.duplicate), len(report.unmatched))
        self.metrics.sync_counters(self.loop.counters)
        return len(report.learned)

    async def deliver(self) -> None:
        """Wait until the broker has every output produced so far: the consumer calls this
        before it commits input offsets (at least once: an output is never lost)."""
        await self.out.flush()

    async def checkpoint(self) -> None:
        if self.ready.is_set():
            await self.loop.checkpoint(self.status_extra())

    async def housekeeping(self) -> None:
        """Apply operator commands and announce model decisions (lifecycle and drift topics)."""
        if not self.ready.is_set():
            return
        await self.loop.drain_control()
        await self.loop.follow()
        await self.publish_outbox()

    async def publish_outbox(self) -> None:
        outbox = self.loop.outbox.drain()
        for subject, record in outbox:
            key = record.get("model_name") or record.get("event_id")
            self.out.produce(self.outbox_topics[subject], self.encoders[subject](record), key.encode())
        if outbox:
            await self.out.flush()
        decisions = [r for subject, r in outbox if subject == "lifecycle"]
        if any(r["action"] == "retrain_requested" for r in decisions):
            self.maybe_retrain(force=True)
        if decisions:
            await self._registry(self.mirror.apply, self.loop.models, decisions)
        for subject, record in outbox:
            self.metrics.announced(subject, record)

    # ---------------------------------------------------------------- batch retraining
    def maybe_retrain(self, force: bool = False) -> None:
        """On the learner: retrain from the archive when due (or asked by a drift alarm)."""
        s = self.settings
        if (s.retrain_interval_s <= 0 or self.retrain_fn is None or not self.loop.is_learner
                or not self.ready.is_set()):
            return
        if self._retrain_task is not None and not self._retrain_task.done():
            return
        if force or time.monotonic() - self._last_retrain >= s.retrain_interval_s:
            self._last_retrain = time.monotonic()
            self._retrain_task = asyncio.get_running_loop().create_task(self._retrain())

    async def _retrain(self) -> None:
        try:
            # a thread: fitting holds the GIL in bursts, so scoring slows while it runs (threads=1)
            version = await asyncio.get_running_loop().run_in_executor(None, self.retrain_fn, self.settings)
        except Exception as exc:  # noqa: BLE001 - e.g. an empty archive; the next tick tries again
            log.warning("scheduled retrain failed: %s", exc)
            return
        self.retrains += 1
        cmd = commands.encode({"op": "adopt", "version": version, "reason": "scheduled batch retrain"})
        await self.backend.write_batch(WriteBatch(appends={self.loop.keys.control: [cmd]}))

    async def _registry(self, fn, *args) -> None:
        """Lineage and audit go to the registry off the event loop; its failure never stops scoring."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except Exception as exc:  # noqa: BLE001 - recorded, the lifecycle topic still has it
            self.registry_errors += 1
            log.error("model registry update failed: %s", exc)

    # ---------------------------------------------------------------- rebalances
    async def on_assigned(self, assigned: list[tuple[str, int]]) -> None:
        """Owning the feedback partition makes this worker the model's learner."""
        learner = any(t == self.settings.topic_feedback for t, _ in assigned)
        await self.ready.wait()
        if learner:
            # another worker may have learned meanwhile: resume from its checkpoint + log
            replayed = await self.loop.restore()
            log.info("learner for %s: restored, %d labels replayed", self.settings.model_name, replayed)
        # the partitions and the role they give change together in the worker's status (a
        # status written during the restore showed the feedback partition owned by no learner)
        self.loop.is_learner = learner
        self.assigned = assigned

    async def on_revoked(self) -> None:
        if self.ready.is_set() and self.loop.is_learner:
            await self.loop.checkpoint(self.status_extra())  # hand over a fresh state
        self.loop.is_learner = False
        self.assigned = []  # owned by nobody here until the next assignment

    async def publish_status(self) -> None:
        if self.ready.is_set():
            await self.worker_status()
            if self.loop.is_learner:  # the model's status is the learner's
                await self.loop.publish_status(self.status_extra())

    async def worker_status(self) -> None:
        key = self.loop.keys.worker(self.settings.app_id, os.getpid())
        rec = {"pid": os.getpid(), "assigned": self.assigned, "is_learner": self.loop.is_learner,
               "counters": self.loop.counters.as_dict(), "model_version": self.loop.champion.version}
        try:
            await self.backend.write_batch(WriteBatch(sets={key: (json.dumps(rec).encode(), 10)}))
        except self.backend.transient_errors:
            # a heartbeat, refreshed every second: skip it while Redis is down (the store metrics
            # count the error). Raising here crashed the Faust app and left a hung worker.
            pass

    def status_extra(self) -> dict[str, Any]:
        return {"deadlettered": self.deadlettered, "assigned": self.assigned, "pid": os.getpid(),
                "registry_errors": self.registry_errors, "retrains": self.retrains}

    async def close(self) -> None:
        if self.ready.is_set():
            await self.loop.checkpoint(self.status_extra())
        await self.out.flush(10)
        self.store_released = True  # the stop guard's ping may fail from here on: our own close
        await self.backend.close()
