"""The extra apps ``streamlearn bench`` compares the worker with (run as subprocesses).

* ``naive``: the per-event design a user writes first. Same decoding and validation, same
  feature view, same model and metrics (:class:`~streamlearn.models.estimators.learner.Learner`), but
  one Redis round trip per read and per write and one ``await topic.send`` per prediction.
* ``ceiling``: a Faust agent that consumes the events topic as raw bytes in ``stream.take()``
  batches and only counts: what Faust's per-message delivery + the broker can do here.
* ``transport``: the transport ceiling, the same message traffic as the worker and no other
  work: the worker's own consumer (:class:`~streamlearn.streams.consumer.BatchConsumer`) on
  the events *and* the feedback topic, and per event one message produced through the worker's
  producer path (:class:`~streamlearn.streams.transport.BatchProducer`, flushed per batch).

The Faust apps use the transport settings the worker used while it consumed through Faust
(below) and the worker's aiokafka patches, so what differs is what happens per event. Each reports to Redis, under
``<prefix>:bench:status``, how far it got and when it was done (wall clock), and writes the
worker status key the demo's ``worker_assigned`` reads, so the harness waits the same way
for every app. Run: ``python -m streamlearn.tools.bench_apps naive|ceiling|transport`` with the settings in
the environment plus ``STREAMLEARN_BENCH_EXPECT`` (events) and ``STREAMLEARN_BENCH_LABELS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
import time
from typing import Any

import faust
import redis.asyncio as aioredis

from streamlearn.featurestore.keys import Keys
from streamlearn.settings import Settings

EXPECT_ENV = "STREAMLEARN_BENCH_EXPECT"
LABELS_ENV = "STREAMLEARN_BENCH_LABELS"
# the batch window the worker used while it consumed through Faust's take()
FAUST_BATCH_WITHIN_S = 0.005


def status_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}:bench:status"


def _credentials(settings: Settings):
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile) if "SSL" in proto else None
    if proto.startswith("SASL"):
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=pw,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=ctx,
        )
    return faust.SSLCredentials(ctx)


def faust_app(settings: Settings) -> faust.App:
    """A Faust app with the transport settings the worker had while it consumed through Faust
    streams (the worker's own consumer takes the same values: streams/consumer.py)."""
    from streamlearn.streams.app import StatelessApp
    from streamlearn.streams.consumer import patch_aiokafka

    patch_aiokafka(settings.fetch_min_wait_ms)
    _fetch_wait_in_faust(settings.fetch_max_wait_ms)
    return StatelessApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are created by ensure_topics with our partition count
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_max_poll_records=settings.batch_max,
        broker_max_poll_interval=settings.max_poll_interval_s,
        producer_linger=0.005,
        web_enabled=False,  # the programmatic faust.Worker honours this (the CLI does not)
    )


def _fetch_wait_in_faust(ms: int) -> None:
    """Faust hard-codes ``fetch_max_wait_ms=1500``; an idle topic in the same fetch then
    holds back a busy one (~0.4 s median latency at 2k events/s): use the worker's wait."""
    from faust.transport.drivers import aiokafka as driver

    base = getattr(driver.aiokafka, "_streamlearn_base", driver.aiokafka.AIOKafkaConsumer)

    class Consumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    driver.aiokafka._streamlearn_base = base
    driver.aiokafka.AIOKafkaConsumer = Consumer


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
        async for values in stream.take(settings.batch_max, within=FAUST_BATCH_WITHIN_S):
            rep.first()
            await rep.events(len(values))

    return app


async def transport(settings: Settings) -> None:
    """The worker's message traffic without its work: its consumer on events and labels, one
    message produced per event (the event's own bytes, about a prediction's size), delivered
    before each commit as the worker does."""
    from streamlearn.streams.consumer import BatchConsumer, patch_aiokafka
    from streamlearn.streams.transport import BatchProducer, make_producer

    patch_aiokafka(settings.fetch_min_wait_ms)
    rep = Reporter(settings, aioredis.Redis.from_url(settings.redis_url))
    out = BatchProducer(make_producer(settings))
    topic_out = settings.topic_predictions

    async def score(records: list) -> int:
        rep.first()
        for r in records:
            out.produce(topic_out, r.value, r.key)
        out.serve()  # delivered before the offsets are committed, as in the worker
        await rep.events(len(records))
        return len(records)

    async def learn(records: list) -> int:
        await rep.labels(len(records))
        return len(records)

    async def revoked() -> None:
        pass

    intake = BatchConsumer(settings, {settings.topic_events: score, settings.topic_feedback: learn},
                           on_assigned=rep.assigned, on_revoked=revoked, deliver=out.flush)
    await _serve(intake, rep)


async def floor(settings: Settings) -> None:
    """The latency floor of a paced run: the worker's consumer (its settings, fetch guards and
    adaptive fetch wait) on the events topic in a group of its own, doing nothing but noting
    each event's delay from its CreateTime to this process. What the broker, the producer and
    the shared machine cost an event before any worker can have it."""
    from streamlearn.streams.consumer import BatchConsumer, patch_aiokafka
    from streamlearn.tools.harness import percentile, quarter_p50s

    patch_aiokafka(settings.fetch_min_wait_ms)
    rep = Reporter(settings, aioredis.Redis.from_url(settings.redis_url))
    delays: list[float] = []

    async def note(records: list) -> int:
        now = time.time() * 1000
        rep.first()
        delays.extend(now - r.timestamp for r in records)
        await rep.events(len(records))
        return len(records)

    async def summary() -> None:
        rep.state.update(latency_ms_p50=percentile(delays, 0.5), latency_ms_p99=percentile(delays, 0.99),
                         latency_ms_p50_quarters=quarter_p50s(delays),
                         latency_n=len(delays))

    async def nothing() -> None:
        pass

    intake = BatchConsumer(settings, {settings.topic_events: note},
                           on_assigned=rep.assigned, on_revoked=nothing, deliver=nothing)
    await _serve(intake, rep, tick=summary)


async def _serve(intake, rep: Reporter, tick=None) -> None:  # noqa: ANN001
    """Run ``intake`` until SIGTERM/SIGINT, publishing progress every 0.5 s."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await intake.start()
    run = asyncio.ensure_future(intake.run())
    try:
        while not stop.is_set() and not run.done():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
            await rep.publish()
            if tick is not None:
                await tick()
        if run.done():
            run.result()  # a handler raised: let it show
    finally:
        await intake.stop()
        await run


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


APPS = {"naive": naive_app, "ceiling": ceiling_app}
PROGRAMS = {"transport": transport, "floor": floor}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in (*APPS, *PROGRAMS):
        sys.exit(f"usage: python -m streamlearn.tools.bench_apps {{{'|'.join((*APPS, *PROGRAMS))}}}")
    if argv[0] in PROGRAMS:
        asyncio.run(PROGRAMS[argv[0]](Settings()))
        return
    app = APPS[argv[0]](Settings())
    worker = faust.Worker(app, loglevel="warning", quiet=True, override_logging=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
