"""Push archived messages back to a topic: original keys, values and headers, per-key order.

``streamlearn replay republish --archive DIR --to TOPIC [--speed 10x|max]``, for testing a
new deployment against history. Per-key order holds because each key lived in one source
partition, each source partition is sent in offset order (partitions are interleaved by
Kafka timestamp, taking only partition heads), and the producer is idempotent (retries
cannot reorder). With ``--speed Nx`` the gaps between the original Kafka timestamps are
replayed N times faster; ``max`` sends as fast as the broker takes them.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streamlearn.replay.archive.reader import Archive
from streamlearn.settings import Settings
from streamlearn.streams.transport import make_producer


def parse_speed(speed: str) -> float | None:
    """``max`` -> None (no pacing); ``10x``/``10``/``0.5x`` -> the factor.

    >>> parse_speed("10x"), parse_speed("max"), parse_speed("2.5")
    (10.0, None, 2.5)
    """
    text = speed.strip().lower()
    if text == "max":
        return None
    try:
        factor = float(text.removesuffix("x"))
    except ValueError:
        raise ValueError(f"--speed must be like 10x or max, not {speed!r}") from None
    if factor <= 0:
        raise ValueError(f"--speed must be positive, not {speed!r}")
    return factor


def merged_by_timestamp(archive: Archive, kind: str, start: int | None = None, end: int | None = None
                        ) -> Iterator[dict[str, Any]]:
    """All partitions of a kind, each in offset order, interleaved by Kafka timestamp.

    ``start``/``end`` select by record time (event time; label time for feedback)."""
    def part(tp: tuple[str, int]) -> Iterator[tuple[int, int, int, dict[str, Any]]]:
        for rec in archive.partition_records(kind, *tp):
            t = rec["record_time"]
            if (start is not None or end is not None) and t is None:
                continue
            if (start is not None and t < start) or (end is not None and t >= end):
                continue
            yield rec["timestamp"], rec["partition"], rec["offset"], rec

    for *_, rec in heapq.merge(*(part(tp) for tp in archive.partitions(kind))):
        yield rec


@dataclass
class RepublishStats:
    sent: int
    seconds: float
    source_span_ms: int


def republish(
    archive: Archive,
    settings: Settings,
    topic: str,
    *,
    kind: str = "event",
    speed: float | None = None,
    start: int | None = None,
    end: int | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> RepublishStats:
    producer = make_producer(settings, **{"enable.idempotence": True})
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    sent = 0
    first_ts: int | None = None
    last_ts = 0
    t0 = time.monotonic()
    for rec in merged_by_timestamp(archive, kind, start, end):
        ts = rec["timestamp"]
        if first_ts is None:
            first_ts = ts
        last_ts = max(last_ts, ts)
        if speed is not None:  # pace: original gaps, compressed by the factor
            due = t0 + (ts - first_ts) / 1000 / speed
            wait = due - time.monotonic()
            if wait > 0:
                producer.flush(wait)  # deliver while we wait
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        headers = [(h["key"], h["value"]) for h in rec["headers"]] or None
        while True:
            try:
                producer.produce(topic, rec["value"], rec["key"], headers=headers, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
        producer.poll(0)
        sent += 1
        if on_sent is not None:
            on_sent(1)
    remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(f"republish to {topic}: {remaining} undelivered, {len(errors)} failed"
                           + (f", first: {errors[0]}" if errors else ""))
    return RepublishStats(sent, time.monotonic() - t0, (last_ts - first_ts) if first_ts is not None else 0)
