"""Building blocks of a feature view: typed raw fields and per-entity event-time aggregates.

A :class:`~streamlearn.featurestore.definitions.FeatureView` is a list of raw
:class:`Field` declarations plus a list of blocks. Every block is a small pure step over
(event, the entity's state *before* the event): it writes its features into the vector
and its part of the entity's next state under its own key, so blocks compose freely and
the state layout follows from the declaration.

The view hands every block the entity's clock, kept once per entity (``n`` events seen,
``t`` the latest event time in seconds): ``dt`` is the time since that latest event,
never negative (an out-of-order event does not rewind the clock; it is aggregated as if
it happened at the latest time seen), and ``te`` the effective event time. Nothing reads
a wall clock, so replays reproduce every value.

Blocks (and their TOML ``kind``):

- :class:`EntityStats` (``entity``): the original ``entity_v1`` aggregates, bit for bit.
- :class:`Decayed` (``decayed``): exponentially decayed count/sum/mean/var/std per
  half-life, and the current value against that history (``zscore``, ``logratio``).
- :class:`Window` (``window``): count/sum/mean/min/max over a sliding event-time window.
- :class:`Count` (``count``) and :class:`SinceLast` (``since_last``): from the clock alone.
- :class:`Distinct` (``distinct``): approximate distinct count of a categorical field.
- :class:`Function` (``function``): a user function for anything else.

>>> view_state = {}
>>> b = Decayed("amount", half_lives=["1h"], stats=["count", "mean"])
>>> x, new = {}, {}
>>> b.apply({}, {"amount": 10.0}, 0.0, 0.0, 0, view_state, x, new)
>>> x
{'ent_count_hl1h': 0.0, 'ent_amount_mean_hl1h': 0.0}
>>> state, x, new = new, {}, {}
>>> b.apply({}, {"amount": 30.0}, 3600.0, 3600.0, 1, state, x, new)
>>> x  # one prior event, decayed by one half-life
{'ent_count_hl1h': 0.5, 'ent_amount_mean_hl1h': 10.0}
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from streamlearn.featurestore.errors import FeatureConfigError, FeatureError

EntityState = dict[str, Any]
FeatureVector = dict[str, float]

_LN2 = math.log(2.0)
_NEG_LN2 = -_LN2  # exact negation: -_LN2 * dt / h is the legacy expression, evaluated identically
_TINY = 1e-12  # below this decayed weight the history is treated as empty (legacy threshold)
_ZCLIP = 100.0  # a z-score against a near-constant history is clipped: huge inputs derail SGD

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
    return secs


def duration_label(secs: float) -> str:
    """The canonical short label of a duration, used in feature names and the fingerprint.

    >>> duration_label(3600.0), duration_label(5400.0), duration_label(86400.0 * 7), duration_label(0.25)
    ('1h', '90m', '7d', '250ms')
    """
    for unit in ("d", "h", "m", "s"):
        q = secs / _UNITS[unit]
        if q >= 1 and q == int(q):
            return f"{int(q)}{unit}"
    ms = secs * 1000.0
    return f"{int(ms)}ms" if ms == int(ms) else f"{secs!r}s"


def _durations(values: Any, path: str) -> tuple[tuple[str, float], ...]:
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


def _names(values: Any, path: str, *, allow_empty: bool = False) -> tuple[str, ...]:
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


def _choices(values: Any, allowed: Sequence[str], path: str) -> tuple[str, ...]:
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


def _positive_int(value: Any, path: str, low: int = 1, high: int = 1 << 20) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FeatureConfigError(path, f"expected an integer in [{low}, {high}], got {value!r}")
    return value


def _text(value: Any, path: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise FeatureConfigError(path, f"expected a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def _number(v: Any, what: str) -> float:
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
        self.name = _text(name, "name")
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
            _positive_int(buckets, "buckets", 2, 1 << 16)
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


# ------------------------------------------------------------------ blocks
class Block:
    """One composable step of a view. Subclasses set ``kind`` and implement :meth:`apply`.

    ``key`` names the part of the entity state the block owns (``None``: it keeps none);
    ``uses_clock`` says it reads ``n``/``dt``, so the view keeps the entity clock for it.
    """

    kind = ""
    key: str | None = None
    uses_clock = True
    trending: frozenset[str] = frozenset()

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        """Write features of ``event`` into ``x`` and this block's next state into ``new``.

        ``state`` is the entity's whole state before the event (read only: never mutate it);
        ``te`` the effective event time in seconds, ``dt`` seconds since the entity's latest
        event (0 for its first), ``n`` events the entity had before this one.
        """
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def features(self) -> list[tuple[str, str]]:
        """(feature name or pattern, kind) for ``describe``; static names are checked for clashes."""
        return []

    def state_keys(self) -> tuple[str, ...]:
        return (self.key,) if self.key else ()

    def reads(self) -> tuple[str, ...]:
        """Raw fields this block reads (checked against sample events)."""
        return ()

    def code(self) -> dict[str, str]:
        """Import path -> hash of the source of user code the block runs (for the fingerprint)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.spec().items() if k != 'kind')})"


class EntityStats(Block):
    """The original ``entity_v1`` aggregates, reproduced bit for bit on the same state keys.

    Features: ``ent_count``, ``ent_log_count``, ``ent_secs_since_last``,
    ``ent_log_secs_since_last`` (-1 before the first event), ``ent_rate_<hl>`` (decayed event
    count), and per field in ``on``: ``ent_<f>_mean_<hl>`` and ``ent_<f>_logratio_<hl>``
    (log of (|v|+1)/(|mean|+1); only when the event carries a number). State: ``w`` (decayed
    counts per half-life) and ``s`` (decayed sums per field); the view's clock is ``n``/``t``.
    Kept for the existing entity states in Redis and the archives that backtest against them;
    new views should prefer :class:`Decayed`, :class:`Count` and :class:`SinceLast`.
    """

    kind = "entity"
    trending = frozenset({"ent_count", "ent_log_count"})

    def __init__(self, on: Sequence[str] | str = (), half_lives: Sequence[Any] = ("1h", "1d")) -> None:
        self.on = _names(on, "on", allow_empty=True)
        self.half_lives = _durations(half_lives, "half_lives")
        self._hl = tuple(h for _, h in self.half_lives)
        self._rate_names = tuple(f"ent_rate_{label}" for label, _ in self.half_lives)
        self._agg_names = tuple((name, tuple((f"ent_{name}_mean_{label}", f"ent_{name}_logratio_{label}")
                                             for label, _ in self.half_lives)) for name in self.on)
        self._zeros = [0.0] * len(self._hl)

    def state_keys(self) -> tuple[str, ...]:
        return ("w", "s")

    def reads(self) -> tuple[str, ...]:
        return self.on

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "on": list(self.on), "half_lives": [label for label, _ in self.half_lives]}

    def features(self) -> list[tuple[str, str]]:
        out = [("ent_count", "count"), ("ent_log_count", "count"), ("ent_secs_since_last", "since_last"),
               ("ent_log_secs_since_last", "since_last")]
        out += [(n, "decayed count") for n in self._rate_names]
        for _, names in self._agg_names:
            out += [(mean, "decayed mean") for mean, _ in names] + [(r, "logratio") for _, r in names]
        return out

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        # The arithmetic below is the legacy compute's, operation for operation: the same
        # floats come out, so stored states and archived vectors stay valid.
        weights = state.get("w") or self._zeros
        sums = state.get("s") or {}
        decays = [math.exp(_NEG_LN2 * dt / h) for h in self._hl]
        x["ent_count"] = float(n)
        x["ent_log_count"] = math.log1p(n)
        x["ent_secs_since_last"] = dt if n else -1.0
        x["ent_log_secs_since_last"] = math.log1p(dt) if n else -1.0
        new_w = []
        for label, d, w in zip(self._rate_names, decays, weights):
            wd = w * d
            x[label] = wd
            new_w.append(wd + 1.0)
        new_s: dict[str, list[float]] = {}
        for name, names in self._agg_names:
            v = raw.get(name)
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            prev = sums.get(name) or self._zeros
            cur = []
            for (mean_name, ratio_name), d, w, s in zip(names, decays, weights, prev):
                wd, sd = w * d, s * d
                mean = sd / wd if wd > _TINY else 0.0
                x[mean_name] = mean
                if numeric:
                    # log scale: ratios are heavy-tailed both ways, which SGD handles badly
                    ratio = (abs(v) + 1.0) / (abs(mean) + 1.0) if wd > _TINY else 1.0
                    x[ratio_name] = math.log(ratio)
                    sd += v
                cur.append(sd)
            new_s[name] = cur
        new["w"] = new_w
        new["s"] = new_s


class Count(Block):
    """``<prefix>count`` and ``<prefix>log_count``: events the entity had before this one.

    Cumulative by design, so both are in ``trending`` (drift tests skip them).
    """

    kind = "count"

    def __init__(self, *, prefix: str = "ent_") -> None:
        self.prefix = _text(prefix, "prefix", empty=True)
        self._count, self._log = f"{prefix}count", f"{prefix}log_count"
        self.trending = frozenset({self._count, self._log})

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "prefix": self.prefix}

    def features(self) -> list[tuple[str, str]]:
        return [(self._count, "count"), (self._log, "count")]

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        x[self._count] = float(n)
        x[self._log] = math.log1p(n)


class SinceLast(Block):
    """``<prefix>secs_since_last`` and its ``log1p``: event-time seconds since the entity's
    latest event; -1 for its first event. An out-of-order event reads 0.
    """

    kind = "since_last"

    def __init__(self, *, prefix: str = "ent_") -> None:
        self.prefix = _text(prefix, "prefix", empty=True)
        self._secs, self._log = f"{prefix}secs_since_last", f"{prefix}log_secs_since_last"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "prefix": self.prefix}

    def features(self) -> list[tuple[str, str]]:
        return [(self._secs, "since_last"), (self._log, "since_last")]

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        if n:
            x[self._secs] = dt
            x[self._log] = math.log1p(dt)
        else:
            x[self._secs] = x[self._log] = -1.0


class Decayed(Block):
    """Exponentially decayed statistics of numeric fields, per half-life, over event time.

    Stats: ``count`` (decayed event count, ``<p>count_hl<hl>``), and per field
    ``sum``/``mean``/``var``/``std`` (``<p><f>_<stat>_hl<hl>``) of the entity's history before
    the event, plus the current value against it: ``zscore`` ((v - mean) / std, 0 without
    spread, clipped to ±100) and ``logratio`` (log((|v|+1)/(|mean|+1))); both only when the
    event carries the field. Booleans count as 0/1, text is refused (:class:`FeatureError`).
    Default stats: count, mean and std (the count alone without fields).

    State (key ``d:<fields>`` unless ``key`` is given): ``{"c": [count per half-life], "f":
    {field: [W, mean(, M2)] per half-life}}``: weighted moments updated in West's incremental
    form, which stays accurate where sum-of-squares formulas cancel. Decaying all weights by
    the same factor leaves mean and variance unchanged, so only W and M2 are decayed.

    >>> b = Decayed(["amount"], half_lives=["1h"], stats=["mean", "var", "zscore"])
    >>> state, xs = {}, []
    >>> for te, v in [(0.0, 10.0), (0.0, 20.0), (0.0, 30.0)]:
    ...     x, new = {}, {}
    ...     b.apply({}, {"amount": v}, te, 0.0, 0, state, x, new)
    ...     state = new; xs.append(x)
    >>> xs[-1]  # history 10, 20: mean 15, variance 25, current 30 is 3 sd above
    {'ent_amount_mean_hl1h': 15.0, 'ent_amount_var_hl1h': 25.0, 'ent_amount_zscore_hl1h': 3.0}
    """

    kind = "decayed"
    STATS = ("count", "sum", "mean", "var", "std", "zscore", "logratio")

    def __init__(self, on: Sequence[str] | str = (), half_lives: Sequence[Any] = ("1h", "1d"),
                 stats: Sequence[str] | None = None, *, prefix: str = "ent_", key: str | None = None) -> None:
        if stats is None:  # default: the count alone when there is no field to describe
            stats = ("count", "mean", "std") if on else ("count",)
        self.stats = _choices(stats, self.STATS, "stats")
        field_stats = [s for s in self.stats if s != "count"]
        self.on = _names(on, "on", allow_empty=not field_stats)
        if self.on and not field_stats:
            raise FeatureConfigError("stats", "fields in 'on' need a per-field stat (sum, mean, var, std, zscore, "
                                              "logratio)")
        self.half_lives = _durations(half_lives, "half_lives")
        self.prefix = _text(prefix, "prefix", empty=True)
        self._explicit_key = key
        self.key = _text(key, "key") if key is not None else f"d:{','.join(self.on) or 'count'}"
        h = len(self.half_lives)
        self._k = tuple(_NEG_LN2 / s for _, s in self.half_lives)  # decay = exp(k * dt), k hoisted
        self._ones = [1.0] * h
        self._count_names = tuple(f"{prefix}count_hl{label}" for label, _ in self.half_lives) \
            if "count" in self.stats else None
        self._var = any(s in self.stats for s in ("var", "std", "zscore"))
        self._stride = 3 if self._var else 2
        self._zeros = [0.0] * (h * self._stride)
        self._zeros_c = [0.0] * h
        want = set(self.stats)
        # per field, per half-life: the name of each requested stat (None: not requested)
        self._per_field = tuple(
            (f, tuple(tuple(f"{prefix}{f}_{s}_hl{label}" if s in want else None
                            for s in ("sum", "mean", "var", "std", "zscore", "logratio"))
                      for label, _ in self.half_lives))
            for f in self.on)

    def reads(self) -> tuple[str, ...]:
        return self.on

    def spec(self) -> dict[str, Any]:
        out = {"kind": self.kind, "on": list(self.on), "half_lives": [label for label, _ in self.half_lives],
               "stats": list(self.stats), "prefix": self.prefix}
        if self._explicit_key is not None:
            out["key"] = self._explicit_key
        return out

    def features(self) -> list[tuple[str, str]]:
        out = [(n, "decayed count") for n in self._count_names or ()]
        for _, per_hl in self._per_field:
            for names in per_hl:
                out += [(n, f"decayed {s}") for n, s in zip(names, ("sum", "mean", "var", "std", "zscore",
                                                                   "logratio")) if n]
        return out

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        prev = state.get(self.key) or {}
        decays = [math.exp(k * dt) for k in self._k] if dt > 0.0 else self._ones
        out: dict[str, Any] = {}
        if self._count_names is not None:
            c = prev.get("c")
            if c is None or len(c) != len(decays):
                c = self._zeros_c
            nc = []
            for name, d, ci in zip(self._count_names, decays, c):
                cd = ci * d
                x[name] = cd
                nc.append(cd + 1.0)
            out["c"] = nc
        if self._per_field:
            pf = prev.get("f") or {}
            nf: dict[str, list[float]] = {}
            stride, var, zeros = self._stride, self._var, self._zeros
            nz, sqrt, log = len(zeros), math.sqrt, math.log
            for field, per_hl in self._per_field:
                v = raw.get(field)
                has = v is not None
                if has and v.__class__ is not float:
                    v = _number(v, f"decayed aggregate over {field!r}")
                p = pf.get(field)
                if p is None or len(p) != nz:
                    p = zeros
                cur: list[float] = []
                i = 0
                for d, (n_sum, n_mean, n_var, n_std, n_z, n_lr) in zip(decays, per_hl):
                    w = p[i] * d
                    if w > _TINY:
                        m = p[i + 1]
                        m2 = p[i + 2] * d if var else 0.0
                        vr = m2 / w
                        if vr < 0.0:
                            vr = 0.0
                    else:
                        w = m = m2 = vr = 0.0
                    if n_sum:
                        x[n_sum] = m * w
                    if n_mean:
                        x[n_mean] = m
                    if n_var:
                        x[n_var] = vr
                    if n_std:
                        x[n_std] = sqrt(vr)
                    if has:
                        if n_z:
                            z = (v - m) / sqrt(vr) if vr > _TINY else 0.0
                            x[n_z] = _ZCLIP if z > _ZCLIP else (-_ZCLIP if z < -_ZCLIP else z)
                        if n_lr:
                            x[n_lr] = log((abs(v) + 1.0) / (abs(m) + 1.0)) if w > 0.0 else 0.0
                        w += 1.0
                        delta = v - m
                        m += delta / w
                        if var:
                            m2 += delta * (v - m)
                            cur += (w, m, m2)
                        else:
                            cur += (w, m)
                    elif var:
                        cur += (w, m, m2)
                    else:
                        cur += (w, m)
                    i += stride
                nf[field] = cur
            out["f"] = nf
        new[self.key] = out


class Window(Block):
    """count/sum/mean/min/max over a sliding event-time window of ``duration``.

    State is **time buckets**, not the events themselves: the window is cut into
    ``buckets`` slices of ``duration / buckets`` aligned on multiples of that width since
    the epoch, and each slice keeps its count and per-field count/sum/min/max. So an
    entity's state is at most ``buckets`` entries whatever its event rate (a bot firing
    10k events a minute costs the same Redis bytes and parse time as a quiet card), and it
    is exact per slice. The price is resolution at the window's far edge: an event counts
    while its slice is one of the latest ``buckets`` slices, so the features cover between
    ``duration - width`` and ``duration`` of history, never more than ``duration``. Raise
    ``buckets`` for a sharper edge.

    Features (history before the event, in the window ending at its time):
    ``<p>count_w<dur>`` and per field ``<p><f>_<stat>_w<dur>``; an empty window gives 0 for
    every stat (models read a missing feature as 0 anyway; this keeps the vector's shape).
    Default stats: count and sum (the count alone without fields).
    An out-of-order event lands in the slice of the latest time seen (the clock does not
    rewind).

    >>> b = Window(["amount"], "10m", stats=["count", "sum", "max"], buckets=10)
    >>> state = {}
    >>> for te, v in [(0.0, 5.0), (60.0, 7.0), (590.0, 1.0), (650.0, 2.0)]:
    ...     x, new = {}, {}
    ...     b.apply({}, {"amount": v}, te, 0.0, 0, state, x, new)
    ...     state = new
    >>> x  # at 650 s: the event at 0 s has left the window, 60 s and 590 s remain
    {'ent_count_w10m': 2.0, 'ent_amount_sum_w10m': 8.0, 'ent_amount_max_w10m': 7.0}
    """

    kind = "window"
    STATS = ("count", "sum", "mean", "min", "max")

    def __init__(self, on: Sequence[str] | str = (), duration: Any = "10m",
                 stats: Sequence[str] | None = None, *, buckets: int = 10, prefix: str = "ent_",
                 key: str | None = None) -> None:
        if stats is None:
            stats = ("count", "sum") if on else ("count",)
        self.stats = _choices(stats, self.STATS, "stats")
        field_stats = [s for s in self.stats if s != "count"]
        self.on = _names(on, "on", allow_empty=not field_stats)
        if self.on and not field_stats:
            raise FeatureConfigError("stats", "fields in 'on' need a per-field stat (sum, mean, min, max)")
        self.duration = parse_duration(duration, "duration")
        self.label = duration_label(self.duration)
        self.buckets = _positive_int(buckets, "buckets", 1, 1000)
        self.prefix = _text(prefix, "prefix", empty=True)
        self._explicit_key = key
        self.key = _text(key, "key") if key is not None else f"w{self.label}:{','.join(self.on) or 'count'}"
        self._width = self.duration / self.buckets
        want = set(self.stats)
        self._count_name = f"{prefix}count_w{self.label}" if "count" in want else None
        self._per_field = tuple(
            (f, tuple(f"{prefix}{f}_{s}_w{self.label}" if s in want else None for s in ("sum", "mean", "min", "max")))
            for f in self.on)
        self._nf = len(self.on)

    def reads(self) -> tuple[str, ...]:
        return self.on

    def spec(self) -> dict[str, Any]:
        out = {"kind": self.kind, "on": list(self.on), "duration": self.label, "stats": list(self.stats),
               "buckets": self.buckets, "prefix": self.prefix}
        if self._explicit_key is not None:
            out["key"] = self._explicit_key
        return out

    def features(self) -> list[tuple[str, str]]:
        out = [(self._count_name, "window count")] if self._count_name else []
        for _, names in self._per_field:
            out += [(n, f"window {s}") for n, s in zip(names, ("sum", "mean", "min", "max")) if n]
        return out

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        # a bucket is [index, events, then per field: count, sum, min, max] (min/max None if count 0)
        idx = int(te // self._width)
        oldest = idx - self.buckets + 1
        kept = [b for b in (state.get(self.key) or ()) if b[0] >= oldest]
        if self._count_name is not None:
            x[self._count_name] = float(sum(b[1] for b in kept))
        values = []
        for j, (field, (n_sum, n_mean, n_min, n_max)) in enumerate(self._per_field):
            o = 2 + 4 * j
            cnt, tot, lo, hi = 0, 0.0, None, None
            for b in kept:
                c = b[o]
                if c:
                    cnt += c
                    tot += b[o + 1]
                    if lo is None or b[o + 2] < lo:
                        lo = b[o + 2]
                    if hi is None or b[o + 3] > hi:
                        hi = b[o + 3]
            if n_sum:
                x[n_sum] = tot
            if n_mean:
                x[n_mean] = tot / cnt if cnt else 0.0
            if n_min:
                x[n_min] = lo if lo is not None else 0.0
            if n_max:
                x[n_max] = hi if hi is not None else 0.0
            v = raw.get(field)
            values.append(None if v is None else _number(v, f"window aggregate over {field!r}"))
        # add the event to its slice: copy, never mutate the prior state
        if kept and kept[-1][0] == idx:
            bucket = list(kept[-1])
            bucket[1] += 1
        else:
            bucket = [idx, 1] + [0, 0.0, None, None] * self._nf
        for j, v in enumerate(values):
            if v is not None:
                o = 2 + 4 * j
                bucket[o] += 1
                bucket[o + 1] += v
                if bucket[o + 2] is None or v < bucket[o + 2]:
                    bucket[o + 2] = v
                if bucket[o + 3] is None or v > bucket[o + 3]:
                    bucket[o + 3] = v
        if kept and kept[-1][0] == idx:
            kept[-1] = bucket
        else:
            kept.append(bucket)
        new[self.key] = kept


class Distinct(Block):
    """Approximate number of distinct values of a categorical field the entity has shown.

    A K-minimum-values sketch over a stable 53-bit blake2b hash of each value: the state is
    the ``k`` smallest hashes seen (a sorted list), so it is exact up to ``k`` distinct values
    and beyond that estimates (k - 1) / (k-th smallest hash, scaled to [0, 1)) with a relative
    error near 1/sqrt(k - 2) (about 27 % at the default k = 16, 13 % at k = 64). Cumulative
    over the entity's life, so the feature is in ``trending``. Feature: ``<p><f>_distinct``.

    >>> b, state = Distinct("shop"), {}
    >>> for shop in ["a", "b", "a", "c", "b"]:
    ...     x, new = {}, {}
    ...     b.apply({}, {"shop": shop}, 0.0, 0.0, 0, state, x, new)
    ...     state = new
    >>> x["ent_shop_distinct"]  # before the last event: a, b, c
    3.0
    """

    kind = "distinct"

    def __init__(self, on: str, *, k: int = 16, prefix: str = "ent_", key: str | None = None) -> None:
        names = _names(on, "on")
        if len(names) != 1:
            raise FeatureConfigError("on", f"a distinct count reads one field, got {list(names)}")
        self.on = names[0]
        self.k = _positive_int(k, "k", 2, 4096)
        self.prefix = _text(prefix, "prefix", empty=True)
        self._explicit_key = key
        self.key = _text(key, "key") if key is not None else f"u:{self.on}"
        self._name = f"{prefix}{self.on}_distinct"
        self.trending = frozenset({self._name})
        self._scale = float(1 << 53)

    def reads(self) -> tuple[str, ...]:
        return (self.on,)

    def spec(self) -> dict[str, Any]:
        out = {"kind": self.kind, "on": self.on, "k": self.k, "prefix": self.prefix}
        if self._explicit_key is not None:
            out["key"] = self._explicit_key
        return out

    def features(self) -> list[tuple[str, str]]:
        return [(self._name, f"distinct (KMV k={self.k})")]

    def estimate(self, sketch: Sequence[int]) -> float:
        """Distinct values behind a sketch: exact below ``k``, the KMV estimate at ``k``."""
        if len(sketch) < self.k:
            return float(len(sketch))
        return (self.k - 1) / ((sketch[-1] + 1) / self._scale)

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        sketch = state.get(self.key) or []
        x[self._name] = self.estimate(sketch)
        v = raw.get(self.on)
        if v is None:
            if sketch:
                new[self.key] = sketch
            return
        h = stable_hash(v if v.__class__ is str else str(v))
        full = len(sketch) >= self.k
        if full and h >= sketch[-1]:
            new[self.key] = sketch
            return
        i = bisect.bisect_left(sketch, h)
        if i < len(sketch) and sketch[i] == h:
            new[self.key] = sketch
            return
        out = sketch[:i] + [h] + sketch[i:]
        new[self.key] = out[: self.k]


# ------------------------------------------------------------------ user functions
def import_path(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function: how a project file refers to it."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def resolve_import(path: str) -> Callable[..., Any]:
    """The object at ``"package.module:attr"``; a one-line error naming the path if it fails."""
    import importlib

    mod_name, sep, attr = path.partition(":")
    if not sep or not mod_name or not attr:
        raise FeatureConfigError("fn", f"expected 'module:function', got {path!r}")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the same user error
        raise FeatureConfigError("fn", f"cannot import {path!r}: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise FeatureConfigError("fn", f"{path!r} is not callable")
    return obj


def source_hash(fn: Callable[..., Any]) -> str:
    """sha256 of a function's source (its qualified name if the source is not available)."""
    try:
        text = inspect.getsource(fn).replace("\r\n", "\n")
    except (OSError, TypeError):
        text = "name:" + import_path(fn)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Function(Block):
    """A user function over (event, its own state before the event), for anything else.

    ``fn(event, state)`` returns a dict of numeric features (booleans become 0/1). With
    ``stateful=True`` it gets its own previous state (``None`` for an entity's first event)
    and returns ``(features, new_state)``; the state must be JSON-serialisable (dicts,
    lists, numbers, strings) and is kept under ``key`` (default ``fn:<name>``). It must be
    pure: no wall clock, no I/O, no mutation of ``event`` (backtests replay it). If it
    raises, or returns something else, :class:`FeatureError` says which function and why,
    and the loop dead-letters the event with reason ``feature_error``.

    >>> def hour(event, state):
    ...     return {"hour": (event["event_time"] // 3_600_000) % 24}
    >>> x = {}
    >>> Function(hour).apply({"event_time": 7_200_000}, {}, 0.0, 0.0, 0, {}, x, {})
    >>> x
    {'hour': 2.0}
    >>> def broken(event, state):
    ...     return {"r": 1 / 0}
    >>> Function(broken).apply({}, {}, 0.0, 0.0, 0, {}, {}, {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamlearn.featurestore.errors.FeatureError: feature function ...broken failed: ZeroDivisionError: division by zero
    """

    kind = "function"

    def __init__(self, fn: Callable[..., Any] | str, *, name: str | None = None, stateful: bool = False,
                 key: str | None = None, resolve: Callable[[str], Callable[..., Any]] | None = None) -> None:
        if isinstance(fn, str):
            self.path = fn
            try:
                fn = (resolve or resolve_import)(fn)
            except FeatureConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - a resolver's failure is the same user error
                raise FeatureConfigError("fn", f"cannot import {self.path!r}: {type(exc).__name__}: {exc}") from None
        elif callable(fn):
            self.path = import_path(fn)
        else:
            raise FeatureConfigError("fn", f"expected a function or 'module:function', got {fn!r}")
        self.fn = fn
        self.name = _text(name, "name") if name is not None else getattr(fn, "__name__", "function")
        if not isinstance(stateful, bool):
            raise FeatureConfigError("stateful", f"expected true or false, got {stateful!r}")
        self.stateful = stateful
        self.uses_clock = stateful  # a stateless function needs no entity state at all
        self._explicit_key = key
        if key is not None and not stateful:
            raise FeatureConfigError("key", "only a stateful function keeps state")
        self.key = (_text(key, "key") if key is not None else f"fn:{self.name}") if stateful else None
        self._what = f"feature function {self.path}"

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fn": self.path, "name": self.name, "stateful": self.stateful}
        if self._explicit_key is not None:
            out["key"] = self._explicit_key
        return out

    def code(self) -> dict[str, str]:
        return {self.path: source_hash(self.fn)}

    def features(self) -> list[tuple[str, str]]:
        return [(f"<returned by {self.path}>", "function")]

    def apply(self, event: Mapping[str, Any], raw: Mapping[str, Any], te: float, dt: float, n: int,
              state: Mapping[str, Any], x: FeatureVector, new: EntityState) -> None:
        key = self.key
        try:
            out = self.fn(event, state.get(key) if key else None)
        except Exception as exc:  # noqa: BLE001 - user code: any failure dead-letters the event
            raise FeatureError(f"{self._what} failed: {type(exc).__name__}: {exc}") from exc
        if key:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise FeatureError(f"{self._what} is stateful and must return (features, state), "
                                   f"got {type(out).__name__}")
            out, new[key] = out
        elif isinstance(out, tuple):
            raise FeatureError(f"{self._what} returned a (features, state) pair; declare it stateful")
        if not isinstance(out, dict):
            raise FeatureError(f"{self._what} must return a dict of features, got {type(out).__name__}")
        for k, v in out.items():
            c = v.__class__
            if c is not float:
                v = _number(v, f"{self._what}: feature {k!r}")
            if v - v != 0.0:  # nan or ±inf
                raise FeatureError(f"{self._what} returned {k!r} = {v!r}: features must be finite")
            if k in x:
                raise FeatureError(f"{self._what} returned feature {k!r}, which the view already computes")
            x[k] = v


BLOCKS: dict[str, type[Block]] = {cls.kind: cls for cls in (EntityStats, Decayed, Window, Count, SinceLast,
                                                            Distinct)}


def require_unique(names: Iterable[tuple[str, str]], what: str) -> None:
    """Raise if two (name, where) pairs share a name."""
    seen: dict[str, str] = {}
    for name, where in names:
        if name in seen:
            raise FeatureConfigError(where, f"{what} {name!r} is also used by {seen[name]}; "
                                            "give one a different name, 'prefix' or 'key'")
        seen[name] = where
