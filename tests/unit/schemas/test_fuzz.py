"""Bad input, generated: the decoder either returns a record every downstream step can use, or
raises InvalidRecord with a reason; nothing else, ever. Then the same kinds of input, and
feedback for unknown events and duplicate event ids, through a real worker.

Part 1 is pure (hypothesis, thousands of cases, no broker). Part 2 runs a worker on the real
broker and Redis and counts every dead letter.
"""

from __future__ import annotations

import io
import json
import math
import random
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from streamlearn.featurestore.definitions import get_view
from streamlearn.schemas import InvalidRecord
from streamlearn.schemas.codec import HEADER_LEN, MAGIC
from streamlearn.schemas.validation import Limits, decode_event, decode_feedback
from tests.helpers import REG, feedback_for, make_events

LIMITS = Limits(max_message_bytes=4096, max_features=16, max_string_length=64)  # small: reachable by the fuzzer
REASONS = {"empty", "unknown_format", "invalid_json", "schema", "truncated", "bad_avro", "unknown_schema",
           "wrong_subject", "non_finite", "limit"}
DECODERS = {"event": decode_event, "feedback": decode_feedback}
VIEW = get_view("entity_v1")
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(subject: str, data: bytes | None) -> str | None:
    """The property. Returns the dead-letter reason, or None for a record that is valid all the way."""
    try:
        rec = DECODERS[subject](data, REG, LIMITS)
    except InvalidRecord as err:  # any other exception fails the test
        assert err.reason in REASONS, err.reason
        assert err.detail
        # what the worker does with it: a dead letter that encodes (no unencodable detail)
        REG.encode("deadletter", {"source_topic": "t", "partition": 0, "offset": 0, "reason": err.reason,
                                  "detail": err.detail[:2000], "key": None, "raw": data or b"", "failed_at": 0})
        _tally(f"{subject}: {err.reason}")
        return err.reason
    # a decoded record survives everything downstream: Avro round trip, JSON state, features
    again = REG.decode(subject, REG.encode(subject, rec))
    assert again == rec or json.dumps(again, sort_keys=True) == json.dumps(rec, sort_keys=True)
    json.dumps(rec, allow_nan=False).encode("utf-8")
    assert rec["event_id"] and len(rec["event_id"]) <= LIMITS.max_string_length
    if subject == "event":
        assert len(rec["features"]) <= LIMITS.max_features
        state = None
        for _ in range(3):  # the same values again and again for one entity: sums stay finite
            x, state = VIEW.compute(rec, state)
            assert all(math.isfinite(v) for v in x.values())
            state = json.loads(json.dumps(state, allow_nan=False))
    _tally(f"{subject}: valid")
    return None


def _tally(what: str) -> None:
    if currently_in_test_context():  # the spread shows with --hypothesis-show-statistics
        event(what)


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


@pytest.mark.parametrize(("subject", "data", "reason"), [
    ("event", None, "empty"),
    ("event", b"\xc3\x01\x00", "truncated"),
    ("event", b"\xc3\x01" + b"\x01" * 8 + b"\x02", "unknown_schema"),
    ("event", REG.encode("feedback", {"event_id": "q", "label": True, "label_time": 1}), "wrong_subject"),
    ("event", REG.encode("event", make_events(1)[0])[:-1], "bad_avro"),
    ("event", REG.encode("event", make_events(1)[0]) + b"\x00", "bad_avro"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": ' + b"[" * 3000, "invalid_json"),
    ("event", b'{"event_id": "\\ud800", "entity": "b", "event_time": 1, "features": {}}', "schema"),
    # json.loads decodes bytes with "surrogatepass": encoded surrogates arrive as lone surrogates
    ("event", b'{"event_id": "\xed\xa0\x80", "entity": "b", "event_time": 1, "features": {}}', "schema"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"x": 1e999}}', "non_finite"),
    # finite, but two of them overflow an entity's running sum (and crashed the next event)
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"amount": 1e308}}', "limit"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"amount": -1e101}}', "limit"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"amount": 1e100}}', None),
    ("feedback", b'{"event_id": "a", "label": 1.5e300, "label_time": 1}', "limit"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"x": ' + b"9" * 30 + b"}}",
     "schema"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"x": 1, "x": 2}}', "invalid_json"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": true, "features": {}}', "schema"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"x": [1]}}', "schema"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {}, "more": 1}', "schema"),
    ("event", b'{"event_id": "' + b"a" * 65 + b'", "entity": "b", "event_time": 1, "features": {}}', "limit"),
    ("event", b'{"event_id": "a", "entity": "b", "event_time": 1, "features": {"s": "' + b"x" * 5000 + b'"}}',
     "limit"),
    ("feedback", b'{"event_id": "a", "label": NaN, "label_time": 1}', "non_finite"),
    ("feedback", b'{"event_id": "a", "label": -Infinity, "label_time": 1}', "non_finite"),
    ("feedback", b'{"event_id": "a", "label": null, "label_time": 1}', "schema"),
    ("feedback", b'{"event_id": "a", "label": true}', "schema"),
    ("feedback", b"[1, 2]", "unknown_format"),
    ("event", "{\"event_id\": \"\u00e9\u0301\U0001F600\", \"entity\": \"\u202e\", \"event_time\": 1, "
              "\"features\": {\"\u00fc\": 1.5, \"\\u0000\": \"\\ud83d\\ude00\"}}".encode(), None),
], ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else None)
def test_edge_cases_have_the_documented_reason(subject: str, data: bytes | None, reason: str | None) -> None:
    assert outcome(subject, data) == reason


# ------------------------------------------------------------------ part 2: through a real worker


def invalid_messages(rnd: random.Random, n: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """``n`` invalid (subject, value, key) of every kind above, reproducible from ``rnd``."""
    ev = make_events(1, seed=4)[0]
    avro_ev, avro_fb = REG.encode("event", ev), REG.encode("feedback", feedback_for(ev))
    makers = [
        lambda i: bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 40))) + b"#%d" % i,
        lambda i: (avro_ev if i % 2 else avro_fb)[: rnd.randint(HEADER_LEN, len(avro_fb) - 1)],
        lambda i: MAGIC + rnd.randbytes(8) + b"%d" % i,
        lambda i: MAGIC + rnd.randbytes(rnd.randint(0, 7)),  # shorter than the header
        lambda i: (REG.current("prediction").header + b"%d" % i),
        lambda i: b'{"event_id": "x%d", "entity": "e", "event_time": "noon", "features": {}}' % i,
        lambda i: b'{"event_id": "x%d", "label": true}' % i,
        lambda i: b'{"event_id": "x%d", "entity": "e", "event_time": 1, "features": {"a": NaN}}' % i,
        lambda i: b'{"event_id": "x%d", "label": Infinity, "label_time": 1}' % i,
        lambda i: b'{"event_id": "\\ud8%02x", "entity": "e", "event_time": %d, "features": {}}' % (i % 256, i),
        lambda i: b'{"event_id": "x%d", "entity": "' % i + b"e" * 100 + b'", "event_time": 1, "features": {}}',
        lambda i: b'{"event_id": "x%d", "entity": "e", "event_time": 1, "features": {"s": "' % i + b"z" * 5000
        + b'"}}',
        lambda i: b'{"event_id": "x%d", "entity": "e", "event_time": 1, "features": ' % i + b"[" * 3000,
        lambda i: b'{"event_id": "x%d", "entity": "e", "event_time": 1, "features": {"n": ' % i + b"9" * 25 + b"}}",
        lambda i: b'{"event_id": "x%d", "x": 1, "x": 2}' % i,
        lambda i: b'{"event_id": "x%d", "entity": "e", "event_time": 1, "features": {"amount": 1e308}}' % i,
        lambda i: b"",
        lambda i: None,  # a tombstone: no value at all
    ]
    out = []
    for i in range(n):
        value = makers[i % len(makers)](i)
        subject = "event" if (i // len(makers)) % 2 == 0 else "feedback"
        assert outcome(subject, value) is not None, value  # invalid by the worker's own decoder
        out.append((subject, value, None if i % 5 == 0 else b"k%d" % i))
    return out
