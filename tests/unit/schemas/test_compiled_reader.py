"""The compiled Avro readers decode exactly what fastavro decodes (values, types, key order),
and a corrupt message gets fastavro's own outcome (the record or the error), for every
shipped schema."""

from __future__ import annotations

import io
import math
import re

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.schemas import AvroCodec
from streamlearn.schemas.codec import HEADER_LEN, InvalidRecord, _Slow, compile_flat_reader
from tests.unit.schemas.test_compiled_writer import _records  # records of a subject's schema, any value

codec = AvroCodec.default()
SUBJECTS = codec.subjects()



def _fastavro_decode(subject: str, data: bytes):
    """What AvroCodec.decode returned before the compiled readers: fastavro's record or error."""
    sv = codec.current(subject)
    body = io.BytesIO(data)
    body.seek(HEADER_LEN)
    try:
        record = fastavro.schemaless_reader(body, sv.schema, None)
    except Exception as exc:
        return ("error", "bad_avro", re.sub(r" at 0x[0-9a-f]+", "", f"{type(exc).__name__}: {exc}"))
    if body.tell() != len(data):
        return ("error", "bad_avro", f"{len(data) - body.tell()} trailing bytes after the record")
    return ("ok", record)


def _decode(subject: str, data: bytes):
    try:
        return ("ok", codec.decode(subject, data))
    except InvalidRecord as exc:
        # fastavro's messages may name a buffer object by its address: not part of the outcome
        return ("error", exc.reason, re.sub(r" at 0x[0-9a-f]+", "", exc.detail))


def _same(a, b) -> bool:
    """Equal values of equal types, in the same key order (NaN equal to itself, -0.0 not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def _ints(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _ints(v)
    elif type(value) is int:
        yield value


def test_every_shipped_schema_compiles():
    for subject in SUBJECTS:
        assert compile_flat_reader(codec.current(subject).schema) is not None, subject


@pytest.mark.parametrize("subject", SUBJECTS)
def test_records_decode_as_fastavro_decodes_them_by_the_compiled_reader(subject):
    read = compile_flat_reader(codec.current(subject).schema)
    encode = codec.encoder(subject)

    @settings(max_examples=200, deadline=None)
    @given(_records(subject))
    def check(record):
        data = encode(record)
        expected = _fastavro_decode(subject, data)
        try:
            fast, end = read(data, HEADER_LEN)  # the compiled path itself, no fallback
        except _Slow:  # only a long beyond 63 zigzag bits (a 10-byte varint) is left to fastavro
            assert any(not -(2**62) <= v < 2**62 for v in _ints(record))
        else:
            assert end == len(data)
            assert _same(("ok", fast), expected)
        assert _same(_decode(subject, data), expected)

    check()


@pytest.mark.parametrize("subject", SUBJECTS)
def test_corrupt_messages_get_fastavros_outcome(subject):
    encode = codec.encoder(subject)

    @settings(max_examples=300, deadline=None)
    @given(_records(subject), st.data())
    def check(record, data):
        wire = bytearray(encode(record))
        how = data.draw(st.sampled_from(["cut", "flip", "extra"]))
        if how == "cut":
            wire = wire[:data.draw(st.integers(HEADER_LEN, len(wire)))]
        elif how == "flip" and len(wire) > HEADER_LEN:
            i = data.draw(st.integers(HEADER_LEN, len(wire) - 1))
            wire[i] = data.draw(st.integers(0, 255))
        else:
            wire += data.draw(st.binary(min_size=1, max_size=4))
        wire = bytes(wire)
        assert _same(_decode(subject, wire), _fastavro_decode(subject, wire))

    check()


def test_what_the_reader_leaves_to_fastavro():
    read = compile_flat_reader(codec.current("feedback").schema)
    data = codec.encode("feedback", {"event_id": "e", "label": True, "label_time": 1})
    with pytest.raises(_Slow):  # a boolean byte other than 0/1
        read(data[:-2] + b"\x02" + data[-1:], HEADER_LEN)
    big = codec.encode("feedback", {"event_id": "e", "label": 2**62, "label_time": 1})
    with pytest.raises(_Slow):  # a 10-byte varint
        read(big, HEADER_LEN)
    assert _same(_decode("feedback", big), _fastavro_decode("feedback", big))


def test_the_bound_feedback_decoder_equals_decode_feedback() -> None:
    """``feedback_decoder`` (the worker's, per label) gives what ``decode_feedback`` gives, the
    record or the same InvalidRecord, for labels of every type and range, ids at and past the
    limit, every truncation, trailing bytes, JSON, other subjects, non-bytes input, and
    random byte flips of valid messages."""
    import math
    import random

    from streamlearn.schemas import InvalidRecord
    from streamlearn.schemas.validation import Limits, decode_feedback, feedback_decoder

    limits = Limits(max_message_bytes=200, max_string_length=24)
    reg = AvroCodec.default()
    fast = feedback_decoder(reg, limits)
    enc = reg.encoder("feedback")
    labels = [True, False, 0, 1, -5, 2**62, 0.5, -0.0, math.nan, math.inf, -math.inf, 1e100, 1e101, -1e101, "a", "",
              "x" * 24, "x" * 25]
    ids = ["e1", "", "y" * 24, "y" * 25, "ü" * 20]
    msgs: list = [None, b"", b"{}", b'{"event_id": "a", "label": true, "label_time": 1}', b"\xc3\x01",
                  reg.encode("event", {"event_id": "a", "entity": "b", "event_time": 1, "features": {}})]
    for eid in ids:
        for y in labels:
            m = enc({"event_id": eid, "label": y, "label_time": 1_700_000_000_000})
            msgs += [m, m + b"\x00", bytearray(m), memoryview(m)] + [m[:i] for i in range(len(m))]
    msgs.append(enc({"event_id": "z" * 24, "label": "q" * 24, "label_time": 1}) + b"\x00" * 200)  # past the size
    rng = random.Random(3)
    base = [m for m in msgs if type(m) is bytes and len(m) > 10]
    for _ in range(3000):
        m = bytearray(rng.choice(base))
        m[rng.randrange(len(m))] ^= 1 << rng.randrange(8)
        msgs.append(bytes(m))

    def outcome(decode, data):  # noqa: ANN001, ANN202
        try:
            return "ok", decode(data)
        except InvalidRecord as err:
            return err.reason, err.detail
        except TypeError as err:  # decode_feedback's own on a bytearray (Kafka gives bytes)
            return "TypeError", str(err)

    for data in msgs:
        want = outcome(lambda d: decode_feedback(d, reg, limits), data)
        got = outcome(fast, data)
        # (fastavro's error details may name an object's address)
        assert re.sub(r"0x[0-9a-f]+", "0x", repr(got)) == re.sub(r"0x[0-9a-f]+", "0x", repr(want)), data
        if want[0] == "ok":
            assert [type(v) for v in got[1].values()] == [type(v) for v in want[1].values()]
