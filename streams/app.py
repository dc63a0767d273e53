"""The worker process: a Faust app that runs the worker's input, timers, web API and shutdown.

Input does not go through Faust's streams: ``streams/consumer.py`` reads the events and
feedback topics in batches (one aiokafka group member, Faust's own client), as the worker
always processed them; Faust's consumer is not started. Transport settings follow
measurements on the embedded broker (docs/embedded-broker.md): bounded poll batches so
a member is never dropped mid-batch, short session timeouts so group joins take seconds,
leave-group on shutdown even in generation 0 (tansu starts there) so a restart does not wait
for the old member, and inside aiokafka's fetcher two guards against the broker's faults.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable

import faust
from faust.app.base import BootStrategy

from streamlearn.settings import Settings, SettingsError
from streamlearn.streams import web
from streamlearn.streams.consumer import BatchConsumer, patch_aiokafka
from streamlearn.streams.shutdown import EXIT_AGENT_CRASHED, StopGuard, fatal
from streamlearn.streams.worker import WorkerRuntime

__all__ = ["EXIT_AGENT_CRASHED", "StatelessApp", "WorkerApp", "crash_only", "create_app", "run_worker"]

log = logging.getLogger(__name__)


def crash_only(name: str, body: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``body`` as a Faust task or timer that exits the process (``shutdown.fatal``) if it raises.

    Faust treats an exception escaping a task or timer as an app crash and runs its own
    shutdown, which exits 1 at best (a worker once hung in it, see ``worker_status``); a
    supervisor then sees neither the code 70 nor the reason in one log line.
    """
    async def guarded() -> None:
        try:
            await body()
        except Exception as exc:  # noqa: BLE001 - a bug or an outage the store retries did not absorb
            fatal(name, exc)

    guarded.__name__ = guarded.__qualname__ = name  # Faust names timers and their logs after it
    return guarded


class _NoKafkaBoot(BootStrategy):
    """Faust starts its web server, sensors and timers; Kafka is ours (``BatchConsumer``, and
    confluent-kafka for producing): Faust's consumer would join the group with its own
    assignor, its producer would be an idle connection."""

    enable_kafka_consumer = False
    enable_kafka_producer = False


class StatelessApp(faust.App):
    """A Faust app without local tables (``store="memory://"``), so without a data directory:
    Faust would otherwise create ``<app id>-data/v1/tables`` in the working directory at every
    first start (hundreds of empty directories in a checkout after a test run)."""

    def _create_directories(self) -> None:
        pass


class WorkerApp(StatelessApp):
    BootStrategy = _NoKafkaBoot


def create_app(settings: Settings, runtime: WorkerRuntime | None = None,
               retrain: Callable[[Settings], int] | None = None) -> tuple[faust.App, WorkerRuntime]:
    runtime = runtime or WorkerRuntime(settings, retrain=retrain)
    app = WorkerApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",  # not used by Faust (no consumer or producer started)
        store="memory://",
        autodiscover=False,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds web_bind (default 0.0.0.0), not web_host
        web_port=settings.web_port,
        web_in_thread=False,
    )
    intake = BatchConsumer(settings, {settings.topic_events: runtime.on_events,
                                      settings.topic_feedback: runtime.on_feedback},
                           on_assigned=runtime.on_assigned, on_revoked=runtime.on_revoked, deliver=runtime.deliver,
                           follow=(settings.topic_events, settings.topic_feedback))

    async def consume() -> None:
        await intake.start()
        await intake.run()

    async def retrain_schedule() -> None:
        runtime.maybe_retrain()

    # every task and timer goes through crash_only: one that raises ends the process
    # (so does a handler or rebalance callback that raises: they run inside ``consume``)
    app.task(crash_only("startup", runtime.start))
    app.task(crash_only("consume", consume))
    app.timer(settings.checkpoint_interval_s)(crash_only("checkpoint", runtime.checkpoint))
    app.timer(0.5)(crash_only("housekeeping", runtime.housekeeping))
    app.timer(1.0)(crash_only("retrain_schedule", retrain_schedule))
    app.timer(1.0)(crash_only("status", runtime.publish_status))

    @app.on_before_shutdown.connect
    async def shutdown(app, **kwargs) -> None:  # noqa: ARG001
        await intake.stop()  # the batch in flight finishes, its offsets are committed
        await runtime.close()

    async def announce() -> None:
        host = f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host
        log.info("HTTP API (/metrics /health /ready /models /score) listening on http://%s:%d (web_host, web_port)",
                 host, settings.web_port)

    app.task(crash_only("announce", announce))
    app.streamlearn_runtime = runtime  # for the web views
    web.install(app, runtime, intake)  # /metrics /health /ready /models /score
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
    guard = patch_aiokafka(settings.fetch_min_wait_ms)
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
    worker.stop_guard = StopGuard(settings.stop_timeout_s, runtime.backend.ping, app.streamlearn_intake.commit,  # type: ignore[attr-defined]
                                  released=lambda: runtime.store_released)
    worker.execute_from_commandline()
