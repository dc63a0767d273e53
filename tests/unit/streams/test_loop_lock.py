"""The loop's lock: asyncio.Lock's behaviour (exclusion, FIFO hand-over, cancelled waiters),
with a shortcut when it is free."""

from __future__ import annotations

import asyncio

from streamlearn.streams.loop.core import _LoopLock


def test_excludes_and_hands_over_in_arrival_order() -> None:
    async def go() -> list[tuple[str, int]]:
        lock, order = _LoopLock(), []

        async def job(i: int) -> None:
            async with lock:
                order.append(("in", i))
                await asyncio.sleep(0.001)
                order.append(("out", i))

        await asyncio.gather(*(job(i) for i in range(5)))
        assert not lock.locked()
        return order

    assert asyncio.run(go()) == [(s, i) for i in range(5) for s in ("in", "out")]


def test_a_cancelled_waiter_neither_holds_nor_blocks_the_lock() -> None:
    async def go() -> None:
        lock = _LoopLock()
        await lock.acquire()
        entered = []

        async def waiter() -> None:
            async with lock:
                entered.append(1)

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lock.release()
        async with lock:
            assert lock.locked()
        assert not lock.locked() and entered == []

    asyncio.run(go())


def test_released_on_an_exception() -> None:
    async def go() -> None:
        lock = _LoopLock()
        try:
            async with lock:
                raise ValueError("boom")
        except ValueError:
            pass
        assert not lock.locked()

    asyncio.run(go())
