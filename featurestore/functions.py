"""User feature functions: the escape hatch for anything the building blocks do not cover.

A function is referenced from a project file by its import path (``"module:function"``);
its source code goes into the view's fingerprint, so editing it without bumping the
view's version is noticed.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from streamlearn.featurestore.blocks import Block
from streamlearn.featurestore.errors import FeatureConfigError, FeatureError
from streamlearn.featurestore.fields import EntityState, FeatureVector, as_number, check_text


def import_path(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function: how a project file refers to it."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def resolve_import(path: str, callable_only: bool = True) -> Any:
    """The object at ``"package.module:attr"`` (a function, unless ``callable_only`` is False);
    a one-line error naming the path if it fails."""
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
    if callable_only and not callable(obj):
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
    and returns ``(features, new_state)``; the state must be JSON-serialisable (dicts with
    string keys, lists, numbers, strings), is kept under ``key`` (default ``fn:<name>``) and
    comes back as JSON gives it (a tuple as a list), in live scoring and replays alike. It must be
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
        self.name = check_text(name, "name") if name is not None else getattr(fn, "__name__", "function")
        if not isinstance(stateful, bool):
            raise FeatureConfigError("stateful", f"expected true or false, got {stateful!r}")
        self.stateful = stateful
        self.uses_clock = stateful  # a stateless function needs no entity state at all
        self._explicit_key = key
        if key is not None and not stateful:
            raise FeatureConfigError("key", "only a stateful function keeps state")
        self.key = (check_text(key, "key") if key is not None else f"fn:{self.name}") if stateful else None
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
            out, own = out
            # the state as Redis will give it back: the live loop round-trips it through JSON
            # and an in-memory backtest does not, so normalising here keeps the two identical
            # (a tuple comes back a list) and refuses what Redis could not store
            try:
                new[key] = orjson.loads(orjson.dumps(own))
            except TypeError as exc:
                raise FeatureError(f"{self._what} returned a state that is not JSON-serialisable: {exc}") from None
        elif isinstance(out, tuple):
            raise FeatureError(f"{self._what} returned a (features, state) pair; declare it stateful")
        if not isinstance(out, dict):
            raise FeatureError(f"{self._what} must return a dict of features, got {type(out).__name__}")
        for k, v in out.items():
            if k.__class__ is not str:
                raise FeatureError(f"{self._what} returned a feature named {k!r}: names must be strings")
            c = v.__class__
            if c is not float:
                v = as_number(v, f"{self._what}: feature {k!r}")
            if v - v != 0.0:  # nan or ±inf
                raise FeatureError(f"{self._what} returned {k!r} = {v!r}: features must be finite")
            if k in x:
                raise FeatureError(f"{self._what} returned feature {k!r}, which the view already computes")
            x[k] = v
