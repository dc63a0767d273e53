"""Bad input, generated: the decoder either returns a record every downstream step can use, or
raises InvalidRecord with a reason; nothing else, ever. Then the same kinds of input, and
feedback for unknown events and duplicate event ids, through a real worker.

Here: the property (:func:`outcome`) and its documented edge cases. The generated cases
(hypothesis, thousands of them, no broker) are in tests/simulation/schemas/test_fuzz.py; the
same kinds of input through a real worker, counting every dead letter, in
tests/integration/streams/test_dead_letters.py.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import currently_in_test_context, event

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
