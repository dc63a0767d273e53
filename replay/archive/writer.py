"""Writing the archive: append Kafka records, roll files, publish them with their manifests.

Pure of Kafka (the consumer loop is :mod:`streamlearn.replay.archive.archiver`), so the rules that
make the archive trustworthy are testable on their own:

* one open file per (topic, partition), appended in offset order in the storage's staging
  directory; a record at or below the last archived offset of its partition is a
  duplicate (a re-delivery after a restart) and is skipped;
* a file is rolled when it reaches ``roll_bytes``, is ``roll_s`` old, or its partition
  reaches the next UTC date; rolling = fsync, publish (atomic rename), write the manifest,
  then the partition's ``_state`` (next offset). Only then may the caller commit offsets;
* on (re)start a partition resumes at the highest offset any manifest or state file
  covers, and staging leftovers of a crashed writer (and data files whose manifest was
  never written) are deleted, because their records will be read again from Kafka.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro.write

from streamlearn.replay.archive.format import (
    MANIFEST_SUFFIX,
    PARSED_SCHEMA,
    STATE_PREFIX,
    Manifest,
    data_name,
    inspect_value,
    state_name,
    sync_marker,
    utc_date,
)
from streamlearn.replay.archive.storage import Storage
from streamlearn.schemas import AvroCodec
from streamlearn.schemas.records import KafkaRecord

log = logging.getLogger(__name__)
_RECORD_OVERHEAD = 48  # rough per-record bytes beyond key and value, for roll sizing


@dataclass
class _OpenFile:
    kind: str
    topic: str
    partition: int
    date: str
    path: Path
    fo: Any
    writer: Any
    opened_at: float
    first_offset: int
    last_offset: int = -1
    count: int = 0
    size: int = 0
    min_time: int | None = None
    max_time: int | None = None
    min_ts: int | None = None
    max_ts: int | None = None
    fingerprints: Counter = field(default_factory=Counter)


def staging_prefix(topic: str, partition: int) -> str:
    return f"{topic}~{partition}~"  # '~' is not allowed in Kafka topic names: unambiguous


class ArchiveWriter:
    def __init__(
        self,
        storage: Storage,
        *,
        roll_bytes: int = 64 * 1024 * 1024,
        roll_s: float = 300.0,
        registry: AvroCodec | None = None,
        codec: str = "deflate",
        clock=time.time,
    ) -> None:
        self.storage = storage
        self.roll_bytes = roll_bytes
        self.roll_s = roll_s
        self.registry = registry or AvroCodec.default()
        self.codec = codec
        self.clock = clock
        self.open: dict[tuple[str, int], _OpenFile] = {}
        # next offset per partition: covered by published files / including open files
        self.durable_next: dict[tuple[str, int], int] = self._load_positions()
        self.next_offset: dict[tuple[str, int], int] = dict(self.durable_next)
        self.duplicates_skipped = 0
        self.published: list[Manifest] = []

    # ------------------------------------------------------------------ positions
    def _load_positions(self) -> dict[tuple[str, int], int]:
        pos: dict[tuple[str, int], int] = {}
        for name in self.storage.list():
            try:
                if name.endswith(MANIFEST_SUFFIX):
                    m = Manifest.from_json(self.storage.read(name))
                    tp, nxt = (m.topic, m.partition), m.last_offset + 1
                elif name.startswith(STATE_PREFIX) and name.endswith(".json"):
                    st = json.loads(self.storage.read(name))
                    tp, nxt = (st["topic"], int(st["partition"])), int(st["next_offset"])
                else:
                    continue
            except (ValueError, KeyError, TypeError) as exc:
                # an unreadable manifest must not silently move the resume point back
                raise RuntimeError(f"cannot read {self.storage.describe(name)}: {exc}") from exc
            pos[tp] = max(pos.get(tp, 0), nxt)
        return pos

    def position(self, topic: str, partition: int) -> int | None:
        """Next offset not yet durably archived for a partition, or None if none ever was."""
        return self.durable_next.get((topic, partition))

    def prepare_partition(self, topic: str, partition: int) -> None:
        """Remove what a crashed writer left for this partition (it will be re-read from Kafka)."""
        self.discard(topic, partition)
        prefix = staging_prefix(topic, partition)
        for p in self.storage.staging_dir().glob(prefix + "*"):
            log.info("removing unfinished staging file %s", p)
            p.unlink(missing_ok=True)
        names = set(self.storage.list())
        needle = f"/{topic}/date="
        for name in names:
            if (name.endswith(".avro") and needle in name and f"/partition={partition}/" in name
                    and name + MANIFEST_SUFFIX not in names):
                log.warning("removing %s: published without a manifest (crash between the two)",
                            self.storage.describe(name))
                self.storage.delete(name)

    # ------------------------------------------------------------------ appending
    def append(self, rec: KafkaRecord) -> list[Manifest]:
        """Add one record; returns manifests of files this rolled (usually none)."""
        tp = (rec.topic, rec.partition)
        nxt = self.next_offset.get(tp)
        if nxt is not None and rec.offset < nxt:
            self.duplicates_skipped += 1
            return []
        done: list[Manifest] = []
        date = utc_date(rec.timestamp)
        f = self.open.get(tp)
        if f is not None and date > f.date:
            done += self._roll(tp)
            f = None
        if f is None:
            f = self._open(rec, date)
        fp, rtime = inspect_value(rec.kind, rec.value, self.registry)
        f.writer.write({
            "kind": rec.kind, "topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
            "timestamp": rec.timestamp, "timestamp_type": rec.timestamp_type, "key": rec.key,
            "value": rec.value, "headers": [{"key": k, "value": v} for k, v in rec.headers],
            "fingerprint": fp, "record_time": rtime,
        })
        f.last_offset = rec.offset
        f.count += 1
        f.size += len(rec.value or b"") + len(rec.key or b"") + _RECORD_OVERHEAD
        if rtime is not None:
            f.min_time = rtime if f.min_time is None else min(f.min_time, rtime)
            f.max_time = rtime if f.max_time is None else max(f.max_time, rtime)
        f.min_ts = rec.timestamp if f.min_ts is None else min(f.min_ts, rec.timestamp)
        f.max_ts = rec.timestamp if f.max_ts is None else max(f.max_ts, rec.timestamp)
        f.fingerprints[fp or "invalid"] += 1
        self.next_offset[tp] = rec.offset + 1
        if f.size >= self.roll_bytes:
            done += self._roll(tp)
        return done

    def _open(self, rec: KafkaRecord, date: str) -> _OpenFile:
        path = self.storage.staging_dir() / f"{staging_prefix(rec.topic, rec.partition)}{rec.offset}.avro.part"
        fo = open(path, "wb")
        writer = fastavro.write.Writer(
            fo, PARSED_SCHEMA, codec=self.codec,
            sync_marker=sync_marker(rec.topic, rec.partition, rec.offset),
        )
        f = _OpenFile(rec.kind, rec.topic, rec.partition, date, path, fo, writer, self.clock(), rec.offset)
        self.open[(rec.topic, rec.partition)] = f
        return f

    def flush(self) -> None:
        """Push buffered blocks to the staging files (not durable; publishing is)."""
        for f in self.open.values():
            f.writer.flush()

    # ------------------------------------------------------------------ rolling
    def roll_due(self) -> list[Manifest]:
        now = self.clock()
        due = [tp for tp, f in self.open.items() if now - f.opened_at >= self.roll_s]
        return [m for tp in due for m in self._roll(tp)]

    def roll(self, topic: str, partition: int) -> list[Manifest]:
        return self._roll((topic, partition))

    def roll_all(self) -> list[Manifest]:
        return [m for tp in list(self.open) for m in self._roll(tp)]

    def discard(self, topic: str, partition: int) -> None:
        """Drop an open file without publishing (its records will be re-read from Kafka)."""
        f = self.open.pop((topic, partition), None)
        if f is not None:
            f.fo.close()
            f.path.unlink(missing_ok=True)
        # resume where the last published file ended
        if (topic, partition) in self.durable_next:
            self.next_offset[(topic, partition)] = self.durable_next[(topic, partition)]
        else:
            self.next_offset.pop((topic, partition), None)

    def _roll(self, tp: tuple[str, int]) -> list[Manifest]:
        f = self.open.pop(tp, None)
        if f is None or f.count == 0:
            return []
        f.writer.flush()
        f.fo.flush()
        os.fsync(f.fo.fileno())
        f.fo.close()
        digest, size = _sha256(f.path)
        name = data_name(f.kind, f.topic, f.date, f.partition, f.first_offset, f.last_offset)
        manifest = Manifest(
            path=name, kind=f.kind, topic=f.topic, partition=f.partition, date=f.date,
            first_offset=f.first_offset, last_offset=f.last_offset, record_count=f.count,
            first_event_time=f.min_time, last_event_time=f.max_time,
            first_timestamp=f.min_ts or 0, last_timestamp=f.max_ts or 0, bytes=size, sha256=digest,
            writer_fingerprints=dict(sorted(f.fingerprints.items())), codec=self.codec,
            created_at=round(self.clock(), 3),
        )
        # order matters: data, then manifest (lists it), then state (moves the resume point)
        self.storage.publish(name, f.path)
        self.storage.write(name + MANIFEST_SUFFIX, manifest.to_json())
        self.storage.write(state_name(f.topic, f.partition), json.dumps(
            {"topic": f.topic, "partition": f.partition, "next_offset": f.last_offset + 1}).encode())
        self.published.append(manifest)
        self.durable_next[tp] = f.last_offset + 1
        return [manifest]

    def close(self) -> list[Manifest]:
        return self.roll_all()


def _sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fo:
        while chunk := fo.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def write_records(storage: Storage, records: list[KafkaRecord], **kwargs: Any) -> list[Manifest]:
    """Archive a list of records in one go (imports, tests, fixtures)."""
    w = ArchiveWriter(storage, **kwargs)
    out: list[Manifest] = []
    for rec in records:
        out += w.append(rec)
    return out + w.close()
