"""The one Avro codec: the schemas, wire encoding and decoding.

Wire format (any Kafka client can produce or consume it):

* **Avro single-object encoding** (the Avro spec's own framing): the two bytes ``C3 01``,
  the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema, then the Avro
  binary body. The fingerprint names the writer schema, so readers resolve it against
  their own version (schema evolution) without a registry service.
* **JSON** (input topics only, for hand-typed ``kcat -P`` messages): one UTF-8 JSON object
  per message, the same fields as the Avro record; validated against the same schema.

>>> codec = AvroCodec.default()
>>> data = codec.encode("feedback", {"event_id": "e1", "label": True, "label_time": 5})
>>> data[:2] == MAGIC
True
>>> codec.decode("feedback", data)
{'event_id': 'e1', 'label': True, 'label_time': 5}
>>> codec.decode("feedback", b'{"event_id": "e1", "label": 1, "label_time": 5}')["label"]
1
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

MAGIC = b"\xc3\x01"
_NO_READER: Any = object()
HEADER_LEN = 10
SCHEMA_DIR = Path(__file__).parent


class InvalidRecord(ValueError):
    """A message that cannot be accepted. ``reason`` is a stable code for dead letters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    schema: dict[str, Any]  # parsed by fastavro
    fingerprint: bytes

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def _fingerprint(parsed: dict[str, Any]) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class AvroCodec:
    """Known schema versions per subject; the highest version is the one written."""

    def __init__(self) -> None:
        self._current: dict[str, SchemaVersion] = {}
        self._by_fp: dict[bytes, SchemaVersion] = {}
        self._readers: dict[str, Any] = {}  # subject -> compiled reader of its current schema (None: none)

    @classmethod
    def default(cls) -> AvroCodec:
        """The schemas shipped in this package (``<subject>.v<N>.avsc``)."""
        return _DEFAULT

    @classmethod
    def from_directory(cls, directory: Path) -> AvroCodec:
        reg = cls()
        for path in sorted(directory.glob("*.v*.avsc")):
            subject, version = path.name[: -len(".avsc")].rsplit(".v", 1)
            reg.register(subject, int(version), json.loads(path.read_text()))
        return reg

    def register(self, subject: str, version: int, schema: dict[str, Any]) -> SchemaVersion:
        # the fingerprint comes from the plain parse; readers and writers get the hinted one,
        # which fastavro recognises as parsed (without the hint it re-parses on every call)
        fp = _fingerprint(fastavro.parse_schema(schema, _write_hint=False))
        sv = SchemaVersion(subject, version, fastavro.parse_schema(schema), fp)
        self._by_fp[sv.fingerprint] = sv
        cur = self._current.get(subject)
        if cur is None or version > cur.version:
            self._current[subject] = sv
            self._readers.pop(subject, None)
        return sv

    def current(self, subject: str) -> SchemaVersion:
        return self._current[subject]

    def subjects(self) -> list[str]:
        return sorted(self._current)

    def writer(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fp.get(fp)

    # --- encode ------------------------------------------------------------------------
    def encode(self, subject: str, record: dict[str, Any]) -> bytes:
        sv = self._current[subject]
        buf = io.BytesIO()
        buf.write(sv.header)
        fastavro.schemaless_writer(buf, sv.schema, record)
        return buf.getvalue()

    def encoder(self, subject: str) -> Callable[[dict[str, Any]], bytes]:
        """A fast encoder bound to the current schema (no dict lookups per record).

        Flat schemas (all shipped ones) get a writer compiled for the schema (:func:`compile_flat`):
        fastavro's bytes, about twice as fast (the worker encodes a record per prediction)."""
        sv = self._current[subject]
        schema, header, writer = sv.schema, sv.header, fastavro.schemaless_writer

        def encode(record: dict[str, Any]) -> bytes:
            buf = io.BytesIO()
            buf.write(header)
            writer(buf, schema, record)
            return buf.getvalue()

        return compile_flat(schema, header, encode) or encode

    # --- decode ------------------------------------------------------------------------
    def decode(self, subject: str, data: bytes) -> dict[str, Any]:
        """Decode Avro single-object or JSON into a record of the current schema version.

        Raises :class:`InvalidRecord` with a reason code on anything else.
        """
        reader = self._current[subject]
        if data[:2] == MAGIC:
            if len(data) < HEADER_LEN:
                raise InvalidRecord("truncated", f"{len(data)} bytes is shorter than the Avro header")
            writer = self._by_fp.get(data[2:HEADER_LEN])
            if writer is None:
                raise InvalidRecord(
                    "unknown_schema", f"writer fingerprint {data[2:HEADER_LEN].hex()} is not registered"
                )
            if writer.subject != subject:
                raise InvalidRecord(
                    "wrong_subject", f"message written with {writer.subject} v{writer.version}, "
                    f"expected {subject}"
                )
            if writer is reader and type(data) is bytes:
                read = self._readers.get(subject, _NO_READER)
                if read is _NO_READER:
                    read = self._readers[subject] = compile_flat_reader(reader.schema)
                if read is not None:
                    try:
                        record, end = read(data, HEADER_LEN)
                    except _FAST_READ_ERRORS:
                        pass  # fastavro's record, or its error, below
                    else:
                        if end != len(data):
                            raise InvalidRecord("bad_avro", f"{len(data) - end} trailing bytes after the record")
                        return record
            body = io.BytesIO(data)
            body.seek(HEADER_LEN)
            try:
                record = fastavro.schemaless_reader(
                    body, writer.schema, reader.schema if writer is not reader else None
                )
            except Exception as exc:  # fastavro raises many types on corrupt bodies
                raise InvalidRecord("bad_avro", f"{type(exc).__name__}: {exc}") from None
            if body.tell() != len(data):
                raise InvalidRecord("bad_avro", f"{len(data) - body.tell()} trailing bytes after the record")
            return record
        stripped = data.lstrip()
        if stripped[:1] == b"{":
            try:
                record = json.loads(stripped, object_pairs_hook=_unique_keys)
            except InvalidRecord:
                raise
            except (UnicodeDecodeError, ValueError) as exc:
                raise InvalidRecord("invalid_json", str(exc)[:500]) from None
            except RecursionError:  # the C scanner bails out cleanly on deep nesting
                raise InvalidRecord("invalid_json", "nested too deeply") from None
            return self.conform(subject, record)
        raise InvalidRecord("unknown_format", "neither Avro single-object (C3 01 ...) nor a JSON object")

    def current_reader(self, subject: str) -> tuple[SchemaVersion, Any]:
        """The subject's current schema version and the reader :meth:`decode` uses for a message
        written with it (``read(data, HEADER_LEN) -> (record, end)``, raising one of
        ``FAST_READ_ERRORS`` where fastavro must read), or None if the schema has none."""
        sv = self._current[subject]
        read = self._readers.get(subject, _NO_READER)
        if read is _NO_READER:
            read = self._readers[subject] = compile_flat_reader(sv.schema)
        return sv, read

    def conform(self, subject: str, record: Any) -> dict[str, Any]:
        """Validate a Python/JSON record against the current schema, filling defaults."""
        sv = self._current[subject]
        if not isinstance(record, dict):
            raise InvalidRecord("schema", f"expected a JSON object, got {type(record).__name__}")
        fields = sv.schema["fields"]
        names = {f["name"] for f in fields}
        extra = sorted(set(record) - names)
        if extra:
            raise InvalidRecord("schema", f"unknown field(s) {extra} for {subject} v{sv.version}")
        out = {}
        for f in fields:
            if f["name"] in record:
                out[f["name"]] = record[f["name"]]
            elif "default" in f:
                out[f["name"]] = f["default"]
            else:
                raise InvalidRecord("schema", f"missing required field '{f['name']}'")
        try:
            validate(out, sv.schema, raise_errors=True)
        except ValidationError as exc:
            raise InvalidRecord("schema", _describe(exc)) from None
        _check_encodable(out, subject)
        return out


# ------------------------------------------------------------------ compiled writers
# A flat record schema (primitives, unions of primitives, maps of either) compiles to one
# Python function writing every field inline: fastavro's bytes at about half its cost, since
# fastavro dispatches on the schema per field and tries union branches one by one. Only the
# plain case is compiled: a value of any other type than the one its branch takes (numpy
# scalars, an int for a double, a bool for a long, a tuple naming a union branch, a str
# subclass), an int out of range, a lone surrogate or a missing field send the whole record
# to fastavro, so what comes out (or the error raised) is fastavro's.
class _Slow(Exception):
    pass


_PACK_DOUBLE = struct.Struct("<d").pack
_VARINT1 = [bytes([i]) for i in range(128)]


def _zigzag(n: int) -> bytes:
    """An Avro int/long (range-checked by the caller): zigzag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    if n < 128:
        return _VARINT1[n]
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# the Python type each primitive takes in the compiled path, and the statement writing it
_PLAIN: dict[str, tuple[type, str]] = {
    "null": (type(None), ""),
    "boolean": (bool, "w(b'\\x01' if {v} else b'\\x00')"),
    "int": (int, "if not -2147483648 <= {v} <= 2147483647: raise _Slow\nw(_zigzag({v}))"),
    "long": (int, "if not -9223372036854775808 <= {v} <= 9223372036854775807: raise _Slow\nw(_zigzag({v}))"),
    "double": (float, "w(_PACK_DOUBLE({v}))"),
    "string": (str, "_b = {v}.encode()\nw(_zigzag(len(_b)))\nw(_b)"),
    "bytes": (bytes, "w(_zigzag(len({v})))\nw({v})"),
}


def _branch_for(branches: list[str], t: type) -> int | None:
    """The union branch fastavro picks for a value of exact type ``t`` (the first that
    validates), where it does not depend on the value; None: left to fastavro."""
    takes = {"null": (type(None),), "boolean": (bool,), "int": (int,), "long": (int,), "double": (int, float),
             "string": (str,), "bytes": (bytes,)}
    first = next((i for i, b in enumerate(branches) if t in takes[b]), None)
    if first is None or _PLAIN[branches[first]][0] is not t or (t is int and branches[first] != "long"):
        return None  # an int meeting "int" (range-dependent) or "double" (written as a float) first
    return first


def _indent(code: str, n: int) -> str:
    return "\n".join(" " * n + line for line in code.splitlines())


def _value_code(schema: Any, v: str, depth: int) -> str | None:
    """Statements writing the value named ``v`` of ``schema`` (None: not compilable)."""
    if isinstance(schema, dict) and set(schema) == {"type"}:
        schema = schema["type"]
    if isinstance(schema, str):
        if schema not in _PLAIN:
            return None
        t, code = _PLAIN[schema]
        check = f"if type({v}) is not {t.__name__ if t is not type(None) else 'type(None)'}: raise _Slow"
        return check + ("\n" + code.format(v=v) if code else "")
    if isinstance(schema, list):
        if not all(isinstance(b, str) and b in _PLAIN for b in schema):
            return None
        lines, first = [f"_t = type({v})"], True
        for t in (type(None), bool, int, float, str, bytes):
            i = _branch_for(schema, t)
            if i is None:
                continue
            body = f"w({_zigzag(i)!r})"
            code = _PLAIN[schema[i]][1].format(v=v)
            lines.append(f"{'if' if first else 'elif'} _t is {t.__name__ if t is not type(None) else 'type(None)'}:")
            lines.append(_indent(body + ("\n" + code if code else ""), 4))
            first = False
        lines.append("else:\n    raise _Slow" if not first else "raise _Slow")
        return "\n".join(lines)
    if isinstance(schema, dict) and schema.get("type") == "map" and set(schema) == {"type", "values"}:
        k, x = f"_k{depth}", f"_x{depth}"
        inner = _value_code(schema["values"], x, depth + 1)
        if inner is None:
            return None
        return "\n".join([
            f"if type({v}) is not dict: raise _Slow",
            f"if {v}:",
            f"    w(_zigzag(len({v})))",
            f"    for {k}, {x} in {v}.items():",
            _indent(_value_code("string", k, depth + 1) or "", 8),
            _indent(inner, 8),
            "w(b'\\x00')",
        ])
    return None


def compile_flat(schema: dict[str, Any], header: bytes,
                 slow: Callable[[dict[str, Any]], bytes]) -> Callable[[dict[str, Any]], bytes] | None:
    """An encoder writing ``header`` + the Avro body of a record of ``schema`` byte for byte as
    fastavro does, handing records it is not sure about to ``slow``; None if ``schema`` is not
    a flat record (see above)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    body = []
    for i, f in enumerate(schema["fields"]):
        code = _value_code(f["type"], f"_f{i}", 0)
        if code is None or not f["name"].isidentifier():
            return None
        body.append(f"_f{i} = record[{f['name']!r}]\n{code}")
    src = ("def encode(record):\n"
           "    parts = [_HEADER]\n    w = parts.append\n    try:\n"
           + _indent("\n".join(body), 8) +
           "\n    except (_Slow, KeyError, TypeError, UnicodeEncodeError):\n        return _SLOW(record)\n"
           "    return b''.join(parts)\n")
    env = {"_Slow": _Slow, "_zigzag": _zigzag, "_PACK_DOUBLE": _PACK_DOUBLE,
           "_HEADER": header, "_SLOW": slow}
    exec(compile(src, f"<avro writer {schema.get('name')}>", "exec"), env)  # noqa: S102 - our own source
    encode = env["encode"]
    encode.source = src  # for a reader of tracebacks
    return encode


# ------------------------------------------------------------------ compiled readers
# The same flat schemas compile to one function reading a body: fastavro's record (same
# values, types and key order) at a fraction of its cost per message, since fastavro builds
# a decoder and dispatches on the schema per field. Only well-formed plain input is read
# here: a long of 10 varint bytes, a boolean byte other than 0/1, a negative length, bytes
# that end early or are not UTF-8 where a string is, an unknown union branch all send the
# message to fastavro, so what comes out (or the error raised) is fastavro's.
_UNPACK_DOUBLE = struct.Struct("<d").unpack_from
_UNPACK_FLOAT = struct.Struct("<f").unpack_from


def _varint_rest(b: bytes, pos: int, c: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``c`` (>= 0x80) was read; at most 9 bytes in all
    (63 bits: no overflow to mimic), else fastavro reads it."""
    n, shift = c & 0x7F, 7
    while True:
        c = b[pos]
        pos += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, pos
        shift += 7
        if shift >= 63:
            raise _Slow


def _long_code(v: str) -> str:
    return (f"_c = b[pos]\npos += 1\nif _c < 0x80:\n    {v} = (_c >> 1) ^ -(_c & 1)\n"
            f"else:\n    {v}, pos = _varint_rest(b, pos, _c)\n    {v} = ({v} >> 1) ^ -({v} & 1)")


_LENGTH = "\nif _n < 0 or pos + _n > len(b): raise _Slow\n"
_READ: dict[str, str] = {
    "null": "{v} = None",
    "boolean": "_c = b[pos]\nif _c > 1: raise _Slow\n{v} = _c == 1\npos += 1",
    "int": _long_code("{v}") + "\nif not -2147483648 <= {v} <= 2147483647: raise _Slow",
    "long": _long_code("{v}"),
    "double": "{v}, = _UNPACK_DOUBLE(b, pos)\npos += 8",
    "float": "{v}, = _UNPACK_FLOAT(b, pos)\npos += 4",
    "string": _long_code("_n") + _LENGTH + "{v} = b[pos:pos + _n].decode()\npos += _n",
    "bytes": _long_code("_n") + _LENGTH + "{v} = b[pos:pos + _n]\npos += _n",
}


def _read_code(schema: Any, v: str, depth: int) -> str | None:
    """Statements reading a value of ``schema`` into the name ``v`` (None: not compilable)."""
    if isinstance(schema, dict) and set(schema) == {"type"}:
        schema = schema["type"]
    if isinstance(schema, str):
        return _READ[schema].format(v=v) if schema in _READ else None
    if isinstance(schema, list):
        if not all(isinstance(b, str) and b in _READ for b in schema):
            return None
        i = f"_i{depth}"
        lines = [_long_code(i)]
        for k, branch in enumerate(schema):
            lines.append(f"{'if' if k == 0 else 'elif'} {i} == {k}:")
            lines.append(_indent(_READ[branch].format(v=v), 4))
        lines.append("else:\n    raise _Slow" if schema else "raise _Slow")
        return "\n".join(lines)
    if isinstance(schema, dict) and schema.get("type") == "map" and set(schema) == {"type", "values"}:
        m, k, x, cnt = f"_m{depth}", f"_k{depth}", f"_x{depth}", f"_n{depth}"
        inner = _read_code(schema["values"], x, depth + 1)
        if inner is None:
            return None
        return "\n".join([
            f"{m} = {{}}",
            "while True:",
            _indent(_long_code(cnt), 4),
            f"    if {cnt} == 0: break",
            f"    if {cnt} < 0:",  # a block with its size in bytes (skipped: not needed)
            f"        {cnt} = -{cnt}",
            _indent(_long_code("_skip"), 8),
            f"    for _ in range({cnt}):",
            _indent(_READ["string"].format(v=k), 8),
            _indent(inner, 8),
            f"        {m}[{k}] = {x}",
            f"{v} = {m}",
        ])
    return None


def compile_flat_reader(schema: dict[str, Any]) -> Callable[[bytes, int], tuple[dict[str, Any], int]] | None:
    """``read(body, pos) -> (record, end)``: the record of ``schema`` at ``pos`` as fastavro
    reads it, raising :class:`_Slow` (or IndexError, struct.error, UnicodeDecodeError) for
    anything it leaves to fastavro (see above); None if ``schema`` is not a flat record."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    body, names = [], []
    for i, f in enumerate(schema["fields"]):
        code = _read_code(f["type"], f"_f{i}", 0)
        if code is None:
            return None
        body.append(code)
        names.append(f"{f['name']!r}: _f{i}")
    src = ("def read(b, pos):\n" + _indent("\n".join(body), 4)
           + "\n    return {" + ", ".join(names) + "}, pos\n")
    env = {"_Slow": _Slow, "_varint_rest": _varint_rest, "_UNPACK_DOUBLE": _UNPACK_DOUBLE,
           "_UNPACK_FLOAT": _UNPACK_FLOAT}
    exec(compile(src, f"<avro reader {schema.get('name')}>", "exec"), env)  # noqa: S102 - our own source
    read = env["read"]
    read.source = src
    return read


_FAST_READ_ERRORS = (_Slow, IndexError, struct.error, UnicodeDecodeError)
FAST_READ_ERRORS = _FAST_READ_ERRORS


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # a repeated key would silently drop one of its values
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise InvalidRecord("invalid_json", f"duplicate key {dup[:100]!r}")
    return out


_LONG = range(-(2**63), 2**63)


def _check_encodable(record: dict[str, Any], subject: str) -> None:
    """What validation lets through but Avro (and every consumer) cannot represent: strings with
    lone surrogates (JSON allows ``"\\ud800"``; UTF-8 does not) and integers beyond 64 bits
    (fastavro accepts them for ``double``, then they overflow a float)."""
    stack: list[tuple[str, Any]] = [(subject, record)]  # validated records are shallow; no recursion
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRecord("schema", f"{path[:200]} is not valid Unicode (lone surrogate)") from None
        elif isinstance(value, int) and not isinstance(value, bool):
            if value not in _LONG:
                raise InvalidRecord("schema", f"{path[:200]} is outside the 64-bit integer range")
        elif isinstance(value, dict):
            for k, v in value.items():
                stack.append((f"{path}.<key>", k))
                stack.append((f"{path}.{k}" if isinstance(k, str) and k.isprintable() else f"{path}.<?>", v))


def _describe(exc: ValidationError) -> str:
    # fastavro lists every failed union branch; the field path is what a user needs.
    errs = getattr(exc, "errors", None) or [str(exc)]
    paths = sorted({str(e).split(" is not ")[0].split(" is <")[0] for e in errs})
    return "invalid value for " + ", ".join(p.strip() for p in paths)[:500]


_DEFAULT = AvroCodec.from_directory(SCHEMA_DIR)
