"""Producers: events and labels, checked exactly as the worker will check them, then sent.

:class:`EventProducer` / :class:`FeedbackProducer` check each record (the Avro codec's schema
check, then the worker's own limits and finiteness checks on the very bytes to be sent)
and raise :class:`~streamlearn.schemas.InvalidRecord` naming the bad field before anything
is sent. Each send returns a future and can also report to a callback; closing flushes and
raises :class:`DeliveryError` if a message was lost and no callback handled it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    KafkaError,
    Message,
)

from streamlearn.schemas import AvroCodec
from streamlearn.schemas.validation import Limits, check_label, decode_event, decode_feedback
from streamlearn.settings import Settings
from streamlearn.streams.transport import make_producer

log = logging.getLogger(__name__)


def _encode(subject: str, record: Any, check: Callable[..., Any], limits: Limits,
            codec: AvroCodec | None) -> bytes:
    reg = codec or AvroCodec.default()
    conformed = reg.conform(subject, dict(record) if isinstance(record, Mapping) else record)
    data = reg.encode(subject, conformed)
    check(data, reg, limits)  # the worker's own decoder: limits, empty ids, NaN/inf
    return data


def encode_event(event: Mapping[str, Any], limits: Limits = Limits(),
                 codec: AvroCodec | None = None) -> bytes:
    """Validate an event as the worker will and return its wire bytes; raises InvalidRecord."""
    return _encode("event", event, decode_event, limits, codec)


def encode_feedback(feedback: Mapping[str, Any], limits: Limits = Limits(),
                    codec: AvroCodec | None = None, task: Any = None) -> bytes:
    """Validate a label as the worker will and return its wire bytes; raises InvalidRecord.
    With ``task`` (a :class:`~streamlearn.models.task.Task`, see :func:`label_task`) also the
    worker's check of the label against it: a label it would dead-letter (reason ``label``)."""
    return _encode("feedback", feedback, _feedback_check(task), limits, codec)


def _feedback_check(task: Any) -> Callable[..., Any]:
    if task is None:
        return decode_feedback

    def check(data: bytes, reg: AvroCodec, limits: Limits) -> Any:
        return check_label(decode_feedback(data, reg, limits), task)

    return check


def label_task(settings: Settings) -> Any:
    """The task labels are checked against before they are sent: the task of a worker with
    these settings (their project's, ``STREAMLEARN_PROJECT``; else the built-in project's, the
    task ``STREAMLEARN_TASK`` names or the model spec implies). A producer's settings are its
    workers' (topics, limits, and so the task)."""
    from streamlearn.project import project_for  # (imports a project's code)

    return project_for(settings).task


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------ producing
class DeliveryError(RuntimeError):
    """The broker did not take a message (or it was not delivered before close)."""


@dataclass(frozen=True)
class Delivery:
    """Outcome of one send: where it landed, or why it did not."""

    topic: str
    event_id: str
    key: bytes | None
    partition: int | None = None
    offset: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DeliveryFuture(Future):
    """A future that serves the producer's delivery reports while waiting on it.

    confluent-kafka only runs delivery callbacks inside ``poll``/``flush``; a plain future
    would wait forever if nobody polled.
    """

    def __init__(self, producer: Any) -> None:
        super().__init__()
        self._producer = producer

    def _serve(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done() and (deadline is None or time.monotonic() < deadline):
            self._producer.poll(0.05)

    def result(self, timeout: float | None = None) -> Delivery:
        self._serve(timeout)
        return super().result(0 if not self.done() else None)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._serve(timeout)
        return super().exception(0 if not self.done() else None)


class _Producer:
    subject = ""
    _check: Callable[..., Any]

    def __init__(self, settings: Settings, topic: str, *,
                 on_delivery: Callable[[Delivery], None] | None = None,
                 codec: AvroCodec | None = None, **config: Any) -> None:
        self.settings = settings
        self.topic = topic
        self.on_delivery = on_delivery
        self.codec = codec or AvroCodec.default()
        self.limits = Limits.from_settings(settings)
        self._producer = make_producer(settings, **config)
        self._pending: set[DeliveryFuture] = set()
        self.sent = self.delivered = self.failed = 0
        self.errors: list[Delivery] = []  # first failures, kept for close() to report
        self._closed = False

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Validate and encode without sending (raises InvalidRecord naming the field)."""
        return _encode(self.subject, record, self._check, self.limits, self.codec)

    def send_record(self, record: Mapping[str, Any], key: str | bytes | None = None) -> DeliveryFuture:
        """Validate, encode and queue one complete record; the future resolves to a Delivery."""
        if self._closed:
            raise RuntimeError("producer is closed")
        data = self.encode(record)
        key_bytes = self._default_key(record) if key is None else key
        if isinstance(key_bytes, str):
            key_bytes = key_bytes.encode()
        fut = DeliveryFuture(self._producer)
        self._pending.add(fut)
        report = Delivery(self.topic, record["event_id"], key_bytes)

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            self._pending.discard(fut)
            if err is None:
                self._finish(fut, Delivery(report.topic, report.event_id, key_bytes, msg.partition(), msg.offset()))
            else:
                self._finish(fut, Delivery(report.topic, report.event_id, key_bytes, error=str(err)))

        while True:
            try:
                self._producer.produce(self.topic, data, key_bytes, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: serve deliveries until there is room
                self._producer.poll(0.05)
        self.sent += 1
        self._producer.poll(0)
        return fut

    def _default_key(self, record: Mapping[str, Any]) -> str:
        return record["event_id"]

    def _finish(self, fut: DeliveryFuture, d: Delivery) -> None:
        if d.ok:
            self.delivered += 1
            fut.set_result(d)
        else:
            self.failed += 1
            if len(self.errors) < 100:
                self.errors.append(d)
            fut.set_exception(DeliveryError(f"{d.event_id} to {d.topic}: {d.error}"))
        if self.on_delivery is not None:
            try:
                self.on_delivery(d)
            except Exception:  # a user callback must not break the delivery bookkeeping
                log.exception("on_delivery callback failed")

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports (callbacks, futures); returns how many were served."""
        return self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is delivered or failed; raise if some are still queued."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} message(s) still undelivered after {timeout}s")

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then fail whatever is still queued (nothing is dropped silently).

        Raises :class:`DeliveryError` if any delivery failed and no ``on_delivery``
        callback took responsibility for failures.
        """
        if self._closed:
            return
        self._closed = True
        if self._producer.flush(timeout):
            self._producer.purge()  # their callbacks now fail the futures with _PURGE_QUEUE
            self._producer.flush(min(timeout, 5.0))
        for fut in list(self._pending):  # no report at all (should not happen): fail loudly
            self._pending.discard(fut)
            self.failed += 1
            fut.set_exception(DeliveryError("not delivered before close"))
        self._producer.close()
        if self.failed and self.on_delivery is None:
            first = self.errors[0] if self.errors else None
            raise DeliveryError(
                f"{self.failed} of {self.sent} message(s) to {self.topic} were not delivered"
                + (f"; first: {first.event_id}: {first.error}" if first else "")
            )

    def __enter__(self):
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the caller's exception with a delivery report
            try:
                self.close()
            except DeliveryError as err:
                log.error("%s", err)


class EventProducer(_Producer):
    """Sends events to the events topic, keyed by entity (per-entity order).

    ``on_delivery`` gets a :class:`Delivery` for every message; extra keyword arguments are
    confluent-kafka producer settings (e.g. ``**{"linger.ms": 20}``).
    """

    subject = "event"
    _check = staticmethod(decode_event)

    def __init__(self, settings: Settings, *, topic: str | None = None, **kwargs: Any) -> None:
        super().__init__(settings, topic or settings.topic_events, **kwargs)

    def _default_key(self, record: Mapping[str, Any]) -> str:
        return record["entity"]

    def send(self, event: Mapping[str, Any], *, key: str | bytes | None = None) -> DeliveryFuture:
        """Queue one event ``{event_id, entity, event_time (ms), features}``.

        Raises :class:`InvalidRecord` (``.reason``, ``.detail`` naming the field) before
        anything is sent. ``key`` overrides the entity key: keep one entity on one key, or
        its events may be scored out of order across partitions.
        """
        return self.send_record(event, key)


class FeedbackProducer(_Producer):
    """Sends labels to the feedback topic, keyed by event id. A label a worker with the same
    settings would dead-letter for its task (a class not declared, a non-number for regression,
    anything but a bool or 0/1 for binary) is refused before it is sent, by the worker's own
    check (:func:`label_task`)."""

    subject = "feedback"

    def __init__(self, settings: Settings, *, topic: str | None = None, **kwargs: Any) -> None:
        super().__init__(settings, topic or settings.topic_feedback, **kwargs)
        self.task = label_task(settings)
        self._check = _feedback_check(self.task)  # built once: encode runs it per record

    def send(self, event_id: str, label: bool | int | float | str, label_time: int | None = None, *,
             key: str | bytes | None = None) -> DeliveryFuture:
        """Queue the label of ``event_id``; ``label_time`` (ms) defaults to now."""
        record = {"event_id": event_id, "label": label,
                  "label_time": now_ms() if label_time is None else label_time}
        return self.send_record(record, key)


