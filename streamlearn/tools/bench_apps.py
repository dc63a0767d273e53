"""The extra Faust apps ``streamlearn bench`` compares the worker with (run as subprocesses).

* ``naive``: the per-event design a user writes first. Same decoding and validation, same
  feature view, same model and metrics (:class:`~streamlearn.models.estimators.learner.Learner`), but
  one Redis round trip per read and per write and one ``await topic.send`` per prediction.
* ``ceiling``: consumes the events topic as raw bytes in ``stream.take()`` batches and only
  counts: what Faust + aiokafka + the broker can deliver on this machine.
* ``transport``: the transport ceiling, the same message traffic as the worker and no other
  work: the events *and* the feedback topic as raw bytes in the worker's batches
  (``streams.app.take_settled``), and per event one message produced through the worker's producer path
  (:class:`~streamlearn.streams.transport.BatchProducer`, flushed per batch before the next).
* ``batch``: a prototype, not Faust: the worker's own runtime fed by a confluent-kafka batch
  consumer, to show side by side what the pipeline does without Faust's per-message delivery.

Both use the worker's transport settings and patches (``streams/app.py``), so the only
difference to the worker is what happens per event. Each reports to Redis, under
``<prefix>:bench:status``, how far it got and when it was done (wall clock), and writes the
worker status key the demo's ``worker_assigned`` reads, so the harness waits the same way
for every app. Run: ``python -m streamlearn.tools.bench_apps naive|ceiling|batch`` with the settings in
the environment plus ``STREAMLEARN_BENCH_EXPECT`` (events) and ``STREAMLEARN_BENCH_LABELS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

import faust
import redis.asyncio as aioredis

from streamlearn.featurestore.keys import Keys
from streamlearn.settings import Settings

EXPECT_ENV = "STREAMLEARN_BENCH_EXPECT"
LABELS_ENV = "STREAMLEARN_BENCH_LABELS"


def status_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}:bench:status"


def faust_app(settings: Settings) -> faust.App:
    """A Faust app with exactly the worker's transport settings (streams/app.py create_app).

    The transport options are the worker's own (``streams.app.transport_options``).
    """
    from streamlearn.streams.app import (
        _patch_fetch_max_wait,
        _patch_leave_group_generation_zero,
        transport_options,
    )

    _patch_leave_group_generation_zero()
    _patch_fetch_max_wait(settings.fetch_max_wait_ms, settings.fetch_min_wait_ms)
    return faust.App(
        settings.app_id,
        **transport_options(settings),
        web_enabled=False,  # the programmatic faust.Worker honours this (the CLI does not)
    )


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class Reporter:
    """Progress and completion times in Redis; the harness reads them (no log scraping)."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.expect = int(os.environ.get(EXPECT_ENV, "0"))
        self.expect_labels = int(os.environ.get(LABELS_ENV, "0"))
        self.state: dict[str, Any] = {"pid": os.getpid(), "events": 0, "labels": 0, "t_first": None,
                                      "t_events_done": None, "t_labels_done": None}

    def first(self) -> None:
        if self.state["t_first"] is None:
            self.state["t_first"] = time.time()

    async def events(self, n: int) -> None:
        st = self.state
        st["events"] += n
        if st["t_events_done"] is None and self.expect and st["events"] >= self.expect:
            st["t_events_done"] = time.time()
            await self.publish()

    async def labels(self, n: int) -> None:
        st = self.state
        st["labels"] += n
        if st["t_labels_done"] is None and self.expect_labels and st["labels"] >= self.expect_labels:
            st["t_labels_done"] = time.time()
            await self.publish()

    async def publish(self) -> None:
        await self.client.set(status_key(self.settings), json.dumps(self.state))

    async def assigned(self, tps: list[tuple[str, int]]) -> None:
        # the same key and shape the worker writes, so demo.worker_assigned works for every app
        key = Keys.from_settings(self.settings).worker(self.settings.app_id, os.getpid())
        await self.client.set(key, json.dumps({"pid": os.getpid(), "assigned": tps}), ex=3600)


def _common(app: faust.App, rep: Reporter) -> None:
    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs) -> None:  # noqa: ARG001
        await rep.assigned(sorted((tp.topic, tp.partition) for tp in assigned))

    @app.timer(0.5)
    async def progress() -> None:
        await rep.publish()


def ceiling_app(settings: Settings) -> faust.App:
    """Consume-only: raw bytes in take() batches of the worker's size, counted, nothing else."""
    app = faust_app(settings)
    rep = Reporter(settings, aioredis.Redis.from_url(settings.redis_url))
    _common(app, rep)

    @app.agent(raw_topic(app, settings.topic_events), name="count")
    async def count(stream) -> None:
        async for values in stream.take(settings.batch_max, within=settings.batch_within_s):
            rep.first()
            await rep.events(len(values))

    return app


def transport_app(settings: Settings) -> faust.App:
    """The worker's message traffic without its work: consume events and labels, produce one
    message per event (the event's own bytes, about a prediction's size) and flush per batch."""
    from streamlearn.streams.transport import BatchProducer, make_producer

    app = faust_app(settings)
    rep = Reporter(settings, aioredis.Redis.from_url(settings.redis_url))
    _common(app, rep)
    out = BatchProducer(make_producer(settings))
    topic_out = settings.topic_predictions

    from streamlearn.streams.app import take_settled  # the worker's batching

    @app.agent(raw_topic(app, settings.topic_events), name="score")
    async def score(stream) -> None:
        async for events in take_settled(stream, settings.batch_max, settings.batch_within_s):
            rep.first()
            for ev in events:
                out.produce(topic_out, ev.message.value, ev.message.key)
            await out.flush()
            await rep.events(len(events))

    @app.agent(raw_topic(app, settings.topic_feedback), name="learn")
    async def learn(stream) -> None:
        async for events in take_settled(stream, settings.batch_max, settings.batch_within_s):
            await rep.labels(len(events))

    return app


def naive_app(settings: Settings) -> faust.App:
    """Per event: decode, GET state, features, predict, SET state, SET served vector, send.
    Per label: decode, GET served vector, learn, SET learned marker."""
    from streamlearn.featurestore.keys import Keys
    from streamlearn.models.estimators.learner import Learner
    from streamlearn.project import project_for
    from streamlearn.schemas import AvroCodec, InvalidRecord
    from streamlearn.schemas.records import Prediction
    from streamlearn.schemas.validation import Limits, decode_event, decode_feedback

    app = faust_app(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    rep = Reporter(settings, client)
    _common(app, rep)
    registry, limits = AvroCodec.default(), Limits.from_settings(settings)
    encode = registry.encoder("prediction")
    project = project_for(settings)  # the worker's view, champion and task (a project's, or the built-in)
    view, learner = project.view, Learner(settings.model_name, project.champion, task=project.task)
    keys = Keys(settings.redis_prefix, settings.model_name)
    predictions = raw_topic(app, settings.topic_predictions)
    ent_ttl, srv_ttl = settings.entity_ttl_s, settings.served_ttl_s

    @app.agent(raw_topic(app, settings.topic_events), name="score")
    async def score(stream) -> None:
        async for event in stream.events():
            msg = event.message
            rep.first()
            try:
                ev = decode_event(msg.value, registry, limits)
            except InvalidRecord:
                continue
            ent_key = keys.entity(ev["entity"])
            raw = await client.get(ent_key)
            x, state = view.compute(ev, json.loads(raw) if raw else None)
            s = learner.predict(x)
            await client.set(ent_key, json.dumps(state), ex=ent_ttl)
            served = {"score": s.score, "pred": s.predicted, "proba": s.probabilities}
            await client.set(keys.served(ev["event_id"]), json.dumps({"x": x, "m": served}), ex=srv_ttl)
            now_ms = time.time() * 1000
            p = Prediction(ev["event_id"], ev["entity"], ev["event_time"], learner.name, learner.version,
                           learner.labels_learned, s.score, s.predicted, s.probabilities, int(now_ms),
                           max(0.0, now_ms - (msg.timestamp or 0.0) * 1000))
            await predictions.send(key=ev["entity"].encode(), value=encode(p.record()))
            await rep.events(1)

    @app.agent(raw_topic(app, settings.topic_feedback), name="learn")
    async def learn(stream) -> None:
        async for event in stream.events():
            try:
                fb = decode_feedback(event.message.value, registry, limits)
            except InvalidRecord:
                continue
            eid = fb["event_id"]
            rec = await client.get(keys.served(eid))
            deadline = time.monotonic() + 120
            while rec is None and time.monotonic() < deadline:
                # the label overtook its event (the score agent is behind): wait for it to be
                # served, the simplest join a user would write
                await asyncio.sleep(0.01)
                rec = await client.get(keys.served(eid))
            if rec is None:
                continue
            served = json.loads(rec)
            learner.learn(served["x"], fb["label"], served["m"])
            await client.set(keys.learned(eid), b"1", ex=srv_ttl)
            await rep.labels(1)

    return app


async def batch_consumer(settings: Settings) -> None:
    """Prototype: the worker's own runtime (decode -> OnlineLoop -> Redis -> produce) fed by a
    confluent-kafka consumer in batches of ``max_poll_records``, no Faust. Not production code:
    no web API, no rebalance hand-over; it answers "how fast is the pipeline without Faust's
    per-message delivery" side by side with the real worker."""
    from confluent_kafka import Consumer

    from streamlearn.schemas.records import KafkaRecord
    from streamlearn.streams.worker import WorkerRuntime

    runtime = WorkerRuntime(settings)
    rep = Reporter(settings, aioredis.Redis.from_url(settings.redis_url))
    await runtime.start()
    assigned: list[tuple[str, int]] = []
    consumer = Consumer(settings.confluent_config(**{
        "group.id": settings.app_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000),
        "fetch.wait.max.ms": settings.fetch_max_wait_ms,
    }))
    consumer.subscribe([settings.topic_events, settings.topic_feedback],
                       on_assign=lambda c, parts: assigned.extend((p.topic, p.partition) for p in parts))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish the batch, checkpoint, commit
        loop.add_signal_handler(sig, stop.set)
    announced, next_ckpt, next_status = False, time.monotonic(), time.monotonic()
    try:
        while not stop.is_set():
            msgs = consumer.consume(settings.max_poll_records, settings.batch_within_s)
            if assigned and not announced:
                announced = True
                await runtime.on_assigned(sorted(assigned))
                await rep.assigned(sorted(assigned))
            events = [m for m in msgs if not m.error() and m.topic() == settings.topic_events]
            labels = [m for m in msgs if not m.error() and m.topic() == settings.topic_feedback]
            if events:
                rep.first()
                await runtime.on_events([KafkaRecord("event", m.topic(), m.partition(), m.offset(), m.timestamp()[1],
                                                             key=m.key(), value=m.value()) for m in events])
                await rep.events(len(events))
            if labels:
                await runtime.on_feedback([KafkaRecord("feedback", m.topic(), m.partition(), m.offset(),
                                                               m.timestamp()[1], key=m.key(), value=m.value())
                                            for m in labels])
            if msgs:
                consumer.commit(asynchronous=True)  # after the outputs were delivered: at least once
            learned = runtime.loop.counters.labels_learned
            if learned > rep.state["labels"]:
                await rep.labels(learned - rep.state["labels"])
            now = time.monotonic()
            if now >= next_ckpt:
                next_ckpt = now + settings.checkpoint_interval_s
                await runtime.checkpoint()
            if now >= next_status:
                next_status = now + 0.5
                await rep.publish()
    finally:
        await runtime.close()
        consumer.close()


APPS = {"naive": naive_app, "ceiling": ceiling_app, "transport": transport_app}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in (*APPS, "batch"):
        sys.exit(f"usage: python -m streamlearn.tools.bench_apps {{{'|'.join((*APPS, 'batch'))}}}")
    if argv[0] == "batch":
        asyncio.run(batch_consumer(Settings()))
        return
    app = APPS[argv[0]](Settings())
    worker = faust.Worker(app, loglevel="warning", quiet=True, override_logging=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
