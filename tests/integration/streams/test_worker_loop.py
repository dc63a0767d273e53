"""The online loop end to end: producer -> broker -> worker (Redis) -> predictions, labels back."""

from __future__ import annotations

import math

from confluent_kafka import Consumer, TopicPartition
from river import metrics

from streamlearn.featurestore.definitions import get_view
from streamlearn.models.estimators.spec import build_model
from tests.helpers import REG, Sender, TopicReader, feedback_for, make_events, wait_for


def test_progressive_validation_through_kafka_equals_plain_river_loop(make_settings, start_worker):
    """Every event one prediction, every label learned once, and the published scores and the
    online metric equal a plain River loop applying the same labels in the recorded order."""
    s = make_settings()
    worker = start_worker(s)
    send, preds = Sender(s), TopicReader(s, s.topic_predictions, "prediction")
    events = make_events(300, seed=3)
    delay, chunk = 20, 25
    sent_labels: list[dict] = []
    duplicates = 0
    for j in range(0, len(events), chunk):
        send.events(events[j : j + chunk])
        preds.wait_count(j + chunk, key="event_id")
        # labels for events at least `delay` behind the newest prediction seen
        ready = events[len(sent_labels) : max(0, j + chunk - delay)]
        fbs = [feedback_for(e) for e in ready]
        if fbs and j % 100 == 0:  # a resent label must be ignored
            fbs.append(fbs[0])
            duplicates += 1
        send.feedback(fbs)
        sent_labels.extend(feedback_for(e) for e in ready)
    rest = [feedback_for(e) for e in events[len(sent_labels) :]]
    send.feedback(rest + rest[:3])
    duplicates += 3
    sent_labels.extend(rest)
    wait_for(lambda: worker.counters().get("labels_learned") == len(events), 60, "all labels learned")
    wait_for(lambda: worker.counters().get("labels_duplicate") == duplicates, 30, "duplicates counted")

    published = preds.wait_count(len(events))
    assert len(published) == len(events), "exactly one prediction per event"
    assert [p["event_id"] for p in published] == [e["event_id"] for e in events]

    # independent plain loop: same feature code, a fresh River model, labels in feedback order
    view, model = get_view(s.feature_view), build_model(s.model_spec)
    acc, auc, ll = metrics.Accuracy(), metrics.ROCAUC(), metrics.LogLoss()
    states: dict[str, dict] = {}
    served: dict[str, tuple[dict, dict]] = {}
    learned = 0

    def learn_next() -> None:
        nonlocal learned
        fb = sent_labels[learned]
        x, proba = served[fb["event_id"]]
        y = fb["label"]
        acc.update(y, max(proba, key=proba.get))
        auc.update(y, proba)
        ll.update(y, proba)
        model.learn_one(x, y)
        learned += 1

    for ev, p in zip(events, published):
        while learned < p["labels_learned"]:
            learn_next()
        x, states[ev["entity"]] = view.compute(ev, states.get(ev["entity"]))
        proba = model.predict_proba_one(x)
        served[ev["event_id"]] = (x, proba)
        assert p["score"] == proba[True], f"score differs at {ev['event_id']} after {learned} labels"
        assert p["model_name"] == s.model_name and p["model_version"] == 1
    while learned < len(sent_labels):
        learn_next()

    online = worker.status()["metrics"]
    assert online["accuracy"] == acc.get()
    assert online["roc_auc"] == auc.get()
    assert online["log_loss"] == ll.get()
    assert acc.get() > 0.6, "the model learned something"
    preds.close()


def test_malformed_input_is_dead_lettered_and_good_events_still_scored(make_settings, start_worker):
    s = make_settings(max_message_bytes=4096, max_string_length=64)
    start_worker(s)
    send = Sender(s)
    good = make_events(40, seed=5)
    bad = [
        (b"\x00\xffgarbage", "unknown_format"),
        (b'{"event_id": "x1", "entity": "e", "event_time": "noon", "features": {}}', "schema"),
        (b'{"entity": "e", "event_time": 1, "features": {}}', "schema"),
        (b'{"event_id": "x2", "entity": "e", "event_time": 1, "features": {"a": NaN}}', "non_finite"),
        (b'{"event_id": "x3", "entity": "e", "event_time": 1, "features": {"a": Infinity}}', "non_finite"),
        (b'{"event_id": "x4", "entity": "e", "event_time": 1, "features": {}, "extra": 1}', "schema"),
        (b'{"event_id": "x5", "entity": "' + b"e" * 100 + b'", "event_time": 1, "features": {}}', "limit"),
        (b'{"event_id": "x6", "entity": "e", "event_time": 1, "features": {"s": "' + b"z" * 5000 + b'"}}',
         "limit"),
        (b"{not json", "invalid_json"),
        (REG.encode("event", good[0])[:14], "bad_avro"),  # truncated Avro body
        (b"\xc3\x01" + b"\x01" * 8 + b"\x02", "unknown_schema"),
        (REG.encode("feedback", {"event_id": "q", "label": True, "label_time": 1}), "wrong_subject"),
        (b'{"event_id": "", "entity": "e", "event_time": 1, "features": {}}', "schema"),
        ("{\"event_id\": \"\u00e9\u0301\U0001F600\", \"entity\": \"\u202e\", \"event_time\": 1, \"features\": "
         "{\"\u00fc\": 1.5}}".encode(), None),  # unicode edge cases are valid
    ]
    for i, ev in enumerate(good):
        send.events([ev])
        if i < len(bad):
            send.raw(s.topic_events, [bad[i][0]])
    n_valid = len(good) + sum(1 for _, r in bad if r is None)
    preds = TopicReader(s, s.topic_predictions, "prediction").wait_count(n_valid, key="event_id")
    assert {p["event_id"] for p in preds} >= {e["event_id"] for e in good}
    expected = [r for _, r in bad if r is not None]
    dead = TopicReader(s, s.topic_deadletter, "deadletter").wait_count(len(expected))
    assert sorted(d["reason"] for d in dead) == sorted(expected)
    by_offset = sorted(dead, key=lambda d: d["offset"])
    assert all(d["source_topic"] == s.topic_events and d["detail"] for d in by_offset)
    assert by_offset[0]["raw"] == bad[0][0], "the raw bytes are kept"


def test_label_before_its_event_is_learned_when_the_event_arrives(make_settings, start_worker):
    s = make_settings()
    worker = start_worker(s)
    send = Sender(s)
    events = make_events(10, seed=9)
    send.feedback([feedback_for(events[0]), {"event_id": "never-seen", "label": True, "label_time": 1}])
    wait_for(lambda: worker.counters().get("labels_unmatched") == 2, 30, "labels parked")
    send.events(events)
    TopicReader(s, s.topic_predictions, "prediction").wait_count(10)
    wait_for(lambda: worker.counters().get("labels_joined_late") == 1, 30, "late join")
    assert worker.counters()["labels_learned"] == 1


def test_group_membership_is_stable_and_offsets_are_committed(make_settings, start_worker):
    """Short session timeouts for fast joins must not cause a rejoin loop: after a burst larger
    than one poll, the group's committed offsets reach the end of both input topics."""
    s = make_settings()
    worker = start_worker(s)
    send = Sender(s)
    events = make_events(3000, seed=11)
    send.events(events)
    send.feedback([feedback_for(e) for e in events])
    wait_for(lambda: worker.counters().get("labels_learned") == len(events), 90, "all labels learned")
    probe = Consumer(s.confluent_config(**{"group.id": s.app_id, "enable.auto.commit": False}))
    tps = [TopicPartition(s.topic_events, 0), TopicPartition(s.topic_feedback, 0)]

    def committed_at_end() -> bool:
        got = probe.committed(tps, timeout=5)
        return [tp.offset for tp in got] == [len(events), len(events)]

    wait_for(committed_at_end, 30, "offsets committed to the end", interval=0.5)
    probe.close()
    log = worker.log()
    assert "UnknownMemberId" not in log and "rejoin" not in log.lower()
    assert math.isfinite(worker.status()["metrics"]["log_loss"])
