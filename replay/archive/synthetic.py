"""Archives built from a dataset, without a broker: backtest and retraining fixtures.

Records are what Kafka would have held had the dataset been produced in arrival order
(:func:`streamlearn.datasets.arrival_order`): Avro single-object values, events keyed by
entity, feedback by event id, offsets counting up per partition, and Kafka timestamps
equal to the time each message reaches the system (an event at its event time, a label
at its ``label_time``).

>>> import tempfile
>>> from streamlearn import datasets
>>> from streamlearn.replay.archive.storage import LocalStorage
>>> from streamlearn.replay.archive.reader import Archive
>>> store = LocalStorage(tempfile.mkdtemp())
>>> _ = archive_items(store, datasets.cards(n=200, seed=1), partitions=2)
>>> a = Archive(store)
>>> sum(m.record_count for m in a.files("event")), a.partitions("event")
(200, [('streamlearn.events.v1', 0), ('streamlearn.events.v1', 1)])
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from streamlearn.datasets import Item, arrival_order
from streamlearn.replay.archive.format import Manifest
from streamlearn.replay.archive.storage import Storage
from streamlearn.replay.archive.writer import write_records
from streamlearn.schemas import AvroCodec
from streamlearn.schemas.records import KafkaRecord
from streamlearn.settings import Settings

#: the default settings' topic names, so the CLI with default settings reads these archives
DEFAULT_TOPICS = {"event": Settings.model_fields["topic_events"].default,
                  "feedback": Settings.model_fields["topic_feedback"].default}


def partition_for(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def records_for(
    stream: Iterable[tuple[str, dict[str, Any]]],
    *,
    partitions: int = 1,
    topics: dict[str, str] | None = None,
    registry: AvroCodec | None = None,
) -> list[KafkaRecord]:
    """Kafka records for ("event", e) / ("feedback", f) items in arrival order."""
    reg = registry or AvroCodec.default()
    topics = topics or DEFAULT_TOPICS
    enc = {"event": reg.encoder("event"), "feedback": reg.encoder("feedback")}
    offsets: dict[tuple[str, int], int] = {}
    out: list[KafkaRecord] = []
    for kind, rec in stream:
        if kind == "event":
            key, ts, parts = rec["entity"].encode(), rec["event_time"], partitions
        else:
            key, ts, parts = rec["event_id"].encode(), rec["label_time"], 1  # feedback: one partition
        p = partition_for(key, parts)
        tp = (topics[kind], p)
        off = offsets.get(tp, 0)
        offsets[tp] = off + 1
        out.append(KafkaRecord(kind, tp[0], p, off, int(ts), 1, key, enc[kind](rec)))
    return out


def archive_items(storage: Storage, items: list[Item], *, partitions: int = 1, topics: dict[str, str] | None = None,
                  **writer_kwargs: Any) -> list[Manifest]:
    """Archive a dataset as if it had streamed through Kafka (events, then labels as they arrive);
    ``topics``: kind -> topic name (default: the default settings')."""
    return write_records(storage, records_for(arrival_order(items), partitions=partitions, topics=topics),
                         **writer_kwargs)
