"""Fuzzed input through a real worker: every invalid message dead-lettered, every valid event scored."""

from __future__ import annotations

import random
from collections import Counter

from tests.helpers import REG, Sender, TopicReader, feedback_for, make_events, wait_for
from tests.unit.schemas.test_fuzz import LIMITS, REASONS, invalid_messages, outcome


def test_fuzzed_input_through_a_real_worker_is_all_dead_lettered_and_the_rest_scored(make_settings, start_worker):
    s = make_settings(max_message_bytes=LIMITS.max_message_bytes, max_features=LIMITS.max_features,
                      max_string_length=LIMITS.max_string_length)
    worker = start_worker(s)
    rnd = random.Random(2024)
    invalid = invalid_messages(rnd, 320)
    events = make_events(400, seed=61)
    duplicates = [dict(e, features={"amount": 1.0}) for e in rnd.sample(events, 25)]  # same ids, other content
    unknown = [{"event_id": f"never-sent-{i}", "label": bool(i % 2), "label_time": i} for i in range(30)]
    labels = [feedback_for(e) for e in events[:200]]

    # interleave: every kind of record on both topics, in a random but reproducible order
    items = ([("event", REG.encode("event", e), e["entity"].encode()) for e in events + duplicates]
             + [("feedback", REG.encode("feedback", f), f["event_id"].encode()) for f in unknown + labels]
             + invalid)
    order = list(range(len(items)))
    rnd.shuffle(order)
    # valid events before their labels (a label may still arrive first: then it is parked and
    # joined when the event comes, which is also counted below)
    send = Sender(s)
    topic = {"event": s.topic_events, "feedback": s.topic_feedback}
    for j in order:
        subject, value, key = items[j]
        send.producer.produce(topic[subject], value, key)
        send.producer.poll(0)
    send.flush()

    dead = TopicReader(s, s.topic_deadletter, "deadletter").wait_count(len(invalid), timeout=90)
    preds = TopicReader(s, s.topic_predictions, "prediction").wait_count(len(events), timeout=90, key="event_id")
    wait_for(lambda: worker.assert_alive() or worker.counters().get("labels_learned") == len(labels), 90,
             "every label for a known event learned")
    worker.assert_alive()

    assert len(dead) == len(invalid), "each invalid message dead-lettered exactly once"
    by_topic = {s.topic_events: "event", s.topic_feedback: "feedback"}
    got = Counter((by_topic[d["source_topic"]], d["raw"], d["key"]) for d in dead)
    want = Counter((subj, (v or b"")[: s.max_message_bytes], k) for subj, v, k in invalid)
    assert got == want, "the dead letters are exactly the invalid messages, raw bytes and keys kept"
    reasons = Counter(d["reason"] for d in dead)
    assert set(reasons) <= REASONS and all(d["detail"] for d in dead)
    assert reasons == Counter(outcome(subj, v) for subj, v, _ in invalid), "each with the decoder's reason"

    assert {p["event_id"] for p in preds} == {e["event_id"] for e in events}, "every valid event scored"
    c = worker.counters()
    assert c["events_duplicate"] == len(duplicates), "a repeated event id reuses its first features"
    # a label for an unknown event is parked and never learned; one that merely came before its
    # event is parked too, then learned when the event arrives
    assert c["labels_unmatched"] == len(unknown) + c["labels_joined_late"]
    assert c["labels_learned"] == len(labels)
    assert c["labels_duplicate"] == 0
    print(f"dead letters by reason: {dict(sorted(reasons.items()))}")
