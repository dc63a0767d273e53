"""Consumers: typed predictions (or any topic's records) from the end, the beginning, a time
or a consumer group, guarded against offset gaps, optionally deduplicated by event id."""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamlearn.schemas import AvroCodec, InvalidRecord
from streamlearn.schemas.records import KafkaRecord, Prediction
from streamlearn.settings import Settings
from streamlearn.streams.gapguard import GapGuard

log = logging.getLogger(__name__)
T = TypeVar("T")


def decode_prediction(data: bytes, codec: AvroCodec | None = None) -> Prediction:
    """Wire bytes of the predictions topic -> :class:`Prediction` (raises InvalidRecord)."""
    return Prediction.from_record((codec or AvroCodec.default()).decode("prediction", data))


class InvalidMessage(InvalidRecord):
    """A message on an output topic that does not decode; says where it is."""

    def __init__(self, topic: str, partition: int, offset: int, err: InvalidRecord) -> None:
        super().__init__(err.reason, f"{topic}[{partition}]@{offset}: {err.detail}")
        self.topic, self.partition, self.offset = topic, partition, offset


# the consumed message (value: the decoded record); the name the SDK has always exported
ConsumedRecord = KafkaRecord


def _to_ms(ts: int | float | datetime) -> int:
    if isinstance(ts, datetime):
        if ts.tzinfo is None:  # naive means UTC, like event times
            ts = ts.replace(tzinfo=UTC)
        return int(ts.timestamp() * 1000)
    return int(ts)


def _position(m: Message) -> tuple[str, int, int] | None:
    return None if m.error() is not None else (m.topic(), m.partition(), m.offset())


class RecordConsumer(Generic[T]):
    """Reads one topic of one schema subject; see :class:`PredictionConsumer` for the options.

    Without ``group_id`` the consumer assigns itself every partition (no group join, no
    commits). With ``group_id`` it joins that group: committed offsets win, and a record's
    offset is stored for commit only after the iteration resumes past it (at least once).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        subject: str,
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        from_timestamp: int | datetime | None = None,
        dedupe_key: Callable[[dict[str, Any]], Hashable] | None = None,
        dedupe_window: int = 1_000_000,
        on_invalid: Callable[[InvalidMessage], None] | None = None,
        codec: AvroCodec | None = None,
        **config: Any,
    ) -> None:
        if from_beginning and from_timestamp is not None:
            raise ValueError("from_beginning and from_timestamp are exclusive")
        self.settings, self.topic, self.subject = settings, topic, subject
        self.codec = codec or AvroCodec.default()
        if subject not in self.codec.subjects():
            raise ValueError(f"unknown schema subject {subject!r}; known: {self.codec.subjects()}")
        self.group_id = group_id
        self.from_beginning = from_beginning
        self.from_ts = None if from_timestamp is None else _to_ms(from_timestamp)
        self.dedupe_key, self.dedupe_window = dedupe_key, dedupe_window
        self.on_invalid = on_invalid
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        # brokers without timestamp lookup (tansu answers offset 0) are corrected client-side:
        # per partition, records are skipped until the first one at or after from_ts
        self._not_before: dict[int, int] = {}
        self._seeked: set[int] = set()
        self._unstored: list[Message] = []
        self._buffer: deque[Message] = deque()
        self._deferred: Exception | None = None
        self._assigned_at: float | None = None  # group mode: when the first assignment arrived
        self.consumed = self.duplicates = self.invalid = 0
        # offsets are contiguous on our topics: a jump is a broker fault, fetched again
        self.gap_guard = GapGuard(name=f"reader of {topic}")
        conf = settings.confluent_config(**{
            "group.id": group_id or f"streamlearn-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": group_id is not None,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "session.timeout.ms": int(settings.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000),
            "fetch.wait.max.ms": 100,
        })
        conf.update(config)
        self._consumer = Consumer(conf)
        self._closed = False
        try:
            parts = self._partitions()
            if group_id is None:
                start = self._start_positions(parts)
                self._consumer.assign(start)
                if not from_beginning and self.from_ts is None:
                    self._settle_end(start)
                for tp in start:
                    self.gap_guard.reset(tp.topic, tp.partition, tp.offset)
            else:
                self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        except Exception:
            self._consumer.close()
            raise

    def _partitions(self, timeout: float = 15.0) -> list[int]:
        md = self._consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        if md is None or md.error is not None or not md.partitions:
            reason = md.error.str() if md is not None and md.error is not None else "no partitions"
            raise ValueError(f"topic {self.topic!r} is not available on {self.settings.kafka_bootstrap}: {reason}")
        return sorted(md.partitions)

    def _start_positions(self, parts: list[int]) -> list[TopicPartition]:
        if self.from_ts is not None:
            return self._timestamp_positions(parts)
        if self.from_beginning:
            return [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts]
        # the end resolved now, not lazily at the first fetch: records published after the
        # constructor returns are never missed
        return [TopicPartition(self.topic, p, self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, p), timeout=15.0)[1]) for p in parts]

    def _settle_end(self, start: list[TopicPartition], timeout: float = 10.0) -> None:
        """Move ``start`` (in place) from the listed end to the true end, the first fetch's high watermark.

        The embedded broker lists "latest" as the start of a partition's last batch + 1, which
        would replay the rest of that batch; on Apache Kafka the two agree. Whatever the first
        fetches returned is dropped: it is at or before the end as this constructor found it.
        """
        pending = {tp.partition: tp for tp in start}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            self._consumer.consume(500, 0.05)
            for p, tp in list(pending.items()):
                _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
                if high >= 0:
                    tp.offset = max(tp.offset, high)
                    del pending[p]
        if pending:
            log.warning("%s: no fetch answered within %.0fs; starting at the listed end of partitions %s",
                        self.topic, timeout, sorted(pending))
        self._consumer.assign(start)

    def _timestamp_positions(self, parts: list[int]) -> list[TopicPartition]:
        found = self._consumer.offsets_for_times([TopicPartition(self.topic, p, self.from_ts) for p in parts],
                                                 timeout=15.0)
        out = []
        for tp in found:
            if tp.error is not None:
                raise KafkaException(tp.error)
            # -1: nothing at or after the timestamp yet, so start at the end
            out.append(TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END))
            self._not_before[tp.partition] = self.from_ts
            self._seeked.add(tp.partition)
        return out

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:  # resumes at the committed offset: the first record sets the baseline
            self.gap_guard.forget(tp.topic, tp.partition)
        if self._assigned_at is None:
            self._assigned_at = time.monotonic()
        if self.from_ts is None:
            return
        fresh = [tp.partition for tp in partitions if tp.partition not in self._seeked]
        if fresh:
            pos = {tp.partition: tp for tp in self._timestamp_positions(fresh)}
            consumer.assign([pos.get(tp.partition, tp) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # fetched but not handed out: the partitions' new owner reads them from the commit
        gone = {tp.partition for tp in partitions}
        for tp in partitions:
            self.gap_guard.forget(tp.topic, tp.partition)
        self._buffer = deque(m for m in self._buffer if m.partition() not in gone)
        self._unstored = [m for m in self._unstored if m.partition() not in gone]

    # --- reading ---------------------------------------------------------------------
    def _convert(self, rec: KafkaRecord) -> T:
        return rec  # type: ignore[return-value]

    def _next_message(self, timeout: float) -> Message | None:
        # fetched messages wait here, so stopping early (max_items, an error) loses none
        if not self._buffer:
            kept, seeks = self.gap_guard.filter_batch(self._consumer.consume(500, timeout), _position)
            for (topic, partition), offset in seeks.items():
                self._seek_back(topic, partition, offset)
            self._buffer.extend(kept)
        return self._buffer.popleft() if self._buffer else None

    def _seek_back(self, topic: str, partition: int, offset: int) -> None:
        try:  # drops what librdkafka prefetched past the hole; the next fetch asks for it again
            self._consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:  # revoked meanwhile: its next owner reads from the commit
            log.warning("%s[%d]: seek back to %d failed: %s", topic, partition, offset, exc)
            self.gap_guard.forget(topic, partition)

    @property
    def offset_gaps(self) -> int:
        """Offset gaps found and closed by fetching again (the embedded broker's fault)."""
        return self.gap_guard.gaps

    def _item(self, m: Message) -> T | None:
        """The item for a message, or None when it is skipped (too old, duplicate, invalid)."""
        err = m.error()
        if err is not None:
            if err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                             KafkaError.TOPIC_AUTHORIZATION_FAILED):
                raise KafkaException(err)
            log.warning("consumer: %s", err)  # transient; librdkafka retries
            return None
        p = m.partition()
        ts_type, ts = m.timestamp()
        if p in self._not_before:
            if ts_type != TIMESTAMP_NOT_AVAILABLE and ts < self._not_before[p]:
                return None
            del self._not_before[p]
        try:
            value = self.codec.decode(self.subject, m.value() or b"")
        except InvalidRecord as exc:
            self.invalid += 1
            bad = InvalidMessage(m.topic(), p, m.offset(), exc)
            if self.on_invalid is None:
                raise bad from None
            self.on_invalid(bad)
            return None
        if self.dedupe_key is not None:
            k = self.dedupe_key(value)
            if k in self._seen:
                self.duplicates += 1
                return None
            self._seen[k] = None
            if len(self._seen) > self.dedupe_window:
                self._seen.popitem(last=False)
        self.consumed += 1
        rec = KafkaRecord(self.subject, m.topic(), p, m.offset(), None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
                          ts_type, m.key(), value, tuple(m.headers() or ()))
        return self._convert(rec)

    def _store(self, msgs: list[Message]) -> None:
        if self.group_id is not None and msgs and not self._closed:
            try:
                self._consumer.store_offsets(offsets=[
                    TopicPartition(m.topic(), m.partition(), m.offset() + 1) for m in msgs if m.error() is None])
            except KafkaException as exc:  # revoked meanwhile: the new owner re-reads it (at least once)
                log.warning("offset not stored: %s", exc)

    def poll(self, timeout: float = 1.0) -> list[T]:
        """The next batch (possibly empty). The previous batch counts as processed."""
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        self._store(self._unstored)
        self._unstored = []
        items: list[T] = []
        m = self._next_message(timeout)
        while m is not None:
            try:
                item = self._item(m)
            except (InvalidMessage, KafkaException) as exc:
                if not items:
                    raise
                self._deferred = exc  # hand out what came before it first
                break
            self._unstored.append(m)
            if item is not None:
                items.append(item)
            m = self._buffer.popleft() if self._buffer else None
        return items

    def iter(self, idle_timeout: float | None = None, max_items: int | None = None) -> Iterator[T]:
        """Yield items; stop after ``idle_timeout`` s without a new one or after ``max_items``.

        A record's offset is stored for commit when the loop comes back for the next one. In a
        group, idle time counts from the first partition assignment (a join takes seconds).
        """
        self._store(self._unstored)
        self._unstored = []
        n = 0
        last = time.monotonic()
        while max_items is None or n < max_items:
            m = self._next_message(0.2)
            if m is None:
                if idle_timeout is not None and time.monotonic() - max(last, self._assigned_at or 0) > idle_timeout:
                    return
                continue
            item = self._item(m)
            if item is not None:
                yield item
                n += 1
                last = time.monotonic()
            self._store([m])

    def __iter__(self) -> Iterator[T]:
        return self.iter()

    def commit(self) -> None:
        """Commit what has been processed so far (group mode; otherwise a no-op)."""
        if self.group_id is not None:
            self._store(self._unstored)
            self._unstored = []
            try:
                self._consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    raise

    def close(self) -> None:
        if self._closed:
            return
        if self.group_id is not None and self._assigned_at is None:
            # closed while its join is pending, the member has no id to leave with: the broker
            # (tansu) then holds the group for the next member for minutes. Finish the join
            # (bounded), so close() sends LeaveGroup; what was fetched meanwhile is not stored.
            deadline = time.monotonic() + self.settings.session_timeout_s + 1
            while self._assigned_at is None and time.monotonic() < deadline:
                self._consumer.consume(500, 0.1)
        try:
            self.commit()
        finally:
            self._closed = True
            self._consumer.close()

    def __enter__(self):
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class PredictionConsumer(RecordConsumer[Prediction]):
    """Iterates :class:`Prediction` objects from the predictions topic.

    ``group_id``: join this consumer group (resume from its committed offsets); default: a
    private reader that commits nothing. ``from_beginning``: start at the first record
    (with a group: only if the group has no committed offset). ``from_timestamp`` (ms or
    datetime): start at the first record at or after it. ``dedupe=True``: drop repeated
    event ids (the worker delivers at least once; the last ``dedupe_window`` ids are kept).
    ``shadow=True`` reads the challengers' topic instead (deduplicated per model version).
    Needs a broker, so not a doctest::

        with PredictionConsumer(settings, from_beginning=True, dedupe=True) as preds:
            for p in preds.iter(idle_timeout=5):
                print(p.event_id, p.score, p.latency_ms)
    """

    def __init__(self, settings: Settings, *, dedupe: bool = False, shadow: bool = False, **kwargs: Any) -> None:
        key: Callable[[dict[str, Any]], Hashable] | None = None
        if dedupe:
            key = ((lambda r: (r["event_id"], r["model_name"], r["model_version"])) if shadow
                   else (lambda r: r["event_id"]))
        topic = settings.topic_shadow if shadow else settings.topic_predictions
        super().__init__(settings, topic, "prediction", dedupe_key=key, **kwargs)

    def _convert(self, rec: KafkaRecord) -> Prediction:
        return Prediction.from_record(rec.value)
