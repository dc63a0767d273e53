"""The online loop, free of Kafka: score batches of events, learn batches of labels.

This is the code the worker (fed by its consumer), backtests, the HTTP endpoint and the tests all run.
State lives behind a :class:`~streamlearn.featurestore.backend.Backend` (Redis online,
memory for replay). :class:`OnlineLoop` coordinates; each job has its own module:

* :mod:`.scoring`: features -> every model's prediction -> one atomic write per batch
  (events are idempotent by event id);
* :mod:`.labels`: join each label to what was served and learn it exactly once per model;
* :mod:`.commands`: operator commands, applied and checkpointed before they are announced;
* :mod:`.checkpoints`: signed snapshots, restore (snapshot + learn log), following the learner;
* :mod:`.status`: counters and metrics for the status key and ``/models``.

The order is recorded: each prediction carries ``labels_learned``, the number of labels
the model had learned when it scored, so any run can be replayed exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from streamlearn.featurestore.backend import Backend, WriteBatch
from streamlearn.featurestore.definitions import FeatureView
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.governance.lifecycle import Lifecycle
from streamlearn.models.modelset import ModelSet
from streamlearn.schemas.records import Prediction
from streamlearn.streams.loop import checkpoints, commands, labels, scoring
from streamlearn.streams.loop.labels import LearnReport
from streamlearn.streams.loop.serde import dumps
from streamlearn.streams.loop.status import status

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Counters:
    events_scored: int = 0
    events_duplicate: int = 0
    labels_learned: int = 0
    labels_duplicate: int = 0
    labels_unmatched: int = 0  # no prediction yet: parked, learned if the event arrives in time
    labels_joined_late: int = 0  # parked labels learned when their event arrived
    checkpoints: int = 0
    store_retries: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Outbox:
    """Records the loop wants published, as (subject, record): lifecycle decisions, drift
    alarms, labels handed back to the learner. The worker publishes them after each batch
    (:meth:`drain`); an in-process run reads and drains them the same way."""

    def __init__(self) -> None:
        self._items: list[tuple[str, dict[str, Any]]] = []

    def put(self, subject: str, record: dict[str, Any]) -> None:
        self._items.append((subject, record))

    def extend(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._items.extend(items)

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything queued so far, in order; the outbox is empty afterwards."""
        items, self._items = self._items, []
        return items

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


class OnlineLoop:
    def __init__(
        self,
        view: FeatureView,
        models: ModelSet | Learner,
        backend: Backend,
        keys: Keys,
        *,
        artifact_key: bytes,
        entity_ttl_s: int = 7 * 86400,
        served_ttl_s: int = 3 * 86400,
        pending_ttl_s: int = 3600,
        clock: Callable[[], float] = time.time,
        on_learn: Callable[[str, Any, dict[str, Any]], None] | None = None,
        lifecycle: Lifecycle | None = None,
        model_loader: Callable[[int], tuple[str, Any]] | None = None,
        resolve_spec: Callable[[str], str] | None = None,
    ) -> None:
        self.view = view
        if isinstance(models, Learner):
            models = ModelSet(models.name, {models.version: models}, models.version,
                              next_version=models.version + 1)
        self.models = models
        self.backend = backend
        self.keys = keys
        self.artifact_key = artifact_key
        self.entity_ttl_s = entity_ttl_s
        self.served_ttl_s = served_ttl_s
        self.pending_ttl_s = pending_ttl_s
        self.clock = clock
        self.on_learn = on_learn
        self.lifecycle = lifecycle  # automatic gate/canary/drift decisions (None: operator only)
        # registry version -> (spec, model), verified and unpickled off the event loop (for "adopt")
        self.model_loader = model_loader
        # an operator's spec name (a project's named spec) -> the canonical spec string
        self.resolve_spec = resolve_spec
        # events whose features could not be computed (a user function raised): (event, reason,
        # detail); the worker dead-letters them, an in-process run counts them
        self.feature_errors: list[tuple[dict[str, Any], str, str]] = []
        self.counters = Counters()
        self.outbox = Outbox()
        # This process's role: one learner per model (the owner of the feedback partition)
        # learns, decides and checkpoints; other workers only score, following its checkpoints.
        self.is_learner = True
        self.lock = asyncio.Lock()  # model mutation + its log write happen in one order
        self.log_len = 0  # learn-log entries written since the last checkpoint
        self.dirty = False  # models changed since the last checkpoint
        self.checkpoint_id: bytes | None = None
        self.last_extra: dict[str, Any] | None = None
        self._receipt_key = keys.receipt(uuid.uuid4().hex)  # this loop's writes, one at a time (lock)
        self._receipt_seq = itertools.count(1)  # unique within the loop's own receipt key

    @property
    def champion(self) -> Learner:
        """The champion model (not to be confused with :attr:`is_learner`, this process's role)."""
        return self.models.champion_learner

    # ------------------------------------------------------------------ store access
    async def io(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Retry a store operation with capped backoff: a Redis restart stalls, never crashes."""
        try:
            return await op()
        except self.backend.transient_errors as exc:
            self._on_store_error(what, exc)
        return await self._retry(op, what)

    async def _retry(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """After a failed first attempt: back off, try again, until it succeeds."""
        delay = 0.05
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                return await op()
            except self.backend.transient_errors as exc:
                self._on_store_error(what, exc)

    async def read(self, keys: Sequence[str], what: str) -> list[bytes | None]:
        """``read_many``, retried as :meth:`io` does (the first attempt without a closure: this
        runs once or twice per batch)."""
        try:
            return await self.backend.read_many(keys)
        except self.backend.transient_errors as exc:
            self._on_store_error(what, exc)
        return await self._retry(lambda: self.backend.read_many(keys), what)

    async def write(self, wb: WriteBatch, what: str) -> dict[str, bytes | None]:
        """A write under the loop's lock, applied at most once however often it is retried:
        a Redis stopped mid-write may execute it without answering, and a blind retry would
        append the learn log twice or lose the parked labels the first attempt took."""
        if self.backend.needs_receipts:  # not in memory: nothing is lost there
            wb.receipt = (self._receipt_key, str(next(self._receipt_seq)))
        try:  # the first attempt without a closure: this runs once or twice per batch
            return await self.backend.write_batch(wb)
        except self.backend.transient_errors as exc:
            self._on_store_error(what, exc)
        return await self._retry(lambda: self.backend.write_batch(wb), what)

    def _on_store_error(self, what: str, exc: BaseException) -> None:
        self.counters.store_retries += 1
        if self.counters.store_retries % 20 == 1:
            log.warning("state store unavailable during %s (%s); retrying", what, exc)

    # ------------------------------------------------------------------ the jobs
    async def score_batch(self, events: Sequence[dict[str, Any]]) -> list[Prediction]:
        """Features -> score -> persist, for events in order. One read, one atomic write.

        Runs under the loop's lock so a label can never slip between this batch's read and
        write (it would be parked as unmatched for an event that is being served).
        """
        if not events:
            return []
        async with self.lock:
            return await self.score_batch_locked(events)

    async def score_batch_locked(self, events: Sequence[dict[str, Any]]) -> list[Prediction]:
        """:meth:`score_batch` with the loop's lock held by the caller (an in-process replay
        holds it for the whole stream)."""
        if not events:
            return []
        return await scoring.score_locked(self, events)

    async def learn_batch(self, feedback: Sequence[dict[str, Any]]) -> LearnReport:
        """Join labels to what was served and learn each exactly once, in order."""
        if not feedback:
            return LearnReport()
        async with self.lock:
            return await self.learn_batch_locked(feedback)

    async def learn_batch_locked(self, feedback: Sequence[dict[str, Any]]) -> LearnReport:
        """:meth:`learn_batch` with the loop's lock held by the caller."""
        if not feedback:
            return LearnReport()
        report = await labels.learn_locked(self, feedback)
        self.counters.labels_duplicate += len(report.duplicate)
        self.counters.labels_unmatched += len(report.unmatched)
        return report

    async def drain_control(self) -> int:
        """Apply queued operator commands (learner only)."""
        return await commands.drain(self)

    async def checkpoint(self, extra_status: dict[str, Any] | None = None) -> bool:
        """Snapshot the models and trim the learn log it covers, atomically."""
        async with self.lock:
            return await self.checkpoint_locked(extra_status)

    async def checkpoint_locked(self, extra_status: dict[str, Any] | None) -> bool:
        return await checkpoints.checkpoint_locked(self, extra_status)

    async def follow(self) -> bool:
        """On a scoring-only worker: load the learner's newest snapshot. True if it changed."""
        return await checkpoints.follow(self)

    async def restore(self) -> int:
        """Load the last snapshot and replay the learn log after it. Returns labels replayed."""
        async with self.lock:
            return await checkpoints.restore_locked(self)

    async def decide_locked(self) -> None:
        """Let the lifecycle act; a change is checkpointed before it is announced."""
        if self.lifecycle is None or not self.is_learner:
            return
        records = self.lifecycle.decide(self.models, self.clock())
        if not records:
            return
        self.outbox.extend(records)
        if any(subject == "lifecycle" for subject, _ in records):
            self.dirty = True
            await self.checkpoint_locked(None)

    async def publish_status(self, extra: dict[str, Any] | None = None) -> None:
        """Counters and online metrics under the status key (read by the demo and /models)."""
        if extra is not None:
            self.last_extra = extra
        wb = WriteBatch()
        wb.set(self.keys.status, dumps(self.status(extra)), 0)
        await self.io(lambda: self.backend.write_batch(wb), "status")

    def status(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return status(self, extra)
