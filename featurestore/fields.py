"""Raw event fields with declared types, and the small helpers every block declaration uses.

A :class:`Field` says what one raw field is (numeric, boolean, categorical), how it is
encoded (a number, 0/1, one-hot or hashed into a fixed number of buckets) and what a
missing value becomes. Durations (``"10m"``, ``"1h"``) are parsed here, once, at
declaration time; hashing is blake2b, so a value lands in the same bucket in every
process (Python's ``hash()`` is salted per process).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from streamlearn.featurestore.errors import FeatureConfigError, FeatureError

EntityState = dict[str, Any]
FeatureVector = dict[str, float]

# ------------------------------------------------------------------ durations
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")  # declaration time only, never per event


def parse_duration(value: Any, path: str = "", *, strict: bool = False) -> float:
    """Seconds in a duration: ``"30s"``, ``"10m"``, ``"1h"``, ``"1d"``, ``"1w"``, ``"250ms"``.

    From Python a :class:`~datetime.timedelta` or a number of seconds is accepted too;
    ``strict`` (the TOML path) takes strings only, so a bare ``5`` is not guessed at.

    >>> parse_duration("10m"), parse_duration("1.5h"), parse_duration(timedelta(days=1))
    (600.0, 5400.0, 86400.0)
    >>> parse_duration(5, "half_lives[0]", strict=True)
    Traceback (most recent call last):
    ...
    streamlearn.featurestore.errors.FeatureConfigError: half_lives[0]: expected durations like "1h", got 5
    """
    secs: float | None = None
    if isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if m:
            secs = float(m.group(1)) * _UNITS[m.group(2)]
    elif not strict and isinstance(value, timedelta):
        secs = value.total_seconds()
    elif not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value)
    if secs is None:
        raise FeatureConfigError(path, f'expected durations like "1h", got {value!r}')
    if not (math.isfinite(secs) and secs > 0):
        raise FeatureConfigError(path, f"a duration must be positive, got {value!r}")
    # whole milliseconds, the resolution of event time: "1.1h" is exactly 3960 s, and its
    # canonical label ("66m") parses back to the same number, so the fingerprint round-trips
    ms = round(secs * 1000.0)
    if ms < 1 or abs(secs * 1000.0 - ms) > 1e-6 * ms:
        raise FeatureConfigError(path, f"a duration must be a whole number of milliseconds, got {value!r}")
    return ms / 1000.0


def duration_label(secs: float) -> str:
    """The canonical short label of a duration, used in feature names and the fingerprint.

    >>> duration_label(3600.0), duration_label(5400.0), duration_label(86400.0 * 7), duration_label(0.25)
    ('1h', '90m', '7d', '250ms')
    """
    ms = round(secs * 1000.0)
    for unit in ("d", "h", "m", "s"):
        size = round(_UNITS[unit] * 1000.0)
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def check_durations(values: Any, path: str) -> tuple[tuple[str, float], ...]:
    if isinstance(values, (str, timedelta, int, float)):
        values = [values]
    out = tuple((duration_label(s), s) for s in (parse_duration(v, f"{path}[{i}]") for i, v in enumerate(values)))
    if not out:
        raise FeatureConfigError(path, "at least one duration is needed")
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise FeatureConfigError(path, f"repeated duration in {labels}")
    return out


# ------------------------------------------------------------------ stable hashing
_HASH_CACHE: dict[str, int] = {}
_HASH_CACHE_MAX = 16384  # categorical values repeat: hashing each once is the hot-path saving


def stable_hash(s: str) -> int:
    """A 53-bit hash of ``s`` that is the same in every process (blake2b, not ``hash()``).

    53 bits so it stays exact as a JSON number anywhere.

    >>> stable_hash("fuel") == stable_hash("fuel") and 0 <= stable_hash("fuel") < 2**53
    True
    """
    h = _HASH_CACHE.get(s)
    if h is None:
        if len(_HASH_CACHE) >= _HASH_CACHE_MAX:
            _HASH_CACHE.clear()
        h = int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") >> 11
        _HASH_CACHE[s] = h
    return h


def check_names(values: Any, path: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise FeatureConfigError(path, f"expected a field name or a list of them, got {values!r}")
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise FeatureConfigError(f"{path}[{i}]", f"expected a field name, got {v!r}")
    if not values and not allow_empty:
        raise FeatureConfigError(path, "at least one field is needed")
    if len(set(values)) != len(values):
        raise FeatureConfigError(path, f"repeated field in {list(values)}")
    return tuple(values)


def check_choices(values: Any, allowed: Sequence[str], path: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise FeatureConfigError(path, f"expected a non-empty list of {list(allowed)}, got {values!r}")
    for i, v in enumerate(values):
        if v not in allowed:
            raise FeatureConfigError(f"{path}[{i}]", f"unknown {v!r}; expected one of {list(allowed)}")
    if len(set(values)) != len(values):
        raise FeatureConfigError(path, f"repeated value in {list(values)}")
    return tuple(values)


def check_int(value: Any, path: str, low: int = 1, high: int = 1 << 20) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FeatureConfigError(path, f"expected an integer in [{low}, {high}], got {value!r}")
    return value


def check_text(value: Any, path: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise FeatureConfigError(path, f"expected a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def as_number(v: Any, what: str) -> float:
    """A raw value an aggregate reads as a number (booleans as 0/1); anything else is refused."""
    if v.__class__ is float or v.__class__ is int:
        return float(v)
    if v is True or v is False:
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    raise FeatureError(f"{what} needs a number, got {type(v).__name__} {v!r}")


# ------------------------------------------------------------------ raw fields
FIELD_TYPES = ("numeric", "boolean", "categorical")
MISSING = ("skip", "zero", "indicator", "fill")
ENCODINGS = ("onehot", "hash")

Encoder = Callable[[Mapping[str, Any], FeatureVector], None]


class Field:
    """A raw event field with a declared type, its encoding and what a missing value becomes.

    - ``numeric``: the number as is (a boolean as 0/1); ``boolean``: 1/0 (a number: nonzero is 1);
      ``categorical``: one-hot ``name=value`` or, with ``encoding="hash"``, one of ``buckets``
      features ``name#k`` (stable blake2b hash, bounded vocabulary).
    - ``missing`` (the field absent or null): ``skip`` (no feature), ``zero`` (0.0; not for
      categoricals), ``indicator`` (0.0 plus ``name_missing`` = 1, which is 0 when present),
      ``fill`` (the ``fill`` value: a number, or a category for categoricals).
    - A value of the wrong type (text for a numeric) raises :class:`FeatureError`, so the event
      is dead-lettered instead of silently featurised wrong.

    >>> x = {}
    >>> for f in (Field("amount", missing="indicator"), Field("ok", "boolean"), Field("shop", "categorical")):
    ...     f.encoder()({"ok": True, "shop": "fuel"}, x)
    >>> x
    {'amount': 0.0, 'amount_missing': 1.0, 'ok': 1.0, 'shop=fuel': 1.0}
    >>> x = {}
    >>> Field("shop", "categorical", encoding="hash", buckets=8).encoder()({"shop": "fuel"}, x)
    >>> list(x)
    ['shop#7']
    """

    def __init__(self, name: str, type: str = "numeric", *, missing: str = "skip", fill: Any = None,
                 encoding: str = "onehot", buckets: int = 0) -> None:
        self.name = check_text(name, "name")
        if type not in FIELD_TYPES:
            raise FeatureConfigError("type", f"unknown {type!r}; expected one of {list(FIELD_TYPES)}")
        self.type = type
        if missing not in MISSING:
            raise FeatureConfigError("missing", f"unknown {missing!r}; expected one of {list(MISSING)}")
        if missing == "zero" and type == "categorical":
            raise FeatureConfigError("missing", "'zero' has no meaning for a categorical; use skip, indicator or fill")
        self.missing = missing
        if missing == "fill":
            ok = isinstance(fill, str) if type == "categorical" else (
                isinstance(fill, (int, float)) and not isinstance(fill, bool) and math.isfinite(fill))
            if not ok:
                want = "a category (string)" if type == "categorical" else "a finite number"
                raise FeatureConfigError("fill", f"missing = 'fill' needs {want}, got {fill!r}")
        elif fill is not None:
            raise FeatureConfigError("fill", "only used with missing = 'fill'")
        self.fill = fill
        if type != "categorical":
            if encoding != "onehot" or buckets:
                raise FeatureConfigError("encoding", "only categorical fields have an encoding")
        elif encoding not in ENCODINGS:
            raise FeatureConfigError("encoding", f"unknown {encoding!r}; expected one of {list(ENCODINGS)}")
        elif encoding == "hash":
            check_int(buckets, "buckets", 2, 1 << 16)
        elif buckets:
            raise FeatureConfigError("buckets", "only used with encoding = 'hash'")
        self.encoding = encoding
        self.buckets = buckets

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "missing": self.missing}
        if self.fill is not None:
            out["fill"] = self.fill
        if self.type == "categorical":
            out["encoding"] = self.encoding
            if self.encoding == "hash":
                out["buckets"] = self.buckets
        return out

    def features(self) -> list[tuple[str, str]]:
        """(feature name or pattern, kind) this field produces."""
        n = self.name
        if self.type == "categorical":
            out = [(f"{n}=<value>", "one-hot")] if self.encoding == "onehot" else [
                (f"{n}#<0..{self.buckets - 1}>", f"hashed({self.buckets})")]
        else:
            out = [(n, self.type)]
        if self.missing == "indicator":
            out.append((f"{n}_missing", "indicator"))
        return out

    def static_names(self) -> list[str]:
        out = [] if self.type == "categorical" else [self.name]
        return out + ([f"{self.name}_missing"] if self.missing == "indicator" else [])

    def encoder(self) -> Encoder:
        """A closure writing this field's features into a vector: all decisions made here, once."""
        name, missing, fill = self.name, self.missing, self.fill
        ind = f"{name}_missing" if missing == "indicator" else None
        if self.type == "categorical":
            return self._categorical_encoder(ind)
        as_bool = self.type == "boolean"
        what = f"field {name!r} is declared {self.type} but"
        absent = 0.0 if missing in ("zero", "indicator") else (float(fill) if missing == "fill" else None)

        def encode(raw: Mapping[str, Any], x: FeatureVector) -> None:
            v = raw.get(name)
            if v is None:
                if absent is not None:
                    x[name] = absent
                if ind is not None:
                    x[ind] = 1.0
                return
            c = v.__class__
            if c is float or c is int:
                x[name] = (1.0 if v else 0.0) if as_bool else float(v)
            elif c is bool:
                x[name] = 1.0 if v else 0.0
            elif isinstance(v, (int, float)):
                x[name] = (1.0 if v else 0.0) if as_bool else float(v)
            else:
                raise FeatureError(f"{what} got {type(v).__name__} {v!r}")
            if ind is not None:
                x[ind] = 0.0

        return encode

    def _categorical_encoder(self, ind: str | None) -> Encoder:
        name, fill = self.name, self.fill
        cache: dict[str, str] = {}  # value -> feature name; bounded like the hash cache
        if self.encoding == "hash":
            buckets = self.buckets
            slots = [f"{name}#{k}" for k in range(buckets)]

            def feature(v: str) -> str:
                return slots[stable_hash(f"{name}={v}") % buckets]
        else:
            def feature(v: str) -> str:
                return f"{name}={v}"
        absent = feature(fill) if fill is not None else None

        def encode(raw: Mapping[str, Any], x: FeatureVector) -> None:
            v = raw.get(name)
            if v is None:
                if absent is not None:
                    x[absent] = 1.0
                if ind is not None:
                    x[ind] = 1.0
                return
            s = v if v.__class__ is str else str(v)
            f = cache.get(s)
            if f is None:
                if len(cache) >= _HASH_CACHE_MAX:
                    cache.clear()
                f = cache[s] = feature(s)
            x[f] = 1.0
            if ind is not None:
                x[ind] = 0.0

        return encode

    def __repr__(self) -> str:
        return f"Field({', '.join(f'{k}={v!r}' for k, v in self.spec().items())})"


def require_unique(names: Iterable[tuple[str, str]], what: str) -> None:
    """Raise if two (name, where) pairs share a name."""
    seen: dict[str, str] = {}
    for name, where in names:
        if name in seen:
            raise FeatureConfigError(where, f"{what} {name!r} is also used by {seen[name]}; "
                                            "give one a different name, 'prefix' or 'key'")
        seen[name] = where
