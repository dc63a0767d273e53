"""The Faust app: thin agents that hand micro-batches to the worker runtime.

Transport settings follow measurements on the embedded broker (shared notes on Faust
over tansu): bounded poll batches so a member is never dropped mid-batch, short
session timeouts so group joins take seconds, and leave-group on shutdown even in
generation 0 (tansu starts there) so a restart does not wait for the old member.
Inside aiokafka's fetcher, two guards against the embedded broker's faults (README, "The
embedded broker"): records past a hole in a partition's offsets never reach Faust (they are
fetched again), and the fetch wait grows while a long partition starves the fetches.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import faust
from faust.types import EventT, StreamT
from mode.utils.futures import notify

from streamlearn.schemas.records import KafkaRecord
from streamlearn.settings import Settings, SettingsError
from streamlearn.streams import web
from streamlearn.streams.gapguard import AdaptiveWait, GapGuard, OffsetGapError, partitions_behind
from streamlearn.streams.shutdown import StopGuard
from streamlearn.streams.worker import WorkerRuntime

log = logging.getLogger(__name__)

EXIT_AGENT_CRASHED = 70
# the longest fetch wait the adaptive wait reaches: tansu lists ~0.5-1k batches per ms on
# 2 busy cores, so this keeps partitions of a few million one-record batches readable (README)
MAX_FETCH_WAIT_MS = 5000


def _credentials(settings: Settings):
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile) if "SSL" in proto else None
    if proto.startswith("SASL"):
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=pw,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=ctx,
        )
    return faust.SSLCredentials(ctx)


def transport_options(settings: Settings) -> dict:
    """The Faust transport settings every app of ours uses (the worker, and the benchmark's
    naive and ceiling apps, so their comparison stays fair)."""
    return dict(
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are created by ensure_topics with our partition count
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_max_poll_records=settings.max_poll_records,
        broker_max_poll_interval=settings.max_poll_interval_s,
        producer_linger=0.005,
    )


def _to_messages(events: Sequence[EventT]) -> list[KafkaRecord]:
    out = []
    for ev in events:
        m = ev.message
        out.append(KafkaRecord("", m.topic, m.partition, m.offset, int((m.timestamp or 0.0) * 1000.0),
                               key=m.key, value=m.value))
    return out


# event-loop turns a batch waits for more events already inside the process (fetched, in
# Faust's queues) before it is handed over: enough for the stream to drain its queue
SETTLE_TICKS = 2


def _behind_broker(stream: StreamT) -> Callable[[Sequence[EventT]], bool]:
    """Whether the broker holds more of a batch's partitions than the batch reaches: the high
    watermark of the latest fetch reply is past the batch's last offset (a backlog)."""
    def behind(events: Sequence[EventT]) -> bool:
        last: dict = {}
        for ev in events:
            m = ev.message
            last[m.tp] = max(last.get(m.tp, -1), m.offset)
        try:
            consumer = stream.app.consumer
            return any((hw := consumer.highwater(tp)) is not None and hw > off + 1 for tp, off in last.items())
        except Exception:  # noqa: BLE001 - no consumer (a test context) or not assigned: no backlog known
            return False

    return behind


async def take_settled(stream: StreamT, max_: int, within: float,
                       behind: Callable[[Sequence[EventT]], bool] | None = None) -> AsyncIterator[list[EventT]]:
    """Faust's ``stream.take_events(max_, within)`` with a window that adapts to the load.

    ``take_events`` hands over whatever it holds every ``within`` seconds, so every event
    waited on average half a window, and an idle agent woke ``1/within`` times a second.
    Here a batch is first handed over as soon as no more events are waiting inside the
    process; it waits for more (until it holds ``max_`` or ``within`` has passed) only when
    the broker has more of its partitions than it reaches (``behind``, default: the latest
    fetch's high watermark is past the batch's last offset), i.e. under a backlog, where
    large batches are what keeps up. At low load an event is scored when it arrives; idle,
    the agent sleeps until an event comes.

    Acknowledgement is the same as ``take_events``: the batch's events are acked only when
    the consumer of the batch comes back for the next one (after its predictions are
    delivered), so an offset is never committed before its event's output is out.
    """
    behind = behind or _behind_broker(stream)
    events: list[EventT] = []
    arrived = asyncio.Event()  # an event joined the (empty or settling) batch
    consumed = asyncio.Event()
    consuming: asyncio.Future | None = None
    loop = asyncio.get_running_loop()

    async def add(value):  # noqa: ANN001, ANN202 - a Faust stream processor
        nonlocal consuming
        if consuming is not None:  # a batch is out: wait until it is processed and acked
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("take buffer found current_event is None")
        events.append(event)
        arrived.set()
        if len(events) >= max_:  # strictly at most max_ per batch
            consumed.clear()
            await stream.wait(consumed)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked by hand below, after the batch is processed
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # noqa: SLF001 - as take_events does
    try:
        while not stream.should_stop:
            if not events:
                arrived.clear()
                await stream.wait_for_stopped(arrived, timeout=1.0)  # no timer while idle
                continue
            deadline = loop.time() + within
            while len(events) < max_ and loop.time() < deadline:
                n = len(events)
                for _ in range(SETTLE_TICKS):
                    await asyncio.sleep(0)
                if len(events) == n:
                    break
            # a backlog: more of it into this batch while it lasts (up to max_ and the window)
            while len(events) < max_ and (remaining := deadline - loop.time()) > 0 and behind(events):
                arrived.clear()
                await stream.wait_for_stopped(arrived, timeout=remaining)
            consuming = loop.create_future()
            try:
                yield list(events)
            finally:
                for event in events:
                    await stream.ack(event)
                events.clear()
                arrived.clear()
                notify(consuming)
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)  # noqa: SLF001


def _fatal(what: str, exc: BaseException) -> None:
    # Crash-only: an agent that dies while the process lives on would silently stop
    # scoring. State is checkpointed, so exiting and being restarted is safe.
    log.critical("%s crashed: %r\n%s", what, exc, "".join(traceback.format_exception(exc)))
    sys.stderr.flush()
    os._exit(EXIT_AGENT_CRASHED)


def crash_only(name: str, body: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``body`` as a Faust task or timer that exits the process (:func:`_fatal`) if it raises.

    Faust treats an exception escaping a task or timer as an app crash and runs its own
    shutdown, which exits 1 at best (a worker once hung in it, see ``worker_status``); a
    supervisor then sees neither the agents' code 70 nor the reason in one log line.
    """
    async def guarded() -> None:
        try:
            await body()
        except Exception as exc:  # noqa: BLE001 - a bug or an outage the store retries did not absorb
            _fatal(name, exc)

    guarded.__name__ = guarded.__qualname__ = name  # Faust names timers and their logs after it
    return guarded


def create_app(settings: Settings, runtime: WorkerRuntime | None = None,
               retrain: Callable[[Settings], int] | None = None) -> tuple[faust.App, WorkerRuntime]:
    runtime = runtime or WorkerRuntime(settings, retrain=retrain)
    app = faust.App(
        settings.app_id,
        **transport_options(settings),
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds web_bind (default 0.0.0.0), not web_host
        web_port=settings.web_port,
        web_in_thread=False,
    )

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def batch_agent(name: str, handler: Callable[[list[KafkaRecord]], Awaitable[int]]):
        async def agent(stream):
            try:
                async for events in take_settled(stream, settings.batch_max, settings.batch_within_s):
                    await handler(_to_messages(events))
            except Exception as exc:  # noqa: BLE001 - anything here is a bug or an outage
                _fatal(name, exc)

        agent.__name__ = name
        return agent

    app.agent(topic(settings.topic_events), name="score")(batch_agent("score", runtime.on_events))
    app.agent(topic(settings.topic_feedback), name="learn")(batch_agent("learn", runtime.on_feedback))

    async def retrain_schedule() -> None:
        runtime.maybe_retrain()

    # every task and timer goes through crash_only: one that raises ends the process
    app.task(crash_only("startup", runtime.start))
    app.timer(settings.checkpoint_interval_s)(crash_only("checkpoint", runtime.checkpoint))
    app.timer(0.5)(crash_only("housekeeping", runtime.housekeeping))
    app.timer(1.0)(crash_only("retrain_schedule", retrain_schedule))
    app.timer(1.0)(crash_only("status", runtime.publish_status))

    # rebalance callbacks too: Faust turns their exceptions into the same app crash as a task's
    @app.on_partitions_assigned.connect
    async def assigned(app, assigned, **kwargs) -> None:  # noqa: ARG001
        tps = sorted((tp.topic, tp.partition) for tp in assigned)
        await crash_only("partition assignment", lambda: runtime.on_assigned(tps))()

    @app.on_partitions_revoked.connect
    async def revoked(app, revoked, **kwargs) -> None:  # noqa: ARG001
        await crash_only("partition revocation", runtime.on_revoked)()

    @app.on_before_shutdown.connect
    async def shutdown(app, **kwargs) -> None:  # noqa: ARG001
        await runtime.close()

    async def announce() -> None:
        host = f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host
        log.info("HTTP API (/metrics /health /ready /models /score) listening on http://%s:%d (web_host, web_port)",
                 host, settings.web_port)

    app.task(crash_only("announce", announce))
    app.streamlearn_runtime = runtime  # for the web views
    web.install(app, runtime)  # /metrics /health /ready /models /score
    return app, runtime


class _Worker(faust.Worker):
    """Faust's worker whose stop on SIGTERM/SIGINT is bounded (streams/shutdown.py)."""

    stop_guard: StopGuard | None = None

    def _schedule_shutdown(self, signal) -> None:  # noqa: ANN001 - mode's signature
        if self.stop_guard is not None:
            self.stop_guard.arm(self.loop)
        super()._schedule_shutdown(signal)


def run_worker(settings: Settings, loglevel: str = "info",
               retrain: Callable[[Settings], int] | None = None) -> None:
    """Run a worker in this process until SIGINT/SIGTERM (graceful: checkpoint, flush, commit;
    bounded by ``stop_timeout_s``, and immediate while the state store is unreachable).
    ``retrain`` (optional) is the scheduled batch retrain (``STREAMLEARN_RETRAIN_INTERVAL_S``).

    Exits with a one-line message if the settings are unsafe for a worker (``check_worker``).
    """
    try:
        settings.check_worker()
    except SettingsError as exc:
        raise SystemExit(f"streamlearn worker: {exc}") from None
    _patch_leave_group_generation_zero()
    guard = _patch_fetch_max_wait(settings.fetch_max_wait_ms, settings.fetch_min_wait_ms)
    app, runtime = create_app(settings, retrain=retrain)
    guard.on_gap = lambda topic, partition, expected, got: runtime.metrics.offset_gap(topic)
    for topic in (settings.topic_events, settings.topic_feedback):
        runtime.metrics.offset_gaps.labels(topic)  # the series exist at 0, so increase() sees the first gap
    # Everything imported and built so far lives as long as the process: out of the
    # collector's sight (gc.freeze), and young-generation passes less often. Per-event
    # garbage is mostly acyclic (freed by refcount), so this trims GC time, not memory.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    worker = _Worker(app, loglevel=loglevel, quiet=True, override_logging=True)
    worker.stop_guard = StopGuard(settings.stop_timeout_s, runtime.backend.ping, lambda: app.consumer.commit())
    worker.execute_from_commandline()


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


def _patch_fetch_max_wait(ms: int, low_ms: int | None = None) -> GapGuard:
    """Faust hard-codes ``fetch_max_wait_ms=1500``; an idle topic in the same fetch then
    holds back a busy one, which showed as ~0.4 s median latency at 2k events/s.

    ``ms`` is the wait while idle, ``low_ms`` (default ``ms``) the wait while records flow;
    the fetcher lengthens it when the embedded broker starves a long partition, and guards
    every partition against offset gaps (:func:`_patch_fetcher`, :class:`AdaptiveWait`).
    """
    from faust.transport.drivers import aiokafka as driver

    global _FETCH_LOW_MS
    _FETCH_LOW_MS = low_ms
    guard = _patch_fetcher()

    base = getattr(driver.aiokafka, "_streamlearn_base", driver.aiokafka.AIOKafkaConsumer)

    class Consumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    driver.aiokafka._streamlearn_base = base
    driver.aiokafka.AIOKafkaConsumer = Consumer
    return guard


# One guard for the process's aiokafka fetchers (a worker has one consumer); the worker
# points its ``on_gap`` at its metrics.
FETCH_GUARD = GapGuard(name="worker")
# the fetch wait while records flow (``fetch_min_wait_ms``), set by _patch_fetch_max_wait
_FETCH_LOW_MS: int | None = None


def _patch_fetcher() -> GapGuard:
    """Two guards inside aiokafka's fetcher, below Faust (see ``streams/gapguard.py``).

    * **Offset gaps.** A fetch reply's records are cut at the first offset that jumps past
      the expected one (the fetch position, then each record + 1); the partition's position
      stays at the first missing offset, so the next fetch asks for it again. Nothing past a
      hole ever reaches Faust: no record is processed twice or skipped, and the offsets Faust
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
                    _fatal("fetch", exc)
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
