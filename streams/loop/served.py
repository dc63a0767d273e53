"""The served record's bytes in Redis: a compact binary encoding, and old JSON still read.

Every event leaves one served record (the features the models saw, the event time, what
each model predicted, the serving version) for ``served_ttl_s``, labelled or not, so its
size is most of Redis' memory. Decoded, a record is always the same dict:
``{"x": {feature: value}, "t": event_time, "m": {"<version>": {"score", "pred", "proba", "n"}},
"s": serving_version}``, whichever encoding it was stored in.

Encodings, told apart by the first byte:

* ``{`` (0x7B): JSON, as written before this module (read only). Its "learned" state is the
  separate marker key :meth:`Keys.learned <streamlearn.featurestore.keys.Keys.learned>`.
* ``0x01`` compact: ``0x01, flags, layout digest (8 bytes), zigzag varint t, varint s``, then
  per model ``varint n``, a byte telling whether its probabilities are stored or are a binary
  classifier's ``(1 - score, score)``, and the predicted label (a tag byte: None/False/True,
  or int, float, str), then 2-bit kinds for every number (features in order, then per model
  its score and any stored probabilities), then the numbers, each in the narrowest form that decodes to the
  *same* float64 (int8, float32 or float64): learning uses exactly the served values.
  The layout, the names the record does not repeat (feature names in order, and per model
  its version and probability keys), is stored once under
  :meth:`Keys.layout <streamlearn.featurestore.keys.Keys.layout>` (content-addressed:
  the digest is a hash of it), written in the same atomic write as the first record that
  uses it, so a record never exists without its layout. Views with pass-through fields make
  a few layouts (one per set of names, e.g. per one-hot category); a process that has seen
  :data:`MAX_LAYOUTS` of them stores further new ones inline instead (flag bit 1), so an
  open-ended set of names cannot grow Redis by one key per event.
* ``0x02``: flags byte then JSON (orjson), for records the compact form cannot hold exactly
  (non-float features, a score that is not a float, exotic labels).

Flag bit 0 = "learned": the label of this event was learned (exactly once). Learning
rewrites the record with the bit set in the same atomic write that appends to the learn
log, instead of one more key per label (a marker key cost ~100 bytes of Redis; the bit
costs nothing). Records written before this module keep using their marker keys.
Two workers serving the same event at once (a rebalance with the old owner's batch still
in flight) both try to write its record: the write is *set if absent*, so the first
record stays and a flag the learner set on it in between is never cleared. (That double
serve can still double-count the entity's state, as before.)
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from streamlearn.featurestore.backend import WriteBatch
from streamlearn.streams.loop.serde import dumps, loads

if TYPE_CHECKING:
    from streamlearn.streams.loop.core import OnlineLoop

COMPACT = 0x01
JSON_FLAGGED = 0x02
LEARNED = 0x01
INLINE_LAYOUT = 0x02
MAX_LAYOUTS = 256  # distinct layouts one process interns in Redis; beyond: inline names
LAYOUT_TTL_FACTOR = 3  # a layout outlives the records that use it (refreshed while in use)

_F64 = struct.Struct("<d")
_PRED_NONE, _PRED_FALSE, _PRED_TRUE, _PRED_INT, _PRED_FLOAT, _PRED_STR = range(6)

Layout = tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]


class MissingLayout(KeyError):
    """A compact record names a layout this process has not loaded."""


# ------------------------------------------------------------------ varints
def _put_varint(out: bytearray, n: int) -> None:
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
# Numbers are packed with one struct call per record: the struct for a record's sequence of
# kinds (int8 'b', float32 'f', float64 'd') is cached, as is its 2-bit kind table.
_KIND_BITS = {"d": 0, "f": 1, "b": 2}
_BITS_KIND = "dfb"
_by_fmt: dict[str, tuple[struct.Struct, bytes]] = {}
_by_kinds: dict[tuple[bytes, int], struct.Struct] = {}
_f32_by_n: dict[int, struct.Struct] = {}
_CACHE_MAX = 4096


def _fmt_entry(fmt: str) -> tuple[struct.Struct, bytes]:
    got = _by_fmt.get(fmt)
    if got is None:
        kinds = bytearray((len(fmt) + 3) // 4)
        for i, k in enumerate(fmt):
            kinds[i >> 2] |= _KIND_BITS[k] << ((i & 3) << 1)
        if len(_by_fmt) >= _CACHE_MAX:
            _by_fmt.clear()
        got = _by_fmt[fmt] = (struct.Struct("<" + fmt), bytes(kinds))
    return got


def _pack_numbers(out: bytearray, nums: Sequence[float]) -> None:
    """2-bit kind per number (0 float64, 1 float32, 2 int8), then the numbers: each in the
    narrowest form that reads back as the same float64 (-0.0 stays float)."""
    n = len(nums)
    f32 = _f32_by_n.get(n)
    if f32 is None:
        f32 = _f32_by_n[n] = struct.Struct(f"<{n}f")
    try:
        r32: Sequence[float] | None = f32.unpack(f32.pack(*nums))
    except OverflowError:  # some value beyond float32's range: those stay float64
        r32 = None
    fmt = []
    args: list[float | int] = []
    for i, v in enumerate(nums):
        if v.is_integer() and -128.0 <= v <= 127.0 and (v or math.copysign(1.0, v) > 0):
            fmt.append("b")
            args.append(int(v))
        elif r32 is not None and r32[i] == v:
            fmt.append("f")
            args.append(v)
        else:
            fmt.append("d")
            args.append(v)
    st, kinds = _fmt_entry("".join(fmt))
    out += kinds
    out += st.pack(*args)


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


# A binary classifier's two probabilities are (1 - score, score) as River computes them: such
# a pair is stored as a form byte, not 16 bytes (decoded with the same float arithmetic).
_P_STORED, _P_COMPLEMENT_FIRST, _P_SCORE_FIRST = 0, 1, 2


def _same(a: Any, b: float) -> bool:
    return type(a) is float and a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _binary_form(score: float, pv: list[Any]) -> int:
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
    tag = b[pos]
    pos += 1
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


def layout_digest(layout: Layout) -> bytes:
    return hashlib.blake2b(orjson.dumps(layout), digest_size=8).digest()


def _layout_from_json(raw: bytes) -> Layout:
    names, models = orjson.loads(raw)
    return tuple(names), tuple((v, tuple(keys)) for v, keys in models)


class ServedCodec:
    """Encodes/decodes served records; interns layouts (per process cache + Redis keys)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.by_layout: dict[Layout, bytes] = {}
        self.by_digest: dict[bytes, Layout] = {}
        self.written: dict[bytes, float] = {}  # digest -> when this process last wrote its key
        self.clock = clock

    # ---------------------------------------------------------------- encode
    def encode(self, rec: dict[str, Any], learned: bool = False) -> tuple[bytes, bytes | None]:
        """The record's bytes and, if the record uses a layout this process has not written
        lately, that layout's digest (the caller writes it in the same batch: :func:`add_layouts`)."""
        try:
            return self._compact(rec, learned)
        except (TypeError, AttributeError, OverflowError, ValueError, UnicodeError):
            pass  # not representable exactly: JSON
        return bytes((JSON_FLAGGED, LEARNED if learned else 0)) + dumps(rec), None

    def _compact(self, rec: dict[str, Any], learned: bool) -> tuple[bytes, bytes | None]:
        x, t, per_model, s = rec["x"], rec["t"], rec["m"], rec["s"]
        if type(t) is not int or type(s) is not int or len(rec) != 4:
            raise TypeError("t and s must be ints")
        nums: list[float] = list(x.values())
        models = []
        forms = []
        for v, m in per_model.items():
            proba, score = m["proba"], m["score"]
            if type(score) is not float or type(m["n"]) is not int or m["n"] < 0 \
                    or type(proba) is not dict or len(m) != 4:
                raise TypeError("model entry not compact")
            nums.append(score)
            form = _binary_form(score, list(proba.values()))
            if not form:
                nums += proba.values()
            forms.append(form)
            models.append((v, tuple(proba)))
        for v in nums:
            if type(v) is not float:
                raise TypeError("not a float")
        layout: Layout = (tuple(x), tuple(models))
        digest = self.by_layout.get(layout)
        flags = LEARNED if learned else 0
        new: bytes | None = None
        if digest is None:
            if len(self.by_layout) >= MAX_LAYOUTS:
                flags |= INLINE_LAYOUT
            else:
                digest = layout_digest(layout)
                self.by_layout[layout] = digest
                self.by_digest[digest] = layout
        out = bytearray((COMPACT, flags))
        if digest is not None:
            out += digest
            if self.clock() - self.written.get(digest, -1e18) > 0:
                new = digest  # the caller decides with its TTL whether to (re)write it
        else:
            lj = orjson.dumps(layout)
            _put_varint(out, len(lj))
            out += lj
        _put_varint(out, _zigzag(t))
        _put_varint(out, s)
        for m, form in zip(per_model.values(), forms):
            _put_varint(out, m["n"])
            out.append(form)
            if not _put_pred(out, m["pred"]):
                raise TypeError("label type")
        _pack_numbers(out, nums)
        return bytes(out), new

    def layout_json(self, digest: bytes) -> bytes:
        return orjson.dumps(self.by_digest[digest])

    # ---------------------------------------------------------------- decode
    @staticmethod
    def needs(raw: bytes | None) -> bytes | None:
        """The layout digest a stored record needs, or None."""
        if raw and raw[0] == COMPACT and not raw[1] & INLINE_LAYOUT:
            return raw[2:10]
        return None

    def learn_layout(self, digest: bytes, raw: bytes) -> None:
        layout = _layout_from_json(raw)
        self.by_digest[digest] = layout
        self.by_layout.setdefault(layout, digest)

    def decode(self, raw: bytes) -> dict[str, Any]:
        first = raw[0]
        if first == COMPACT:
            return self._decode_compact(raw)
        if first == JSON_FLAGGED:
            return loads(raw[2:])
        return loads(raw)  # JSON written before the compact encoding

    def _decode_compact(self, b: bytes) -> dict[str, Any]:
        if b[1] & INLINE_LAYOUT:
            n, pos = _get_varint(b, 2)
            layout = _layout_from_json(b[pos:pos + n])
            pos += n
        else:
            layout = self.by_digest.get(b[2:10])  # type: ignore[assignment]
            if layout is None:
                raise MissingLayout(b[2:10].hex())
            pos = 10
        names, models = layout
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
        nx = len(names)
        x = dict(zip(names, nums[:nx]))
        i = nx
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
        return {"x": x, "t": _unzigzag(zt), "m": per_model, "s": s}

    # ---------------------------------------------------------------- the learned flag
    @staticmethod
    def is_learned(raw: bytes) -> bool:
        return raw[0] in (COMPACT, JSON_FLAGGED) and bool(raw[1] & LEARNED)

    @staticmethod
    def can_flag(raw: bytes) -> bool:
        return raw[0] in (COMPACT, JSON_FLAGGED)

    @staticmethod
    def flagged(raw: bytes) -> bytes:
        return raw[:1] + bytes((raw[1] | LEARNED,)) + raw[2:]


# ------------------------------------------------------------------ the loop's side
def codec(loop: OnlineLoop) -> ServedCodec:
    """The loop's codec (one per loop: its layout cache follows the loop's backend)."""
    c = loop.__dict__.get("_served_codec")
    if c is None:
        c = loop.__dict__["_served_codec"] = ServedCodec()
    return c


def encode_into(loop: OnlineLoop, wb: WriteBatch, eid: str, rec: dict[str, Any]) -> bytes:
    """Put the served record (and its layout, if new to this process lately) into ``wb``."""
    c = codec(loop)
    raw, new = c.encode(rec)
    # if absent: two workers serving one event at once (a rebalance) keep the first record,
    # so the second can never clear the learned flag the learner set on it in between
    wb.set_if_absent(loop.keys.served(eid), raw, loop.served_ttl_s)
    if new is not None:
        ttl = loop.served_ttl_s * LAYOUT_TTL_FACTOR if loop.served_ttl_s else 0
        wb.set(loop.keys.layout(new.hex()), c.layout_json(new), ttl)
        # rewritten when half a served TTL has passed, so it always outlives its records
        c.written[new] = c.clock() + (loop.served_ttl_s / 2 if loop.served_ttl_s else 1e18)
    return raw


def mark_learned(loop: OnlineLoop, wb: WriteBatch, eid: str, raw: bytes) -> None:
    """Record "learned" for ``eid`` in ``wb``: the record's flag, or an old record's marker key."""
    if ServedCodec.can_flag(raw):
        # a fresh TTL, as the marker key had: a duplicate label is recognised that long
        wb.set(loop.keys.served(eid), ServedCodec.flagged(raw), loop.served_ttl_s)
    else:
        wb.set(loop.keys.learned(eid), b"1", loop.served_ttl_s)


async def decode_many(loop: OnlineLoop, raws: Sequence[bytes | None], what: str) -> list[dict[str, Any] | None]:
    """Decode stored records, loading unknown layouts first (one read). A record whose layout
    is gone (it cannot be, short of a flushed Redis) decodes to None, like an expired one."""
    c = codec(loop)
    missing = list({d for d in map(c.needs, raws) if d is not None and d not in c.by_digest})
    if missing:
        got = await loop.io(lambda: loop.backend.read_many([loop.keys.layout(d.hex()) for d in missing]), what)
        for d, lj in zip(missing, got):
            if lj is not None:
                c.learn_layout(d, lj)
    out: list[dict[str, Any] | None] = []
    for raw in raws:
        try:
            out.append(None if raw is None else c.decode(raw))
        except MissingLayout:
            out.append(None)
    return out
