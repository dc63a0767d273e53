"""``streamlearn demo --kafka --redis-url`` on a broker and Redis it did not start uses topics,
a consumer group/app id and a Redis prefix of its own run: events others produced to the
default topic are not counted (it reported 2,005 predictions for 2,000 events and metrics
unequal to the worker's), and nothing it writes lands in the default topics or keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis
from confluent_kafka import Consumer, TopicPartition

from streamlearn import datasets
from streamlearn.settings import Settings
from streamlearn.streams.transport import ensure_topics
from streamlearn.tools.demo import produce_stream


def _end_offset(settings: Settings, topic: str) -> int:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe", "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def test_demo_on_an_existing_broker_and_redis_uses_names_of_its_own(infra, tmp_path):
    default = Settings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url)  # the default names
    ensure_topics(default)
    # someone else's events and labels on the default topics (as an earlier `produce --generate cards`)
    produce_stream(default, datasets.load("cards", 40, 3), rate=None)
    before = {t: _end_offset(default, t) for t in (default.topic_events, default.topic_feedback,
                                                   default.topic_predictions)}
    r = redis.Redis.from_url(infra.redis_url)
    keys_before = sorted(r.scan_iter(f"{default.redis_prefix}:*"))

    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "streamlearn", "demo", "--kafka", infra.kafka_bootstrap, "--redis-url",
         infra.redis_url, "--events", "600", "--no-compare", "--json-out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")},
             "STREAMLEARN_DEVELOPMENT": "1", "COLUMNS": "200", "TMPDIR": str(tmp_path)})  # its run folder
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    # exact counts: only this run's events, and a backtest that reproduces the worker
    assert s["events"] == s["predictions"] == 600 and s["prediction_messages"] >= 600
    assert s["counters"]["labels_learned"] == s["labels_sent"]
    assert s["deadlettered"] == 3
    rp = s["replay"]
    assert rp["events"] == 600 and rp["metrics_equal"] is True
    assert rp["identical_predictions_v1"] == rp["live_predictions_v1"] > 0
    # nothing written to the default topics or keys
    names = s["isolated_names"]
    assert names["topic_events"] != default.topic_events and names["redis_prefix"] != default.redis_prefix
    assert names["app_id"] != default.app_id and names["app_id"] in proc.stdout
    assert names["redis_prefix"] in proc.stdout
    assert {t: _end_offset(default, t) for t in before} == before
    assert sorted(r.scan_iter(f"{default.redis_prefix}:*")) == keys_before
    assert any(r.scan_iter(f"{names['redis_prefix']}:*"))
