"""``streamlearn feedback`` against the real broker and worker: a label the worker would
dead-letter (reason ``label``) is refused before anything is sent, and ``--skip-invalid``
sends the others, which the worker learns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from confluent_kafka import Consumer, TopicPartition

from streamlearn.settings import Settings
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlearn", *args], env={**os.environ, **settings.to_env()},
                          text=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def on_topic(settings: Settings, topic: str) -> int:
    """The end offsets of ``topic`` summed: 0 if nothing was ever sent to it (a finished
    ``feedback`` flushed everything it sent before it exited)."""
    c = Consumer(settings.confluent_config(**{"group.id": "watermarks", "enable.auto.commit": False}))
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(settings.topic_partitions))
    finally:
        c.close()


def test_a_label_the_worker_would_dead_letter_is_refused_before_anything_is_sent(make_settings, start_worker,
                                                                                   tmp_path):
    s = make_settings()  # the built-in project: a binary task
    worker = start_worker(s)
    events = make_events(4, seed=31)
    Sender(s).events(events)
    TopicReader(s, s.topic_predictions, "prediction").wait_count(4)
    rows = [feedback_for(ev) for ev in events]
    rows.insert(2, {"event_id": events[0]["event_id"], "label": "yes", "label_time": 1})  # line 3
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))

    r = cli(s, "feedback", "--input", str(labels))  # fail-fast, the default: the whole file is refused
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.strip() == (
        f"streamlearn: {labels}: line 3: label: binary label must be a bool or 0/1 (or declare two classes), "
        "got str 'yes' (task: binary); nothing was sent (--skip-invalid sends the valid labels and reports the "
        "others)")
    assert on_topic(s, s.topic_feedback) == 0

    r = cli(s, "feedback", "--input", str(labels), "--skip-invalid")
    assert r.returncode == 0, r.stderr
    assert "sent 4 labels" in r.stdout and "skipped 1 invalid row(s), line(s) 3" in r.stdout
    assert "line 3: label: binary label must be a bool or 0/1" in " ".join(r.stderr.split())
    sent = TopicReader(s, s.topic_feedback, "feedback").wait_count(4)
    assert sorted(sent, key=lambda f: f["event_id"]) == sorted(rows[:2] + rows[3:], key=lambda f: f["event_id"])
    wait_for(lambda: worker.counters().get("labels_learned") == 4, 60, "4 labels learned")
    worker.assert_alive()
