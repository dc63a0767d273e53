"""``take_settled`` (streams/app.py): the worker's batching, through a real Faust agent in its
test context (in-memory channel, no broker). A lone event is handed over at once whatever the
window; events that queued while a batch was processed come as one batch (at most ``max_``);
a batch's events are acknowledged only once the agent comes back for the next batch."""

from __future__ import annotations

import asyncio

import faust

from streamlearn.streams.app import take_settled


async def _until(cond, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_lone_events_alone_a_queued_backlog_in_full_batches_acked_after_processing() -> None:
    app = faust.App("test-take-settled", store="memory://", autodiscover=False)
    batches: list[list[faust.types.EventT]] = []
    release = {"gate": None}

    @app.agent()
    async def agent(stream):
        # a one-minute window: take_events would hold a lone event for up to a minute
        async for events in take_settled(stream, 4, 60.0):
            batches.append(list(events))
            await release["gate"].wait()
            yield len(events)

    async def scenario() -> None:
        gate = release["gate"] = asyncio.Event()
        gate.set()
        values = lambda: [[e.value for e in b] for b in batches]  # noqa: E731
        async with agent.test_context() as ag:
            await asyncio.wait_for(ag.put(1), 10)  # returns once processed: nothing else came
            assert values() == [[1]]
            gate.clear()  # the next batch is held in processing
            first = asyncio.ensure_future(ag.put(2))
            await _until(lambda: len(batches) == 2, "the second lone event")
            queued = [asyncio.ensure_future(ag.put(10 + i)) for i in range(10)]
            await asyncio.sleep(0.2)
            assert values() == [[1], [2]], "nothing handed over while a batch is processed"
            assert batches[0][0].message.acked, "the first batch was acked when the agent came back"
            assert not batches[1][0].message.acked, "a batch in processing is not acknowledged"
            gate.set()
            await asyncio.wait_for(asyncio.gather(first, *queued), 10)
            await _until(lambda: sum(map(len, batches)) == 12, "the backlog")
            assert values() == [[1], [2], [10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
            assert batches[1][0].message.acked

    asyncio.run(scenario())


def test_behind_the_broker_a_batch_waits_for_more_up_to_the_window() -> None:
    """Under a backlog (``behind``: the broker has more than the batch reaches) a batch is not
    handed over half empty: it waits up to ``within`` for ``max_`` events, as take_events did."""
    app = faust.App("test-take-settled-behind", store="memory://", autodiscover=False)
    batches: list[list[int]] = []
    backlog = {"on": True}

    @app.agent()
    async def agent(stream):
        async for events in take_settled(stream, 3, 60.0, behind=lambda evs: backlog["on"]):
            batches.append([e.value for e in events])
            yield len(events)

    async def scenario() -> None:
        async with agent.test_context() as ag:
            first = asyncio.ensure_future(ag.put(1))
            await asyncio.sleep(0.3)
            assert batches == [] and not first.done(), "behind the broker: the batch waits to fill"
            rest = [asyncio.ensure_future(ag.put(v)) for v in (2, 3)]
            await asyncio.wait_for(asyncio.gather(first, *rest), 10)
            assert batches == [[1, 2, 3]]
            backlog["on"] = False  # caught up: a lone event goes at once
            await asyncio.wait_for(ag.put(4), 10)
            assert batches == [[1, 2, 3], [4]]

    asyncio.run(scenario())
