"""The served record's bytes in Redis: a compact binary encoding, and old JSON still read.

Every event leaves one served record (the features the models saw, the event time, what
each model predicted, the serving version) for ``served_ttl_s``, labelled or not, so its
size is most of Redis' memory. Decoded, a record is always the same dict:
``{"x": {feature: value}, "t": event_time, "m": {"<version>": {"score", "pred", "proba", "n"}},
"s": serving_version}``, whichever encoding it was stored in.

Encodings, told apart by the first byte:

* ``{`` (0x7B): JSON, as written before this module (read only). Its "learned" state is the
  separate marker key :meth:`Keys.learned <streamlearn.featurestore.keys.Keys.learned>`.
* ``0x04``-``0x07`` packed (written where the second form below does not apply):
  ``0x04 | flags`` (the flags in the first byte), layout digest (8 bytes), the event time
  (6 bytes, little-endian signed), varint s, then per
  model one byte ``form << 3 | label tag`` (form: whether its probabilities are stored or are a
  binary classifier's ``(1 - score, score)``; tag: the predicted label None/False/True, or int,
  float, str whose value follows), its varint n (the first model's; every other model's as the
  zigzag difference from it: shadows mostly learn the same labels), then 2-bit kinds for every
  number (features in order, then per model its score and any stored probabilities), the
  fixed-width numbers, then the short decimals. Each number takes the narrowest form that
  decodes to the *same* float64: int8, float32, float64, or a short decimal
  ``varint(zigzag(m) << 3 | k)`` read as ``m / 10**k`` (k <= 6: an amount like 42.37 takes
  3 bytes): learning uses exactly the served values.
  The layout, the names the record does not repeat (feature names in order, and per model
  its version and probability keys), is stored once under
  :meth:`Keys.layout <streamlearn.featurestore.keys.Keys.layout>` (content-addressed:
  the digest is a hash of it), written in the same atomic write as the first record that
  uses it, so a record never exists without its layout. Views with pass-through fields make
  a few layouts (one per set of names, e.g. per one-hot category); a process that has seen
  :data:`MAX_LAYOUTS` of them stores further new ones inline instead (flag bit 1: varint
  length and the layout's JSON in place of the digest), so an open-ended set of names cannot
  grow Redis by one key per event.
* ``0x80``-``0xFF`` packed, second form (written now, when it applies): as ``0x04`` but the
  first byte is ``0x80 | i << 2 | flags`` with ``i`` the serving model's index among the
  layout's models (< 32: the serving version ``s`` is that model's version, so it is not
  stored), the event time is 5 bytes unsigned after 2020-01-01 (ms, to 2054), and a model
  after the first whose count is shorter as is than as a difference from the first's (a
  challenger started long after the champion) has head bit ``0x20`` set and its own varint n.
  A record of a single model has that model's head byte in the first byte's index bits
  (``0x80 | head << 2 | flags``: the serving model can only be that one). Flag bit 1
  (:data:`SHORT_ADDRESS`): in place of the 8-byte digest, a 4-byte address naming the layout
  *and the kinds of the numbers* (which the record then omits). A (layout, kinds) pair seen
  :data:`PAIR_AFTER` times gets one (a hash of the pair; at most :data:`MAX_PAIRS` per
  process), stored under :meth:`Keys.layout` only if that key is absent; records use it once
  this process has read the key back (:func:`decode_many`, with the next labels) holding
  exactly its pair and living at least two more served TTLs, so the key outlives every record
  naming it, and for half a served TTL per check. A key held by another pair is never
  overwritten (that pair's records keep the digest); a verified one is rewritten (its TTL
  extended) while it surely still holds the pair; readers keep what an address names only
  while its key lives. A worker that never decodes (scoring only) keeps writing digests.
  Inline layouts are written in the ``0x04`` form.
  Records outside those ranges are written in the ``0x04`` form.
* ``0x01`` compact (read only, written before packed): ``0x01, flags, layout digest (8 bytes),
  zigzag varint t, varint s``, then per model ``varint n``, a form byte and the predicted label
  (tag byte and value), then 2-bit kinds and the numbers (int8, float32 or float64), the layout
  as above (the same keys: a layout is shared by both encodings).
* ``0x02``: flags byte then JSON (orjson), for records the compact form cannot hold exactly
  (non-float features, a score that is not a float, exotic labels, times beyond 6 bytes).

Flag bit 0 = "learned" (in the first byte of packed records, the second of 0x01/0x02): the
label of this event was learned (exactly once). Learning rewrites the record with the bit set
in the same atomic write that appends to the learn log, instead of one more key per label (a
marker key cost ~100 bytes of Redis; the bit costs nothing). Records written before this
module (JSON) keep using their marker keys.
Two workers serving the same event at once (a rebalance with the old owner's batch still
in flight) both try to write its record: the write is *set if absent*, so the first
record stays and a flag the learner set on it in between is never cleared. (That double
serve can still double-count the entity's state, as before.)
"""

from __future__ import annotations

import hashlib
import itertools
import math
import operator
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from streamlearn.featurestore.backend import WriteBatch
from streamlearn.streams.loop.serde import dumps, loads

if TYPE_CHECKING:
    from streamlearn.streams.loop.core import OnlineLoop

COMPACT = 0x01  # read only: records written before PACKED
JSON_FLAGGED = 0x02
PACKED = 0x04  # 0x04..0x07: PACKED | flags, the flags in the first byte's two low bits
# 0x80..0xFF: PACKED2 | the serving model's index in the layout << 2 | flags (written now when
# the serving version is one of the first 32 models and the event time within _T0 + 2**40 ms)
PACKED2 = 0x80
_T0 = 1_577_836_800_000  # 2020-01-01T00:00:00Z: a PACKED2 event time is 5 bytes after it (to 2054)
_T2_END = _T0 + (1 << 40)
_ABS_N = 0x20  # PACKED2 model head bit: n as is, not relative to the first model's (a fresh challenger)
SHORT_ADDRESS = 0x02  # PACKED2 flag bit 1: a 4-byte address naming the layout and the kinds, not a digest
MAX_PAIRS = 256  # (layout, kinds) pairs one process gives an address
PAIR_AFTER = 8  # records of a pair seen before it is given one (a pair of a few records is not worth a key)
LEARNED = 0x01
INLINE_LAYOUT = 0x02
MAX_LAYOUTS = 256  # distinct layouts one process interns in Redis; beyond: inline names
LAYOUT_TTL_FACTOR = 3  # a layout outlives the records that use it (refreshed while in use)

_F64 = struct.Struct("<d")
_PRED_NONE, _PRED_FALSE, _PRED_TRUE, _PRED_INT, _PRED_FLOAT, _PRED_STR = range(6)

Layout = tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]


class MissingLayout(KeyError):
    """A compact record names a layout this process has not loaded."""


class _Inline(Exception):
    """Names go inline: only the 0x04 form holds them."""


# ------------------------------------------------------------------ varints
def _put_varint(out: bytearray, n: int) -> None:
    if n < 0x80:  # most: one byte
        out.append(n)
        return
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_varint(b: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        c = b[pos]
        pos += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n << 1) if n >= 0 else ((-n << 1) - 1)


def _unzigzag(n: int) -> int:
    return (n >> 1) if not n & 1 else -((n + 1) >> 1)


# ------------------------------------------------------------------ numbers
# 0x01 numbers: 2-bit kinds (int8 'b', float32 'f', float64 'd'), then the numbers read with
# one struct call per record (the struct per sequence of kinds is cached).
_BITS_KIND = "dfb"
_by_kinds: dict[tuple[bytes, int], struct.Struct] = {}
_f32_by_n: dict[int, struct.Struct] = {}
_CACHE_MAX = 4096


def _unpack_numbers(b: bytes, pos: int, n: int) -> tuple[list[float], int]:
    nk = (n + 3) // 4
    kinds = bytes(b[pos:pos + nk])
    pos += nk
    st = _by_kinds.get((kinds, n))
    if st is None:
        fmt = "".join(_BITS_KIND[(kinds[i >> 2] >> ((i & 3) << 1)) & 3] for i in range(n))
        if len(_by_kinds) >= _CACHE_MAX:
            _by_kinds.clear()
        st = _by_kinds[(kinds, n)] = struct.Struct("<" + fmt)
    return [float(v) for v in st.unpack_from(b, pos)], pos + st.size


# PACKED numbers: as above, plus kind 3, a short decimal: varint(zigzag(m) << 3 | k), the float
# m / 10**k (k <= 6, each step checked to give back the same float64: an amount like 42.37 takes
# 3 bytes, not 8). The fixed-width numbers come first (one struct call), then the decimals.
_KIND_BITS2 = {"d": 0, "f": 1, "b": 2, "v": 3}
_I8 = {float(i): i for i in range(-128, 128)}  # also matches -0.0 (== 0.0): its sign is checked
_POW10 = tuple(10.0**k for k in range(8))  # exact in float64
_DEC_LIM = 2.0**52 / 1e6  # v * 1e6 is below 2**52: round() finds m when v is such a decimal
_SHORT_DEC = 1 << 21  # a decimal in <= 3 bytes beats float32; any up to 7 bytes beats float64
_DEC_MAX = 1 << 49
_by_fmt2: dict[str, tuple[struct.Struct, bytes]] = {}
_plans: dict[tuple[bytes, int], tuple[struct.Struct, int, Any]] = {}
_copysign = math.copysign
_ALWAYS = itertools.repeat(True)
DECIMAL_PROBE_EVERY = 64  # records of one layout between two probes of every position for decimals


def _f32_round_trip(nums: Sequence[float]) -> Sequence[float]:
    n = len(nums)
    f32 = _f32_by_n.get(n)
    if f32 is None:
        f32 = _f32_by_n[n] = struct.Struct(f"<{n}f")
    try:
        return f32.unpack(f32.pack(*nums))
    except OverflowError:  # some value beyond float32's range: those stay float64
        one = struct.Struct("<f")
        out = []
        for v in nums:
            try:
                out.append(one.unpack(one.pack(v))[0])
            except OverflowError:
                out.append(math.nan)
        return out


def _pack_numbers2(out: bytearray, nums: Sequence[float], tries: Sequence[int]) -> str:
    """2-bit kind per number (0 float64, 1 float32, 2 int8, 3 short decimal), the fixed-width
    numbers, then the decimals: each number in the narrowest form that reads back as the same
    float64 (-0.0 stays float). A decimal is tried only where ``tries`` says (the test costs
    more than the rest); returns the kinds ('d', 'f', 'b', 'v' per number)."""
    kinds: list[str] = []
    fixed: list[float | int] = []
    decs = bytearray()
    get, kind, put = _I8.get, kinds.append, fixed.append
    for v, w, dec in zip(nums, _f32_round_trip(nums), tries):
        if w == v:  # float32 holds it (int8 ones included; inf too)
            i = get(v)
            if i is not None and (i or _copysign(1.0, v) > 0):
                kind("b")
                put(i)
                continue
            short = _SHORT_DEC
        elif not dec:  # the common case for computed features: float64
            kind("d")
            put(v)
            continue
        else:
            short = _DEC_MAX
        if dec and v and -_DEC_LIM < v < _DEC_LIM:  # not 0.0/-0.0, not inf/nan
            m = round(v * 1e6)
            if m / 1e6 == v:
                k = 6
                while k and not m % 10:
                    m //= 10
                    k -= 1
                z = (((m << 1) if m >= 0 else ((-m << 1) - 1)) << 3) | k
                if z < short and m / _POW10[k] == v:
                    kind("v")
                    while z > 0x7F:
                        decs.append((z & 0x7F) | 0x80)
                        z >>= 7
                    decs.append(z)
                    continue
        kind("f" if w == v else "d")
        put(v)
    fmt = "".join(kinds)
    got = _by_fmt2.get(fmt)
    if got is None:
        kb = bytearray((len(fmt) + 3) // 4)
        for i, k in enumerate(fmt):
            kb[i >> 2] |= _KIND_BITS2[k] << ((i & 3) << 1)
        if len(_by_fmt2) >= _CACHE_MAX:
            _by_fmt2.clear()
        got = _by_fmt2[fmt] = (struct.Struct("<" + fmt.replace("v", "")), bytes(kb))
    st, kb = got
    out += kb
    out += st.pack(*fixed)
    out += decs
    return fmt


def _plan(kinds: bytes, n: int) -> tuple[struct.Struct, int, Any]:
    fmt = "".join("dfbv"[(kinds[i >> 2] >> ((i & 3) << 1)) & 3] for i in range(n))
    nfixed = n - fmt.count("v")
    # where each number sits in (fixed numbers..., decimals...)
    perm, fi, di = [], 0, nfixed
    for k in fmt:
        if k == "v":
            perm.append(di)
            di += 1
        else:
            perm.append(fi)
            fi += 1
    order = operator.itemgetter(*perm) if n > 1 else (lambda t: tuple(t[:n]))
    if len(_plans) >= _CACHE_MAX:
        _plans.clear()
    got = _plans[(kinds, n)] = (struct.Struct("<" + fmt.replace("v", "")), n - nfixed, order)
    return got


# (kinds, n) -> the numbers' reader compiled for them (_compile_numbers), shared by every codec;
# bounded: past MAX_READERS, further kinds are read by the generic code below
_readers: dict[tuple[bytes, int], Any] = {}
MAX_READERS = 1024


def _compile_numbers(kinds: bytes, n: int) -> Any:
    """``read(b, pos) -> (numbers, pos after them)``: the generic code of :func:`_unpack_numbers2`
    for one sequence of kinds, with the struct and each number's place fixed: the decimals read
    unrolled (the same varint and the same division) and the list built in order (int8s made
    floats as ``float()`` makes them, the rest as read), the same values bit for bit."""
    fmt = "".join("dfbv"[(kinds[i >> 2] >> ((i & 3) << 1)) & 3] for i in range(n))
    st = struct.Struct("<" + fmt.replace("v", ""))
    num, fi, di = [], 0, 0
    for k in fmt:
        if k == "v":
            num.append(f"d{di}")
            di += 1
        else:
            num.append(f"_FL[f[{fi}]]" if k == "b" else f"f[{fi}]")
            fi += 1
    body = ["    f = _unpack(b, pos)", f"    pos += {st.size}"]
    for j in range(di):
        body += ["    c = b[pos]", "    if c < 0x80:", "        z = c", "        pos += 1", "    else:",
                 "        z, pos = _varint(b, pos)", "    m = z >> 3",
                 f"    d{j} = ((m >> 1) if not m & 1 else -((m + 1) >> 1)) / _P[z & 7]"]
    src = "def read(b, pos):\n" + "\n".join(body) + f"\n    return [{', '.join(num)}], pos\n"
    env: dict[str, Any] = {"_unpack": st.unpack_from, "_varint": _get_varint, "_P": _POW10, "_FL": _INT8_FLOATS}
    exec(compile(src, "<served numbers reader>", "exec"), env)  # noqa: S102 - our own source, no data in it
    return env["read"]


# float(i) for every int8 i, at index i (a negative one from the end): an int8's float without a call
_INT8_FLOATS = tuple(float(i) for i in range(128)) + tuple(float(i) for i in range(-128, 0))


def _unpack_numbers2(b: bytes, pos: int, n: int, kinds: bytes | None = None) -> tuple[list[float], int]:
    if kinds is None:  # in the record (else: named by its short address)
        nk = (n + 3) // 4
        kinds = bytes(b[pos:pos + nk])
        pos += nk
    read = _readers.get((kinds, n))
    if read is None and len(_readers) < MAX_READERS:
        read = _readers[(kinds, n)] = _compile_numbers(kinds, n)
    if read is not None:
        return read(b, pos)
    plan = _plans.get((kinds, n)) or _plan(kinds, n)
    st, ndec, order = plan
    fixed = st.unpack_from(b, pos)
    pos += st.size
    if not ndec:
        return list(map(float, fixed)), pos
    decs = []
    for _ in range(ndec):
        z = shift = 0
        while True:
            c = b[pos]
            pos += 1
            z |= (c & 0x7F) << shift
            if c < 0x80:
                break
            shift += 7
        m = z >> 3
        decs.append(((m >> 1) if not m & 1 else -((m + 1) >> 1)) / _POW10[z & 7])
    return list(map(float, order(fixed + tuple(decs)))), pos


# A binary classifier's two probabilities are (1 - score, score) as River computes them: such
# a pair is stored as a form byte, not 16 bytes (decoded with the same float arithmetic).
_P_STORED, _P_COMPLEMENT_FIRST, _P_SCORE_FIRST = 0, 1, 2


def _same(a: Any, b: float) -> bool:
    return type(a) is float and a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _binary_form(score: float, pv: Sequence[Any]) -> int:
    if len(pv) == 2:
        c = 1.0 - score
        if _same(pv[1], score) and _same(pv[0], c):
            return _P_COMPLEMENT_FIRST
        if _same(pv[0], score) and _same(pv[1], c):
            return _P_SCORE_FIRST
    return _P_STORED


def _put_pred(out: bytearray, p: Any) -> bool:
    if p is None:
        out.append(_PRED_NONE)
    elif p is False:
        out.append(_PRED_FALSE)
    elif p is True:
        out.append(_PRED_TRUE)
    elif type(p) is int:
        out.append(_PRED_INT)
        _put_varint(out, _zigzag(p))
    elif type(p) is float:
        out.append(_PRED_FLOAT)
        out += _F64.pack(p)
    elif type(p) is str:
        s = p.encode()
        out.append(_PRED_STR)
        _put_varint(out, len(s))
        out += s
    else:
        return False
    return True


def _get_pred(b: bytes, pos: int) -> tuple[Any, int]:
    return _pred_value(b, pos + 1, b[pos])


def _pred_value(b: bytes, pos: int, tag: int) -> tuple[Any, int]:
    if tag == _PRED_NONE:
        return None, pos
    if tag == _PRED_FALSE:
        return False, pos
    if tag == _PRED_TRUE:
        return True, pos
    if tag == _PRED_INT:
        n, pos = _get_varint(b, pos)
        return _unzigzag(n), pos
    if tag == _PRED_FLOAT:
        return _F64.unpack_from(b, pos)[0], pos + 8
    n, pos = _get_varint(b, pos)
    return b[pos:pos + n].decode(), pos + n


def _put_head(out: bytearray, form: int, p: Any, n: int) -> None:
    """A PACKED model head: form << 3 | the label's tag, varint n, then the label's value."""
    if p is False:
        out.append(form << 3 | _PRED_FALSE)
        _put_varint(out, n)
    elif p is True:
        out.append(form << 3 | _PRED_TRUE)
        _put_varint(out, n)
    elif p is None:
        out.append(form << 3 | _PRED_NONE)
        _put_varint(out, n)
    else:
        tail = bytearray()
        if not _put_pred(tail, p):
            raise TypeError("label type")
        out.append(form << 3 | tail[0])
        _put_varint(out, n)
        out += tail[1:]


def layout_digest(layout: Layout) -> bytes:
    return hashlib.blake2b(orjson.dumps(layout), digest_size=8).digest()


def _layout_from_json(raw: bytes) -> Layout:
    names, models = orjson.loads(raw)
    return tuple(names), tuple((v, tuple(keys)) for v, keys in models)



def _record(names: tuple[str, ...], models: tuple[tuple[str, tuple[str, ...]], ...],
            heads: list[tuple[int, int, Any]], nums: Sequence[float], t: int, s: int) -> dict[str, Any]:
    """The decoded record from a layout, each model's (count, probability form, predicted
    label) and the numbers (features in order, then per model its score and any stored
    probabilities): the same for every binary encoding."""
    x = dict(zip(names, nums))
    i = len(names)
    per_model: dict[str, Any] = {}
    for (v, keys), (n, form, pred) in zip(models, heads):
        score = nums[i]
        if form == _P_COMPLEMENT_FIRST:
            proba = dict(zip(keys, (1.0 - score, score)))
            i += 1
        elif form == _P_SCORE_FIRST:
            proba = dict(zip(keys, (score, 1.0 - score)))
            i += 1
        else:
            proba = dict(zip(keys, nums[i + 1:i + 1 + len(keys)]))
            i += 1 + len(keys)
        per_model[v] = {"score": score, "pred": pred, "proba": proba, "n": n}
    return {"x": x, "t": t, "m": per_model, "s": s}


MAX_BUILDERS = 1024  # compiled record builders one codec keeps (one per layout and probability forms)


def _compile_builder(layout: Layout, forms: tuple[int, ...]) -> Any:
    """``build(nums, t, s, heads) -> record``: :func:`_record` as one dict display for one
    layout and its models' probability forms (the same values, types and key order; tested
    against it). Names are passed in as constants, never spliced into the source."""
    names, models = layout
    x = ", ".join(f"_K[{j}]: n[{j}]" for j in range(len(names)))
    i = len(names)
    per_model = []
    for mi, ((_, keys), form) in enumerate(zip(models, forms)):
        score = f"n[{i}]"
        if form == _P_COMPLEMENT_FIRST:
            pv = [f"1.0 - {score}", score]
            i += 1
        elif form == _P_SCORE_FIRST:
            pv = [score, f"1.0 - {score}"]
            i += 1
        else:
            pv = [f"n[{i + 1 + j}]" for j in range(len(keys))]
            i += 1 + len(keys)
        proba = ", ".join(f"_M[{mi}][1][{j}]: {v}" for j, v in zip(range(len(keys)), pv))  # zip's truncation
        per_model.append(f"_M[{mi}][0]: {{'score': {score}, 'pred': heads[{mi}][2], 'proba': {{{proba}}}, "
                         f"'n': heads[{mi}][0]}}")
    src = (f"def build(n, t, s, heads):\n"
           f"    return {{'x': {{{x}}}, 't': t, 'm': {{{', '.join(per_model)}}}, 's': s}}\n")
    env: dict[str, Any] = {"_K": names, "_M": models}
    exec(compile(src, "<served record builder>", "exec"), env)  # noqa: S102 - our own source, names as constants
    return env["build"]


# A record kept as objects, in place of its bytes, by a backend that keeps them (the in-memory
# backend of an in-process replay): only a record the packed encoding gives back exactly
# (:meth:`ServedCodec.keep`), copied when stored and rebuilt when read, so a replay computes
# what it would from the bytes without encoding or decoding them. It is a plain tuple
# ``(learned, layout, t, s, numbers, ((n, form, pred), ...))`` (never bytes, so told apart by
# its class; each model's head as a decoder reads it, its form _P_STORED): the numbers
# (features in order, then per model its score and probabilities) packed as float64 (bit for
# bit, 8 bytes each), the rest atoms and tuples of atoms, which the garbage collector stops
# tracking; a replay holds one per event.
Kept = tuple


def _f64s(n: int) -> struct.Struct:
    st = _f64_by_n.get(n)
    if st is None:
        st = _f64_by_n[n] = struct.Struct(f"<{n}d")
    return st


_f64_by_n: dict[int, struct.Struct] = {}


_kept_builders: dict[Layout, Any] = {}  # a kept layout -> its record builder (_compile_builder)


def unkeep(k: Kept) -> dict[str, Any]:
    """A fresh record as decoding gives one: new dicts (keys in the decoder's order), same
    values; built by the layout's compiled builder, as a decoder builds it."""
    _, layout, t, s, nums, heads = k
    build = _kept_builders.get(layout)
    if build is None:
        if len(_kept_builders) >= MAX_BUILDERS:
            _kept_builders.clear()
        build = _kept_builders[layout] = _compile_builder(layout, (_P_STORED,) * len(layout[1]))
    return build(_f64s(len(nums) >> 3).unpack(nums), t, s, heads)


_T_MIN, _T_MAX = -(1 << 47), 1 << 47  # the packed event time's 6 signed bytes


def _packed_heads(b: bytes, pos: int, models: Sequence[tuple[str, Sequence[Any]]], count: int,
                  first_head: int = -1) -> tuple[list[tuple[int, int, Any]], int, int]:
    """The model heads of a packed record of either form, from ``pos``: (n, form, predicted
    label) per model, the count of numbers that follow (``count`` features plus each model's),
    and the position after the heads. ``first_head``: a one-model record of the second form
    carries its head in the first byte. Heads of the ``0x04`` form never have the ``_ABS_N`` bit."""
    heads = []
    n0 = -1
    for _, keys in models:
        if first_head >= 0:
            head = first_head
            pos -= 1  # n follows at pos, where a head byte would otherwise be
        else:
            head = b[pos]
        n = b[pos + 1]
        if n < 0x80:
            pos += 2
        else:
            n, pos = _get_varint(b, pos + 1)
        if n0 < 0:
            n0 = n
        elif not head & _ABS_N:
            n = n0 - (n >> 1) if not n & 1 else n0 + ((n + 1) >> 1)
        tag = head & 7
        if tag < _PRED_INT:
            pred: Any = (None, False, True)[tag]
        else:
            pred, pos = _pred_value(b, pos, tag)
        form = (head >> 3) & 3
        heads.append((n, form, pred))
        count += 1 if form else 1 + len(keys)
    return heads, count, pos


class ServedCodec:
    """Encodes/decodes served records; interns layouts (per process cache + Redis keys)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.by_layout: dict[Layout, bytes] = {}
        self.by_digest: dict[bytes, Layout] = {}
        self.written: dict[bytes, float] = {}  # digest -> when this process last wrote its key
        self.clock = clock
        self._tries: dict[bytes, list[Any]] = {}  # digest -> [records since probe, where decimals were seen]
        self._kept_layouts: dict[Layout, Layout] = {}  # interned layouts, each as one object
        # short addresses (PACKED2): a 4-byte address names a (layout, kinds of the numbers) pair;
        # address -> clock time until which records may use it (verified: its key holds exactly
        # that pair and outlives every record naming it)
        self.short_ok: dict[bytes, float] = {}
        self.unverified: set[bytes] = set()  # addresses whose key was just (re)written
        self.owned_until: dict[bytes, float] = {}  # address -> until when its key surely holds our pair
        self.by_short: dict[bytes, tuple[Layout, bytes, float]] = {}  # address -> (layout, kinds, valid until)
        self.pairs: dict[tuple[bytes, bytes], bytes] = {}  # (digest, kinds) -> address (b"": none)
        self.pair_value: dict[bytes, bytes] = {}  # address -> its key's content
        self.pair_seen: dict[tuple[bytes, bytes], int] = {}
        self.pair_written: dict[bytes, float] = {}  # address -> when to write its key again
        self.pending_pairs: set[bytes] = set()  # addresses whose key the caller writes now
        # (address, probability forms) -> (layout, its compiled record builder), for decode
        self._builders: dict[tuple[bytes, Any], tuple[Layout, Any]] = {}

    # ---------------------------------------------------------------- encode
    def encode(self, rec: dict[str, Any], learned: bool = False) -> tuple[bytes, bytes | None]:
        """The record's bytes and, if the record uses a layout this process has not written
        lately, that layout's digest (the caller writes it in the same batch: :func:`add_layouts`)."""
        try:
            try:
                return self._compact(rec, learned, True)
            except _Inline:
                return self._compact(rec, learned, False)
        except (TypeError, AttributeError, OverflowError, ValueError, UnicodeError):
            pass  # not representable exactly: JSON
        return bytes((JSON_FLAGGED, LEARNED if learned else 0)) + dumps(rec), None

    def _compact(self, rec: dict[str, Any], learned: bool, v2: bool) -> tuple[bytes, bytes | None]:
        x, t, per_model, s = rec["x"], rec["t"], rec["m"], rec["s"]
        if type(t) is not int or type(s) is not int or len(rec) != 4:
            raise TypeError("t and s must be ints")
        nums: list[float] = list(x.values())
        models = []
        heads = bytearray()
        n0 = -1
        si = -1  # the serving model's index in the layout (PACKED2), or -1: PACKED
        if v2 and _T0 <= t < _T2_END:
            sv = str(s)
            if sv in per_model:
                si = list(per_model).index(sv)
                if si > 31:
                    si = -1
        for v, m in per_model.items():
            proba, score, n = m["proba"], m["score"], m["n"]
            if type(score) is not float or type(n) is not int or n < 0 \
                    or type(proba) is not dict or len(m) != 4:
                raise TypeError("model entry not compact")
            nums.append(score)
            pv = tuple(proba.values())
            if len(pv) != 2:
                form = _P_STORED
            elif pv[1] is score and type(pv[0]) is float and pv[0] and pv[0] == 1.0 - score:
                form = _P_COMPLEMENT_FIRST  # River's binary classifiers: checked without calls
            else:
                form = _binary_form(score, pv)
            if not form:
                nums += pv
            models.append((v, tuple(proba)))
            # one byte: probability form and the predicted label's tag; then n (the first
            # model's, then each other's as a difference from it: shadows learn the same labels)
            if n0 < 0:
                n0 = n
            else:
                z = (n0 - n) << 1 if n <= n0 else ((n - n0) << 1) - 1
                if si >= 0 and n < z:  # a challenger far behind the champion: its own count is shorter
                    form |= 4  # _ABS_N in the head byte
                else:
                    n = z
            pred = m["pred"]
            if pred is False:
                heads.append(form << 3 | _PRED_FALSE)
            elif pred is True:
                heads.append(form << 3 | _PRED_TRUE)
            elif pred is None:
                heads.append(form << 3 | _PRED_NONE)
            else:
                _put_head(heads, form, pred, n)
                continue
            if n < 0x80:
                heads.append(n)
            else:
                _put_varint(heads, n)
        if list(map(type, nums)).count(float) != len(nums):  # exactly float (no int, bool, subclass)
            raise TypeError("not a float")
        layout: Layout = (tuple(x), tuple(models))
        digest = self.by_layout.get(layout)
        now = self.clock()
        flags = LEARNED if learned else 0
        if si < 0:
            flags |= PACKED
        elif len(models) == 1:  # the serving model is the only one: its head byte takes the index's bits
            flags |= PACKED2 | heads[0] << 2
            del heads[0]
        else:
            flags |= PACKED2 | si << 2
        new: bytes | None = None
        if digest is None:
            if len(self.by_layout) >= MAX_LAYOUTS:
                if si >= 0:
                    raise _Inline
                flags |= INLINE_LAYOUT
            else:
                digest = layout_digest(layout)
                self.by_layout[layout] = digest
                self.by_digest[digest] = layout
        # the numbers first: a record naming a verified (layout, kinds) pair omits its kinds
        nb = bytearray()
        st = self._tries.get(digest) if digest is not None else None
        if st is not None and st[0] < DECIMAL_PROBE_EVERY and len(st[1]) == len(nums):
            st[0] += 1
            _pack_numbers2(nb, nums, st[1])
        else:
            self._probe(nb, nums, digest, st)
        address = None
        if si >= 0:
            nk = (len(nums) + 3) >> 2
            pair = (digest, bytes(nb[:nk]))
            address = self.pairs.get(pair)  # type: ignore[arg-type]
            if address is None:
                address = self._seen(pair)  # type: ignore[arg-type]
            if address:
                if now > self.pair_written.get(address, -math.inf):
                    self.pending_pairs.add(address)
                if now < self.short_ok.get(address, -math.inf):
                    flags |= SHORT_ADDRESS
                    del nb[:nk]
                else:
                    address = None
        out = bytearray((flags,))
        if digest is not None:
            out += address or digest
            if now > self.written.get(digest, -1e18):
                new = digest  # the caller decides with its TTL whether to (re)write it
        else:
            lj = orjson.dumps(layout)
            _put_varint(out, len(lj))
            out += lj
        if si >= 0:
            out += (t - _T0).to_bytes(5, "little")  # s: the index in the first byte
        else:
            out += t.to_bytes(6, "little", signed=True)  # ms: +-4,000 years; one C call, not a varint loop
            _put_varint(out, s)
        out += heads
        out += nb
        return bytes(out), new

    def _seen(self, pair: tuple[bytes, bytes]) -> bytes | None:
        """The pair's address once PAIR_AFTER records of it have been seen (and fewer than
        MAX_PAIRS have one), else None. Two pairs of this process with one address: the second
        gets none (an address names one pair)."""
        n = self.pair_seen.get(pair, 0) + 1
        if n < PAIR_AFTER or len(self.pairs) >= MAX_PAIRS:
            if len(self.pair_seen) >= 8192:
                self.pair_seen.clear()
            self.pair_seen[pair] = n
            return None
        self.pair_seen.pop(pair, None)
        value = bytes((len(pair[1]),)) + pair[1] + self.layout_json(pair[0])
        address = hashlib.blake2b(value, digest_size=4).digest()
        if address in self.pair_value:
            self.pairs[pair] = b""
            return None
        self.pairs[pair] = address
        self.pair_value[address] = value
        return address

    def keep(self, rec: dict[str, Any]) -> Kept | None:
        """``rec`` as a :data:`Kept` record, if it would be encoded packed with a layout this
        process has interned, so that decoding its bytes gives back an equal record of the
        same types, signs and key order (every number an exact float, kept bit for bit); else
        None. The conditions under which :meth:`_compact` succeeds with a known layout, checked
        without packing."""
        try:
            if type(rec) is not dict or len(rec) != 4:
                return None
            x, t, per_model, s = rec["x"], rec["t"], rec["m"], rec["s"]
            if type(t) is not int or type(s) is not int or s < 0 or not _T_MIN <= t < _T_MAX \
                    or type(x) is not dict or type(per_model) is not dict:
                return None
            nums = list(x.values())
            models = []
            heads = []
            for v, m in per_model.items():
                if type(m) is not dict or len(m) != 4:
                    return None
                proba, score, n, pred = m["proba"], m["score"], m["n"], m["pred"]
                if type(score) is not float or type(n) is not int or n < 0 or type(proba) is not dict:
                    return None
                if pred is not None and pred is not True and pred is not False:
                    tp = type(pred)
                    if tp is str:
                        pred.encode()  # a lone surrogate cannot be stored: the JSON fallback
                    elif tp is not int and tp is not float:
                        return None
                nums.append(score)
                nums += proba.values()
                models.append((v, tuple(proba)))
                heads.append((n, _P_STORED, pred))
            if list(map(type, nums)).count(float) != len(nums):
                return None
            layout: Layout = (tuple(x), tuple(models))
        except (KeyError, TypeError, UnicodeError):
            return None
        canon = self._kept_layouts.get(layout)
        if canon is None:
            if layout not in self.by_layout:
                return None
            canon = self._kept_layouts[layout] = layout  # at most MAX_LAYOUTS of them
        # one layout object for all its records
        return (False, canon, t, s, _f64s(len(nums)).pack(*nums), tuple(heads))

    def _probe(self, out: bytearray, nums: list[float], digest: bytes | None, st: list[Any] | None) -> None:
        """Short decimals are tried only at the positions of a layout where they have been seen
        (an amount, say; not a log or a rate: the test costs more than the rest of a number),
        found by trying every position in one record of each DECIMAL_PROBE_EVERY."""
        kinds = _pack_numbers2(out, nums, _ALWAYS)
        seen = [k == "v" for k in kinds]
        if st is not None and len(st[1]) == len(nums):
            seen = [a or b for a, b in zip(st[1], seen)]
        if digest is not None:
            self._tries[digest] = [0, seen]

    def layout_json(self, digest: bytes) -> bytes:
        return orjson.dumps(self.by_digest[digest])

    # ---------------------------------------------------------------- decode
    @staticmethod
    def needs(raw: bytes | None) -> bytes | None:
        """The layout digest a stored record needs, or None."""
        if raw and raw.__class__ is not Kept:
            first = raw[0]
            if first & PACKED2:
                return raw[1:5] if first & SHORT_ADDRESS else raw[1:9]
            if first & 0xFC == PACKED:
                return None if first & INLINE_LAYOUT else raw[1:9]
            if first == COMPACT and not raw[1] & INLINE_LAYOUT:
                return raw[2:10]
        return None

    def learn_layout(self, digest: bytes, raw: bytes) -> None:
        layout = _layout_from_json(raw)
        self.by_digest[digest] = layout
        self.by_layout.setdefault(layout, digest)

    def learn_short(self, address: bytes, raw: bytes, seconds_left: float) -> None:
        """The layout and kinds a short address names, as long as its key lives: an address
        can name another pair after that (its key is claimed, not derived)."""
        self.by_short[address] = (_layout_from_json(raw[1 + raw[0]:]), bytes(raw[1:1 + raw[0]]),
                                  self.clock() + seconds_left)

    def knows(self, address: bytes) -> bool:
        if len(address) == 8:
            return address in self.by_digest
        got = self.by_short.get(address)
        return got is not None and self.clock() < got[2]

    def verified(self, address: bytes, raw: bytes | None, seconds_left: float, served_ttl_s: float) -> bool:
        """After this process has written an address's key (if absent): records may use the
        address for half a served TTL if the key holds exactly our pair (no other pair claimed
        it first) and lives at least two served TTLs more (it outlives every record naming it)."""
        value = self.pair_value.get(address)
        if raw is None or value is None or seconds_left < 2 * served_ttl_s or raw != value:
            return False
        now = self.clock()
        self.short_ok[address] = now + served_ttl_s / 2
        self.owned_until[address] = now + seconds_left
        self.learn_short(address, raw, seconds_left)
        return True

    def decode(self, raw: bytes) -> dict[str, Any]:
        first = raw[0]
        if first & PACKED2:
            return self._decode_packed2(raw)
        if first & 0xFC == PACKED:
            return self._decode_packed(raw)
        if first == COMPACT:
            return self._decode_compact(raw)
        if first == JSON_FLAGGED:
            return loads(raw[2:])
        return loads(raw)  # JSON written before the compact encoding

    def _layout_at(self, b: bytes, pos: int, inline: bool) -> tuple[Layout, int]:
        """The record's layout at ``pos`` (inline JSON, or an 8-byte digest of a known one)
        and the position after it: the same in every binary encoding."""
        if inline:
            n, pos = _get_varint(b, pos)
            return _layout_from_json(b[pos:pos + n]), pos + n
        layout = self.by_digest.get(b[pos:pos + 8])
        if layout is None:
            raise MissingLayout(b[pos:pos + 8].hex())
        return layout, pos + 8

    def _decode_compact(self, b: bytes) -> dict[str, Any]:
        (names, models), pos = self._layout_at(b, 2, bool(b[1] & INLINE_LAYOUT))
        zt, pos = _get_varint(b, pos)
        s, pos = _get_varint(b, pos)
        heads = []
        count = len(names)
        for _, keys in models:
            n, pos = _get_varint(b, pos)
            form = b[pos]
            pred, pos = _get_pred(b, pos + 1)
            heads.append((n, form, pred))
            count += 1 if form else 1 + len(keys)
        nums, pos = _unpack_numbers(b, pos, count)
        return _record(names, models, heads, nums, _unzigzag(zt), s)

    def _decode_packed(self, b: bytes) -> dict[str, Any]:
        (names, models), pos = self._layout_at(b, 1, bool(b[0] & INLINE_LAYOUT))
        t = int.from_bytes(b[pos:pos + 6], "little", signed=True)
        s, pos = _get_varint(b, pos + 6)
        heads, count, pos = _packed_heads(b, pos, models, len(names))
        nums, pos = _unpack_numbers2(b, pos, count)
        return _record(names, models, heads, nums, t, s)

    def _decode_packed2(self, b: bytes) -> dict[str, Any]:
        first = b[0]
        kinds = None
        if first & SHORT_ADDRESS:
            address = b[1:5]
            got = self.by_short.get(address)
            if got is None:
                raise MissingLayout(address.hex())
            layout, kinds, _ = got
            pos = 5
        else:
            address = b[1:9]
            layout = self.by_digest.get(address)
            if layout is None:
                raise MissingLayout(address.hex())
            pos = 9
        names, models = layout
        t = int.from_bytes(b[pos:pos + 5], "little") + _T0
        pos += 5
        one = len(models) == 1
        s = int(models[0 if one else (first >> 2) & 0x1F][0])
        heads, count, pos = _packed_heads(b, pos, models, len(names), (first >> 2) & 0x1F if one else -1)
        key = (address, heads[0][1] if one else tuple(h[1] for h in heads))
        got = self._builders.get(key)
        # an address names one layout while its entry lives (a short one may name another later)
        build = got[1] if got is not None and got[0] is layout else self._builder(key, layout)
        nums, pos = _unpack_numbers2(b, pos, count, kinds)
        if build is not None:
            return build(nums, t, s, heads)
        return _record(names, models, heads, nums, t, s)

    def _builder(self, key: tuple[bytes, Any], layout: Layout) -> Any:
        """The record builder for one (address, probability forms), kept with the layout it
        was built for; None past :data:`MAX_BUILDERS` (:func:`_record` then)."""
        if len(self._builders) >= MAX_BUILDERS and key not in self._builders:
            return None
        build = _compile_builder(layout, (key[1],) if type(key[1]) is int else key[1])
        self._builders[key] = (layout, build)
        return build

    # ---------------------------------------------------------------- the learned flag
    @staticmethod
    def is_learned(raw: bytes | Kept) -> bool:
        if raw.__class__ is Kept:
            return raw[0]
        first = raw[0]
        if first & PACKED2 or first & 0xFC == PACKED:
            return bool(first & LEARNED)
        return first in (COMPACT, JSON_FLAGGED) and bool(raw[1] & LEARNED)

    @staticmethod
    def can_flag(raw: bytes) -> bool:
        return raw[0] & PACKED2 or raw[0] & 0xFC == PACKED or raw[0] in (COMPACT, JSON_FLAGGED)

    @staticmethod
    def flagged(raw: bytes) -> bytes:
        if raw[0] & PACKED2 or raw[0] & 0xFC == PACKED:
            return bytes((raw[0] | LEARNED,)) + raw[1:]
        return raw[:1] + bytes((raw[1] | LEARNED,)) + raw[2:]


# ------------------------------------------------------------------ the loop's side
def codec(loop: OnlineLoop) -> ServedCodec:
    """The loop's codec (one per loop: its layout cache follows the loop's backend)."""
    c = loop.__dict__.get("_served_codec")
    if c is None:
        c = loop.__dict__["_served_codec"] = ServedCodec()
    return c


def encode_into(loop: OnlineLoop, wb: WriteBatch, eid: str, rec: dict[str, Any], key: str | None = None) -> bytes:
    """Put the served record (and its layout, if new to this process lately) into ``wb``
    (``key``: the record's key, if the caller has built it). Returns what was stored: its
    bytes, or a :data:`Kept` record on a backend that keeps objects."""
    c = codec(loop)
    if key is None:
        key = loop.keys.served(eid)
    if getattr(loop.backend, "keep_objects", False) and (kept := c.keep(rec)) is not None:
        wb.set_if_absent(key, kept, loop.served_ttl_s)  # type: ignore[arg-type]
        return kept  # type: ignore[return-value]
    raw, new = c.encode(rec)
    # if absent: two workers serving one event at once (a rebalance) keep the first record,
    # so the second can never clear the learned flag the learner set on it in between
    wb.set_if_absent(key, raw, loop.served_ttl_s)
    if new is not None:
        ttl = loop.served_ttl_s * LAYOUT_TTL_FACTOR if loop.served_ttl_s else 0
        wb.set(loop.keys.layout(new.hex()), c.layout_json(new), ttl)
        # rewritten when half a served TTL has passed, so it always outlives its records
        c.written[new] = c.clock() + (loop.served_ttl_s / 2 if loop.served_ttl_s else 1e18)
    if c.pending_pairs:
        if loop.served_ttl_s > 0:
            ttl = loop.served_ttl_s * LAYOUT_TTL_FACTOR
            now = c.clock()
            for address in c.pending_pairs:
                # a short address's key: claimed only if free, used once verified (decode_many);
                # rewritten (its TTL extended) only while it surely still holds our pair
                key, value = loop.keys.layout(address.hex()), c.pair_value[address]
                if now < c.owned_until.get(address, -math.inf) - loop.served_ttl_s:
                    wb.set(key, value, ttl)
                else:
                    wb.set_if_absent(key, value, ttl)
                c.unverified.add(address)
                c.pair_written[address] = now + loop.served_ttl_s / 2
        c.pending_pairs.clear()
    return raw


def mark_learned(loop: OnlineLoop, wb: WriteBatch, eid: str, raw: bytes) -> None:
    """Record "learned" for ``eid`` in ``wb``: the record's flag, or an old record's marker key."""
    if raw.__class__ is Kept:
        wb.set(loop.keys.served(eid), (True, *raw[1:]), loop.served_ttl_s)  # type: ignore[arg-type]
    elif ServedCodec.can_flag(raw):
        # a fresh TTL, as the marker key had: a duplicate label is recognised that long
        wb.set(loop.keys.served(eid), ServedCodec.flagged(raw), loop.served_ttl_s)
    else:
        wb.set(loop.keys.learned(eid), b"1", loop.served_ttl_s)


async def decode_many(loop: OnlineLoop, raws: Sequence[bytes | None], what: str) -> list[dict[str, Any] | None]:
    """Decode stored records, loading unknown layouts first (one read). A record whose layout
    is gone (it cannot be, short of a flushed Redis) decodes to None, like an expired one."""
    c = codec(loop)
    missing: set[bytes] | None = None
    known: set[bytes] = set()  # addresses found known in this batch (a batch's records share a few)
    needs = c.needs
    for raw in raws:
        if raw and raw.__class__ is not Kept:  # (None, or b"": nothing needed, as needs says)
            first = raw[0]
            if first & PACKED2:  # (needs, inline for the records written now)
                d = raw[1:5] if first & SHORT_ADDRESS else raw[1:9]
            else:
                d = needs(raw)
            if d is not None and d not in known:
                if c.knows(d):
                    known.add(d)
                else:
                    if missing is None:
                        missing = set()
                    missing.add(d)
    check = list(c.unverified) if c.unverified and loop.served_ttl_s > 0 else []
    if missing or check:
        want = list(missing or ())
        keys = [loop.keys.layout(d.hex()) for d in want + check]
        got = await loop.io(lambda: loop.backend.read_with_ttl(keys), what)
        for d, (lj, left) in zip(want, got):
            if lj is not None:
                if len(d) == 8:
                    c.learn_layout(d, lj)
                else:
                    c.learn_short(d, lj, left)
        for d, (lj, left) in zip(check, got[len(want):]):
            c.unverified.discard(d)
            c.verified(d, lj, left, loop.served_ttl_s)
    out: list[dict[str, Any] | None] = []
    decode, packed2 = c.decode, c._decode_packed2
    for raw in raws:
        if raw is None:
            out.append(None)
        elif raw.__class__ is Kept:
            out.append(unkeep(raw))
        else:
            try:  # (decode's dispatch, inline for the records written now)
                out.append(packed2(raw) if raw and raw[0] & PACKED2 else decode(raw))
            except MissingLayout:
                out.append(None)
    return out
