"""The archiver: its own consumer group copying events, feedback and predictions to the archive.

A plain confluent-kafka batch consumer (no Faust: it needs no state, only throughput).
At-least-once from Kafka, exactly once in the archive:

* on assignment each partition is positioned at the offset after the last *published*
  archive file (from the manifests and ``_state``; Kafka's committed offset is only a
  monitoring aid), so a restart re-reads exactly what was not yet durable;
* records at or below an archived offset are skipped (:class:`ArchiveWriter`);
* offsets are committed only after a file is published and its manifest written;
* a forward jump in a partition's offsets (the embedded broker's fault under concurrent
  producers, see ``streams/gapguard.py``) is never archived over: the consumer seeks back
  to the first missing offset and fetches again, so a file never has a hole.

A ``kill -9`` therefore loses nothing (uncommitted, unpublished records are read again)
and doubles nothing (the staging leftovers are deleted on the next assignment).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamlearn.replay.archive.format import MANIFEST_SUFFIX, Manifest
from streamlearn.replay.archive.storage import Storage, open_storage
from streamlearn.replay.archive.writer import ArchiveWriter
from streamlearn.schemas.records import KafkaRecord
from streamlearn.settings import Settings
from streamlearn.streams.gapguard import GapGuard

log = logging.getLogger(__name__)
OFFSET_BEGINNING = -2
RETENTION_EVERY_S = 3600.0


def archived_topics(settings: Settings) -> dict[str, str]:
    """topic -> kind, for the topics the archiver copies."""
    # challengers' predictions too: a model that stops serving mid-run (a promotion, a canary)
    # keeps publishing to the shadow topic, so its record stays complete for an exact replay
    return {settings.topic_events: "event", settings.topic_feedback: "feedback",
            settings.topic_predictions: "prediction", settings.topic_shadow: "prediction"}


def apply_retention(storage: Storage, retention_days: float, now_ms: int | None = None) -> list[str]:
    """Delete files whose newest Kafka timestamp is older than the retention. Returns their names.

    The manifest goes first (the file stops being listed), then the data. Resume points
    live in ``_state`` and survive, so deleted history is never re-archived.
    """
    if retention_days <= 0:
        return []
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    horizon = now_ms - retention_days * 86_400_000
    deleted = []
    for name in storage.list():
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        try:
            m = Manifest.from_json(storage.read(name))
        except (ValueError, TypeError) as exc:
            log.error("retention: cannot read %s (%s); left alone", storage.describe(name), exc)
            continue
        if m.last_timestamp < horizon:
            storage.delete(name)
            storage.delete(m.path)
            deleted.append(m.path)
    if deleted:
        log.info("retention: deleted %d archive files older than %.1f days", len(deleted), retention_days)
    return deleted


@dataclass
class ArchiverStats:
    records: int = 0
    duplicates_skipped: int = 0
    files: int = 0
    offset_gaps: int = 0  # holes in a partition's offsets, fetched again (never archived over)
    errors: list[str] = field(default_factory=list)


def _position(m) -> tuple[str, int, int] | None:
    return None if m.error() is not None else (m.topic(), m.partition(), m.offset())


class Archiver:
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.settings = settings
        self.storage = storage or open_storage(settings.archive_dir)
        self.topics = archived_topics(settings)
        self.writer = ArchiveWriter(self.storage, roll_bytes=settings.archive_roll_bytes,
                                    roll_s=settings.archive_roll_s)
        self.stats = ArchiverStats()
        self.assigned: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self.consumer: Consumer | None = None
        self.gap_guard = GapGuard(name="archiver")

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.writer.prepare_partition(tp.topic, tp.partition)
            pos = self.writer.position(tp.topic, tp.partition)
            tp.offset = OFFSET_BEGINNING if pos is None else pos
            self.gap_guard.reset(tp.topic, tp.partition, pos)  # from the beginning: the first record
            self.assigned.add((tp.topic, tp.partition))
        log.info("archiving %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # publish what we hold for these partitions before another member takes them over
        done = [m for tp in partitions for m in self.writer.roll(tp.topic, tp.partition)]
        self._commit(done)
        for tp in partitions:
            self.assigned.discard((tp.topic, tp.partition))
            self.gap_guard.forget(tp.topic, tp.partition)

    def _commit(self, manifests: list[Manifest]) -> None:
        if not manifests or self.consumer is None:
            return
        self.stats.files += len(manifests)
        last: dict[tuple[str, int], int] = {}
        for m in manifests:
            last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.last_offset)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # the manifest is the source of truth; a failed commit only lags monitoring
            log.warning("offset commit failed (archive is intact): %s", exc)

    def _seek_back(self, seeks: dict[tuple[str, int], int]) -> None:
        assert self.consumer is not None
        for (topic, partition), offset in seeks.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: the next owner starts at the archive's end
                log.warning("%s[%d]: seek back to %d failed: %s", topic, partition, offset, exc)
                self.gap_guard.forget(topic, partition)

    # ------------------------------------------------------------------ main loop
    def _caught_up(self) -> bool:
        assert self.consumer is not None
        if not self.assigned:
            return False
        for topic, partition in self.assigned:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high < 0:  # no fetch response yet
                return False
            if (self.writer.next_offset.get((topic, partition)) or 0) < high:
                return False
        return True

    def run(self, exit_when_idle_s: float | None = None, handle_signals: bool = False) -> ArchiverStats:
        """Archive until stopped (or, with ``exit_when_idle_s``, until caught up and idle that long)."""
        s = self.settings
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        apply_retention(self.storage, s.archive_retention_days)
        last_retention = time.monotonic()
        self.consumer = Consumer(s.confluent_config(**{
            "group.id": s.archive_group_id, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False,
            "session.timeout.ms": int(s.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(s.heartbeat_interval_s * 1000),
            "max.poll.interval.ms": int(max(s.max_poll_interval_s, 60) * 1000),
            # an archive needs no low latency: a long wait keeps long partitions readable on
            # the embedded broker (its fetches list batches only for as long as the wait)
            "fetch.wait.max.ms": max(500, s.fetch_max_wait_ms * 5),
        }))
        self.consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_msg = time.monotonic()
        try:
            while not self._stop.is_set():
                msgs, seeks = self.gap_guard.filter_batch(self.consumer.consume(500, 0.2), _position)
                self._seek_back(seeks)
                done: list[Manifest] = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer error: %s", err)
                            self.stats.errors.append(str(err))
                        continue
                    ts_type, ts = m.timestamp()
                    done += self.writer.append(KafkaRecord(
                        kind=self.topics[m.topic()], topic=m.topic(), partition=m.partition(), offset=m.offset(),
                        timestamp=ts if ts_type else 0, timestamp_type=ts_type, key=m.key(), value=m.value(),
                        headers=tuple(m.headers() or ()),
                    ))
                    self.stats.records += 1
                if msgs:
                    last_msg = time.monotonic()
                    self.writer.flush()
                done += self.writer.roll_due()
                self._commit(done)
                self.stats.duplicates_skipped = self.writer.duplicates_skipped
                self.stats.offset_gaps = self.gap_guard.gaps
                if time.monotonic() - last_retention > RETENTION_EVERY_S:
                    apply_retention(self.storage, s.archive_retention_days)
                    last_retention = time.monotonic()
                if (exit_when_idle_s is not None and time.monotonic() - last_msg >= exit_when_idle_s
                        and self._caught_up()):
                    log.info("caught up and idle for %.1fs: finishing", exit_when_idle_s)
                    break
            self._commit(self.writer.roll_all())
        finally:
            self.consumer.close()  # leaves the group: the next member need not wait for a timeout
        self.stats.duplicates_skipped = self.writer.duplicates_skipped
        return self.stats
