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
