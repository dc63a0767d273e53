"""MemoryBackend: Redis-like TTL semantics, and the same answers as the straightforward
implementation it replaced (kept here as the reference) on random operation sequences."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.featurestore.backend import Backend, MemoryBackend, WriteBatch


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ReferenceBackend(Backend):
    """The previous MemoryBackend, verbatim: per-key expiry checks on every access."""

    def __init__(self, clock=time.monotonic) -> None:  # noqa: ANN001
        self._kv: dict[str, tuple[bytes, float]] = {}
        self._lists: dict[str, list[bytes]] = {}
        self._clock = clock

    async def read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        out: list[bytes | None] = []
        for k in keys:
            item = self._kv.get(k)
            if item is not None and item[1] < now:
                del self._kv[k]
                item = None
            out.append(item[0] if item else None)
        return out

    async def read_with_ttl(self, keys):  # noqa: ANN001, ANN201
        got = await self.read_many(keys)
        now = self._clock()
        return [(v, self._kv[k][1] - now) if v is not None else (None, 0.0) for k, v in zip(keys, got)]

    async def park_unless_present(self, items):  # noqa: ANN001, ANN201
        out = []
        for key, value, ttl, guard in items:
            served, = await self.read_many([guard])
            if served is None:
                await self.write_batch(WriteBatch(sets={key: (value, ttl)}))
            out.append(served)
        return out

    async def write_batch(self, batch: WriteBatch) -> dict[str, bytes | None]:
        got = dict(zip(batch.getdels, await self.read_many(batch.getdels)))
        for key in batch.getdels:
            self._kv.pop(key, None)
        now = self._clock()
        for key, (value, ttl) in batch.sets.items():
            if ttl < 0:
                item = self._kv.get(key)
                if item is not None and item[1] >= now:
                    continue
                ttl = -ttl
            self._kv[key] = (value, now + ttl if ttl else float("inf"))
        for key in batch.deletes:
            self._kv.pop(key, None)
            self._lists.pop(key, None)
        for key, values in batch.appends.items():
            self._lists.setdefault(key, []).extend(values)
        for key, n in batch.trims.items():
            del self._lists.get(key, [])[:n]
        return got

    async def read_list(self, key: str) -> list[bytes]:
        return list(self._lists.get(key, []))

    async def ping(self) -> bool:
        return True


KEYS = ["a", "b", "c", "d"]
key = st.sampled_from(KEYS)
value = st.binary(min_size=1, max_size=2)
ttl = st.sampled_from([0, 1, 5, 30])
op = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([0.5, 1.0, 3.0, 10.0])),
    st.tuples(st.just("read"), st.lists(key, max_size=4)),
    st.tuples(st.just("set"), key, value, ttl),
    st.tuples(st.just("set_if_absent"), key, value, st.sampled_from([1, 5, 30])),
    st.tuples(st.just("getdel"), st.lists(key, min_size=1, max_size=3)),
    st.tuples(st.just("delete"), key),
    st.tuples(st.just("append"), key, value),
    st.tuples(st.just("trim"), key, st.integers(0, 2)),
    st.tuples(st.just("park"), key, value, st.sampled_from([1, 5]), key),
)


async def _apply(backend, clock: Clock, ops: list[tuple]) -> list:  # noqa: ANN001
    out = []
    for o in ops:
        kind = o[0]
        if kind == "tick":
            clock.t += o[1]
            continue
        wb = WriteBatch()
        if kind == "read":
            out.append(await backend.read_many(o[1]))
            continue
        if kind == "park":
            out.append(await backend.park_unless_present([(o[1], o[2], o[3], o[4])]))
            continue
        if kind == "set":
            wb.set(o[1], o[2], o[3])
        elif kind == "set_if_absent":
            wb.set_if_absent(o[1], o[2], o[3])
        elif kind == "getdel":
            wb.getdels.extend(o[1])
        elif kind == "delete":
            wb.deletes.append(o[1])
        elif kind == "append":
            wb.append(o[1], o[2])
        elif kind == "trim":
            wb.trims[o[1]] = o[2]
        out.append(await backend.write_batch(wb))
    out.append(await backend.read_many(KEYS))
    out.append([await backend.read_list(k) for k in KEYS])
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=40))
def test_memory_backend_answers_as_the_reference_implementation(ops: list[tuple]) -> None:
    c1, c2 = Clock(), Clock()
    assert asyncio.run(_apply(MemoryBackend(c1), c1, ops)) == asyncio.run(_apply(ReferenceBackend(c2), c2, ops))


def test_keys_expire_after_their_ttl_and_a_reset_key_lives_on() -> None:
    clock = Clock()
    b = MemoryBackend(clock)

    async def go() -> None:
        await b.write_batch(WriteBatch(sets={"short": (b"1", 5), "long": (b"2", 50), "forever": (b"3", 0)}))
        assert await b.read_many(["short", "long", "forever", "none"]) == [b"1", b"2", b"3", None]
        clock.t = 4
        await b.write_batch(WriteBatch(sets={"short": (b"1'", 5)}))  # re-set: now expires at 9
        clock.t = 6  # past the first deadline ever set (5), before the key's own (9)
        assert await b.read_many(["short"]) == [b"1'"]
        clock.t = 10
        assert await b.read_many(["short", "long", "forever"]) == [None, b"2", b"3"]
        # an expired key is absent: set-if-absent writes it
        await b.write_batch(WriteBatch(sets={"short": (b"new", -5)}))
        await b.write_batch(WriteBatch(sets={"long": (b"kept?", -5)}))  # present: first writer wins
        assert await b.read_many(["short", "long"]) == [b"new", b"2"]
        clock.t = 100
        assert await b.write_batch(WriteBatch(getdels=["long", "forever"])) == {"long": None, "forever": b"3"}
        assert await b.read_many(["forever"]) == [None]

    asyncio.run(go())
