"""The compiled Avro writers put on the wire exactly the bytes fastavro writes, and raise
what fastavro raises, for every shipped schema."""

from __future__ import annotations

import io
import math

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.schemas import AvroCodec
from streamlearn.schemas.codec import compile_flat
from streamlearn.schemas.records import Prediction

codec = AvroCodec.default()
SUBJECTS = codec.subjects()


def _fastavro(subject: str, record) -> bytes:
    sv = codec.current(subject)
    buf = io.BytesIO()
    buf.write(sv.header)
    fastavro.schemaless_writer(buf, sv.schema, record)
    return buf.getvalue()


def _never(record):
    raise AssertionError("the compiled writer handed a plain record to fastavro")


def _compiled_only(subject: str):
    """The compiled writer with no fallback: proves the fast path itself wrote the bytes."""
    sv = codec.current(subject)
    return compile_flat(sv.schema, sv.header, _never)


def test_every_shipped_schema_compiles():
    for subject in SUBJECTS:
        assert _compiled_only(subject) is not None, subject


# values of every kind the schemas' types take, edge cases included
longs = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 63, 64, -64, -65, 2**63 - 1, -(2**63)]))
ints = st.integers(-(2**31), 2**31 - 1)
doubles = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-310, math.pi]))
strings = st.text(max_size=40)
scalars = st.one_of(st.none(), st.booleans(), longs, doubles, strings)


def _value(t):
    if isinstance(t, dict) and t.get("type") == "map":
        return st.dictionaries(strings, _value(t["values"]), max_size=6)
    if isinstance(t, list):
        return st.one_of(*[_value(b) for b in t])
    return {"null": st.none(), "boolean": st.booleans(), "int": ints, "long": longs, "double": doubles,
            "string": strings, "bytes": st.binary(max_size=40)}[t]


def _records(subject):
    fields = codec.current(subject).schema["fields"]
    return st.fixed_dictionaries({f["name"]: _value(f["type"]) for f in fields})


@pytest.mark.parametrize("subject", SUBJECTS)
def test_plain_records_byte_identical_without_fastavro(subject):
    encode = _compiled_only(subject)

    @settings(max_examples=200, deadline=None)
    @given(_records(subject))
    def check(record):
        assert encode(record) == _fastavro(subject, record)
        assert codec.encoder(subject)(record) == _fastavro(subject, record)

    check()


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({
    "event_id": st.one_of(strings, st.just("\ud800"), st.integers()),
    "entity": strings,
    "event_time": st.one_of(longs, st.integers(2**63, 2**70), st.floats(0, 1e15), st.booleans()),
    "features": st.dictionaries(strings, st.one_of(scalars, st.integers(2**63, 2**70), st.just(np.float64(1.5)),
                                                   st.just(np.int64(3)), st.just(("long", 3)))),
}))
def test_unusual_values_go_the_fastavro_way(record):
    """Out-of-range ints, numpy scalars, tuple-named branches, lone surrogates, wrong types:
    the same bytes or the same exception as fastavro."""
    encode = codec.encoder("event")
    try:
        expected = _fastavro("event", record)
    except Exception as exc:  # noqa: BLE001 - whatever fastavro raises, the encoder raises too
        with pytest.raises(type(exc)):
            encode(record)
    else:
        assert encode(record) == expected


def test_a_prediction_of_an_sklearn_model_is_written_like_fastavro():
    p = Prediction("e1", "card-1", 1_700_000_000_000, "fraud", 3, 12, np.float64(0.25), True,
                   {"True": np.float64(0.25), "False": 0.75}, 1_700_000_000_005, 4.0, None)
    assert codec.encoder("prediction")(p.record()) == _fastavro("prediction", p.record())
    with pytest.raises(AssertionError, match="handed"):  # numpy scalars: fastavro's job
        _compiled_only("prediction")(p.record())


def test_missing_fields_fall_back_to_fastavro_defaults():
    rec = Prediction("e1", "c", 1, "m", 1, 0, 0.5, None, {}).record()
    del rec["label_joined"]  # fastavro writes the field's default
    assert codec.encoder("prediction")(rec) == _fastavro("prediction", rec)
