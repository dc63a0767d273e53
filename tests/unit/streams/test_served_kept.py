"""Served records kept as objects (an in-process replay's memory backend): a record is kept
only when its bytes would decode to exactly it, and reading a kept record gives what
decoding its bytes gives: equal values, the same types, float bits, key order, fresh dicts."""

from __future__ import annotations

import asyncio
import gc
import math
import struct
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamlearn.featurestore.backend import MemoryBackend, WriteBatch
from streamlearn.featurestore.keys import Keys
from streamlearn.streams.loop import served
from streamlearn.streams.loop.served import PACKED, ServedCodec


def _shape(v: Any) -> Any:
    """Everything that could tell two records apart: types, float bits, key order."""
    if type(v) is float:
        return ("float", struct.pack("<d", v) if not math.isnan(v) else "nan")
    if type(v) is dict:
        return ("dict", [(_shape(k), _shape(w)) for k, w in v.items()])
    if type(v) in (list, tuple):
        return (type(v).__name__, [_shape(w) for w in v])
    return (type(v).__name__, v)


_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1.0, 42.37, 1e300])
_numbers = _floats | st.integers(-300, 300) | st.booleans() | st.none()
_preds = st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | _floats | st.text(max_size=4) \
    | st.tuples(st.integers())


@st.composite
def _records(draw: Any) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "amount", "é"]), unique=True, max_size=4))
    x = {k: draw(_floats if draw(st.integers(0, 9)) else _numbers) for k in names}
    per_model: dict[str, Any] = {}
    for v in draw(st.lists(st.sampled_from(["1", "2", "3"]), unique=True, min_size=1, max_size=3)):
        score = draw(_floats if draw(st.integers(0, 9)) else _numbers)
        keys = draw(st.sampled_from([("False", "True"), (False, True), (0, 1, 2), ()]))
        if len(keys) == 2 and draw(st.booleans()) and type(score) is float:
            proba = dict(zip(keys, (1.0 - score, score)))
        else:
            proba = {k: draw(_floats if draw(st.integers(0, 9)) else _numbers) for k in keys}
        per_model[v] = {"score": score, "pred": draw(_preds), "proba": proba,
                        "n": draw(st.integers(-2, 1 << 40) if draw(st.integers(0, 9)) == 0 else st.integers(0, 500))}
    t = draw(st.integers(-(1 << 48), 1 << 48) if draw(st.integers(0, 9)) == 0 else st.integers(0, 1 << 41))
    return {"x": x, "t": t, "m": per_model, "s": draw(st.integers(-1, 300))}


@settings(max_examples=400, deadline=None)
@given(_records())
# an event time from 2020 on: the record is written in the second packed form (PACKED2)
@example({"x": {"a": 0.5}, "t": served._T0, "m": {"1": {"score": 0.25, "pred": None, "proba": {}, "n": 0}}, "s": 1})
def test_a_record_is_kept_only_when_its_bytes_decode_to_exactly_it(rec: dict[str, Any]) -> None:
    c = ServedCodec()
    try:
        raw, _ = c.encode(rec)  # interns the layout, as the first record of a layout is
    except TypeError:  # not storable at all (JSON cannot hold it either): never kept
        assert c.keep(rec) is None
        return
    kept = c.keep(rec)
    # packed with an interned layout: the first form without an inline layout, or the second
    # form (never inline: a record that cannot name its layout falls back to the first)
    packed = bool(raw[0] & served.PACKED2) or (raw[0] & 0xFC == PACKED and not raw[0] & served.INLINE_LAYOUT)
    if kept is None:  # kept whenever packed exactly (else the replay gains nothing)
        assert not packed or _shape(c.decode(raw)) != _shape(rec)
        return
    assert packed
    decoded = c.decode(raw)
    assert _shape(decoded) == _shape(rec)
    assert _shape(served.unkeep(kept)) == _shape(decoded)
    assert served.unkeep(kept)["x"] is not rec["x"]  # fresh dicts, as decoding gives


def test_kept_records_flag_and_read_like_bytes_and_the_collector_drops_them() -> None:
    class Loop:  # the attributes served.py uses; a real MemoryBackend behind them
        def __init__(self, keep: bool) -> None:
            self.backend, self.keys, self.served_ttl_s = MemoryBackend(keep_objects=keep), Keys("t", "m"), 3600

        async def io(self, op, what):  # noqa: ANN001, ANN202, ARG002
            return await op()

    rec = {"x": {"a": 0.1, "b": -0.0}, "t": 1700000002596,
           "m": {"1": {"score": 0.25, "pred": False, "proba": {"False": 0.75, "True": 0.25}, "n": 12}}, "s": 1}

    async def run(keep: bool) -> tuple[list[Any], list[Any]]:
        loop = Loop(keep)
        stored = []
        for i in range(3):  # the first record of a layout is bytes, the next ones kept
            wb = WriteBatch()
            stored.append(served.encode_into(loop, wb, f"e{i}", rec))  # type: ignore[arg-type]
            await loop.backend.write_batch(wb)
        wb = WriteBatch()
        served.mark_learned(loop, wb, "e2", stored[2])  # type: ignore[arg-type]
        await loop.backend.write_batch(wb)
        raws = await loop.backend.read_many([loop.keys.served(f"e{i}") for i in range(3)])
        return raws, await served.decode_many(loop, raws, "test")  # type: ignore[arg-type]

    kept_raws, kept = asyncio.run(run(True))
    byte_raws, decoded = asyncio.run(run(False))
    assert [type(r) for r in kept_raws] == [bytes, tuple, tuple] and all(type(r) is bytes for r in byte_raws)
    assert [ServedCodec.is_learned(r) for r in kept_raws] == [ServedCodec.is_learned(r) for r in byte_raws] \
        == [False, False, True]
    assert [_shape(r) for r in kept] == [_shape(r) for r in decoded] == [_shape(rec)] * 3
    for _ in range(8):  # a pass untracks a tuple whose items it has untracked already
        gc.collect()
    assert not gc.is_tracked(kept_raws[1])  # a replay holds one per event: no collector work
