"""The Redis backend's own write path (no Task per command) keeps redis-py's timeout contract."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis.exceptions

from streamlearn.featurestore.backend import RedisBackend, WriteBatch
from streamlearn.tools.infra import start_redis


@pytest.fixture
def own_redis(tmp_path):
    srv = start_redis(tmp_path, persist=False)
    yield srv
    os.kill(srv.proc.pid, signal.SIGCONT)
    srv.stop()


def test_a_write_to_a_stalled_redis_times_out_and_the_backend_recovers(own_redis):
    async def run() -> None:
        store = RedisBackend(f"redis://127.0.0.1:{own_redis.port}/0", socket_timeout=1)
        await store.write_batch(WriteBatch(sets={"k": (b"v", 0)}))  # connected
        os.kill(own_redis.proc.pid, signal.SIGSTOP)  # reads nothing: the socket buffers fill
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError, match="Timeout writing to socket"):
            await store.write_batch(WriteBatch(sets={"big": (b"x" * (64 << 20), 0)}))
        assert time.monotonic() - t0 < 30
        assert isinstance(redis.exceptions.TimeoutError(), RedisBackend.transient_errors)  # the loop retries it
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        await store.write_batch(WriteBatch(sets={"k": (b"w", 0)}))  # a fresh connection
        assert await store.read_many(["k", "big"]) == [b"w", None]
        await store.close()

    asyncio.run(run())


def test_read_with_ttl_gives_values_and_seconds_left(own_redis):
    async def run() -> None:
        store = RedisBackend(f"redis://127.0.0.1:{own_redis.port}/0")
        wb = WriteBatch(sets={"a": (b"1", 100), "b": (b"2", 0)})
        wb.set_if_absent("c", b"3", 50)
        await store.write_batch(wb)
        (a, ta), (b, tb), (c, tc), (d, td) = await store.read_with_ttl(["a", "b", "c", "missing"])
        assert (a, b, c, d) == (b"1", b"2", b"3", None)
        assert 99 < ta <= 100 and tb == float("inf") and 49 < tc <= 50 and td == 0
        assert await store.read_with_ttl([]) == []
        await store.close()

    asyncio.run(run())


def test_short_layout_addresses_on_redis(own_redis):
    """The served codec's short addresses on a real Redis: claimed, verified, then read by
    another process's codec; a key held by another pair is left alone."""
    from streamlearn.featurestore.keys import Keys
    from streamlearn.streams.loop import served

    class Loop:
        def __init__(self, store: RedisBackend) -> None:
            self.backend, self.keys, self.served_ttl_s = store, Keys("sl:v1", "m"), 3600

        async def io(self, op, what):  # noqa: ANN001, ANN202, ARG002
            return await op()

    def rec(amount: float) -> dict:
        return {"x": {"amount": amount, "ent_mean": 1 / 3}, "t": 1700000002596, "s": 1,
                "m": {"1": {"score": 0.25, "pred": False, "proba": {"False": 0.75, "True": 0.25}, "n": 12}}}

    async def serve(loop: Loop, store: RedisBackend, n: int, prefix: str) -> list[bytes]:
        raws = []
        for i in range(n):
            wb = WriteBatch()
            raws.append(served.encode_into(loop, wb, f"{prefix}{i}", rec(42.37)))  # type: ignore[arg-type]
            await store.write_batch(wb)
            await served.decode_many(loop, [], "test")  # type: ignore[arg-type]
        return raws

    async def run() -> None:
        store = RedisBackend(f"redis://127.0.0.1:{own_redis.port}/0")
        loop = Loop(store)
        raws = await serve(loop, store, served.PAIR_AFTER + 2, "e")
        assert [bool(r[0] & served.SHORT_ADDRESS) for r in raws] == [False] * served.PAIR_AFTER + [True] * 2
        got = await store.read_many([f"sl:v1:srv:e{i}" for i in range(len(raws))])
        assert got == raws
        assert await served.decode_many(Loop(store), got, "test") == [rec(42.37)] * len(raws)  # type: ignore[arg-type]
        # another process whose pair's address is held by something else: full digests only
        address = served.ServedCodec.needs(raws[-1])
        await store.client.flushdb()
        await store.write_batch(WriteBatch(sets={f"sl:v1:lay:{address.hex()}": (b"\x01\x00[[],[]]", 0)}))
        loop2 = Loop(store)
        raws2 = await serve(loop2, store, served.PAIR_AFTER + 2, "o")
        assert not any(r[0] & served.SHORT_ADDRESS for r in raws2)
        assert (await store.read_many([f"sl:v1:lay:{address.hex()}"]))[0] == b"\x01\x00[[],[]]"
        assert await served.decode_many(Loop(store), raws2, "test") == [rec(42.37)] * len(raws2)  # type: ignore[arg-type]
        await store.close()

    asyncio.run(run())
