"""Building blocks of a feature view: per-entity event-time aggregates.

A :class:`~streamlearn.featurestore.definitions.FeatureView` is a list of raw
:class:`~streamlearn.featurestore.fields.Field` declarations plus a list of blocks.
Every block is a small pure step over (event, the entity's state *before* the event):
it writes its features into the vector and its part of the entity's next state under
its own key, so blocks compose freely and the state layout follows from the declaration.

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
- :class:`~streamlearn.featurestore.functions.Function`: a user function for anything else.

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
import math
from collections.abc import Mapping, Sequence
from typing import Any

from streamlearn.featurestore.errors import FeatureConfigError
from streamlearn.featurestore.fields import (
    EntityState,
    FeatureVector,
    as_number,
    check_choices,
    check_durations,
    check_int,
    check_names,
    check_text,
    duration_label,
    parse_duration,
    stable_hash,
)

_LN2 = math.log(2.0)
_NEG_LN2 = -_LN2  # exact negation: -_LN2 * dt / h is the legacy expression, evaluated identically
_TINY = 1e-12  # below this decayed weight the history is treated as empty (legacy threshold)
_ZCLIP = 100.0  # a z-score against a near-constant history is clipped: huge inputs derail SGD


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
        self.on = check_names(on, "on", allow_empty=True)
        self.half_lives = check_durations(half_lives, "half_lives")
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
        self.prefix = check_text(prefix, "prefix", empty=True)
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
        self.prefix = check_text(prefix, "prefix", empty=True)
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
        self.stats = check_choices(stats, self.STATS, "stats")
        field_stats = [s for s in self.stats if s != "count"]
        self.on = check_names(on, "on", allow_empty=not field_stats)
        if self.on and not field_stats:
            raise FeatureConfigError("stats", "fields in 'on' need a per-field stat (sum, mean, var, std, zscore, "
                                              "logratio)")
        self.half_lives = check_durations(half_lives, "half_lives")
        self.prefix = check_text(prefix, "prefix", empty=True)
        self._explicit_key = key
        self.key = check_text(key, "key") if key is not None else f"d:{','.join(self.on) or 'count'}"
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
                    v = as_number(v, f"decayed aggregate over {field!r}")
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
        self.stats = check_choices(stats, self.STATS, "stats")
        field_stats = [s for s in self.stats if s != "count"]
        self.on = check_names(on, "on", allow_empty=not field_stats)
        if self.on and not field_stats:
            raise FeatureConfigError("stats", "fields in 'on' need a per-field stat (sum, mean, min, max)")
        self.duration = parse_duration(duration, "duration")
        self.label = duration_label(self.duration)
        self.buckets = check_int(buckets, "buckets", 1, 1000)
        self.prefix = check_text(prefix, "prefix", empty=True)
        self._explicit_key = key
        self.key = check_text(key, "key") if key is not None else f"w{self.label}:{','.join(self.on) or 'count'}"
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
            values.append(None if v is None else as_number(v, f"window aggregate over {field!r}"))
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
        names = check_names(on, "on")
        if len(names) != 1:
            raise FeatureConfigError("on", f"a distinct count reads one field, got {list(names)}")
        self.on = names[0]
        self.k = check_int(k, "k", 2, 4096)
        self.prefix = check_text(prefix, "prefix", empty=True)
        self._explicit_key = key
        self.key = check_text(key, "key") if key is not None else f"u:{self.on}"
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


BLOCKS: dict[str, type[Block]] = {cls.kind: cls for cls in (EntityStats, Decayed, Window, Count, SinceLast,
                                                            Distinct)}
