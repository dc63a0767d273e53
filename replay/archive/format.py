"""The archive's on-disk format: Avro container files of Kafka records, and their manifests.

Layout under the archive root (``/``-separated names, see :mod:`streamlearn.replay.archive.storage`)::

    <kind>/<topic>/date=<YYYY-MM-DD>/partition=<P>/<first offset>-<last offset>.avro
    <kind>/<topic>/date=<YYYY-MM-DD>/partition=<P>/<first offset>-<last offset>.avro.manifest.json
    _state/<topic>/<partition>.json          next offset to archive (survives retention)

``kind`` is ``event``, ``feedback`` or ``prediction``; ``date`` is the UTC date of the
file's first Kafka timestamp. A data file is *listed* only once its manifest exists; the
manifest is written after the data file is published, so a listed file is always complete.

Each Avro record (schema :data:`RECORD_SCHEMA`, embedded in every file's header) keeps a
Kafka message exactly: topic, partition, offset, timestamp, key, headers and the raw value
bytes (so republishing is byte-exact), plus two fields extracted on the way in:
``fingerprint`` (hex CRC-64-AVRO of the value's writer schema, ``"json"`` for a JSON value,
null when the value is neither) and ``record_time`` (``event_time`` of events and
predictions, ``label_time`` of feedback; null when the value does not decode).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _avro_fp
from fastavro.schema import to_parsing_canonical_form

from streamlearn.schemas import MAGIC, AvroCodec, InvalidRecord

FORMAT = "streamlearn-archive/1"
KINDS = ("event", "feedback", "prediction")
STATE_PREFIX = "_state/"
MANIFEST_SUFFIX = ".manifest.json"

RECORD_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "ArchivedRecord", "namespace": "streamlearn.archive.v1",
    "fields": [
        {"name": "kind", "type": "string"},
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": "long", "doc": "Kafka timestamp, ms"},
        {"name": "timestamp_type", "type": "int", "doc": "0 none, 1 CreateTime, 2 LogAppendTime"},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": ["null", "bytes"], "default": None},
        {"name": "headers", "type": {"type": "array", "items": {
            "type": "record", "name": "Header",
            "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": ["null", "bytes"]}]}},
         "default": []},
        {"name": "fingerprint", "type": ["null", "string"], "default": None},
        {"name": "record_time", "type": ["null", "long"], "default": None},
    ],
}
PARSED_SCHEMA = fastavro.parse_schema(RECORD_SCHEMA)
CONTAINER_FINGERPRINT = _avro_fp(to_parsing_canonical_form(PARSED_SCHEMA), "CRC-64-AVRO")
#: container schemas this code can read (a future v2 adds its fingerprint here)
KNOWN_CONTAINERS = {CONTAINER_FINGERPRINT}
SUBJECT = {"event": "event", "feedback": "feedback", "prediction": "prediction"}
_TIME_FIELD = {"event": "event_time", "feedback": "label_time", "prediction": "event_time"}


class ArchiveError(RuntimeError):
    """A problem with one archive file; ``path`` names it."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


@dataclass
class Manifest:
    """What one published data file holds (written next to it as JSON)."""

    path: str
    kind: str
    topic: str
    partition: int
    date: str
    first_offset: int
    last_offset: int
    record_count: int
    first_event_time: int | None  # min record_time in the file
    last_event_time: int | None  # max record_time in the file
    first_timestamp: int  # min Kafka timestamp
    last_timestamp: int  # max Kafka timestamp
    bytes: int
    sha256: str
    container_fingerprint: str = CONTAINER_FINGERPRINT
    writer_fingerprints: dict[str, int] = field(default_factory=dict)  # value writer schema -> records
    codec: str = "deflate"
    created_at: float = 0.0
    format: str = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


def data_name(kind: str, topic: str, date: str, partition: int, first: int, last: int) -> str:
    return f"{kind}/{topic}/date={date}/partition={partition}/{first:020d}-{last:020d}.avro"


def state_name(topic: str, partition: int) -> str:
    return f"{STATE_PREFIX}{topic}/{partition}.json"


def utc_date(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def sync_marker(topic: str, partition: int, first_offset: int) -> bytes:
    """Deterministic Avro sync marker: re-archiving a range writes the same bytes."""
    return hashlib.sha256(f"{topic}/{partition}/{first_offset}".encode()).digest()[:16]


def inspect_value(kind: str, value: bytes | None, registry: AvroCodec) -> tuple[str | None, int | None]:
    """(writer fingerprint, record time) of a message value; never raises on bad bytes."""
    if not value:
        return None, None
    if value[:2] == MAGIC and len(value) >= 10:
        fp = value[2:10].hex()
    elif value.lstrip()[:1] == b"{":
        fp = "json"
    else:
        return None, None
    try:
        rec = registry.decode(SUBJECT[kind], value)
    except InvalidRecord:
        return fp, None
    t = rec.get(_TIME_FIELD[kind])
    return fp, t if isinstance(t, int) else None


def read_file(data: bytes, manifest: Manifest) -> list[dict[str, Any]]:
    """Verify a data file against its manifest and return its records; ArchiveError if bad."""
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise ArchiveError(manifest.path, f"sha256 does not match the manifest ({len(data)} bytes, "
                                          f"manifest says {manifest.bytes}): corrupt or truncated")
    if manifest.container_fingerprint not in KNOWN_CONTAINERS:
        raise ArchiveError(manifest.path, f"written with archive record schema {manifest.container_fingerprint}, "
                                          "which this version does not know")
    try:
        reader = fastavro.reader(io.BytesIO(data))
        records = list(reader)
    except Exception as exc:  # fastavro raises many types on corrupt input
        raise ArchiveError(manifest.path, f"not a readable Avro container file ({type(exc).__name__}: {exc})") from None
    if len(records) != manifest.record_count:
        raise ArchiveError(manifest.path, f"{len(records)} records, manifest says {manifest.record_count}")
    return records
