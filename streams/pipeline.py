"""The online loop, free of Kafka: score batches of events, learn batches of labels.

This is the code the Faust agents, backtests, the HTTP endpoint and the tests all run.
State lives behind a :class:`~streamlearn.featurestore.backend.Backend` (Redis online,
memory for replay). Guarantees, and how they are kept:

* **Events are idempotent by event id.** An entity's new state and the served feature
  vector it produced are written in one atomic batch. A re-delivered event (a restart, a
  duplicate id) finds its served vector, reuses it and leaves entity state alone, so
  aggregates never double-count.
* **Each label is learned exactly once per model.** Learning a batch writes the
  "learned" markers and appends (event id, label) to the model's learn log atomically.
  A checkpoint writes the signed model snapshot and trims the log atomically. Restoring
  = snapshot + replay of the log, so the model after a crash equals the model before it;
  labels the crashed worker had not yet acknowledged come back from Kafka and are learned
  then, those it had are recognised by their markers.
* **The order is recorded.** Each prediction carries ``labels_learned``, the number of
  labels the model had learned when it scored, so any run can be replayed exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from streamlearn.featurestore.backend import Backend, WriteBatch
from streamlearn.featurestore.definitions import FeatureView
from streamlearn.models import artifacts
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.governance.lifecycle import Lifecycle
from streamlearn.models.modelset import ModelSet
from streamlearn.streams import control

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Keys:
    """Persistent Redis key names (explicit and versioned through the prefix)."""

    prefix: str
    model: str

    def entity(self, entity: str) -> str:
        return f"{self.prefix}:ent:{entity}"

    def served(self, event_id: str) -> str:
        return f"{self.prefix}:srv:{event_id}"

    def pending(self, event_id: str) -> str:
        return f"{self.prefix}:pend:{event_id}"

    def learned(self, event_id: str) -> str:
        return f"{self.prefix}:m:{self.model}:lrn:{event_id}"

    @property
    def learn_log(self) -> str:
        return f"{self.prefix}:m:{self.model}:log"

    @property
    def checkpoint(self) -> str:
        return f"{self.prefix}:m:{self.model}:ckpt"

    @property
    def status(self) -> str:
        return f"{self.prefix}:m:{self.model}:status"

    @property
    def control(self) -> str:
        return f"{self.prefix}:m:{self.model}:control"

    @property
    def checkpoint_id(self) -> str:
        return f"{self.prefix}:m:{self.model}:ckpt-id"

    def receipt(self, writer: str) -> str:
        return f"{self.prefix}:m:{self.model}:receipt:{writer}"


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


@dataclass
class Prediction:
    event_id: str
    entity: str
    event_time: int
    model_name: str
    model_version: int
    labels_learned: int
    score: float
    predicted: Any
    probabilities: dict[str, float]
    served_at: int = 0
    latency_ms: float = 0.0
    # its label had arrived first (parked) and is learned right after this batch: recorded so
    # a replay knows exactly where the worker learned it (feedback order alone cannot tell)
    label_joined: bool = False
    shadows: list[Prediction] = field(default_factory=list)  # the other models' scores (not serving)

    def record(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        del out["shadows"]
        return out


@dataclass
class LearnReport:
    learned: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def read_checkpoint(blob: bytes, key: bytes) -> tuple[ModelSet, Lifecycle | None]:
    """The models and lifecycle evidence of a signed loop checkpoint (refused if unsigned)."""
    state = artifacts.load(blob, key)
    models = state.get("models") if isinstance(state, dict) else None
    if not isinstance(models, ModelSet):
        raise artifacts.ArtifactError(f"checkpoint holds {type(state).__name__}, not the loop's models")
    return models, state.get("lifecycle")


# orjson: the served vectors and entity states are (de)serialised on every event; it is
# several times faster than json and round-trips floats exactly. It writes NaN as null, so
# it relies on inputs being finite, which the codec enforces (schemas/validation.py).
_loads = orjson.loads


def _numpy_scalar(obj: Any) -> Any:
    # a numpy scalar (an sklearn-wrapped model's label, say) as json would have written it
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_numpy_scalar)


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
        self.counters = Counters()
        self._lock = asyncio.Lock()  # model mutation + its log write happen in one order
        self._log_len = 0  # learn-log entries written since the last checkpoint
        self._dirty = False
        self.outbox: list[tuple[str, dict[str, Any]]] = []  # (subject, record) to publish
        # One learner per model (the owner of the feedback partition); other workers only
        # score, following the learner's checkpoints.
        self.is_learner = True
        self._checkpoint_id: bytes | None = None
        self._last_extra: dict[str, Any] | None = None
        self._receipt_key = keys.receipt(uuid.uuid4().hex)  # this loop's writes, one at a time (lock)
        self._receipt_seq = itertools.count(1)  # unique within the loop's own receipt key

    # ------------------------------------------------------------------ store access
    async def _io(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Retry a store operation with capped backoff: a Redis restart stalls, never crashes."""
        delay = 0.05
        while True:
            try:
                return await op()
            except self.backend.transient_errors as exc:
                self._on_store_error(what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _write(self, wb: WriteBatch, what: str) -> dict[str, bytes | None]:
        """A write under the loop's lock, applied at most once however often it is retried:
        a Redis stopped mid-write may execute it without answering, and a blind retry would
        append the learn log twice or lose the parked labels the first attempt took."""
        wb.receipt = (self._receipt_key, str(next(self._receipt_seq)))
        return await self._io(lambda: self.backend.write_batch(wb), what)

    def _on_store_error(self, what: str, exc: BaseException) -> None:
        self.counters.store_retries += 1
        if self.counters.store_retries % 20 == 1:
            log.warning("state store unavailable during %s (%s); retrying", what, exc)

    # ------------------------------------------------------------------ scoring
    @property
    def learner(self) -> Learner:
        """The champion."""
        return self.models.champion_learner

    def _score_one(self, ev: dict[str, Any], x: dict[str, float]) -> tuple[Prediction, dict[str, Any]]:
        """Score with every model; the serving one's prediction carries the others as shadows."""
        serving = self.models.serving_version(ev["entity"])
        per_model: dict[str, Any] = {}
        main: Prediction | None = None
        shadows: list[Prediction] = []
        for v, learner in self.models.learners.items():
            s = learner.predict(x)
            p = Prediction(
                event_id=ev["event_id"], entity=ev["entity"], event_time=ev["event_time"],
                model_name=learner.name, model_version=v, labels_learned=learner.labels_learned,
                score=s.score, predicted=s.predicted, probabilities=s.probabilities,
            )
            per_model[str(v)] = {"score": s.score, "pred": s.predicted, "proba": s.probabilities,
                                 "n": learner.labels_learned}
            if v == serving:
                main = p
            else:
                shadows.append(p)
        assert main is not None
        main.shadows = shadows
        return main, per_model

    async def score_batch(self, events: Sequence[dict[str, Any]]) -> list[Prediction]:
        """Features -> score -> persist, for events in order. One read, one atomic write.

        Runs under the loop's lock so a label can never slip between this batch's read and
        write (it would be parked as unmatched for an event that is being served).
        """
        if not events:
            return []
        async with self._lock:
            return await self._score_locked(events)

    async def _score_locked(self, events: Sequence[dict[str, Any]]) -> list[Prediction]:
        keys = self.keys
        entities = list(dict.fromkeys(ev["entity"] for ev in events))
        ids = [ev["event_id"] for ev in events]
        read_keys = [keys.entity(e) for e in entities] + [keys.served(i) for i in ids]
        raw = await self._io(lambda: self.backend.read_many(read_keys), "score read")
        n_ent = len(entities)
        states = {e: (_loads(v) if v else None) for e, v in zip(entities, raw[:n_ent])}
        served_before = raw[n_ent:]

        batch = WriteBatch()
        changed: set[str] = set()
        served_now: dict[str, dict[str, Any]] = {}
        preds: list[Prediction] = []
        compute = self.view.compute
        for ev, prior in zip(events, served_before):
            eid = ev["event_id"]
            if prior is not None or eid in served_now:
                # re-delivered or duplicate id: same features as first served, state untouched
                rec = served_now.get(eid) or _loads(prior)
                preds.append(self._score_one(ev, rec["x"])[0])
                self.counters.events_duplicate += 1
                continue
            x, states[ev["entity"]] = compute(ev, states[ev["entity"]])
            changed.add(ev["entity"])
            p, per_model = self._score_one(ev, x)
            preds.append(p)
            # what each model predicted is kept with the features: labels are scored against it
            rec = {"x": x, "t": ev["event_time"], "m": per_model, "s": p.model_version}
            served_now[eid] = rec
            batch.set(keys.served(eid), _dumps(rec), self.served_ttl_s)
            # a label parked before this event was served is taken in the same transaction
            # that serves it, so another process can never park one in between unseen
            batch.getdels.append(keys.pending(eid))
        for e in changed:
            batch.set(keys.entity(e), _dumps(states[e]), self.entity_ttl_s)
        taken = await self._write(batch, "score write")
        self.counters.events_scored += len(preds)
        parked = [(eid, _loads(taken[keys.pending(eid)])["y"]) for eid in served_now
                  if taken.get(keys.pending(eid)) is not None]
        if parked and self.is_learner:
            joined = {eid for eid, _ in parked}
            for p in preds:
                if p.event_id in joined:  # its first prediction (not a duplicate's)
                    joined.discard(p.event_id)
                    p.label_joined = True
                    for sp in p.shadows:
                        sp.label_joined = True
        if parked:  # labels that arrived before their event
            wb = WriteBatch()
            if self.is_learner:
                report = LearnReport()
                for eid, y in parked:
                    self._learn(eid, y, served_now[eid], wb, report)
                self.counters.labels_joined_late += len(report.learned)
                self._log_len += len(report.learned)
            else:  # only the learner learns: hand the label back to it through the feedback topic
                now = int(self.clock() * 1000)
                self.outbox.extend(("feedback", {"event_id": eid, "label": y, "label_time": now}) for eid, y in parked)
            await self._write(wb, "learn write")
        if self.lifecycle is not None and self.is_learner:
            self.lifecycle.on_scored([rec["x"] for rec in served_now.values()])
            await self._decide_locked()
        return preds

    # ------------------------------------------------------------------ learning
    def _learn_all(self, y: Any, rec: dict[str, Any]) -> None:
        """Every model learns the label; each is scored against its own served prediction."""
        x, served = rec["x"], rec["m"]
        for v, learner in self.models.learners.items():
            learner.learn(x, y, served.get(str(v)))
        if self.lifecycle is not None:
            self.lifecycle.on_label(self.models, y, served, rec.get("s"))

    def _learn(self, eid: str, y: Any, rec: dict[str, Any], wb: WriteBatch, report: LearnReport) -> None:
        self._learn_all(y, rec)
        wb.set(self.keys.learned(eid), b"1", self.served_ttl_s)
        wb.append(self.keys.learn_log, _dumps({"id": eid, "y": y}))
        report.learned.append(eid)
        self.counters.labels_learned += 1
        self._dirty = True
        if self.on_learn is not None:
            self.on_learn(eid, y, rec)

    async def learn_batch(self, feedback: Sequence[dict[str, Any]]) -> LearnReport:
        """Join labels to what was served and learn each exactly once, in order."""
        report = LearnReport()
        if not feedback:
            return report
        keys = self.keys
        ids = [fb["event_id"] for fb in feedback]
        read_keys = [keys.served(i) for i in ids] + [keys.learned(i) for i in ids]
        async with self._lock:
            raw = await self._io(lambda: self.backend.read_many(read_keys), "learn read")
            served, marked = raw[: len(ids)], raw[len(ids) :]
            wb = WriteBatch()
            seen: set[str] = set()
            unmatched: list[dict[str, Any]] = []
            for fb, rec, mark in zip(feedback, served, marked):
                eid = fb["event_id"]
                if mark is not None or eid in seen:
                    report.duplicate.append(eid)
                elif rec is None:
                    unmatched.append(fb)
                else:
                    self._learn(eid, fb["label"], _loads(rec), wb, report)
                seen.add(eid)
            if unmatched:  # park, unless another worker served the event meanwhile
                got = await self._io(lambda: self.backend.park_unless_present(
                    [(keys.pending(fb["event_id"]), _dumps({"y": fb["label"]}), self.pending_ttl_s,
                      keys.served(fb["event_id"])) for fb in unmatched]), "park")
                for fb, rec in zip(unmatched, got):
                    if rec is None:
                        report.unmatched.append(fb["event_id"])
                    else:
                        self._learn(fb["event_id"], fb["label"], _loads(rec), wb, report)
            # in-memory model is ahead of the store until this lands: retry, never re-learn
            await self._write(wb, "learn write")
            self._log_len += len(report.learned)
            await self._decide_locked()
        self.counters.labels_duplicate += len(report.duplicate)
        self.counters.labels_unmatched += len(report.unmatched)
        return report

    # ------------------------------------------------------------------ operator commands
    async def drain_control(self) -> int:
        """Apply queued operator commands; each change is checkpointed before it is announced."""
        key = self.keys.control
        if not self.is_learner:  # the learner's next checkpoint would undo it
            return 0
        raw = await self._io(lambda: self.backend.read_list(key), "control read")
        if not raw:
            return 0
        resolved: dict[int, Any] = {}
        for i, item in enumerate(raw):  # load adopted models before taking the lock
            try:
                cmd = _loads(item)
                if cmd.get("op") == "adopt" and self.model_loader is not None:
                    resolved[i] = await asyncio.get_running_loop().run_in_executor(
                        None, self.model_loader, int(cmd["version"]))
            except Exception as exc:  # noqa: BLE001 - refused below with the reason
                resolved[i] = exc
        async with self._lock:
            now = int(self.clock() * 1000)
            for i, item in enumerate(raw):
                try:
                    cmd = _loads(item)
                    if not isinstance(cmd, dict):  # valid JSON, but not a command
                        raise control.CommandError(f"a command is a JSON object, not {type(cmd).__name__}")
                    if cmd.get("op") == "adopt":
                        got = resolved.get(i)
                        if got is None or isinstance(got, Exception):
                            raise control.CommandError(f"cannot load registry version {cmd.get('version')}: {got}")
                        cmd["spec"], cmd["model"] = got
                    for rec in control.apply(self.models, cmd, now):
                        self.outbox.append(("lifecycle", rec))
                except (control.CommandError, ValueError) as exc:
                    log.warning("refused operator command %r: %s", item[:200], exc)
                    self.outbox.append(("lifecycle", control.record(
                        self.models, self.models.champion, "refused", f"bad command: {exc}", now)))
            self._dirty = True
            wb = WriteBatch(trims={key: len(raw)})
            await self._write(wb, "control trim")
            await self._checkpoint_locked(None)
        return len(raw)

    # ------------------------------------------------------------------ checkpoints
    async def checkpoint(self, extra_status: dict[str, Any] | None = None) -> bool:
        """Snapshot the model and trim the learn log it covers, atomically."""
        async with self._lock:
            return await self._checkpoint_locked(extra_status)

    async def _checkpoint_locked(self, extra_status: dict[str, Any] | None) -> bool:
        # checkpoints taken by the loop itself (decisions, commands) keep the worker's last extras
        if extra_status is None:
            extra_status = self._last_extra
        else:
            self._last_extra = extra_status
        if not self._dirty and self._log_len == 0:
            return False
        blob = artifacts.sign({"models": self.models, "lifecycle": self.lifecycle}, self.artifact_key)
        wb = WriteBatch()
        wb.set(self.keys.checkpoint, blob, 0)
        self._checkpoint_id = uuid.uuid4().hex.encode()
        wb.set(self.keys.checkpoint_id, self._checkpoint_id, 0)
        wb.trims[self.keys.learn_log] = self._log_len
        wb.set(self.keys.status, _dumps(self.status(extra_status)), 0)
        await self._write(wb, "checkpoint")
        self._log_len = 0
        self._dirty = False
        self.counters.checkpoints += 1
        return True

    def _load(self, blob: bytes) -> tuple[ModelSet, Lifecycle | None]:
        return read_checkpoint(blob, self.artifact_key)

    async def _decide_locked(self) -> None:
        """Let the lifecycle act; a change is checkpointed before it is announced."""
        if self.lifecycle is None or not self.is_learner:
            return
        records = self.lifecycle.decide(self.models, self.clock())
        if not records:
            return
        self.outbox.extend(records)
        if any(subject == "lifecycle" for subject, _ in records):
            self._dirty = True
            await self._checkpoint_locked(None)

    async def follow(self) -> bool:
        """On a scoring-only worker: load the learner's newest snapshot. True if it changed."""
        if self.is_learner:
            return False
        ckpt_id, = await self._io(lambda: self.backend.read_many([self.keys.checkpoint_id]), "follow")
        if ckpt_id is None or ckpt_id == self._checkpoint_id:
            return False
        blob, = await self._io(lambda: self.backend.read_many([self.keys.checkpoint]), "follow")
        if blob is None:
            return False
        models, _ = self._load(blob)
        async with self._lock:
            self.models, self._checkpoint_id = models, ckpt_id
        return True

    async def restore(self) -> int:
        """Load the last snapshot and replay the learn log after it. Returns labels replayed."""
        async with self._lock:
            return await self._restore_locked()

    async def _restore_locked(self) -> int:
        blob, ckpt_id = await self._io(
            lambda: self.backend.read_many([self.keys.checkpoint, self.keys.checkpoint_id]), "restore")
        self._checkpoint_id = ckpt_id
        if blob is not None:
            models, lifecycle = self._load(blob)
            if self.lifecycle is not None and lifecycle is not None:
                self.lifecycle = lifecycle  # resume the same evidence
            if models.champion_learner.spec != self.learner.spec:
                log.warning("checkpoint champion spec %s differs from configured %s; resuming the checkpoint",
                            models.champion_learner.spec, self.learner.spec)
            self.models = models
        entries = [_loads(e) for e in await self._io(lambda: self.backend.read_list(self.keys.learn_log),
                                                         "restore log")]
        if entries:
            recs = await self._io(
                lambda: self.backend.read_many([self.keys.served(e["id"]) for e in entries]), "restore log"
            )
            for e, rec in zip(entries, recs):
                if rec is None:
                    log.error("served vector for %s expired before replay; label skipped", e["id"])
                    continue
                self._learn_all(e["y"], _loads(rec))
        self._log_len = len(entries)
        self.counters.labels_learned = max(lr.labels_learned for lr in self.models.learners.values())
        return len(entries)

    async def publish_status(self, extra: dict[str, Any] | None = None) -> None:
        """Counters and online metrics under the status key (read by the demo and /models)."""
        if extra is not None:
            self._last_extra = extra
        wb = WriteBatch()
        wb.set(self.keys.status, _dumps(self.status(extra)), 0)
        await self._io(lambda: self.backend.write_batch(wb), "status")

    def status(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {
            "model_name": self.learner.name, "model_spec": self.learner.spec,
            "model_version": self.learner.version, "labels_learned": self.learner.labels_learned,
            "metrics": self.learner.metric_values(), "counters": self.counters.as_dict(),
            "models": [
                {"version": v, "spec": lr.spec, "stage": self.models.stage(v),
                 "labels_learned": lr.labels_learned, "scored_labels": lr.scored_labels,
                 "metrics": lr.metric_values()}
                for v, lr in sorted(self.models.learners.items())
            ],
            "canary": dict(self.models.canary.__dict__) if self.models.canary else None,
            "history": self.models.history[-50:],
            "updated_at": self.clock(),
        }
        out.update(extra or {})
        return out
