"""A worker stops within seconds of SIGTERM even while its Redis is unreachable, and loses nothing.

Before: the online loop retried the store forever, Faust's graceful stop waited for the stuck
batch (``wait_empty``) and the worker ignored SIGTERM for ~10 minutes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from streamlearn.featurestore.backend import RedisBackend
from streamlearn.streams.shutdown import EXIT_UNGRACEFUL_STOP, StopGuard
from streamlearn.tools.infra import Service, free_port, start_redis
from tests.helpers import Sender, TopicReader, WorkerHandle, feedback_for, make_events, wait_for
from tests.system.test_store_and_broker_outages import check_exactly_once, metric_total


def test_sigterm_while_redis_is_down_stops_in_seconds_and_nothing_learned_is_lost(
        make_settings, start_worker, tmp_path: Path):
    data = tmp_path / "own-redis"
    data.mkdir()
    own: Service = start_redis(data)
    try:
        s = make_settings(redis_url=f"redis://127.0.0.1:{own.port}/0", batch_max=50)
        worker: WorkerHandle = start_worker(s)
        port = worker.process.web_port
        events = make_events(300, seed=31, n_entities=20)
        labels = [feedback_for(e) for e in events]
        send, preds = Sender(s), TopicReader(s, s.topic_predictions, "prediction")
        send.events(events[:200])
        preds.wait_count(200, key="event_id")
        send.feedback(labels[:100])
        wait_for(lambda: worker.assert_alive() or worker.counters().get("labels_learned") == 100, 60,
                 "100 labels learned")

        own.stop()  # Redis gone; then input keeps arriving: the loop is stuck retrying both ways
        send.events(events[200:])
        send.feedback(labels[100:200])
        # several retries: the agents are stuck mid-batch, not between batches
        wait_for(lambda: worker.assert_alive() or metric_total(port, "streamlearn_store_retries_total") >= 3,
                 60, "the worker to retry the unreachable store", interval=0.2)
        t0 = time.monotonic()
        rc = worker.process.stop(timeout=120)
        took = time.monotonic() - t0
        print(f"stop with Redis down: {took:.2f} s, exit {rc}")
        assert took < 5.0, f"the worker took {took:.1f}s to stop after SIGTERM"
        assert rc == EXIT_UNGRACEFUL_STOP
        assert "stopping now without a final checkpoint" in worker.log()

        own = start_redis(data, own.port)  # same data: the learn log is there
        again = start_worker(s, name="restarted")
        send.feedback(labels[200:])
        preds.wait_count(len(events), timeout=90, key="event_id")
        wait_for(lambda: again.assert_alive() or again.counters().get("labels_learned") == len(labels), 90,
                 "every label learned")
        assert again.stop() == 0, "with Redis up the stop is graceful"
        check_exactly_once(s, events, labels, preds.poll())
    finally:
        own.stop()


# ------------------------------------------------------------------ the guard itself (real Redis, in-process)
class _Exits:
    def __init__(self) -> None:
        self.codes: list[tuple[int, float]] = []
        self.t0 = time.monotonic()

    def __call__(self, code: int) -> None:
        self.codes.append((code, time.monotonic() - self.t0))


def test_guard_exits_at_once_when_the_store_does_not_answer():
    dead = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    exits, commits = _Exits(), []

    async def commit() -> bool:
        commits.append(1)
        return True

    async def scenario() -> None:
        guard = StopGuard(30.0, dead.ping, commit, exit=exits)
        guard.arm(asyncio.get_running_loop())
        await asyncio.sleep(0)
        deadline = time.monotonic() + 10
        while not exits.codes and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        guard.cancel()
        await dead.close()

    asyncio.run(scenario())
    assert [c for c, _ in exits.codes] == [EXIT_UNGRACEFUL_STOP] and exits.codes[0][1] < 3.0
    assert commits == [1], "finished work is committed before leaving"


def test_guard_does_not_take_the_graceful_stops_own_close_for_an_unreachable_store():
    # the graceful stop can write its checkpoint and close the Redis client before the guard's
    # ping answers (CI under load: a worker exited 143 after a clean stop); the ping then fails
    dead = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")  # the ping fails, as on a closed client
    exits, commits, released = _Exits(), [], []

    async def commit() -> bool:
        commits.append(1)
        return True

    async def scenario() -> None:
        guard = StopGuard(30.0, dead.ping, commit, exit=exits, released=lambda: bool(released))
        released.append(1)  # what WorkerRuntime.close sets before closing its client
        guard.arm(asyncio.get_running_loop())
        assert guard.check is not None
        await asyncio.wait_for(guard.check, 10)
        guard.cancel()
        await dead.close()

    asyncio.run(scenario())
    assert exits.codes == [] and commits == [], "a stop that is done with the store is left to finish"


def test_guard_leaves_a_healthy_stop_alone_until_its_deadline(infra):
    live = RedisBackend(infra.redis_url)
    exits = _Exits()

    async def scenario() -> None:
        guard = StopGuard(1.0, live.ping, exit=exits)
        guard.arm(asyncio.get_running_loop())
        guard.arm(asyncio.get_running_loop())  # a second signal does not arm a second timer
        await asyncio.sleep(0.5)
        assert exits.codes == [], "the store answers: the graceful stop gets its time"
        deadline = time.monotonic() + 10
        while not exits.codes and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await live.close()

    asyncio.run(scenario())
    assert len(exits.codes) == 1 and exits.codes[0][0] == EXIT_UNGRACEFUL_STOP
    assert 0.9 <= exits.codes[0][1] < 3.0
