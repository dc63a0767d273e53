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
        assert raw[0] & served.PACKED2
        _same(rec, c.decode(raw))
        if i:
            assert len(raw) < len(orjson.dumps(rec)) / 2


def test_integral_float32_and_short_decimal_values_take_one_four_and_few_bytes() -> None:
    names = [f"f{j}" for j in range(8)]
    f32 = struct.unpack("<f", struct.pack("<f", 0.1))[0]  # exact in float32, not a short decimal
    small, wide, single, dec = (ServedCodec().encode(_rec(dict.fromkeys(names, v)))[0]
                                for v in (1.0, 0.1 + 0.2, f32, 42.37))
    assert len(wide) - len(small) == 8 * 7  # int8 vs float64
    assert len(single) - len(small) == 8 * 3  # float32
    assert len(dec) - len(small) == 8 * 2  # 42.37: varint(zigzag(4237) << 3 | 2), 3 bytes


def test_short_decimals_round_trip_bit_for_bit() -> None:
    rng = random.Random(11)
    c = ServedCodec()
    vals = [42.37, -42.37, 0.1, 0.3, 1e-6, 2.5e-6, 123456.789, 1e9 + 0.5, 5e8, -7.25, 4503.599627370496,
            0.1 + 0.2, 1e-7, 5e-324, 1 / 3, 2.0**-20]
    for i in range(400):
        x = {f"f{j}": v for j, v in enumerate(vals)} if i == 0 else \
            {f"f{j}": rng.randint(-10**9, 10**9) / 10.0**rng.randint(0, 8) for j in range(16)}
        raw, _ = c.encode(_rec(x))
        _same(_rec(x), c.decode(raw))


def test_decimals_are_found_where_they_appear_later_in_a_layout() -> None:
    """Decimals are tried only at positions where a probe saw one; a position that starts
    holding decimals is found by the next probe, and every record decodes exactly meanwhile."""
    c = ServedCodec()
    sizes = []
    for i in range(2 * served.DECIMAL_PROBE_EVERY + 2):
        x = {"a": 0.1 + 0.2 if i < 3 else 12.5 + i / 100, "b": 1.0 / (i + 3)}
        raw, _ = c.encode(_rec(x))
        _same(_rec(x), c.decode(raw))
        sizes.append(len(raw))
    assert sizes[-1] < sizes[3] - 4  # float64 (8 bytes) at first, then a 3-byte decimal


def test_shadow_counts_are_stored_relative_to_the_first_model() -> None:
    c = ServedCodec()
    for n1, n2, n3 in ((0, 0, 0), (17466, 17466, 17000), (5, 900, 0), (2**40, 3, 2**40 + 1),
                       (37695, 3368, 850), (100, 0, 200), (2**40, 2**40 - 1, 2**39)):
        rec = _rec({"a": 1.0})
        rec["m"]["1"]["n"], rec["m"]["2"]["n"] = n1, n2
        rec["m"]["3"] = {**rec["m"]["2"], "n": n3}
        raw, _ = c.encode(rec)
        assert c.decode(raw) == rec


def test_event_times_beyond_six_bytes_fall_back_to_json() -> None:
    c = ServedCodec()
    for t in (-3, 0, 2**47 - 1, -(2**47)):
        raw, _ = c.encode(_rec({"a": 1.0}, t=t))
        assert raw[0] & 0xFC == served.PACKED and c.decode(raw) == _rec({"a": 1.0}, t=t)
    raw, _ = c.encode(_rec({"a": 1.0}, t=2**47))
    assert raw[0] == served.JSON_FLAGGED and c.decode(raw) == _rec({"a": 1.0}, t=2**47)


# 0x01 records as the previous encoder wrote them (they stay in Redis for the served TTL)
_V1_LAYOUT = (b'[["amount","category=travel","hour","ent_log_count","neg0","big","f32"],'
              b'[["1",["False","True"]],["2",["fraud","ok"]]]]')
_V1_DIGEST = bytes.fromhex("82548fc6ee3c4b96")
_V1_RECORD = bytes.fromhex(
    "010082548fc6ee3c4b96dad4849bfa6202ba880101010300050566726175642800008fc2f5285c2f45400106338dedf741"
    "c0f93f0000000000000080355800662deb517e000000000000e03f781a4133db2c773f000000000000d03f000000000000d0"
    "3f666666666666e63f")
_V1_DECODED = {"x": {"amount": 42.37, "category=travel": 1.0, "hour": 6.0, "ent_log_count": 1.6094379124341003,
                     "neg0": -0.0, "big": 3e300, "f32": 0.5},
               "t": 1700030092589,
               "m": {"1": {"score": 0.005658012629345614, "pred": False,
                           "proba": {"False": 0.9943419873706544, "True": 0.005658012629345614}, "n": 17466},
                     "2": {"score": 0.25, "pred": "fraud", "proba": {"fraud": 0.25, "ok": 0.7}, "n": 3}},
               "s": 2}
_V1_INLINE = bytes.fromhex(
    "0102255b5b226272616e642d6e6577222c227a225d2c5b5b2237222c5b2230222c2231225d5d5d5d05070001030211000020"
    "409a9999999999b93f0000003f")


def test_compact_records_of_the_previous_encoding_are_still_read_and_flagged() -> None:
    c = ServedCodec()
    assert ServedCodec.needs(_V1_RECORD) == _V1_DIGEST
    c.learn_layout(_V1_DIGEST, _V1_LAYOUT)
    _same(_V1_DECODED, c.decode(_V1_RECORD))
    assert math.copysign(1.0, c.decode(_V1_RECORD)["x"]["neg0"]) < 0
    assert ServedCodec.can_flag(_V1_RECORD) and not ServedCodec.is_learned(_V1_RECORD)
    flagged = ServedCodec.flagged(_V1_RECORD)
    assert ServedCodec.is_learned(flagged) and flagged[1] == 0x01 and c.decode(flagged) == c.decode(_V1_RECORD)
    assert ServedCodec.needs(_V1_INLINE) is None
    assert ServedCodec().decode(_V1_INLINE) == {
        "x": {"brand-new": 2.5, "z": 0.1}, "t": -3, "s": 7,
        "m": {"7": {"score": 0.5, "pred": 1, "proba": {"0": 0.5, "1": 0.5}, "n": 0}}}
    # the same record written now is smaller, and decodes the same
    raw, _ = c.encode(_V1_DECODED)
    assert raw[0] == served.PACKED2 | 1 << 2 and len(raw) < len(_V1_RECORD) - 8
    _same(_V1_DECODED, c.decode(raw))


# 0x04 records as the encoder wrote them before the second packed form (d8bd897)
_P1_DIGEST = bytes.fromhex("82548fc6ee3c4b96")  # _V1_LAYOUT
_P1_RECORD = bytes.fromhex(
    "0482548fc6ee3c4b962d95b0d18b010209ba880105ee90020566726175642b313f0106338dedf741c0f93f00000080355800"
    "662deb517e781a4133db2c773fd29104519203920371")
_P1_LAYOUT3 = (b'[["amount","category=travel","hour","ent_log_count","neg0","big","f32"],'
               b'[["1",["False","True"]],["2",["fraud","ok"]],["3",["False","True"]]]]')
_P1_DIGEST3 = bytes.fromhex("69e5f41e2dc20fe2")
_P1_LEARNED3 = bytes.fromhex(
    "0569e5f41e2dc20fe22d95b0d18b010209ba880105ee90020566726175640acc90022b31ff0106338dedf741c0f93f000000"
    "80355800662deb517e781a4133db2c773fd29104519203920371d30f")
# _P1_LEARNED3 decoded: _V1_DECODED with a third model
_P1_DECODED3 = {**_V1_DECODED, "m": {**_V1_DECODED["m"], "3": {
    "score": 0.125, "pred": True, "proba": {"False": 0.875, "True": 0.125}, "n": 20}}}
_P1_INLINE = bytes.fromhex(
    "06255b5b226272616e642d6e6577222c227a225d2c5b5b2237222c5b2230222c2231225d5d5d5dfdffffffffff070b00023f"
    "91031151")


def test_packed_records_of_the_first_packed_form_are_still_read_and_flagged() -> None:
    c = ServedCodec()
    assert ServedCodec.needs(_P1_RECORD) == _P1_DIGEST and ServedCodec.needs(_P1_LEARNED3) == _P1_DIGEST3
    c.learn_layout(_P1_DIGEST, _V1_LAYOUT)
    c.learn_layout(_P1_DIGEST3, _P1_LAYOUT3)
    _same(_V1_DECODED, c.decode(_P1_RECORD))
    assert not ServedCodec.is_learned(_P1_RECORD) and ServedCodec.can_flag(_P1_RECORD)
    flagged = ServedCodec.flagged(_P1_RECORD)
    assert flagged[0] == 0x05 and ServedCodec.is_learned(flagged) and c.decode(flagged) == c.decode(_P1_RECORD)
    three = _P1_DECODED3
    assert ServedCodec.is_learned(_P1_LEARNED3) and c.decode(_P1_LEARNED3) == three
    assert ServedCodec.needs(_P1_INLINE) is None
    assert ServedCodec().decode(_P1_INLINE) == {
        "x": {"brand-new": 2.5, "z": 0.1}, "t": -3, "s": 7,
        "m": {"7": {"score": 0.5, "pred": 1, "proba": {"0": 0.5, "1": 0.5}, "n": 0}}}
    # written now: the second form, 6 bytes shorter here (s; a time byte; models 2 and 3, far
    # behind model 1, store their own counts in 1 byte instead of a 3-byte difference)
    raw, _ = c.encode(three, learned=True)
    assert raw[0] == served.PACKED2 | 1 << 2 | served.LEARNED and len(raw) == len(_P1_LEARNED3) - 6
    assert c.decode(raw) == three


# the second packed form, pinned: a layout's records stay readable whatever the encoder does next
_P2_RECORD = bytes.fromhex(
    "8569e5f41e2dc20fe22dad49731c09ba880125030566726175642a142b31ff0106338dedf741c0f93f00000080355800662d"
    "eb517e781a4133db2c773fd29104519203920371d30f")


def test_second_packed_form_golden_bytes() -> None:
    c = ServedCodec()
    c.learn_layout(_P1_DIGEST3, _P1_LAYOUT3)
    rec = c.decode(_P2_RECORD)
    assert rec["s"] == 2 and rec["t"] == _V1_DECODED["t"] and ServedCodec.is_learned(_P2_RECORD)
    assert [m["n"] for m in rec["m"].values()] == [17466, 3, 20]
    _same(_P1_DECODED3, rec)
    assert c.encode(rec, learned=True)[0] == _P2_RECORD


# single-model records: the model's head byte (form << 3 | label tag) in the first byte
_P2_ONE_LAYOUT = (b'[["amount","category=travel","hour","ent_log_count","neg0","big","f32"],'
                  b'[["1",["False","True"]]]]')
_P2_ONE = bytes.fromhex(
    "a4c276e3969be76d922dad49731cba88012b310106338dedf741c0f93f00000080355800662deb517e781a4133db2c773fd2"
    "910451")
_P2_ONE_STR = bytes.fromhex(
    "9414a8e5893ceb19ce2dad49731c030566726175642bf10f0106338dedf741c0f93f00000080355800662deb517ed2910451"
    "9203920371")


def test_second_packed_form_of_one_model_golden_bytes() -> None:
    c = ServedCodec()
    c.learn_layout(bytes.fromhex("c276e3969be76d92"), _P2_ONE_LAYOUT)
    c.learn_layout(bytes.fromhex("14a8e5893ceb19ce"), _V1_LAYOUT.replace(b'["1",["False","True"]],', b""))
    one = {**_V1_DECODED, "s": 1, "m": {"1": _V1_DECODED["m"]["1"]}}
    _same(one, c.decode(_P2_ONE))
    assert c.encode(one)[0] == _P2_ONE and _P2_ONE[0] == 0x80 | (1 << 3 | 1) << 2  # binary form, False
    one_str = {**_V1_DECODED, "s": 2, "m": {"2": _V1_DECODED["m"]["2"]}}
    _same(one_str, c.decode(_P2_ONE_STR))
    assert c.encode(one_str)[0] == _P2_ONE_STR
    flagged = ServedCodec.flagged(_P2_ONE)
    assert ServedCodec.is_learned(flagged) and not ServedCodec.is_learned(_P2_ONE) and c.decode(flagged) == one
    for pred in (None, True, 7, -2.5, "x"):  # every label tag in the first byte
        rec = {**one, "m": {"1": {**one["m"]["1"], "pred": pred}}}
        raw, _ = c.encode(rec, learned=True)
        assert raw[0] & served.PACKED2 and ServedCodec.is_learned(raw) and c.decode(raw) == rec


# a record naming its (layout, kinds) pair by a short address, and that address's key content
_P2_SHORT_ADDRESS = bytes.fromhex("0debd33e")
_P2_SHORT_PAIR = bytes.fromhex("022b31") + _P2_ONE_LAYOUT  # kinds length, kinds, layout
_P2_SHORT = bytes.fromhex(
    "a60debd33e2dad49731cba88010106338dedf741c0f93f00000080355800662deb517e781a4133db2c773fd2910451")


def test_short_address_golden_bytes() -> None:
    c = ServedCodec()
    assert ServedCodec.needs(_P2_SHORT) == _P2_SHORT_ADDRESS
    c.learn_short(_P2_SHORT_ADDRESS, _P2_SHORT_PAIR, math.inf)
    one = {**_V1_DECODED, "s": 1, "m": {"1": _V1_DECODED["m"]["1"]}}
    _same(one, c.decode(_P2_SHORT))
    assert len(_P2_SHORT) == len(_P2_ONE) - 6  # 4 bytes of the digest and the 2 bytes of kinds
    assert ServedCodec.is_learned(ServedCodec.flagged(_P2_SHORT)) and c.decode(ServedCodec.flagged(_P2_SHORT)) == one
    w = ServedCodec()  # the writer: the same pair gets the same address and content
    for _ in range(served.PAIR_AFTER):
        w.encode(one)
    assert w.pending_pairs == {_P2_SHORT_ADDRESS} and w.pair_value[_P2_SHORT_ADDRESS] == _P2_SHORT_PAIR
    assert w.verified(_P2_SHORT_ADDRESS, _P2_SHORT_PAIR, math.inf, 3600)
    assert w.encode(one)[0] == _P2_SHORT


def test_second_packed_form_only_where_it_holds_the_record_exactly() -> None:
    """Outside its ranges (event time before 2020 or past 2054, a serving version that is not
    among the first 32 models) a record is written in the 0x04 form; both decode the same."""
    c = ServedCodec()
    t0, t_end = 1_577_836_800_000, 1_577_836_800_000 + 2**40
    for t, s, want in ((t0, 1, 0x80), (t_end - 1, 2, 0x84), (t0 - 1, 1, 0x04), (t_end, 1, 0x04),
                       (1700000002596, 3, 0x04), (-5, 1, 0x04)):
        rec = _rec({"a": 1.0}, t=t, s=s)
        raw, _ = c.encode(rec)
        assert raw[0] == want, (t, s)
        assert c.decode(raw) == rec
    many = _rec({"a": 1.0}, s=40)
    many["m"] = {str(v): {"score": 0.5, "pred": None, "proba": {}, "n": v} for v in range(1, 41)}
    raw, _ = c.encode(many)
    assert raw[0] == served.PACKED and c.decode(raw) == many  # the serving model is the 40th
    many["s"] = 32
    raw, _ = c.encode(many)
    assert raw[0] == served.PACKED2 | 31 << 2 and c.decode(raw) == many


def test_json_written_before_the_compact_encoding_is_still_read() -> None:
    rec = _rec({"amount": 11.75, "category=fuel": 1.0})
    old = orjson.dumps(rec)
    c = ServedCodec()
    assert c.decode(old) == rec
    assert not ServedCodec.can_flag(old) and not ServedCodec.is_learned(old)


def test_records_the_compact_form_cannot_hold_exactly_fall_back_to_flagged_json() -> None:
    c = ServedCodec()
    for rec in (_rec({"a": 1}), _rec({"a": "x"}), _rec({"a": True}), _rec({"a": 0.5, "b": 2**40}),
                _rec({"a": 1.0}, t=1.5),
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
    assert new is None and raw[0] & served.INLINE_LAYOUT
    assert ServedCodec().decode(raw) == _rec({"brand-new": 2.0})  # no layout key needed
    flagged = ServedCodec.flagged(raw)
    assert ServedCodec.is_learned(flagged) and not ServedCodec.is_learned(raw)
    assert ServedCodec.needs(flagged) is None and ServedCodec().decode(flagged) == _rec({"brand-new": 2.0})
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
    stored["m"] = {"1": {"score": s, "pred": False, "proba": {"False": math.pi / 4, "True": s}, "n": 3}}
    swapped = _rec({"a": 1.0})
    swapped["m"] = {"1": {"score": s, "pred": True, "proba": {"yes": s, "no": 1.0 - s}, "n": 3}}
    raws = [c.encode(r)[0] for r in (derived, stored, swapped)]
    for rec, raw in zip((derived, stored, swapped), raws):
        assert orjson.dumps(c.decode(raw)) == orjson.dumps(rec)
    assert len(raws[1]) - len(raws[0]) >= 12 and len(raws[2]) == len(raws[0])


class _Loop:
    """The attributes served.py uses; a real MemoryBackend (on a test clock) behind them."""

    def __init__(self, backend: MemoryBackend, clock, ttl: int = 3600) -> None:  # noqa: ANN001
        self.backend, self.keys, self.served_ttl_s = backend, Keys("t", "m"), ttl
        self._served_codec = ServedCodec(clock=clock)

    async def io(self, op, what):  # noqa: ANN001, ANN202, ARG002
        return await op()


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _serve(loop: _Loop, eids: list[str], x: dict, **kw) -> list[bytes]:
    wb = WriteBatch()
    raws = [served.encode_into(loop, wb, e, _rec(x, **kw)) for e in eids]  # type: ignore[arg-type]
    await loop.backend.write_batch(wb)
    return raws


def test_short_address_only_once_verified_and_read_by_another_process() -> None:
    """A (layout, kinds) pair seen PAIR_AFTER times gets a 4-byte address; records use it, with
    no kinds, only once this process has read its key back holding exactly the pair with at
    least two served TTLs to live; another process reads them; the key is extended only while
    it surely holds the pair."""
    async def go() -> None:
        clock = _Clock()
        backend = MemoryBackend(clock=clock)
        loop = _Loop(backend, clock)
        x = {"a": 0.3, "b": 1 / 3}
        first = await _serve(loop, [f"e{i}" for i in range(served.PAIR_AFTER)], x)
        assert all(not r[0] & served.SHORT_ADDRESS for r in first)  # not verified yet
        await served.decode_many(loop, [], "test")  # the loop decodes labels: it checks the key
        short = await _serve(loop, ["s0"], x)
        assert short[0][0] & served.SHORT_ADDRESS and len(short[0]) == len(first[0]) - 4 - 1  # no digest, no kinds
        address = ServedCodec.needs(short[0])
        assert len(address) == 4 and (await backend.read_many(["t:lay:" + address.hex()]))[0] is not None
        other = _Loop(backend, clock)
        raws = await backend.read_many([f"t:srv:e{i}" for i in range(served.PAIR_AFTER)] + ["t:srv:s0"])
        assert await served.decode_many(other, raws, "test") == [_rec(x)] * (served.PAIR_AFTER + 1)
        flagged = ServedCodec.flagged(raws[-1])
        assert ServedCodec.is_learned(flagged) and (await served.decode_many(other, [flagged], "t"))[0] == _rec(x)
        # other kinds (an int8 where the pair has a float64): the digest and the kinds, decoded right
        odd = await _serve(loop, ["o0"], {"a": 1.0, "b": 1 / 3})
        assert not odd[0][0] & served.SHORT_ADDRESS
        assert await served.decode_many(other, odd, "test") == [_rec({"a": 1.0, "b": 1 / 3})]
        # half a served TTL later: the key is rewritten (ours: verified to live 3 TTLs), its TTL
        # extended, and after the next check records are short again
        clock.t += 1801
        assert not (await _serve(loop, ["e9"], x))[0][0] & served.SHORT_ADDRESS
        assert (await backend.read_with_ttl(["t:lay:" + address.hex()]))[0][1] == 3 * 3600
        await served.decode_many(loop, [], "test")
        assert (await _serve(loop, ["e10"], x))[0][0] & served.SHORT_ADDRESS

    asyncio.run(go())


def test_a_short_address_held_by_another_pair_is_never_used() -> None:
    """Two pairs can share an address (4 bytes of a hash). The first to claim the key keeps
    it; the other pair's records keep the full digest and their kinds, and each reads back as
    itself. A key of our pair too close to expiry is not used either."""
    async def go() -> None:
        x = {"a": 0.3, "b": 1 / 3}
        for held in ("another pair", "too short-lived"):
            clock = _Clock()
            backend = MemoryBackend(clock=clock)
            loop = _Loop(backend, clock)
            await _serve(loop, [f"w{i}" for i in range(served.PAIR_AFTER - 1)], x)
            c = served.codec(loop)  # type: ignore[arg-type]
            raw, _ = c.encode(_rec(x))  # the PAIR_AFTER-th: the pair gets its address
            address = next(iter(c.pending_pairs))
            c.pending_pairs.clear()
            value, ttl = (b"\x01\x00[[],[]]", 3 * 3600) if held == "another pair" else \
                (c.pair_value[address], 2 * 3600 - 1)
            await backend.write_batch(WriteBatch(sets={"t:lay:" + address.hex(): (value, ttl)}))
            c.pair_written.clear()
            for i in range(3):
                raws = await _serve(loop, [f"e{i}"], x)
                assert not raws[0][0] & served.SHORT_ADDRESS
                await served.decode_many(loop, [], "test")
            assert (await backend.read_many(["t:lay:" + address.hex()]))[0] == value  # never overwritten
            got = await served.decode_many(_Loop(backend, clock), await backend.read_many(["t:srv:e0", "t:srv:e2"]),
                                           "test")
            assert got == [_rec(x)] * 2 and address not in c.short_ok

    asyncio.run(go())


def test_a_cached_short_address_is_forgotten_when_its_key_expires() -> None:
    """A reader keeps what a short address names only as long as its key lives: after it, the
    address may name another pair, which the reader then loads."""
    async def go() -> None:
        clock = _Clock()
        backend = MemoryBackend(clock=clock)
        writer, reader = _Loop(backend, clock, ttl=10), _Loop(backend, clock, ttl=10)
        x = {"a": 0.3, "b": 1 / 3}
        await _serve(writer, [f"w{i}" for i in range(served.PAIR_AFTER)], x)
        await served.decode_many(writer, [], "test")
        raw = (await _serve(writer, ["e1"], x))[0]
        assert raw[0] & served.SHORT_ADDRESS
        assert await served.decode_many(reader, [raw], "test") == [_rec(x)]
        address = ServedCodec.needs(raw)
        assert served.codec(reader).knows(address)  # type: ignore[arg-type]
        clock.t += 31  # every key of that pair gone; another pair claims the address
        assert not served.codec(reader).knows(address)  # type: ignore[arg-type]
        loop2 = _Loop(MemoryBackend(clock=clock), clock, ttl=10)
        y = {"q": 1.5, "r": 2.5}
        await _serve(loop2, [f"w{i}" for i in range(served.PAIR_AFTER)], y)
        await served.decode_many(loop2, [], "test")
        raw2 = (await _serve(loop2, ["e2"], y))[0]
        c2 = served.codec(loop2)  # type: ignore[arg-type]
        await backend.write_batch(WriteBatch(sets={"t:lay:" + address.hex(): (
            c2.pair_value[ServedCodec.needs(raw2)], 30)}))
        forged = raw2[:1] + address + raw2[5:]  # a record naming the address now
        assert await served.decode_many(reader, [forged], "test") == [_rec(y)]

    asyncio.run(go())


@pytest.mark.parametrize("forms", [(1,), (2,), (0,), (1, 0), (0, 2, 1)])
@pytest.mark.parametrize("n_keys", [1, 2, 3])
def test_compiled_record_builder_equals_the_generic_record(forms: tuple[int, ...], n_keys: int) -> None:
    """Decoding builds a record with a builder compiled per (address, probability forms): the
    same dict as ``_record`` (values bit for bit, types, key order), for every form, also with
    key counts a pair form cannot hold (crafted bytes: zip's truncation) and odd names."""
    rng = random.Random(len(forms) * 10 + n_keys)
    names = ("amount", "it's \"quoted\"", "{x}", "n[0]", "ünï")
    keys = tuple(f"k{j}'" for j in range(n_keys))
    models = tuple((str(v + 1), keys) for v in range(len(forms)))
    count = len(names) + sum(1 if f else 1 + n_keys for f in forms)
    build = served._compile_builder((names, models), forms)
    for _ in range(50):
        nums = [rng.choice([rng.random(), -0.0, 0.1 + 0.2, 1e300]) for _ in range(count)]
        heads = [(rng.randint(0, 1000), f, rng.choice([None, True, False, 3, "a"])) for f in forms]
        want = served._record(names, models, heads, nums, 1700000000000, 1)
        got = build(nums, 1700000000000, 1, heads)
        assert orjson.dumps(got) == orjson.dumps(want)
        assert [list(m["proba"]) for m in got["m"].values()] == [list(m["proba"]) for m in want["m"].values()]
        for a, b in zip(got["m"].values(), want["m"].values()):
            assert [_bits(v) for v in a["proba"].values()] == [_bits(v) for v in b["proba"].values()]
        _same(want, got)


def test_record_builders_follow_the_layout_an_address_names_and_are_bounded(monkeypatch) -> None:  # noqa: ANN001
    """A builder is used only with the layout object it was compiled for (a short address can
    name another layout later); past MAX_BUILDERS the generic ``_record`` decodes (same result)."""
    c = ServedCodec()
    recs = [_rec({"a": 1.5, "b": 2.0}), _rec({"a": 1.5, "c": 2.0})]
    raws = [c.encode(r)[0] for r in recs]
    for rec, raw in zip(recs, raws):
        _same(rec, c.decode(raw))
    assert len(c._builders) == 2
    (key, (layout, build)), = [(k, v) for k, v in c._builders.items() if k[0] == raws[0][1:9]]
    c._builders[key] = (("stale",), build)  # another layout object for the address: rebuilt
    _same(recs[0], c.decode(raws[0]))
    assert c._builders[key][0] is c.by_digest[raws[0][1:9]]
    c._builders.clear()
    monkeypatch.setattr(served, "MAX_BUILDERS", 1)
    for rec, raw in zip(recs * 2, raws * 2):
        _same(rec, c.decode(raw))
    assert len(c._builders) == 1


def test_compiled_numbers_reader_equals_the_generic_one(monkeypatch) -> None:  # noqa: ANN001
    """Numbers are read by a reader compiled per sequence of kinds (``_compile_numbers``):
    the same list as the generic code (values bit for bit, every one a float, the position
    after them), for every kind in any order: int8 extremes, float32, float64 with -0.0,
    inf and nan, decimals of one to seven varint bytes; past MAX_READERS the generic code reads."""
    rng = random.Random(5)
    pool = [0.0, 1.0, -1.0, 127.0, -128.0, 128.0, -129.0, 0.5, -0.0, 1e300, math.inf, -math.inf, math.nan,
            42.37, -42.37, 0.1, 1e-6, 123456.789, 4503.599627370496, 0.1 + 0.2, 1 / 3, 2.0**-20, 5e8]
    cases = []
    for n in [1, 2, 3, 4, 5, 15, 17]:
        for _ in range(40):
            nums = [rng.choice(pool) if rng.random() < 0.7 else rng.randint(-10**9, 10**9) / 10.0**rng.randint(0, 6)
                    for _ in range(n)]
            out = bytearray(b"\x07\x07")  # bytes before the numbers
            served._pack_numbers2(out, nums, [1] * n)
            out += b"\x09"  # and after them
            cases.append((bytes(out), n))

    def read_all() -> list[tuple[list[float], int]]:
        return [served._unpack_numbers2(b, 2, n) for b, n in cases]

    monkeypatch.setattr(served, "_readers", {})
    compiled = read_all()
    assert served._readers  # readers were compiled and used
    monkeypatch.setattr(served, "_readers", {})
    monkeypatch.setattr(served, "MAX_READERS", 0)
    generic = read_all()
    assert not served._readers
    for (got, end), (want, want_end), (b, _) in zip(compiled, generic, cases):
        assert end == want_end == len(b) - 1
        assert [type(v) for v in got] == [float] * len(want)
        assert [_bits(v) for v in got] == [_bits(v) for v in want]
