"""The compact served record: exact round trips, old JSON still read, the learned flag."""

from __future__ import annotations

import asyncio
import math
import random
import struct

import orjson
import pytest

from streamlearn.featurestore.backend import MemoryBackend, WriteBatch
from streamlearn.featurestore.keys import Keys
from streamlearn.streams.loop import served
from streamlearn.streams.loop.served import MAX_LAYOUTS, ServedCodec


def _rec(x: dict, **kw) -> dict:
    m = {"1": {"score": 0.25, "pred": False, "proba": {"False": 0.75, "True": 0.25}, "n": 12},
         "2": {"score": 0.5, "pred": True, "proba": {"False": 0.5, "True": 0.5}, "n": 0}}
    return {"x": x, "t": 1700000002596, "m": m, "s": 1, **kw}


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)


def _same(a: dict, b: dict) -> None:
    # equal, same key order, and every float bit for bit (-0.0 included)
    assert orjson.dumps(a) == orjson.dumps(b)
    for k in a["x"]:
        assert _bits(a["x"][k]) == _bits(b["x"][k]) and type(b["x"][k]) is float, k


def test_random_floats_round_trip_bit_for_bit_and_smaller_than_json() -> None:
    rng = random.Random(5)
    c = ServedCodec()
    specials = [0.0, -0.0, 1.0, -1.0, 22.0, 127.0, -128.0, 128.0, 11.75, 0.1, 1e-300, 1e300, 3.4e38, 5e-324,
                math.inf, -math.inf, 2.0**60]
    for i in range(300):
        vals = specials if i == 0 else [rng.choice([rng.random(), rng.randint(-200, 200) * 1.0,
                                                    round(rng.uniform(0, 500), 2), rng.gauss(0, 1e6)])
                                        for _ in range(14)]
        rec = _rec({f"f{j}": v for j, v in enumerate(vals)})
        raw, _ = c.encode(rec)
        assert raw[0] == served.COMPACT
        _same(rec, c.decode(raw))
        if i:
            assert len(raw) < len(orjson.dumps(rec)) / 2


def test_integral_and_float32_values_take_one_and_four_bytes() -> None:
    c = ServedCodec()
    names = [f"f{j}" for j in range(8)]
    small, _ = c.encode(_rec(dict.fromkeys(names, 1.0)))
    wide, _ = c.encode(_rec(dict.fromkeys(names, 0.1)))
    assert len(wide) - len(small) == 8 * 7  # int8 vs float64


def test_json_written_before_the_compact_encoding_is_still_read() -> None:
    rec = _rec({"amount": 11.75, "category=fuel": 1.0})
    old = orjson.dumps(rec)
    c = ServedCodec()
    assert c.decode(old) == rec
    assert not ServedCodec.can_flag(old) and not ServedCodec.is_learned(old)


def test_records_the_compact_form_cannot_hold_exactly_fall_back_to_flagged_json() -> None:
    c = ServedCodec()
    for rec in (_rec({"a": 1}), _rec({"a": "x"}), _rec({"a": 1.0}, t=1.5),
                {**_rec({"a": 1.0}), "m": {"1": {"score": None, "pred": None, "proba": {}, "n": 0}}}):
        raw, new = c.encode(rec)
        assert raw[0] == served.JSON_FLAGGED and new is None
        assert c.decode(raw) == rec and type(c.decode(raw)["x"]["a"]) is type(rec["x"]["a"])
        assert ServedCodec.is_learned(ServedCodec.flagged(raw))
        assert c.decode(ServedCodec.flagged(raw)) == rec


def test_labels_of_every_type_round_trip() -> None:
    c = ServedCodec()
    for pred in (None, False, True, 0, -7, 3, 2.5, "fraud", "é"):
        rec = _rec({"a": 1.0})
        rec["m"]["1"]["pred"] = pred
        raw, _ = c.encode(rec)
        back = c.decode(raw)["m"]["1"]["pred"]
        assert back == pred and type(back) is type(pred)


def test_the_learned_flag_changes_nothing_else() -> None:
    c = ServedCodec()
    rec = _rec({"a": 0.3})
    raw, _ = c.encode(rec)
    assert not ServedCodec.is_learned(raw)
    flagged = ServedCodec.flagged(raw)
    assert ServedCodec.is_learned(flagged) and len(flagged) == len(raw)
    assert c.decode(flagged) == c.decode(raw) == rec


def test_a_layout_is_written_once_then_read_by_another_process() -> None:
    class FakeLoop:  # the attributes served.py uses; a real MemoryBackend behind them
        def __init__(self, backend: MemoryBackend) -> None:
            self.backend, self.keys, self.served_ttl_s = backend, Keys("t", "m"), 3600

        async def io(self, op, what):  # noqa: ARG002
            return await op()

    async def go() -> None:
        backend = MemoryBackend()
        writer, reader = FakeLoop(backend), FakeLoop(backend)
        wb = WriteBatch()
        raws = [served.encode_into(writer, wb, f"e{i}", _rec({"a": float(i), "b=x": 1.0})) for i in range(3)]
        layout_keys = [k for k in wb.sets if k.startswith("t:lay:")]
        assert len(layout_keys) == 1 and len(wb.sets) == 4  # one layout for three records
        await backend.write_batch(wb)
        got = await served.decode_many(reader, [*await backend.read_many([f"t:srv:e{i}" for i in range(3)]), None],
                                       "test")
        assert got == [_rec({"a": float(i), "b=x": 1.0}) for i in range(3)] + [None]
        assert raws[0] == (await backend.read_many(["t:srv:e0"]))[0]
        # a layout gone (a flushed Redis): the record reads as expired, never as garbage
        assert await served.decode_many(FakeLoop(MemoryBackend()), raws[:1], "test") == [None]

    asyncio.run(go())


def test_open_ended_names_go_inline_past_the_interning_cap() -> None:
    c = ServedCodec()
    for i in range(MAX_LAYOUTS):
        c.encode(_rec({f"k{i}": 1.0}))
    raw, new = c.encode(_rec({"brand-new": 2.0}))
    assert new is None and raw[1] & served.INLINE_LAYOUT
    assert ServedCodec().decode(raw) == _rec({"brand-new": 2.0})  # no layout key needed
    assert len(c.by_layout) == MAX_LAYOUTS


@pytest.mark.parametrize("view", ["entity_v1", "raw_v1"])
def test_real_views_round_trip_exactly(view: str) -> None:
    from streamlearn import datasets
    from streamlearn.featurestore.definitions import get_view
    from streamlearn.models.estimators.learner import Learner

    v, lr, c = get_view(view), Learner("m", "logreg"), ServedCodec()
    states: dict = {}
    sizes = []
    for kind, ev in datasets.arrival_order(datasets.cards(400, seed=3)):
        if kind != "event":
            continue
        x, states[ev["entity"]] = v.compute(ev, states.get(ev["entity"]))
        rec = {"x": x, "t": ev["event_time"], "m": {"1": lr.predict(x).served(lr.labels_learned)}, "s": 1}
        raw, _ = c.encode(rec)
        _same(orjson.loads(orjson.dumps(rec)), c.decode(raw))
        lr.learn(x, ev["event_id"].endswith("7"))
        sizes.append(len(raw))
    assert sum(sizes) / len(sizes) < 160


def test_binary_probabilities_are_derived_from_the_score_only_when_exactly_so() -> None:
    c = ServedCodec()
    s = 0.1 + 0.2  # 1 - s is not a "nice" float: the decoder must redo the same arithmetic
    derived = _rec({"a": 1.0})
    derived["m"] = {"1": {"score": s, "pred": False, "proba": {"False": 1.0 - s, "True": s}, "n": 3}}
    stored = _rec({"a": 1.0})
    stored["m"] = {"1": {"score": s, "pred": False, "proba": {"False": 0.75, "True": s}, "n": 3}}
    swapped = _rec({"a": 1.0})
    swapped["m"] = {"1": {"score": s, "pred": True, "proba": {"yes": s, "no": 1.0 - s}, "n": 3}}
    raws = [c.encode(r)[0] for r in (derived, stored, swapped)]
    for rec, raw in zip((derived, stored, swapped), raws):
        assert orjson.dumps(c.decode(raw)) == orjson.dumps(rec)
    assert len(raws[1]) - len(raws[0]) >= 12 and len(raws[2]) == len(raws[0])
