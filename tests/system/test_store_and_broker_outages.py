"""Real damage to real dependencies while a real worker streams: nothing lost, nothing learned twice.

* Redis restart: a Redis of the test's own (the session's must stay up) is stopped with SIGTERM
  (it flushes its append-only file) and started again on the same port and directory while
  events, then labels, stream through the worker.
* Broker unreachable: a dedicated tansu behind a TCP proxy (tests/netproxy.py) through which
  every client connection goes; the proxy cuts all connections and refuses new ones for a
  while, then listens again.

Both end the same way: every event has a prediction, every label is learned exactly once
(the model restored from Redis equals an uninterrupted in-process run on the same stream) and
the worker never died.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from streamlearn.featurestore.backend import RedisBackend
from streamlearn.featurestore.definitions import get_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.learner import Learner
from streamlearn.replay.backtest.inprocess import memory_loop, run_stream
from streamlearn.settings import Settings
from streamlearn.streams.loop.served import ServedCodec, decode_many
from streamlearn.streams.transport import make_producer
from streamlearn.streams.worker import build_loop
from streamlearn.tools.harness import free_port
from streamlearn.tools.infra import Service, start_broker, start_redis
from tests.helpers import REG, TopicReader, WorkerHandle, feedback_for, make_events, scrape_metrics, wait_for
from tests.netproxy import NetProxy


class Paced(threading.Thread):
    """Produces records at a steady rate from a thread, so damage lands mid-stream."""

    def __init__(self, settings: Settings, kind: str, records: Sequence[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.topic = settings.topic_events if kind == "event" else settings.topic_feedback
        self.key = "entity" if kind == "event" else "event_id"
        self.encode = REG.encoder(kind)
        self.records, self.rate = records, rate
        # long timeouts: a producer must ride out a broker outage, not drop messages
        self.producer = make_producer(settings, **{"linger.ms": 0, "message.timeout.ms": 120_000})
        self.sent = 0
        self.undelivered: int | None = None

    def run(self) -> None:
        t0 = time.monotonic()
        for i, rec in enumerate(self.records):
            self.producer.produce(self.topic, self.encode(rec), rec[self.key].encode())
            self.producer.poll(0)
            self.sent = i + 1
            ahead = self.sent / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not waiting on a result
        self.undelivered = self.producer.flush(120)

    def finish(self, timeout: float = 150.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "producer thread did not finish"
        assert self.undelivered == 0, f"{self.undelivered} records not delivered to the broker"


def http_get(port: int, path: str) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:  # 503 has a body too
        return err.read()


def metric_total(port: int, sample: str, **labels: str) -> float:
    """Sum of a sample over all label sets matching ``labels`` on the worker's /metrics."""
    fam = scrape_metrics(port).get(sample, {})
    return sum(v for k, v in fam.items() if set(labels.items()) <= set(k))


def reference(settings: Settings, events: list[dict], labels: list[dict]):
    """The uninterrupted run: the same events, then the same labels, in-process."""
    ref = memory_loop(settings.feature_view, settings.model_spec)
    asyncio.run(run_stream(ref, [("event", e) for e in events] + [("feedback", f) for f in labels]))
    return ref


def check_exactly_once(settings: Settings, events: list[dict], labels: list[dict], preds: list[dict]) -> None:
    """What a worker left in Redis equals the uninterrupted run: features, state, model."""
    assert {p["event_id"] for p in preds} == {e["event_id"] for e in events}, "every event has a prediction"
    r = redis.Redis.from_url(settings.redis_url)
    prefix = settings.redis_prefix
    keys = Keys.from_settings(settings)
    raws = r.mget([keys.served(e["event_id"]) for e in events])
    markers = sum(1 for _ in r.scan_iter(f"{prefix}:m:{settings.model_name}:lrn:*", count=1000))  # old records
    flags = sum(1 for v in raws if v is not None and ServedCodec.is_learned(v))
    assert markers + flags == len(labels), "one learned flag (or marker) per label"

    # no lost feature update: every served vector and every entity state as if nothing happened
    view, states, want_x = get_view(settings.feature_view), {}, {}
    for ev in events:
        want_x[ev["event_id"]], states[ev["entity"]] = view.compute(ev, states.get(ev["entity"]))
    reader = build_loop(settings, RedisBackend(settings.redis_url))

    async def decode() -> list:
        try:
            return await decode_many(reader, raws, "check")
        finally:
            await reader.backend.close()

    decoded = asyncio.run(decode())
    assert [rec["x"] for rec in decoded] == [want_x[e["event_id"]] for e in events]
    ents = sorted(states)
    assert [json.loads(v) for v in r.mget([f"{prefix}:ent:{e}" for e in ents])] == \
        [json.loads(json.dumps(states[e])) for e in ents]

    # the model a restarted worker would resume (snapshot + learn log) learned each label once
    loop = build_loop(settings, RedisBackend(settings.redis_url))

    async def restore() -> int:
        try:
            return await loop.restore()
        finally:
            await loop.backend.close()

    asyncio.run(restore())
    ref = reference(settings, events, labels)
    assert loop.champion.labels_learned == len(labels), "no label learned twice, none lost"
    probe = [view.compute(e, None)[0] for e in make_events(50, seed=99)]
    assert [loop.champion.model.predict_proba_one(x) for x in probe] == \
        [ref.champion.model.predict_proba_one(x) for x in probe]
    # progressive metrics: each label scored once against what was served for its event
    scored = Learner(settings.model_name, settings.model_spec)
    recs = dict(zip((e["event_id"] for e in events), decoded))
    for fb in labels:
        rec = recs[fb["event_id"]]
        scored.learn(rec["x"], fb["label"], rec["m"].get(str(loop.champion.version)))
    assert loop.champion.metric_values() == scored.metric_values()


# ------------------------------------------------------------------ Redis restart


def test_redis_restart_mid_stream_loses_nothing_and_learns_once(make_settings, start_worker, tmp_path: Path):
    data = tmp_path / "own-redis"
    data.mkdir()
    own: Service = start_redis(data)  # appendonly yes, appendfsync everysec
    try:
        s = make_settings(redis_url=f"redis://127.0.0.1:{own.port}/0", batch_max=100)
        worker: WorkerHandle = start_worker(s)
        port = worker.process.web_port
        events = make_events(2400, seed=71, n_entities=40)
        labels = [feedback_for(e) for e in events]
        preds = TopicReader(s, s.topic_predictions, "prediction")
        outages: list[float] = []

        def restart_redis_when(progress: Callable[[], float], at: int, what: str, sender: Paced) -> None:
            nonlocal own
            errors_before = metric_total(port, "streamlearn_feature_store_errors_total")
            wait_for(lambda: worker.assert_alive() or progress() >= at, 60, what)
            t0 = time.monotonic()
            own.stop()  # SIGTERM while the worker is mid-batch: Redis flushes its AOF and exits
            sent_at_stop = sender.sent

            def outage_seen() -> bool:
                worker.assert_alive()
                return metric_total(port, "streamlearn_feature_store_errors_total") > errors_before

            wait_for(outage_seen, 60, "the worker to report store errors", interval=0.2)
            ready = json.loads(http_get(port, "/ready"))  # readiness shows it too
            assert ready["checks"]["redis"] is False, ready
            # down until a backlog has built up behind the stalled loop
            wait_for(lambda: sender.sent >= min(len(sender.records), sent_at_stop + 600), 30, "a backlog")
            own = start_redis(data, own.port)
            outages.append(time.monotonic() - t0)

        # phase 1: events, Redis restarted while scoring
        sender = Paced(s, "event", events, rate=800)
        sender.start()
        restart_redis_when(lambda: len({p["event_id"] for p in preds.poll()}), 800, "800 predictions", sender)
        sender.finish()
        preds.wait_count(len(events), timeout=90, key="event_id")
        worker.assert_alive()

        # phase 2: labels (after their events, so the learning order is the feedback order)
        sender = Paced(s, "feedback", labels, rate=800)
        sender.start()
        restart_redis_when(lambda: metric_total(port, "streamlearn_labels_total", outcome="learned"), 800,
                           "800 labels learned", sender)
        sender.finish()
        wait_for(lambda: worker.assert_alive() or worker.counters().get("labels_learned") == len(labels), 90,
                 "every label learned")

        m = scrape_metrics(port)
        errors = sum(m["streamlearn_feature_store_errors_total"].values())
        retries = sum(m["streamlearn_store_retries_total"].values())
        assert errors >= 2 and retries >= 2, "metrics show both outages"
        assert worker.stop() == 0, "the worker survived both restarts and stops cleanly"
        print(f"redis outages {[round(o, 1) for o in outages]} s; store errors {errors:.0f}, retries {retries:.0f}")
        check_exactly_once(s, events, labels, preds.poll())
    finally:
        own.stop()


# ------------------------------------------------------------------ lost replies (in-process loop, real Redis)


async def _until(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


async def _write_with_lost_reply(proxy: NetProxy, op: Any, landed: Callable[[], bool]) -> Any:
    """Run ``op`` while the proxy swallows Redis's answers: once its write has landed on the
    server, cut the connection (the client sees an error for a write that happened) and let the
    client reconnect. What a Redis stopped mid-batch does (measured: most SIGTERMs under load)."""
    proxy.drop_replies(after=b"MULTI")
    task = asyncio.ensure_future(op)
    await _until(landed, 30, "the write to land on the server")
    proxy.cut()
    proxy.restore()
    return await asyncio.wait_for(task, 60)


def test_a_write_whose_reply_is_lost_is_retried_without_learning_twice_or_losing_a_label(infra, make_settings):
    """Store writes are retried when Redis fails (by redis-py and by the loop). A write that landed
    but whose answer was lost is then applied twice: the learn log must not double-count it
    after a restore, and a parked label taken by the lost write must still be learned."""
    with NetProxy(infra.redis.port) as proxy:
        s = make_settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        direct = redis.Redis.from_url(infra.redis_url)
        keys = Keys(s.redis_prefix, s.model_name)
        events = make_events(40, seed=81)
        fbs = [feedback_for(e) for e in events]

        def fresh_restore() -> int:  # a worker that starts now: snapshot + learn log
            async def go() -> int:
                other = build_loop(s, RedisBackend(infra.redis_url))
                await other.restore()
                await other.backend.close()
                return other.champion.labels_learned

            return asyncio.run(go())

        async def scenario() -> tuple[int, ...]:
            loop = build_loop(s, RedisBackend(s.redis_url))
            await loop.score_batch(events[:30])
            await loop.learn_batch(fbs[:10])
            await loop.checkpoint()
            # 1. the learn write of labels 10..19 lands, its answer is lost, it is retried
            # (it landed: the served record carries the "learned" flag; streams/loop/served.py)
            last = keys.served(fbs[19]["event_id"])
            await _write_with_lost_reply(proxy, loop.learn_batch(fbs[10:20]),
                                         lambda: ServedCodec.is_learned(direct.get(last) or b"{"))
            in_memory = loop.champion.labels_learned
            crashed_now = await asyncio.to_thread(fresh_restore)
            await loop.checkpoint()
            await loop.learn_batch(fbs[20:30])
            after_checkpoint = await asyncio.to_thread(fresh_restore)
            # 2. a label parked before its event; the serving write that takes it loses its answer
            await loop.learn_batch([fbs[30]])
            assert direct.exists(keys.pending(fbs[30]["event_id"]))
            await _write_with_lost_reply(proxy, loop.score_batch([events[30]]),
                                         lambda: direct.exists(keys.served(events[30]["event_id"])))
            await loop.checkpoint()
            parked_learned = loop.champion.labels_learned
            await loop.backend.close()
            return in_memory, crashed_now, after_checkpoint, parked_learned, loop.counters.store_retries

        in_memory, crashed_now, after_checkpoint, parked_learned, retries = asyncio.run(scenario())
        assert proxy.connections >= 3, "the client reconnected through the proxy"
        assert in_memory == 20, "the running model learned each label once"
        assert crashed_now == 20, "a restore right after the retried write replays each label once"
        assert after_checkpoint == 30, "a restore after the next checkpoint replays each label once"
        assert parked_learned == 31, "the parked label taken by the lost write was still learned"
        assert fresh_restore() == 31
        print(f"store retries seen by the loop: {retries}")


# ------------------------------------------------------------------ broker unreachable


def test_broker_unreachable_for_a_while_worker_recovers_by_itself(make_settings, start_worker, tmp_path: Path):
    """A tansu of the test's own, reachable only through a proxy (bootstrap and advertised
    address): mid-stream, while the worker is both scoring and learning, the proxy cuts every
    connection and refuses new ones for longer than the group session, then listens again.
    No one touches the worker."""
    real = free_port()
    with NetProxy(real) as proxy:
        broker = start_broker(tmp_path, real, advertised_port=proxy.port)
        try:
            s = make_settings(kafka_bootstrap=f"127.0.0.1:{proxy.port}", batch_max=100)
            worker: WorkerHandle = start_worker(s)
            port = worker.process.web_port
            events = make_events(2400, seed=72, n_entities=40)
            labels = [feedback_for(e) for e in events]
            preds = TopicReader(s, s.topic_predictions, "prediction")

            def predicted() -> int:
                return len({p["event_id"] for p in preds.poll()})

            def learned() -> float:
                return metric_total(port, "streamlearn_labels_total", outcome="learned")

            event_sender = Paced(s, "event", events, rate=800)
            event_sender.start()
            wait_for(lambda: worker.assert_alive() or predicted() >= 300, 60, "300 predictions")
            label_sender = Paced(s, "feedback", labels, rate=800)  # trailing the events
            label_sender.start()
            wait_for(lambda: worker.assert_alive() or (predicted() >= 800 and learned() >= 300), 60,
                     "scoring and learning under way")
            t0 = time.monotonic()
            proxy.cut()
            # the damage outlasts the group session (6 s), so the broker may drop the member and
            # the worker may have to rejoin, not just reconnect
            wait_for(lambda: worker.assert_alive() or time.monotonic() - t0 > s.session_timeout_s + 4, 60,
                     "the outage to outlast the group session", interval=0.2)
            before = (predicted(), learned())
            proxy.restore()
            t1 = time.monotonic()
            wait_for(lambda: worker.assert_alive() or (predicted() > before[0] and learned() > before[1]), 90,
                     "scoring and learning again after the cut")
            cut = (t1 - t0, time.monotonic() - t1)
            event_sender.finish()
            label_sender.finish()
            preds.wait_count(len(events), timeout=120, key="event_id")
            wait_for(lambda: worker.assert_alive() or worker.counters().get("labels_learned") == len(labels), 120,
                     "every label learned")
            print(f"broker cut: outage {cut[0]:.1f} s, scoring and learning again after {cut[1]:.1f} s; "
                  f"proxy connections {proxy.connections}")
            assert worker.stop() == 0, "the worker survived both cuts and stops cleanly"
            check_exactly_once(s, events, labels, preds.poll())
        finally:
            broker.stop()
