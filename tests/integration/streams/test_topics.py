"""Topics are created with the configured replication factor and per-kind configs, on the real
broker; a 1-replica configuration warns outside development mode."""

from __future__ import annotations

import logging
import uuid

from confluent_kafka.admin import AdminClient, ConfigResource

from streamlearn.settings import Settings
from streamlearn.streams.transport import ensure_topics, topic_names

DAY_MS = 86_400_000


def _settings(infra, **overrides) -> Settings:
    tag = uuid.uuid4().hex[:8]
    names = {f"topic_{k}": f"o{tag}.{k}" for k in
             ("events", "predictions", "feedback", "deadletter", "shadow", "lifecycle", "drift")}
    return Settings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url, **names, **overrides)


def _configs(s: Settings, topic: str) -> dict[str, str]:
    admin = AdminClient(s.confluent_config())
    (fut,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
    return {k: v.value for k, v in fut.result(15).items()}


def test_topics_are_created_with_retention_and_min_insync_replicas(infra, caplog):
    s = _settings(infra, development=True, topic_min_insync_replicas=1,
                  topic_configs={"events": {"compression.type": "zstd"}})
    with caplog.at_level(logging.WARNING, logger="streamlearn.streams.transport"):
        ensure_topics(s)
    assert "replication factor 1" not in caplog.text, "development mode: no warning"
    ev = _configs(s, s.topic_events)
    assert (ev["retention.ms"], ev["min.insync.replicas"], ev["compression.type"]) == (str(7 * DAY_MS), "1", "zstd")
    assert _configs(s, s.topic_deadletter)["retention.ms"] == str(30 * DAY_MS)
    assert _configs(s, s.topic_lifecycle)["retention.ms"] == "-1"
    md = AdminClient(s.confluent_config()).list_topics(timeout=10)
    assert set(topic_names(s)) <= set(md.topics)
    ensure_topics(s)  # idempotent: existing topics are left alone


def test_a_one_replica_production_config_warns(infra, caplog):
    s = _settings(infra, development=False)
    with caplog.at_level(logging.WARNING, logger="streamlearn.streams.transport"):
        ensure_topics(s, [s.topic_events])
    assert "creating topics with replication factor 1" in caplog.text
    assert "STREAMLEARN_TOPIC_REPLICATION_FACTOR=3" in caplog.text
    caplog.clear()
    three = _settings(infra, development=False, topic_replication_factor=3, topic_min_insync_replicas=2)
    with caplog.at_level(logging.WARNING, logger="streamlearn.streams.transport"):
        ensure_topics(three, [three.topic_events])  # the embedded broker accepts any factor
    assert "replication factor" not in caplog.text
    assert _configs(three, three.topic_events)["min.insync.replicas"] == "2"
