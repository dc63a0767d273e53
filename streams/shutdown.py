"""A worker stops within a bound after SIGTERM or SIGINT, whatever its dependencies do.

At a stop signal the worker finishes the batch in flight and commits (``BatchConsumer.stop``), then our
shutdown hook checkpoints. While Redis is unreachable the online loop retries every store
call forever (a Redis restart must stall, never crash), so that stop never ended (measured:
~10 minutes, then SIGKILL from any supervisor). Two bounds:

* at the signal, the state store is pinged; if it does not answer, the worker commits what
  it has finished (bounded) and exits at once: there is no checkpoint to write anyway (unless
  the graceful stop has already written it and is closing its client: that ping's failure
  is its own close);
* whatever else hangs, the process exits ``stop_timeout_s`` after the signal.

Either exit is as safe as a crash, which the design already survives: every learned label
is in the learn log in Redis before its offset is committed, and input whose offset was not
committed is processed again on restart (idempotent by event id). Exit status 143 (what a
SIGTERM without a handler gives) tells a supervisor the stop was not graceful.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

EXIT_UNGRACEFUL_STOP = 128 + signal.SIGTERM
EXIT_AGENT_CRASHED = 70
STORE_PING_TIMEOUT_S = 1.5
COMMIT_TIMEOUT_S = 2.0


class StopGuard:
    """Armed once, at the first stop signal; ends the process if the graceful stop cannot."""

    def __init__(self, timeout_s: float, store_ping: Callable[[], Awaitable[bool]],
                 commit: Callable[[], Awaitable[object]] | None = None,
                 exit: Callable[[int], None] = os._exit,
                 released: Callable[[], bool] | None = None) -> None:
        self.timeout_s = timeout_s
        self.store_ping = store_ping
        self.commit = commit
        # True once the graceful stop is done with the store (final checkpoint written) and
        # closes its client: a ping failing after that is that close, not an unreachable store
        self.released = released
        self.check: asyncio.Task[None] | None = None
        self._exit = exit
        self.armed = False
        self._timer: threading.Timer | None = None

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.armed:
            return
        self.armed = True
        # a thread, not the event loop: the deadline must hold even if the loop is blocked
        self._timer = threading.Timer(self.timeout_s, self._deadline)
        self._timer.daemon = True
        self._timer.start()
        self.check = loop.create_task(self._check_store())

    def _deadline(self) -> None:
        self.exit_now(f"the graceful stop did not finish within {self.timeout_s:g}s (stop_timeout_s)")

    async def _check_store(self) -> None:
        try:
            ok = await asyncio.wait_for(self.store_ping(), STORE_PING_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a timeout or a connection error: unreachable either way
            ok = False
        if ok or (self.released is not None and self.released()):
            return
        if self.commit is not None:
            try:  # offsets of finished batches only: less to process again on restart
                await asyncio.wait_for(self.commit(), COMMIT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - best effort: a restart repeats instead
                log.warning("offset commit at stop failed: %r", exc)
        self.exit_now(f"the state store did not answer a ping within {STORE_PING_TIMEOUT_S}s")

    def exit_now(self, reason: str) -> None:
        log.critical("stopping now without a final checkpoint: %s. Nothing learned is lost (learn log "
                     "in Redis); input not yet committed is processed again on restart", reason)
        for stream in (sys.stderr, sys.stdout):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - closed streams must not block the exit
                pass
        self._exit(EXIT_UNGRACEFUL_STOP)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def fatal(what: str, exc: BaseException) -> None:
    # Crash-only: an agent that dies while the process lives on would silently stop
    # scoring. State is checkpointed, so exiting and being restarted is safe.
    log.critical("%s crashed: %r\n%s", what, exc, "".join(traceback.format_exception(exc)))
    sys.stderr.flush()
    os._exit(EXIT_AGENT_CRASHED)
