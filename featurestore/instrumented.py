"""A :class:`Backend` decorator that times every store call into the metrics.

Wrapping the backend (instead of editing the loop) measures exactly the store round trips
the loop makes, whatever code path makes them. ``busy_s`` is the running total of time
spent in calls, which lets the worker split a loop batch into store time and compute time.

>>> import asyncio
>>> from streamlearn.featurestore.backend import MemoryBackend, WriteBatch
>>> from streamlearn.metrics import Metrics
>>> m = Metrics()
>>> store = InstrumentedBackend(MemoryBackend(), m)
>>> asyncio.run(store.write_batch(WriteBatch(sets={"k": (b"v", 0)})))
{}
>>> asyncio.run(store.read_many(["k"]))
[b'v']
>>> 'streamlearn_feature_store_seconds_count{op="read"} 1.0' in m.exposition().decode()
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from streamlearn.featurestore.backend import Backend, WriteBatch
from streamlearn.metrics import Metrics

OPS = ("read", "write", "read_list", "ping", "park")


class InstrumentedBackend(Backend):
    def __init__(self, inner: Backend, metrics: Metrics) -> None:
        self.inner = inner
        # the loop retries on these: they must be the wrapped store's, not the ABC's defaults
        self.transient_errors = inner.transient_errors
        self.busy_s = 0.0
        self._hist = {op: metrics.store_latency.labels(op) for op in OPS}
        self._errors = {op: metrics.store_errors.labels(op) for op in OPS}

    def _done(self, op: str, t0: float, ok: bool) -> None:
        dt = time.perf_counter() - t0
        if op != "ping":  # health checks run beside the loop: not part of its batches
            self.busy_s += dt
        self._hist[op].observe(dt)
        if not ok:
            self._errors[op].inc()

    async def read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        t0, ok = time.perf_counter(), False
        try:
            out = await self.inner.read_many(keys)
            ok = True
            return out
        finally:
            self._done("read", t0, ok)

    async def write_batch(self, batch: WriteBatch) -> dict[str, bytes | None]:
        t0, ok = time.perf_counter(), False
        try:
            out = await self.inner.write_batch(batch)
            ok = True
            return out
        finally:
            self._done("write", t0, ok)

    async def park_unless_present(self, items: Sequence[tuple[str, bytes, int, str]]) -> list[bytes | None]:
        t0, ok = time.perf_counter(), False
        try:
            out = await self.inner.park_unless_present(items)
            ok = True
            return out
        finally:
            self._done("park", t0, ok)

    async def read_list(self, key: str) -> list[bytes]:
        t0, ok = time.perf_counter(), False
        try:
            out = await self.inner.read_list(key)
            ok = True
            return out
        finally:
            self._done("read_list", t0, ok)

    async def ping(self) -> bool:
        t0 = time.perf_counter()
        ok = await self.inner.ping()
        self._done("ping", t0, ok)
        return ok

    async def close(self) -> None:
        await self.inner.close()
