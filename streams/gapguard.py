"""Guards against two faults of the embedded broker, kept free of any Kafka client.

**Offset gaps.** Our topics are neither compacted nor transactional, so within a partition
offsets are contiguous: after offset ``n`` the next record is ``n + 1``. The embedded broker
(tansu, memory storage) breaks that under concurrent producers on one partition: it reserves
a batch's offsets and advances the end that fetches see *before* the batch is readable, so a
fetch in between returns another producer's later batch. Clients treat the hole like
compacted records and move past it for good: a silent loss. :class:`GapGuard` notices the
jump, tells the caller to fetch again from the first missing offset, counts and logs the gap
once, and gives up with :class:`OffsetGapError` if the records never arrive.

The assumption, stated once: a jump is only legitimate on compacted topics (records removed)
and around transactions (a commit/abort marker takes an offset, an aborted batch is skipped
under read_committed). Our topics are neither compacted nor written in transactions. The
worker's fetcher lets a jump over a marker or transactional batch through (it sees the
batches); the confluent-kafka consumers see only records, so a compacted or transactional
topic must not be read through them. On Apache Kafka with our topics the guard never fires
and costs a comparison per record.

**Fetch starvation.** On every fetch tansu lists the partition's stored batches and stops
listing when the fetch's maximum wait has passed, so on a long partition (tens of thousands
of batches) a short wait returns nothing although the high watermark says data is there.
:class:`AdaptiveWait` lengthens the wait only when that happens (an empty reply below the
high watermark) and shortens it again once data flows, so normal latency keeps the short wait;
while records flow it is shorter still (``low_ms``), and lengthens back to the base wait once idle.

>>> seen = []
>>> g = GapGuard(timeout_s=5, clock=lambda: 0.0, on_gap=lambda t, p, exp, got: seen.append((t, p, exp, got)))
>>> g.reset("ev", 0, 10)
>>> g.admit("ev", 0, 10), g.admit("ev", 0, 11)   # contiguous: accepted (None)
(None, None)
>>> g.admit("ev", 0, 15)                          # 12..14 missing: fetch again from 12
12
>>> g.admit("ev", 0, 15)                          # the same gap again: not counted twice
12
>>> g.admit("ev", 0, 12), g.gaps, seen
(None, 1, [('ev', 0, 12, 15)])
>>> w = AdaptiveWait(20, 500)
>>> w.update(got_data=False, behind=True), w.update(got_data=False, behind=True), w.update(got_data=True)
(40, 80, 40)
>>> w.update(got_data=False, behind=False)        # idle: back towards the short wait
20
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# a hole on tansu closes within milliseconds (the batch it belongs to becomes readable);
# half a minute without the missing records means they are gone, which is worth a stop
DEFAULT_GAP_TIMEOUT_S = 30.0


class OffsetGapError(RuntimeError):
    """Records missing from a partition never arrived: continuing would lose them silently."""

    def __init__(self, topic: str, partition: int, expected: int, got: int, waited_s: float) -> None:
        super().__init__(
            f"{topic}[{partition}]: offsets {expected}..{got - 1} still missing after {waited_s:.1f}s of "
            f"re-fetching (the broker returns offset {got} instead); refusing to skip them")
        self.topic, self.partition, self.expected, self.got = topic, partition, expected, got


@dataclass
class _Gap:
    expected: int
    got: int
    first_seen: float
    last_seen: float
    refetches: int = 0


class GapGuard:
    """Per-partition contiguity check for one consumer.

    Two ways to use it: :meth:`admit` when the guard should remember the next offset itself
    (confluent-kafka consumers: call :meth:`reset` on assign/seek when the position is known),
    or :meth:`check` when the client knows what it asked for (aiokafka's fetch position).
    ``on_gap(topic, partition, expected, got)`` runs once per gap (a metric, say).
    """

    def __init__(self, timeout_s: float = DEFAULT_GAP_TIMEOUT_S, *,
                 on_gap: Callable[[str, int, int, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "consumer") -> None:
        self.timeout_s = timeout_s
        self.on_gap = on_gap
        self.clock = clock
        self.name = name
        self.gaps = 0  # distinct gaps detected
        self.missing = 0  # offsets they spanned when first seen
        self._next: dict[tuple[str, int], int] = {}
        self._open: dict[tuple[str, int], _Gap] = {}

    # ------------------------------------------------------------------ positions
    def reset(self, topic: str, partition: int, offset: int | None) -> None:
        """The next offset to expect (``None`` or a negative logical offset: take the next record as it comes)."""
        key = (topic, partition)
        if offset is None or offset < 0:
            self._next.pop(key, None)
        else:
            self._next[key] = offset

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: its next owner checks from its own position."""
        self._next.pop((topic, partition), None)
        self._open.pop((topic, partition), None)

    def expected(self, topic: str, partition: int) -> int | None:
        return self._next.get((topic, partition))

    @property
    def open_gaps(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------------ checks
    def admit(self, topic: str, partition: int, offset: int) -> int | None:
        """None if ``offset`` is the next record (it is accepted), else the offset to fetch again from.

        An offset below the expected one (a rebalance or seek the guard was not told about)
        is accepted as the new position: re-delivery is the consumers' business (at least once).
        """
        key = (topic, partition)
        exp = self._next.get(key)
        if exp is not None and offset > exp:
            self.check(topic, partition, exp, offset)
            return exp
        self._next[key] = offset + 1
        self._closed(key, offset)
        return None

    def check(self, topic: str, partition: int, expected: int, got: int) -> bool:
        """True when ``got`` jumps past ``expected`` (a gap: do not take it, fetch from ``expected``).

        Raises :class:`OffsetGapError` once the same gap has stayed open ``timeout_s``.
        """
        key = (topic, partition)
        if got <= expected:
            self._closed(key, got)
            return False
        now = self.clock()
        gap = self._open.get(key)
        if gap is None or gap.expected != expected or now - gap.last_seen > self.timeout_s:
            self._open[key] = _Gap(expected, got, now, now)
            self.gaps += 1
            self.missing += got - expected
            log.warning("%s: offset gap on %s[%d]: expected offset %d, the broker returned %d (%d missing); "
                        "fetching again from %d", self.name, topic, partition, expected, got, got - expected,
                        expected)
            if self.on_gap is not None:
                self.on_gap(topic, partition, expected, got)
            return True
        gap.refetches += 1
        gap.last_seen = now
        if now - gap.first_seen > self.timeout_s:
            raise OffsetGapError(topic, partition, expected, got, now - gap.first_seen)
        return True

    def _closed(self, key: tuple[str, int], offset: int) -> None:
        gap = self._open.get(key)
        if gap is not None and offset >= gap.expected:
            del self._open[key]
            log.debug("%s: gap at %s[%d]@%d filled after %d re-fetches, %.3fs", self.name, key[0], key[1],
                      gap.expected, gap.refetches, self.clock() - gap.first_seen)

    def filter_batch(self, items: Sequence[T], where: Callable[[T], tuple[str, int, int] | None]
                     ) -> tuple[list[T], dict[tuple[str, int], int]]:
        """Split a consumed batch: the records to hand out, and ``{(topic, partition): offset}`` to seek back to.

        ``where(item)`` gives (topic, partition, offset), or None for an item that is not a
        record (an error event), which passes through. After a gap, that partition's later
        items in the batch are dropped too: they come again after the seek.
        """
        kept: list[T] = []
        seeks: dict[tuple[str, int], int] = {}
        for item in items:
            pos = where(item)
            if pos is None:
                kept.append(item)
                continue
            topic, partition, offset = pos
            if (topic, partition) in seeks:
                continue
            back = self.admit(topic, partition, offset)
            if back is None:
                kept.append(item)
            else:
                seeks[(topic, partition)] = back
        return kept, seeks


class AdaptiveWait:
    """The fetch's maximum wait, adapted to the load.

    * **Flowing** (a reply with data): halved towards ``low_ms``. On the embedded broker a
      record that arrives while a fetch waits is seen only when that wait ends (tansu
      rescans storage after the wait, it is not woken by the produce), so the wait is
      added to the latency of every event that arrives between fetches: keep it short
      while records flow. (Apache Kafka answers a waiting fetch as soon as a record
      arrives; there a short wait costs only more fetch requests while data flows.)
    * **Idle** (an empty reply with nothing beyond the position): after ``idle_after_ms``
      of waits in a row without data, doubled back to ``base_ms``, so an idle worker
      polls at the base rate, not every ``low_ms``.
    * **Starved** (an empty reply although the partition had data beyond the position,
      ``behind``: tansu ran out of wait while listing a long partition's batches): doubled
      up to ``max_ms``; any other reply halves it back towards ``base_ms`` first. tansu
      answers as soon as it finds data, so a long wait costs nothing while behind.

    ``low_ms`` defaults to ``base_ms``: one fixed wait, the starvation guard alone.

    >>> w = AdaptiveWait(20, 5000, low_ms=2, idle_after_ms=50)
    >>> [w.update(got_data=True) for _ in range(4)]                     # records flow: short
    [10, 5, 2, 2]
    >>> [w.update(got_data=False) for _ in range(28)][22:]              # 50 ms idle, then back to 20
    [2, 2, 4, 8, 16, 20]
    """

    def __init__(self, base_ms: int, max_ms: int = 1000, *, low_ms: int | None = None,
                 idle_after_ms: int = 50) -> None:
        self.base_ms = base_ms
        self.max_ms = max(max_ms, base_ms)
        self.low_ms = base_ms if low_ms is None else max(1, min(low_ms, base_ms))
        self.idle_after_ms = idle_after_ms
        self.current_ms = base_ms
        self.starved = 0  # empty replies below the high watermark
        self._idle_ms = 0  # waits in a row that came back empty (an estimate of the idle time)

    def update(self, got_data: bool, behind: bool = False) -> int:
        if not got_data and behind:
            self.starved += 1
            self._idle_ms = 0
            self.current_ms = min(self.max_ms, self.current_ms * 2)
        elif got_data:
            self._idle_ms = 0
            self.current_ms = max(self.low_ms, self.current_ms // 2)
        elif self.current_ms > self.base_ms:  # done starving: back towards the base wait
            self.current_ms = max(self.base_ms, self.current_ms // 2)
        else:
            self._idle_ms += self.current_ms
            if self._idle_ms >= self.idle_after_ms:
                self.current_ms = min(self.base_ms, self.current_ms * 2)
        return self.current_ms


def partitions_behind(rows: Iterable[tuple[int | None, int | None, bool]]) -> tuple[bool, bool]:
    """(any data, any starved) over one fetch reply's partitions: ``(position, highwater, got_records)``."""
    data = starved = False
    for position, highwater, got in rows:
        if got:
            data = True
        elif position is not None and highwater is not None and highwater > position:
            starved = True
    return data, starved
