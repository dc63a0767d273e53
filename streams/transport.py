"""Kafka plumbing shared by the worker, the demo, the SDK and the tests (confluent-kafka)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamlearn.settings import Settings

log = logging.getLogger(__name__)


def topic_names(settings: Settings) -> list[str]:
    return [settings.topic_events, settings.topic_predictions, settings.topic_feedback, settings.topic_deadletter,
            settings.topic_shadow, settings.topic_lifecycle, settings.topic_drift]


def partitions_of(settings: Settings, topic: str) -> int:
    """Feedback has one partition: its owner is the model's single learner (see
    docs/lifecycle.md, "Scale-out"). Lifecycle and drift are low-volume audit trails kept in one
    total order."""
    if topic in (settings.topic_feedback, settings.topic_lifecycle, settings.topic_drift):
        return 1
    return settings.topic_partitions


def ensure_topics(settings: Settings, names: Iterable[str] | None = None, timeout: float = 15.0) -> None:
    """Create the topics with the configured partitions, replication factor and topic configs
    (``Settings.topic_config``: retention, min.insync.replicas ...); existing topics are left alone.

    Pre-creating matters: brokers (tansu among them) auto-create with their own default.
    """
    admin = AdminClient(settings.confluent_config())
    wanted = list(names or topic_names(settings))
    rf = settings.topic_replication_factor
    if rf == 1 and not settings.development:
        log.warning("creating topics with replication factor 1: losing that broker loses the data. "
                    "Set STREAMLEARN_TOPIC_REPLICATION_FACTOR=3 (and STREAMLEARN_TOPIC_MIN_INSYNC_REPLICAS=2) "
                    "with 3+ brokers")
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions_of(settings, t), replication_factor=rf,
                  config=settings.topic_config(t)) for t in wanted],
        request_timeout=timeout,
    )
    for fut in futures.values():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def make_producer(settings: Settings, **extra) -> Producer:
    conf = settings.confluent_config(**{"linger.ms": 5, "batch.size": 262144, "enable.idempotence": False})
    conf.update(extra)
    return Producer(conf)


class BatchProducer:
    """Produces the worker's outputs; :meth:`flush` waits until the broker has all of them.

    The worker commits an input offset only after a flush that follows the input's outputs
    (``streams/consumer.py``: before every commit), so a crash can repeat a prediction
    (consumers deduplicate by event id) but never lose one. Between commits nothing waits on
    the broker: each batch's messages leave after ``linger.ms`` while the loop goes on
    (:meth:`serve` collects delivery reports), where waiting per batch cost an event loop
    stall per batch (~8% of the wall time at half load, blocked in flush).

    A small flush (at most ``inline_max`` messages queued) waits on the event loop for at
    most ``inline_s``: the broker acknowledges within a millisecond or two, less than a hop
    to an executor thread and back. A larger one, or one not acknowledged within
    ``inline_s``, is waited for in an executor thread.
    """

    def __init__(self, producer: Producer, inline_max: int = 16, inline_s: float = 0.005) -> None:
        self.producer = producer
        self.inline_max, self.inline_s = inline_max, inline_s
        self._errors: list[str] = []

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers=None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)

    def serve(self) -> None:
        """Collect the delivery reports that arrived (no wait); raises if a delivery failed."""
        self.producer.poll(0)
        self._raise_failed()

    async def flush(self, timeout: float = 60.0) -> None:
        remaining = len(self.producer)
        if remaining <= self.inline_max:
            remaining = self.producer.flush(min(timeout, self.inline_s))
        if remaining:
            remaining = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, timeout)
        if remaining:
            raise RuntimeError(f"{remaining} messages not delivered within {timeout}s")
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"{len(errors)} deliveries failed, first: {errors[0]}")
