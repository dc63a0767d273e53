"""A :class:`Backend` decorator that times every store call into the metrics.

Wrapping the backend (instead of editing the loop) measures exactly the store round trips
the loop makes, whatever code path makes them. ``busy_s`` is the running total of time
spent in calls, which lets the worker split a loop batch into store time and compute time.

Every abstract method of :class:`Backend` is forwarded and timed automatically, so an
operation added to the interface later is measured (as ``op=<method name>``) without
touching this file; other attributes (``client``, ``url``) pass through to the wrapped store.

>>> import asyncio
>>> from streamlearn.featurestore.backend import MemoryBackend, WriteBatch
>>> from streamlearn.metrics import Metrics
>>> m = Metrics()
>>> store = InstrumentedBackend(MemoryBackend(), m)
>>> _ = asyncio.run(store.write_batch(WriteBatch(sets={"k": (b"v", 0)})))
>>> asyncio.run(store.read_many(["k"]))
[b'v']
>>> 'streamlearn_feature_store_seconds_count{op="read"} 1.0' in m.exposition().decode()
True
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Coroutine
from typing import Any

from streamlearn.featurestore.backend import Backend
from streamlearn.metrics import Metrics

# short, stable op labels for the hot calls; anything else is labelled by its method name
OP_NAMES = {"read_many": "read", "write_batch": "write"}
UNTIMED_BUSY = {"ping"}  # health checks run beside the loop: not part of its batches


def _op(method: str) -> str:
    return OP_NAMES.get(method, method)


class InstrumentedBackend(Backend):
    def __init__(self, inner: Backend, metrics: Metrics) -> None:
        self.inner = inner
        # the loop retries on these: they must be the wrapped store's, not the ABC's defaults
        self.transient_errors = inner.transient_errors
        self.needs_receipts = inner.needs_receipts
        self.busy_s = 0.0
        ops = [_op(name) for name in sorted(Backend.__abstractmethods__)]
        self._hist = {op: metrics.store_latency.labels(op) for op in ops}
        self._errors = {op: metrics.store_errors.labels(op) for op in ops}

    def _done(self, op: str, t0: float, ok: bool) -> None:
        dt = time.perf_counter() - t0
        if op not in UNTIMED_BUSY:
            self.busy_s += dt
        self._hist[op].observe(dt)
        if not ok:
            self._errors[op].inc()

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes this wrapper does not define
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def close(self) -> None:
        await self.inner.close()


def _timed(method: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    op = _op(method)

    async def call(self: InstrumentedBackend, *args: Any, **kwargs: Any) -> Any:
        t0, ok = time.perf_counter(), False
        try:
            out = await getattr(self.inner, method)(*args, **kwargs)
            ok = out is not False  # ping reports failure by returning False
            return out
        finally:
            self._done(op, t0, ok)

    call.__name__ = call.__qualname__ = method
    call.__doc__ = getattr(Backend, method).__doc__
    return call


for _method in Backend.__abstractmethods__:
    setattr(InstrumentedBackend, _method, _timed(_method))
abc.update_abstractmethods(InstrumentedBackend)
