"""The worker's input: one consumer-group member on the events and feedback topics, handing
the runtime whole batches as the client fetched them.

Faust delivers a message at a time through its streams (a queue per topic, processors, an
event object and acknowledgement bookkeeping per message): ~40% of the worker's CPU at max
load went there, more than every piece of our own work together (docs/performance.md). The
worker only ever wanted batches, so it reads them straight from aiokafka (Faust's own
client): ``getmany`` returns what the background fetcher already holds, at once (one event at
low load, up to ``batch_max`` under a backlog), and waits only while nothing is there. The
Faust app still runs the process: its web server, timers, signals and shutdown.

What Faust's consumer did is done here:

* **Group membership.** aiokafka's coordinator joins the group ``app_id``; the assignment
  (round robin) gives the feedback topic's single partition to one member: the learner.
* **Rebalances.** Revocation waits for the batch in flight, commits what is done and hands the
  learner's state over (``WorkerRuntime.on_revoked``); assignment tells the runtime its new
  partitions (``on_assigned``), before any record of them is fetched.
* **Commits.** An offset is committed only after the outputs of its batch were delivered
  (``deliver``, the producer's flush, runs before every commit; batches do not wait for the
  broker in between): at least once; the loop is idempotent by event id. Commits are made
  every ``COMMIT_INTERVAL_S``, at revocation and at stop.
* **Offset gaps and long partitions** on the embedded broker: guarded inside aiokafka's
  fetcher (``streams/app.py`` ``_patch_fetcher``), below this class.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from streamlearn.schemas.records import KafkaRecord
from streamlearn.settings import Settings
from streamlearn.streams.gapguard import AdaptiveWait, GapGuard, OffsetGapError, partitions_behind
from streamlearn.streams.shutdown import fatal

log = logging.getLogger(__name__)

# Committing costs a broker round trip; a crash repeats at most this much input (idempotent).
COMMIT_INTERVAL_S = 1.0
# the longest fetch wait the adaptive wait reaches: tansu lists ~0.5-1k batches per ms on
# 2 busy cores, so this keeps partitions of a few million one-record batches readable (docs/embedded-broker.md)
MAX_FETCH_WAIT_MS = 5000
# the longest a label is held back behind its events (Holdback)
HOLD_MAX_S = 5.0
# how long getmany waits for records when none are fetched yet (returns at once when some are)
IDLE_POLL_MS = 500


@dataclass
class GroupState:
    """Consumer-group membership as the rebalance callbacks report it (for /ready)."""

    joined: bool = False  # got an assignment at least once
    rebalancing: bool = False
    partitions: int = 0


def client_security(settings: Settings) -> dict:
    """aiokafka's security arguments from the settings (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)."""
    proto = settings.kafka_security_protocol
    out: dict = {"security_protocol": proto}
    if "SSL" in proto:
        out["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if proto.startswith("SASL"):
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        out.update(sasl_mechanism=settings.kafka_sasl_mechanism or "PLAIN",
                   sasl_plain_username=settings.kafka_sasl_username, sasl_plain_password=pw)
    return out


Handler = Callable[[list[KafkaRecord]], Awaitable[int]]


class Holdback:
    """Labels held back while they are ahead of their events.

    Under a backlog a fetch brings up to 1 MB per partition: ~5,000 events but ~16,000
    labels, so labels overtook their events by thousands, and each was parked in Redis and
    learned later, when its event came (~2x the work per label, and a learning order far from
    the order things happened). Like Kafka Streams' timestamp-ordered choice between input
    partitions, a label is handed over only once the events processed have reached its
    timestamp, while the events topic still has a backlog; with no backlog (normal operation,
    labels arriving after their events) nothing is held. Liveness: a label is not held longer
    than ``max_hold_s`` (producers' clocks may disagree), nor at all while the events have
    not advanced for ``max_hold_s`` (a stalled partition). Released labels are an
    offset-order prefix of each partition, so commits stay contiguous.
    """

    def __init__(self, max_hold_s: float = HOLD_MAX_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_hold_s, self.clock = max_hold_s, clock
        self.held: dict[Any, deque] = {}  # partition -> (record, held since) in offset order
        self.lead_time: int | None = None  # the latest event timestamp processed (ms)
        self.lead_moved = clock()  # when events last came

    def __len__(self) -> int:
        return sum(len(q) for q in self.held.values())

    def note_lead(self, records: Iterable[Any]) -> None:
        self.lead_moved = self.clock()
        for r in records:
            if self.lead_time is None or r.timestamp > self.lead_time:
                self.lead_time = r.timestamp

    def add(self, tp: Any, records: Iterable[Any]) -> None:
        now = self.clock()
        self.held.setdefault(tp, deque()).extend((r, now) for r in records)

    def release(self, lead_behind: bool, limit: int) -> dict[Any, list]:
        """Per partition, the held records that may go now (at most ``limit`` in all)."""
        out: dict[Any, list] = {}
        oldest_allowed = self.clock() - self.max_hold_s
        lead_behind = lead_behind and self.lead_moved > oldest_allowed  # stalled events hold nothing
        for tp, q in self.held.items():
            got = []
            while q and limit > 0:
                rec, since = q[0]
                ahead = self.lead_time is None or rec.timestamp > self.lead_time
                if lead_behind and ahead and since > oldest_allowed:
                    break
                got.append(q.popleft()[0])
                limit -= 1
            if got:
                out[tp] = got
        return out

    def drop(self, tps: Iterable[Any]) -> None:
        for tp in tps:
            self.held.pop(tp, None)


_new = object.__new__


def _kafka_records(records: Iterable[Any], out: list[KafkaRecord]) -> None:
    """Append a :class:`KafkaRecord` per fetched record: what ``KafkaRecord("", r.topic,
    r.partition, r.offset, r.timestamp, key=r.key, value=r.value)`` makes (every field, in
    the dataclass's order, defaults included; equal, same hash), without the frozen
    dataclass's ``object.__setattr__`` per field: ~2/3 of its cost, once per message."""
    append = out.append
    for r in records:
        rec = _new(KafkaRecord)
        rec.__dict__.update(kind="", topic=r.topic, partition=r.partition, offset=r.offset, timestamp=r.timestamp,
                            timestamp_type=1, key=r.key, value=r.value, headers=())
        append(rec)


class BatchConsumer(ConsumerRebalanceListener):
    """Reads the handlers' topics as one group member and hands each topic's records of a
    fetch to its handler, in the handlers' order. ``on_assigned`` and ``on_revoked`` are the
    runtime's rebalance hooks, ``deliver`` waits for the outputs before a commit. With
    ``follow=(lead, follower)`` the follower's records (labels) are held back while they are
    ahead of the lead's (events) under a backlog (:class:`Holdback`)."""

    def __init__(self, settings: Settings, handlers: dict[str, Handler],
                 on_assigned: Callable[[list[tuple[str, int]]], Awaitable[None]],
                 on_revoked: Callable[[], Awaitable[None]], deliver: Callable[[], Awaitable[None]],
                 group_id: str | None = None, follow: tuple[str, str] | None = None) -> None:
        self.settings = settings
        self._deliver = deliver
        self.handlers = handlers
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        self.group = GroupState()
        self.group_id = group_id or settings.app_id
        self.consumer: AIOKafkaConsumer | None = None
        self._busy = asyncio.Lock()  # held while a batch is processed: revocation and stop wait
        self._done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._stopping = False
        self._unseeded: list[TopicPartition] = []  # assigned, committed offset not read yet
        self.follow = follow
        self.holdback = Holdback()
        self._next: dict[TopicPartition, int] = {}  # next offset getmany returns, per lead partition

    def _client(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            *self.handlers,
            bootstrap_servers=s.kafka_bootstrap,
            client_id=f"{s.app_id}-worker",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            max_poll_interval_ms=int(s.max_poll_interval_s * 1000),
            max_poll_records=s.batch_max,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            **client_security(s),
        )

    async def start(self) -> None:
        self.consumer = self._client()
        self.consumer.subscribe(list(self.handlers), listener=self)
        await self.consumer.start()

    async def run(self) -> None:
        """Fetch, process, commit, until :meth:`stop`. Raises what a handler raises."""
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("BatchConsumer.run before start")
        while not self._stopping:
            try:
                fetched = await (self._fetch_aligned() if self.follow is not None else
                                 consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=self.settings.batch_max))
            except ConsumerStoppedError:
                return
            if self._unseeded:
                await self._seed_committed()
            async with self._busy:
                if self._stopping:
                    return  # not processed, not committed: read again after a restart
                if fetched:
                    await self._process(fetched)
                # also when idle: the last batch's offsets are committed within the interval
                if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                    await self._commit()

    async def _fetch_aligned(self) -> dict:
        """A batch of events and a batch of labels, labels held back while they are ahead of
        the events (:class:`Holdback`).

        Each topic is asked for separately: aiokafka's ``getmany`` drains one partition's
        buffer before the next, and a backlog fetch holds thousands of records per partition,
        so asked together one topic starved the other for seconds. Labels are fetched only
        while fewer than a batch of them are held (the memory bound). With nothing buffered
        the fetch waits for whatever comes first.
        """
        consumer, hold, batch_max = self.consumer, self.holdback, self.settings.batch_max
        lead, follower = self.follow
        assigned = consumer.assignment()
        lead_tps = [tp for tp in assigned if tp.topic == lead]
        follow_tps = [tp for tp in assigned if tp.topic == follower]
        fetched: dict = {}
        if follow_tps and len(hold) < batch_max:
            fetched.update(await consumer.getmany(*follow_tps, max_records=batch_max - len(hold)))
        if lead_tps:
            fetched.update(await consumer.getmany(*lead_tps, max_records=batch_max))
        if not fetched and not (len(hold) and not self._lead_behind(lead)):
            # wait for whatever comes first; for events only while a batch of labels is held
            parts = lead_tps if len(hold) >= batch_max else ()
            fetched = await consumer.getmany(*parts, timeout_ms=IDLE_POLL_MS, max_records=batch_max)
        batch: dict = {}
        for tp, records in fetched.items():
            if tp.topic == follower:
                hold.add(tp, records)
            else:
                batch[tp] = records
                if tp.topic == lead:
                    hold.note_lead(records)
                    self._next[tp] = records[-1].offset + 1
        if len(hold):
            batch.update(hold.release(self._lead_behind(lead), batch_max))
        return batch

    def _lead_behind(self, lead: str) -> bool:
        """Whether the broker holds events of this member's partitions not yet processed."""
        for tp in self.consumer.assignment():
            if tp.topic != lead:
                continue
            hw = self.consumer.highwater(tp)
            nxt = self._next.get(tp, self._committed.get(tp, 0))
            if hw is None or hw > nxt:
                return True
        return False

    async def _process(self, fetched: dict) -> None:
        by_topic: dict[str, list[KafkaRecord]] = {}
        for tp, records in fetched.items():
            _kafka_records(records, by_topic.setdefault(tp.topic, []))
        # in the handlers' order (events before labels): the loop runs one batch at a time, and
        # an event's latency should not include the learning of labels fetched with it
        calls = [handler(by_topic[topic]) for topic, handler in self.handlers.items() if topic in by_topic]
        if len(calls) == 1:
            await calls[0]
        else:
            await asyncio.gather(*calls)
        for tp, records in fetched.items():  # processed: committed after the next delivery
            self._done[tp] = records[-1].offset + 1

    async def _seed_committed(self) -> None:
        # the group's committed offsets of newly assigned partitions, for the lag metrics
        todo, self._unseeded = self._unseeded, []
        for tp in todo:
            if tp not in self._committed and self.consumer is not None:
                off = await self.consumer.committed(tp)
                if off is not None:
                    self._committed.setdefault(tp, off)

    async def _commit(self) -> None:
        self._last_commit = time.monotonic()
        todo = {tp: off for tp, off in self._done.items() if self._committed.get(tp) != off}
        if not todo or self.consumer is None:
            return
        await self._deliver()  # the outputs of everything below these offsets are on the broker
        try:
            await self.consumer.commit(todo)
        except KafkaError as exc:
            # e.g. a rebalance under way, or the broker away: the offsets stay pending (the next
            # owner, or this member, processes that input again: idempotent by event id)
            log.warning("offset commit failed, retried with the next one: %r", exc)
            return
        self._committed.update(todo)

    async def commit(self) -> None:
        """Commit the offsets of every batch processed so far (finished ones only)."""
        await self._commit()

    async def stop(self) -> None:
        """Finish the batch in flight, commit, leave the group."""
        self._stopping = True
        if self.consumer is None:
            return
        async with self._busy:
            try:
                await self._commit()
            finally:
                await self.consumer.stop()

    # ------------------------------------------------------------ rebalance listener
    # aiokafka logs a listener's exception and carries on; a worker that failed to hand over
    # or take up the learner's state must not (crash-only, like every task: exit 70)
    async def on_partitions_revoked(self, revoked) -> None:  # noqa: ANN001 - aiokafka's signature
        try:
            self.group.rebalancing = True
            async with self._busy:  # the batch in flight finishes first
                if self.consumer is not None and not self._stopping:
                    await self._commit()
                for tp in revoked:
                    self._done.pop(tp, None)
                    self._committed.pop(tp, None)
                    self._next.pop(tp, None)
                self.holdback.drop(revoked)  # not processed, not committed: the next owner reads them
                await self._on_revoked()
        except Exception as exc:  # noqa: BLE001
            fatal("partition revocation", exc)

    async def on_partitions_assigned(self, assigned) -> None:  # noqa: ANN001 - aiokafka's signature
        try:
            tps = sorted((tp.topic, tp.partition) for tp in assigned)
            self._unseeded = sorted(assigned)
            await self._on_assigned(tps)
            self.group.joined, self.group.rebalancing, self.group.partitions = True, False, len(tps)
        except Exception as exc:  # noqa: BLE001
            fatal("partition assignment", exc)

    # ------------------------------------------------------------ observability
    def offsets(self) -> list[tuple[str, int, int | None, int | None]]:
        """``(topic, partition, fetch high watermark, committed offset)`` per assigned partition.

        The high watermark comes from the last fetch response (reliable on tansu, unlike
        ListOffsets "latest"); the committed offset is the last one this member committed.
        """
        consumer = self.consumer
        if consumer is None:
            return []
        rows = []
        for tp in sorted(consumer.assignment()):
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch yet for this partition
                highwater = None
            rows.append((tp.topic, tp.partition, highwater, self._committed.get(tp)))
        return rows


# ------------------------------------------------------------------ aiokafka patches


def patch_aiokafka(fetch_min_wait_ms: int | None = None) -> GapGuard:
    """Apply the worker's patches to aiokafka (idempotent): leave the group at stop even in
    generation 0, and guard the fetcher (offset gaps, adaptive fetch wait with
    ``fetch_min_wait_ms`` while records flow). Returns the process's gap guard."""
    global _FETCH_LOW_MS
    _FETCH_LOW_MS = fetch_min_wait_ms
    _patch_leave_group_generation_zero()
    return _patch_fetcher()


def _patch_leave_group_generation_zero() -> None:
    """aiokafka sends LeaveGroup only when generation > 0, but tansu's first generation is 0.

    Without this a clean restart waits a whole session timeout for the old member to
    expire. The request itself carries no generation; "not joined" is -1.
    """
    from aiokafka import errors
    from aiokafka.consumer import group_coordinator as gc
    from aiokafka.protocol.group import LeaveGroupRequest

    cls = gc.GroupCoordinator
    if getattr(cls, "_streamlearn_leave_patch", False):
        return

    async def _maybe_leave_group(self) -> None:
        if self.generation >= 0 and self._group_instance_id is None:
            try:
                await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
            except errors.KafkaError as err:
                gc.log.error("LeaveGroup request failed: %s", err)
        self.reset_generation()

    cls._maybe_leave_group = _maybe_leave_group
    cls._streamlearn_leave_patch = True


# One guard for the process's aiokafka fetchers (a worker has one consumer); the worker
# points its ``on_gap`` at its metrics.
FETCH_GUARD = GapGuard(name="worker")
# the fetch wait while records flow (``fetch_min_wait_ms``), set by patch_aiokafka
_FETCH_LOW_MS: int | None = None


def _patch_fetcher() -> GapGuard:
    """Two guards inside aiokafka's fetcher, below Faust (see ``streams/gapguard.py``).

    * **Offset gaps.** A fetch reply's records are cut at the first offset that jumps past
      the expected one (the fetch position, then each record + 1); the partition's position
      stays at the first missing offset, so the next fetch asks for it again. Nothing past a
      hole ever reaches the worker: no record is processed twice or skipped, and the offsets the worker
      commits (processed + 1) can never pass a hole. A jump over a transaction marker or a
      transactional batch is let through (aiokafka skips markers and aborted batches itself);
      otherwise only compaction, not used on our topics, makes a legitimate jump. A hole
      still open after the guard's timeout ends the worker (exit 70, one log line): a
      restart re-reads from the committed offset.
    * **Fetch wait.** After each fetch reply, the next request's max wait adapts
      (:class:`AdaptiveWait`): doubled when a partition came back empty below its high
      watermark (starvation), halved towards ``fetch_min_wait_ms`` while records flow, and
      back to ``fetch_max_wait_ms`` once idle.
    """
    from aiokafka.consumer import fetcher as f

    if getattr(f, "_streamlearn_guarded", False):
        return FETCH_GUARD
    base_records = f.PartitionRecords

    class BatchWatch:
        """The reply's batches as aiokafka's record iterator reads them, noting transaction
        markers and transactional batches (an aborted one is skipped): the only legitimate
        jumps on an uncompacted topic."""

        def __init__(self, records) -> None:
            self.records, self.transactional = records, False

        def has_next(self) -> bool:
            return self.records.has_next()

        def next_batch(self):
            batch = self.records.next_batch()
            if batch is not None and (batch.is_control_batch or batch.is_transactional):
                self.transactional = True
            return batch

    class GuardedRecords(base_records):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._records = BatchWatch(self._records)  # read lazily by the iterator's first step

        def __next__(self):
            if self._records_iterator is None:  # cut at a gap, or exhausted
                raise StopIteration
            expected = self.next_fetch_offset
            self._records.transactional = False
            rec = super().__next__()
            if (rec.offset != expected or FETCH_GUARD.open_gaps) and not (
                    rec.offset > expected and self._records.transactional):
                try:
                    gap = FETCH_GUARD.check(rec.topic, rec.partition, expected, rec.offset)
                except OffsetGapError as exc:
                    fatal("fetch", exc)
                if gap:
                    self.next_fetch_offset = expected  # the position the next fetch asks for
                    self._records_iterator = None
                    raise StopIteration
            return rec

    base_proc = f.Fetcher._proc_fetch_request

    async def _proc_fetch_request(self, assignment, node_id, request):
        wait = self.__dict__.get("_streamlearn_wait")
        if wait is None:
            wait = self._streamlearn_wait = AdaptiveWait(self._fetch_max_wait_ms, MAX_FETCH_WAIT_MS,
                                                         low_ms=_FETCH_LOW_MS)
        asked = [(f.TopicPartition(topic, p), offset) for topic, parts in request.topics for p, offset, _ in parts]
        result = await base_proc(self, assignment, node_id, request)
        if assignment.active:
            rows = []
            for tp, offset in asked:
                state = assignment.state_value(tp)
                rows.append((offset, None if state is None else state.highwater, tp in self._records))
            data, starved = partitions_behind(rows)
            before = wait.current_ms
            self._fetch_max_wait_ms = wait.update(data, starved)
            if starved and self._fetch_max_wait_ms > before and wait.starved % 100 == 1:
                log.info("fetch came back empty below the high watermark (long partition on the embedded "
                         "broker?): max wait %d -> %d ms", before, self._fetch_max_wait_ms)
        return result

    f.PartitionRecords = GuardedRecords
    f.Fetcher._proc_fetch_request = _proc_fetch_request
    f._streamlearn_guarded = True
    return FETCH_GUARD
