"""The worker's own CPU per event, in-process: no broker, no Faust, a real Redis.

Feeds the bench's stream (``cards``, seed 7) as Kafka records to a :class:`WorkerRuntime`
exactly as the transport would (``on_events`` then ``on_feedback`` per window of the stream,
``--window`` events per batch, about what the bench's worker sees at max load), with the
lifecycle on as the worker runs it, and reports the process CPU time per event (with its
label). What it publishes is hashed, timestamps left out, so two builds can be compared for
exactness as well as cost: run it with each build's interpreter, alternating, on one machine.

    python -m streamlearn.tools.worker_harness --events 5000 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamlearn.schemas import AvroCodec
from streamlearn.schemas.records import KafkaRecord

if TYPE_CHECKING:
    import redis

    from streamlearn.streams.worker import WorkerRuntime


class _Collect:
    """Stands in for the producer: keeps what the worker would publish (no broker here)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> None:
        self.messages.append((topic, value))

    def serve(self) -> None:
        pass

    async def flush(self, timeout: float = 60.0) -> None:
        pass


def published_digest(messages: list[tuple[str, bytes]], settings: Any) -> str:
    """A hash of the predictions published (both topics, in order), wall-clock fields left out."""
    codec, h = AvroCodec.default(), hashlib.sha256()
    for topic, value in messages:
        if topic in (settings.topic_predictions, settings.topic_shadow):
            rec = codec.decode("prediction", value)
            rec["served_at"], rec["latency_ms"] = 0, 0.0
            h.update(codec.encode("prediction", rec))
    return h.hexdigest()[:16]


async def _drive(rt: Any, wire: list[tuple[bool, bytes, bytes]], window: int) -> float:
    await rt.loop.restore()
    rt.ready.set()
    rt.loop.is_learner = True  # it owns every partition here
    offset, cpu = 0, 0.0
    for i in range(0, len(wire), 2 * window):
        events, labels = [], []
        for is_event, value, key in wire[i:i + 2 * window]:
            offset += 1
            rec = KafkaRecord("event" if is_event else "feedback", "t", 0, offset, 1_700_000_000_000 + offset,
                              key=key, value=value)
            (events if is_event else labels).append(rec)
        t0 = time.process_time()
        if events:
            await rt.on_events(events)
        if labels:
            await rt.on_feedback(labels)
        cpu += time.process_time() - t0
    await rt.publish_outbox()
    return cpu


@contextlib.contextmanager
def fresh_runtime(redis_url: str | None, app_id: str) -> Iterator[tuple[WorkerRuntime, redis.Redis]]:
    """A worker runtime with no broker (what it publishes is collected: :class:`_Collect`) on
    an empty Redis: ``redis_url``'s database, flushed, or a private embedded Redis (None)."""
    import redis

    from streamlearn.settings import Settings
    from streamlearn.streams.worker import WorkerRuntime
    from streamlearn.tools.infra import finish_workdir, start_redis

    server = folder = None
    failed = True
    if redis_url is None:
        folder = Path(tempfile.mkdtemp(prefix=f"sl-{app_id}-"))
        server = start_redis(folder, persist=False)
        redis_url = f"redis://127.0.0.1:{server.port}/0"
    try:
        r = redis.Redis.from_url(redis_url)
        r.execute_command("FLUSHDB", "SYNC")
        # no broker on purpose: the producer is never flushed, its client only exists, and its
        # "Connect to 127.0.0.1:1 failed" log lines are noise (a quiet logger takes them)
        quiet = logging.getLogger("streamlearn.harness.librdkafka")
        quiet.propagate, quiet.handlers[:] = False, [logging.NullHandler()]
        rt = WorkerRuntime(Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, app_id=app_id),
                           producer_config={"logger": quiet})
        rt.out = _Collect()
        yield rt, r
        failed = False
    finally:
        if server is not None:
            server.stop()
        if folder is not None:  # ours: removed after a success, kept (and named) after a failure
            finish_workdir(folder, not failed, lambda line: print(line, file=sys.stderr))


def run(events: int = 5000, window: int = 40, seed: int = 7, redis_url: str | None = None) -> dict[str, Any]:
    """One pass on a fresh worker and an empty Redis: CPU µs per event and the output digest."""
    from streamlearn.tools.bench import build_workload

    with fresh_runtime(redis_url, "harness") as (rt, _):
        wl = build_workload(events, seed)
        cpu = asyncio.run(_drive(rt, wl.wire, window))
        return {"events": events, "cpu_us_per_event": cpu * 1e6 / events,
                "published": len(rt.out.messages), "labels_learned": rt.loop.counters.labels_learned,
                "digest": published_digest(rt.out.messages, rt.settings)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--window", type=int, default=40, help="events per on_events batch")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--redis-url", default=None, help="default: a private embedded Redis")
    a = ap.parse_args()
    for rep in range(a.reps):
        r = run(a.events, a.window, redis_url=a.redis_url)
        print(f"rep {rep}: {r['cpu_us_per_event']:.1f} CPU us per event (with its label); "
              f"{r['published']} published, {r['labels_learned']} labels learned, digest {r['digest']}", flush=True)


if __name__ == "__main__":
    main()
