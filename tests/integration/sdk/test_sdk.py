"""The client SDK against the real embedded broker and a real worker."""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamlearn.sdk import (
    Delivery,
    DeliveryError,
    EventProducer,
    FeedbackProducer,
    InvalidMessage,
    InvalidRecord,
    Prediction,
    PredictionConsumer,
    RecordConsumer,
)
from streamlearn.settings import Settings
from streamlearn.streams.transport import make_producer
from streamlearn.tools.harness import free_port
from tests.helpers import OPEN_CLIENTS, REG, Sender, label_of, make_events, wait_for

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# Inputs the SDK must refuse with the same reason the worker dead-letters them with.
BAD_EVENTS = [
    ({"event_id": "bad-nan", "entity": "c", "event_time": 1, "features": {"amount": float("nan")}},
     "non_finite", "features.amount"),
    ({"event_id": "bad-time", "entity": "c", "event_time": "yesterday", "features": {}}, "schema", "event_time"),
    ({"event_id": "bad-long", "entity": "c" * 2000, "event_time": 1, "features": {}}, "limit", "entity"),
]


def _raw_json(event: dict) -> bytes:
    return json.dumps(event).encode()  # Python writes NaN as the bare token the worker must reject


def test_sdk_round_trip_with_a_real_worker(make_settings, start_worker):
    s = make_settings()
    worker = start_worker(s)
    events = make_events(30, seed=8)

    # events: one future per send, each resolving to where it landed
    with EventProducer(s) as producer:
        deliveries = [f.result(30) for f in [producer.send(e) for e in events]]
    assert all(d.ok for d in deliveries)
    assert [d.event_id for d in deliveries] == [e["event_id"] for e in events]
    assert [d.key for d in deliveries] == [e["entity"].encode() for e in events]
    assert sorted(d.offset for d in deliveries) == list(range(30))  # a fresh one-partition topic

    with PredictionConsumer(s, from_beginning=True, dedupe=True) as consumer:
        preds = list(consumer.iter(idle_timeout=60, max_items=30))
    by_id = {p.event_id: p for p in preds}
    assert sorted(by_id) == sorted(e["event_id"] for e in events)
    for e in events:
        p = by_id[e["event_id"]]
        assert isinstance(p, Prediction)
        assert (p.entity, p.event_time, p.model_name) == (e["entity"], e["event_time"], s.model_name)
        assert 0.0 <= p.score <= 1.0 and p.latency_ms >= 0 and p.model_version >= 1
        assert p.labels_learned == 0  # no label had been sent yet

    # labels through the SDK: the worker learns each one
    with FeedbackProducer(s) as fb:
        for e in events:
            fb.send(e["event_id"], label_of(e), e["event_time"] + 5_000)
    assert (fb.sent, fb.delivered, fb.failed) == (30, 30, 0)
    wait_for(lambda: worker.counters().get("labels_learned") == 30, 60, "30 labels learned")

    # at least once: re-sent events are scored again; dedupe keeps each event id's first prediction
    with EventProducer(s) as producer:
        for e in events[:10]:
            producer.send(e)
    raw = PredictionConsumer(s, from_beginning=True)
    OPEN_CLIENTS.append(raw)
    seen: list[Prediction] = []
    wait_for(lambda: seen.extend(raw.poll(0.2)) or len(seen) >= 40, 60, "40 prediction messages")
    assert len(seen) == 40 and sum(p.labels_learned == 30 for p in seen) == 10  # rescored after learning

    dedup = PredictionConsumer(s, from_beginning=True, dedupe=True)
    OPEN_CLIENTS.append(dedup)
    unique: list[Prediction] = []
    wait_for(lambda: unique.extend(dedup.poll(0.2)) or dedup.consumed + dedup.duplicates >= 40, 60,
             "all 40 messages read by the deduplicating consumer")
    assert (len(unique), dedup.duplicates) == (30, 10)
    assert sorted(p.event_id for p in unique) == sorted(by_id)
    assert all(p.labels_learned == 0 for p in unique)  # the first prediction of each id is kept

    # malformed input: refused by the SDK, dead-lettered by the worker, for the same reason
    with EventProducer(s) as producer:
        for bad, reason, field in BAD_EVENTS:
            with pytest.raises(InvalidRecord, match=field) as info:
                producer.send(bad)
            assert info.value.reason == reason
    assert producer.sent == 0
    Sender(s).raw(s.topic_events, [_raw_json(bad) for bad, _, _ in BAD_EVENTS])
    with RecordConsumer(s, s.topic_deadletter, "deadletter", from_beginning=True) as dlq:
        dead = [r.value for r in dlq.iter(idle_timeout=60, max_items=len(BAD_EVENTS))]
    assert [d["raw"] for d in dead] == [_raw_json(bad) for bad, _, _ in BAD_EVENTS]
    assert [d["reason"] for d in dead] == [reason for _, reason, _ in BAD_EVENTS]
    for d, (_, _, field) in zip(dead, BAD_EVENTS):
        assert field in d["detail"]
    worker.assert_alive()


def test_invalid_records_are_refused_before_sending(make_settings):
    s = make_settings()
    with EventProducer(s) as producer:
        cases = [
            ({"event_id": "e", "entity": "c", "event_time": 1}, "missing required field 'features'"),
            ({"event_id": "e", "entity": "", "event_time": 1, "features": {}}, "'entity' must not be empty"),
            ({"event_id": "e", "entity": "c", "event_time": 1, "features": {}, "amount": 3}, r"unknown field.*amount"),
            ({"event_id": "e", "entity": "c", "event_time": 1, "features": {"x": float("inf")}}, "features.x"),
            ({"event_id": "e", "entity": "c", "event_time": 1, "features": {f"f{i}": i for i in range(600)}},
             "600 features, over the 512 limit"),
            ("not a dict", "expected a JSON object"),
        ]
        for record, message in cases:
            with pytest.raises(InvalidRecord, match=message):
                producer.send(record)
        good = {"event_id": "ok-1", "entity": "c", "event_time": 1, "features": {"x": 1}}
        first = producer.send(good).result(30)
    assert (producer.sent, first.offset) == (1, 0)  # nothing refused reached the topic before it

    with FeedbackProducer(s) as fb:
        with pytest.raises(InvalidRecord, match="'label' is nan"):
            fb.send("e1", float("nan"), 5)
        with pytest.raises(InvalidRecord, match="label"):
            fb.send("e1", None, 5)
        with pytest.raises(InvalidRecord, match="'event_id' must not be empty"):
            fb.send("", True, 5)
        assert fb.send("e1", True).result(30).ok  # label_time defaults to now
        # the task of a worker with these settings (the built-in project: binary), its own check
        assert fb.task.kind == "binary"
        with pytest.raises(InvalidRecord, match=r"binary label must be a bool or 0/1.*\(task: binary\)"):
            fb.send("e2", 12.5, 5)
    assert fb.sent == 1
    with FeedbackProducer(make_settings(model_spec="linreg")) as fb:  # a regression worker's settings
        assert fb.task.kind == "regression" and fb.send("e2", 12.5).result(30).ok

    # settings naming a project: its task's check, before anything is sent
    segments = make_settings(project=str(EXAMPLES / "segments"))
    with FeedbackProducer(segments) as fb:
        assert fb.task.kind == "multiclass"
        for label in ("tarmac", 3, True):
            with pytest.raises(InvalidRecord) as refused:
                fb.send("e1", label, 5)
            assert refused.value.reason == "label" and "(task: multiclass)" in refused.value.detail
        assert fb.send("e1", "grass", 5).result(30).ok
    assert fb.sent == 1


def test_delivery_failures_reach_the_future_the_callback_and_close():
    dead = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens there
    fast_fail = {"message.timeout.ms": 500, "socket.connection.setup.timeout.ms": 1000}
    event = {"event_id": "e1", "entity": "c", "event_time": 1, "features": {"x": 1.0}}
    reports: list[Delivery] = []
    with EventProducer(dead, on_delivery=reports.append, **fast_fail) as producer:
        fut = producer.send(event)
        err = fut.exception(timeout=30)
    assert isinstance(err, DeliveryError) and "e1" in str(err)
    assert len(reports) == 1 and not reports[0].ok and reports[0].error
    assert (producer.sent, producer.delivered, producer.failed) == (1, 0, 1)

    # without a callback, close() must not let a failure pass silently
    producer = EventProducer(dead, **fast_fail)
    producer.send(event)
    with pytest.raises(DeliveryError, match="1 of 1 message"):
        producer.close(timeout=30)


def test_consumer_from_timestamp_group_resume_and_invalid_records(make_settings):
    s = make_settings(session_timeout_s=2.0, heartbeat_interval_s=0.25)  # quick group joins on tansu
    base = 1_700_000_000_000
    out = make_producer(s, **{"linger.ms": 0})

    def pred(i: int) -> bytes:
        return REG.encode("prediction", {
            "event_id": f"p{i}", "entity": "c", "event_time": base + i, "model_name": "m", "model_version": 1,
            "labels_learned": i, "score": i / 10, "predicted": i % 2 == 0, "probabilities": {},
            "served_at": base + i, "latency_ms": 1.0})

    for i in range(6):
        out.produce(s.topic_predictions, pred(i), b"c", timestamp=base + i * 1000)
    out.produce(s.topic_predictions, b"junk", b"c", timestamp=base + 6000)
    out.produce(s.topic_predictions, pred(6), b"c", timestamp=base + 7000)
    assert out.flush(30) == 0

    def ids(consumer, n: int) -> list[str]:
        return [p.event_id for p in consumer.iter(idle_timeout=30, max_items=n)]

    # from a timestamp (a datetime here): on brokers without timestamp lookup the client skips
    since = datetime.fromtimestamp((base + 3000) / 1000, UTC)
    with PredictionConsumer(s, from_timestamp=since) as c:
        assert ids(c, 3) == ["p3", "p4", "p5"]
        with pytest.raises(InvalidMessage, match=rf"{s.topic_predictions}\[0\]@6"):
            ids(c, 1)
        assert ids(c, 1) == ["p6"]  # nothing after the bad record was lost

    # a consumer group resumes after what it processed; invalid records go to a callback
    group = f"g-{uuid.uuid4().hex[:8]}"
    bad: list[InvalidMessage] = []
    with PredictionConsumer(s, group_id=group, from_beginning=True, on_invalid=bad.append) as c:
        assert ids(c, 4) == ["p0", "p1", "p2", "p3"]
    with PredictionConsumer(s, group_id=group, from_beginning=True, on_invalid=bad.append) as c:
        assert ids(c, 3) == ["p4", "p5", "p6"]
    assert len(bad) == 1 and bad[0].reason == "unknown_format" and bad[0].offset == 6

    with pytest.raises(ValueError, match="not available"):
        PredictionConsumer(s.model_copy(update={"topic_predictions": f"missing-{uuid.uuid4().hex[:6]}"}))


def test_prediction_dataclass_matches_the_current_schema():
    schema_fields = [f["name"] for f in REG.current("prediction").schema["fields"]]
    assert [f.name for f in fields(Prediction) if f.name not in ("extra", "shadows")] == schema_fields
    assert list(Prediction.from_record({n: None for n in schema_fields}).record()) == schema_fields
