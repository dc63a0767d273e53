"""Batches adapt to the load (streams/consumer.py ``BatchConsumer``): an event that arrives alone is
scored alone, without waiting for more; a backlog is taken in large batches. Timing is the
benchmark's business: deadlines here are generous, only behaviour is asserted."""

from __future__ import annotations

from tests.helpers import Sender, TopicReader, feedback_for, make_events, scrape_metrics, wait_for


def _score_batches(worker) -> tuple[float, float]:
    m = scrape_metrics(worker.process.web_port)
    total = sum(v for k, v in m.get("streamlearn_batch_size_sum", {}).items() if dict(k).get("op") == "score")
    count = sum(v for k, v in m.get("streamlearn_batch_size_count", {}).items() if dict(k).get("op") == "score")
    return total, count


def test_lone_events_are_scored_alone_and_a_backlog_in_large_batches(make_settings, start_worker):
    # a batch is what the consumer holds when the loop asks: nothing waits for more events
    s = make_settings()
    worker = start_worker(s)
    send, preds = Sender(s), TopicReader(s, s.topic_predictions, "prediction")
    lone = make_events(8, seed=11)
    for i, ev in enumerate(lone):
        send.events([ev])
        # the next event is sent only once this one is predicted: nothing else can fill its batch
        got = preds.wait_count(i + 1, timeout=20.0, key="event_id")
        assert got[-1]["event_id"] == ev["event_id"]
    total, count = _score_batches(worker)
    assert (total, count) == (len(lone), len(lone)), "one batch per lone event"

    # a backlog: 600 events produced while the worker's agents are busy with nothing else
    backlog = make_events(600, seed=12, start=len(lone))
    send.events(backlog)
    send.feedback([feedback_for(e) for e in lone + backlog])
    published = preds.wait_count(len(lone) + len(backlog), timeout=60.0, key="event_id")
    assert [p["event_id"] for p in published] == [e["event_id"] for e in lone + backlog]
    wait_for(lambda: worker.counters().get("labels_learned") == len(lone) + len(backlog), 60, "all labels learned")
    total, count = _score_batches(worker)
    assert total == len(lone) + len(backlog)
    assert count - len(lone) < len(backlog) / 2, f"{count - len(lone)} batches for a backlog of {len(backlog)}"
    assert max(0, count - len(lone)) >= 2, "at most batch_max (500) per batch"
