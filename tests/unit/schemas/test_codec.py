"""Wire formats: Avro single-object encoding, JSON input, schema evolution."""

from __future__ import annotations

import copy
import json

import pytest

from streamlearn.schemas import MAGIC, AvroCodec, InvalidRecord
from streamlearn.schemas.codec import SCHEMA_DIR

EVENT = {"event_id": "e1", "entity": "card-1", "event_time": 1_700_000_000_000,
         "features": {"amount": 12.5, "n": 3, "ok": True, "merchant": "m1", "gone": None}}


def test_every_subject_has_a_versioned_schema_file():
    reg = AvroCodec.default()
    assert reg.subjects() == ["deadletter", "drift", "event", "feedback", "lifecycle", "prediction"]
    assert all(reg.current(s).version >= 1 for s in reg.subjects())


def test_avro_round_trip_keeps_types():
    reg = AvroCodec.default()
    data = reg.encode("event", EVENT)
    assert data[:2] == MAGIC and data[2:10] == reg.current("event").fingerprint
    assert reg.decode("event", data) == EVENT


def test_json_is_accepted_and_validated_like_avro():
    reg = AvroCodec.default()
    assert reg.decode("event", json.dumps(EVENT).encode()) == EVENT
    with pytest.raises(InvalidRecord) as err:
        reg.decode("event", json.dumps({**EVENT, "event_time": "noon"}).encode())
    assert err.value.reason == "schema" and "event_time" in err.value.detail
    with pytest.raises(InvalidRecord, match="missing required field 'entity'"):
        reg.decode("event", json.dumps({k: v for k, v in EVENT.items() if k != "entity"}).encode())


def _v2(subject: str) -> dict:
    """The next version of a schema: one new optional field with a default."""
    schema = json.loads((SCHEMA_DIR / f"{subject}.v1.avsc").read_text())
    v2 = copy.deepcopy(schema)
    v2["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    return v2


def test_new_reader_reads_old_data_with_the_default():
    old = AvroCodec.default()
    new = AvroCodec.from_directory(SCHEMA_DIR)
    new.register("event", 2, _v2("event"))
    assert new.current("event").version == 2
    assert new.decode("event", old.encode("event", EVENT)) == {**EVENT, "channel": None}


def test_old_reader_reads_new_data_ignoring_the_new_field():
    new = AvroCodec.from_directory(SCHEMA_DIR)
    sv2 = new.register("event", 2, _v2("event"))
    data = new.encode("event", {**EVENT, "channel": "web"})
    old = AvroCodec.from_directory(SCHEMA_DIR)
    with pytest.raises(InvalidRecord) as err:  # a writer schema it has never seen
        old.decode("event", data)
    assert err.value.reason == "unknown_schema"
    old.register("event", 2, _v2("event"))  # learns the writer schema ...
    old._current["event"] = old.writer(AvroCodec.default().current("event").fingerprint)  # ... keeps v1
    assert old.current("event").version == 1 and sv2.fingerprint != old.current("event").fingerprint
    assert old.decode("event", data) == EVENT


def test_corrupt_avro_is_rejected_not_crashed():
    reg = AvroCodec.default()
    data = reg.encode("event", EVENT)
    for bad in (data[:12], data + b"\x00", b"\xc3\x01" + b"\x00" * 3):
        with pytest.raises(InvalidRecord):
            reg.decode("event", bad)
