"""Bad input, generated (hypothesis, thousands of cases, no broker): the decoder either returns
a record every downstream step can use, or raises InvalidRecord with a reason; nothing else,
ever. The property, :func:`outcome`, and its documented edge cases are in
tests/unit/schemas/test_fuzz.py (the quick tier); these are its long runs.
"""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamlearn.schemas.codec import HEADER_LEN, MAGIC
from tests.helpers import REG
from tests.unit.schemas.test_fuzz import DECODERS, LIMITS, outcome

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ strategies
UNICODE = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)  # incl. lone surrogates
NASTY = st.sampled_from(["", " ", "\x00", "\u202e", "e\u0301", "\U0001F600", "\ud800", "\udfff", "\ufeff",
                         "\uffff", "a" * 65, "\\", '"', "\n"])
TEXT = st.one_of(UNICODE, NASTY, st.text(max_size=5))
NUMBER = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.integers(-5, 5),
                   st.floats(allow_nan=True, allow_infinity=True))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSONISH = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
FIELD = st.sampled_from(["event_id", "entity", "event_time", "features", "label", "label_time"])
FEATURES = st.dictionaries(TEXT, st.one_of(SCALAR, JSONISH), max_size=20)


EXTREME = st.sampled_from([1.7976931348623157e308, -1e308, 1e101, 1e100, -1e100, 5e-324, 2**63 - 1, -(2**63)])
GOOD_EVENT = st.fixed_dictionaries({
    "event_id": st.text(min_size=1, max_size=10), "entity": st.text(min_size=1, max_size=10),
    "event_time": st.integers(-(2**63), 2**63 - 1),
    "features": st.dictionaries(st.one_of(st.just("amount"), st.text(min_size=1, max_size=8)), st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=70), EXTREME),
        max_size=20),
})
GOOD_FEEDBACK = st.fixed_dictionaries({
    "event_id": st.text(min_size=1, max_size=10), "label_time": st.integers(-(2**63), 2**63 - 1),
    "label": st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=70), EXTREME),
})


@st.composite
def json_records(draw: st.DrawFn, subject: str) -> dict[str, Any]:
    """A valid record of ``subject`` with a few random mutations: fields dropped, added or given
    any JSON value, feature values replaced (NaN, inf, huge ints, nested values, odd strings)."""
    rec = dict(draw(GOOD_EVENT if subject == "event" else GOOD_FEEDBACK))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "add", "replace", "feature"]))
        if op == "drop" and rec:
            rec.pop(draw(st.sampled_from(sorted(rec))))
        elif op == "add":
            rec[draw(st.one_of(FIELD, TEXT))] = draw(SCALAR)
        elif op == "replace" and rec:
            rec[draw(st.sampled_from(sorted(rec)))] = draw(st.one_of(SCALAR, JSONISH))
        elif op == "feature" and isinstance(rec.get("features"), dict):
            rec["features"] = {**rec["features"], draw(TEXT): draw(st.one_of(SCALAR, JSONISH))}
    return rec


def to_json_bytes(rec: Any, ascii_escapes: bool) -> bytes:
    # ensure_ascii writes lone surrogates as \\udXXX escapes (valid JSON, invalid text);
    # otherwise they become bytes that are not UTF-8
    return json.dumps(rec, ensure_ascii=ascii_escapes, allow_nan=True).encode("utf-8", "surrogatepass")


def avro_bytes(subject: str, rec: dict[str, Any]) -> bytes:
    sv = REG.current(subject)
    buf = io.BytesIO()
    buf.write(sv.header)
    fastavro.schemaless_writer(buf, sv.schema, rec)
    return buf.getvalue()


# ------------------------------------------------------------------ part 1: pure, thousands of cases


@FUZZ
@given(subject=st.sampled_from(["event", "feedback"]), data=st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: MAGIC + b),  # Avro magic, random fingerprint and body
    st.sampled_from(["event", "feedback", "prediction", "deadletter"]).flatmap(
        lambda s: st.binary(max_size=200).map(lambda b, s=s: REG.current(s).header + b)),  # known schema, junk body
    st.binary(max_size=300).map(lambda b: b"{" + b),
    st.integers(0, 20000).map(lambda n: b'{"features":' + b"[" * n)))  # deep nesting
@example(subject="event", data=None)
@example(subject="event", data=b"")
@example(subject="event", data=b"\xc3")
@example(subject="event", data=b'{"event_id": "a", "entity": "b", "event_time": 1, "features": ' + b"[" * 100000)
def test_random_bytes_never_crash_the_decoder(subject: str, data: bytes | None) -> None:
    outcome(subject, data)


@FUZZ
@given(subject=st.sampled_from(["event", "feedback"]), data=st.data(), ascii_escapes=st.booleans(),
       pad=st.sampled_from([b"", b" ", b"\n\t "]))
def test_json_with_wrong_missing_extra_fields_and_odd_values(subject: str, data: st.DataObject,
                                                             ascii_escapes: bool, pad: bytes) -> None:
    outcome(subject, pad + to_json_bytes(data.draw(json_records(subject)), ascii_escapes))


@FUZZ
@given(kind=st.sampled_from(["event", "feedback"]), data=st.data(), ascii_escapes=st.booleans())
def test_well_formed_records_with_any_values_decode_or_are_refused_by_a_rule(kind: str, data: st.DataObject,
                                                                             ascii_escapes: bool) -> None:
    """Schema-shaped records with values anywhere in their types (NaN, inf, 64-bit extremes, long
    strings, many features) in both encodings: valid ones decode, the rest hit a named limit."""
    rec = data.draw(GOOD_EVENT if kind == "event" else GOOD_FEEDBACK)
    via_json = outcome(kind, to_json_bytes(rec, ascii_escapes))
    via_avro = outcome(kind, avro_bytes(kind, rec))
    assert via_json == via_avro, "JSON and Avro of the same record are judged alike"
    if via_avro is None:
        assert DECODERS[kind](avro_bytes(kind, rec), REG, LIMITS) == rec
    else:
        assert via_avro in {"non_finite", "limit", "schema"}


@FUZZ
@given(kind=st.sampled_from(["event", "feedback"]), rec=st.data(), cut=st.integers(0, 10_000),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       tail=st.binary(max_size=8))
def test_truncated_corrupted_and_padded_avro(kind: str, rec: st.DataObject, cut: int, flips: list, tail: bytes
                                             ) -> None:
    good = avro_bytes(kind, rec.draw(GOOD_EVENT if kind == "event" else GOOD_FEEDBACK))
    bad = bytearray(good[: max(HEADER_LEN, cut % (len(good) + 1))])
    for pos, val in flips:
        if pos % len(bad) >= HEADER_LEN:  # the body; the header has its own tests
            bad[pos % len(bad)] = val
    outcome(kind, bytes(bad) + tail)
