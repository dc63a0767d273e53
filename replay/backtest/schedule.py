"""The order in which a backtest scores events and learns labels (pure, no model).

A backtest is a list of steps for :class:`~streamlearn.streams.loop.OnlineLoop`:
``("score", events)`` or ``("learn", feedback)``. Two ways to build it:

**Recorded** (the archive holds the live run's predictions): reproduces the live run
exactly. Each prediction carries ``labels_learned`` (L), the number of labels the model
had learned when it scored. Events are taken in the live processing order (offset order
per partition; partitions merged by (L, event time)); consecutive events with the same L
form one scoring step (no label can have been learned between them live). Before a step,
labels are taken from the feedback topic in offset order, lazily, until the loop's label
count reaches L, with the loop's own join rules (:class:`Ledger`): a label already learned
is a duplicate, a label whose event is not scored yet is parked and learned right after
its event's scoring step. Taking labels as late as possible is what makes this exact: a
label the live worker parked before its event was scored must have come before some label
that L forces earlier, so it is parked here too.

One case the counts cannot settle: which labels the worker had parked for the events of a
scoring step (learned right after it, in *event* order, which can differ from feedback
order). Predictions record it (``label_joined``, prediction schema v2): exactly those labels
are taken, and parked, before the step. Predictions written with v1 lack it; then the times
decide: a label whose feedback message was produced (Kafka timestamp) before its event's
prediction was served is taken to be parked, which is wrong when the worker's feedback
consumer lagged (a label produced before its event was served but consumed after).

Other limits (count mismatches are reported as divergences): a parked label re-sent with a
*different* value in the same live feedback batch keeps the first value live, the last
here; predictions from a model version other than the reference (a canary, a promoted
challenger) carry another model's count and are not used.

**Arrival** (no predictions archived, or a different range): events in event-time
order, each label learned before the first event whose event time is past the label's
*arrival*: its event's time plus the delay production saw (the feedback message's Kafka
timestamp minus the event message's). Deterministic, not a replay of a particular run.

>>> led = Ledger()
>>> led.learn([{"event_id": "a"}]); sorted(led.pending)  # a label before its event: parked
['a']
>>> led.score([{"event_id": "a"}]); led.count  # learned right after its event's step
1
>>> led.classify("a")
'duplicate'
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

LEARN_CHUNK = 1000  # labels per learn step when nothing forces a cut


@dataclass
class Step:
    kind: str  # "score" | "learn"
    items: list[dict[str, Any]]
    expect: int | None = None  # the loop's label count after this step, when the record fixes it


@dataclass(frozen=True)
class Served:
    """What a prediction recorded about its serving: when, and whether the worker had its
    label parked and learned it right after the batch (None: not recorded, v1)."""

    served_at: int | None
    label_joined: bool | None = None


@dataclass
class Divergence:
    event_id: str
    recorded: int
    replayed: int

    def __str__(self) -> str:
        return (f"event {self.event_id}: recorded labels_learned={self.recorded}, "
                f"replay had {self.replayed}")


@dataclass
class Ledger:
    """OnlineLoop's join rules, without a model: who is served, learned, parked."""

    served: set[str] = field(default_factory=set)
    learned: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    count: int = 0

    def classify(self, eid: str) -> str:
        if eid in self.learned:
            return "duplicate"
        if eid not in self.served:
            return "park"
        return "learn"

    def score(self, events: Iterable[dict[str, Any]]) -> None:
        joined = []
        for ev in events:
            eid = ev["event_id"]
            if eid in self.served:
                continue  # re-delivered: reuses its served vector, pending untouched
            self.served.add(eid)
            if eid in self.pending:
                joined.append(eid)
        for eid in joined:  # parked labels are learned after the whole step is scored
            self.pending.discard(eid)
            self.learned.add(eid)
            self.count += 1

    def learn(self, feedback: Iterable[dict[str, Any]]) -> None:
        seen: set[str] = set()
        for fb in feedback:
            eid = fb["event_id"]
            kind = "duplicate" if eid in seen else self.classify(eid)
            if kind == "park":
                self.pending.add(eid)
            elif kind == "learn":
                self.learned.add(eid)
                self.count += 1
            seen.add(eid)


class RecordedSchedule:
    """Steps that reproduce a live run from its events (with recorded L) and feedback order.

    ``events``: (event, L, served_at ms or None) in processing order; ``feedback``: (label,
    Kafka timestamp ms or None) in offset order. The times only settle the one case the
    counts cannot: labels produced *before* their event was served were parked by the
    worker (its feedback consumer keeps up) and are learned after the step in event order.
    """

    def __init__(self, events: Iterable[tuple[dict[str, Any], int, int | None]],
                 feedback: Iterable[tuple[dict[str, Any], int | None]]) -> None:
        self.events = events
        self._feedback = iter(feedback)
        self._peeked: list[tuple[dict[str, Any], int | None]] = []
        self.ledger = Ledger()
        self.divergences: list[Divergence] = []
        self.feedback_exhausted = False
        self.unjoined = 0

    def _next(self) -> tuple[dict[str, Any], int | None] | None:
        return self._peeked.pop() if self._peeked else next(self._feedback, None)

    def _peek(self) -> tuple[dict[str, Any], int | None] | None:
        if not self._peeked:
            item = next(self._feedback, None)
            if item is None:
                return None
            self._peeked.append(item)
        return self._peeked[-1]

    def _pull(self, target: float) -> Iterator[Step]:
        """Learn steps taking labels in feedback order until the count would reach ``target``."""
        led = self.ledger
        chunk: list[dict[str, Any]] = []
        seen: set[str] = set()
        predicted = led.count

        def cut() -> Step:
            led.learn(chunk)
            return Step("learn", list(chunk), expect=led.count)

        while predicted < target:
            item = self._next()
            if item is None:
                self.feedback_exhausted = True
                break
            fb = item[0]
            eid = fb["event_id"]
            if eid in seen or len(chunk) >= LEARN_CHUNK:
                # a repeat in one step would be judged against the step's start: live saw it later
                yield cut()
                chunk, seen = [], set()
            if led.classify(eid) == "learn":
                predicted += 1
            chunk.append(fb)
            seen.add(eid)
        if chunk:
            yield cut()

    def _early_labels(self, served: dict[str, Served]) -> Iterator[Step]:
        """Labels the worker had parked for events of this step: taken (and parked) before
        the step, so they are learned right after it, as live."""
        led = self.ledger
        chunk: list[dict[str, Any]] = []
        if any(r.label_joined is None for r in served.values()):
            # not recorded (v1 predictions): a label produced before its event was served was parked
            while (item := self._peek()) is not None:
                fb, ts = item
                eid = fb["event_id"]
                r = served.get(eid)
                if (r is None or r.served_at is None or ts is None or ts >= r.served_at
                        or led.classify(eid) != "park" or any(f["event_id"] == eid for f in chunk)):
                    break
                chunk.append(fb)
                self._next()
        else:
            # recorded: exactly these labels were parked. They were consumed before the step,
            # so every label ahead of them in feedback order was too: those are parked (their
            # event comes later) or duplicates here as well; one that would be learned now
            # contradicts the record (the count check reports it).
            need = {eid for eid, r in served.items() if r.label_joined and eid not in led.pending
                    and eid not in led.learned}
            while need and (item := self._peek()) is not None:
                eid = item[0]["event_id"]
                if led.classify(eid) == "learn" or any(f["event_id"] == eid for f in chunk):
                    break
                chunk.append(item[0])
                self._next()
                need.discard(eid)
        if chunk:
            led.learn(chunk)
            yield Step("learn", chunk, expect=led.count)

    def steps(self) -> Iterator[Step]:
        run: list[dict[str, Any]] = []
        served: dict[str, Served] = {}
        run_l: int | None = None
        for ev, labels, served_at in self.events:
            if run and labels != run_l:
                yield from self._score(run, run_l, served)
                run, served = [], {}
            run.append(ev)
            served.setdefault(ev["event_id"], served_at if isinstance(served_at, Served) else Served(served_at))
            run_l = labels
        if run:
            yield from self._score(run, run_l, served)
        yield from self._pull(float("inf"))  # the rest of the labels: final metrics
        self.unjoined = len(self.ledger.pending)

    def _score(self, run: list[dict[str, Any]], labels: int, served: dict[str, Served]) -> Iterator[Step]:
        led = self.ledger
        if led.count < labels:
            yield from self._pull(labels)
        if led.count != labels:
            self.divergences.append(Divergence(run[0]["event_id"], labels, led.count))
        yield from self._early_labels(served)
        led.score(run)
        yield Step("score", run, expect=led.count)


def merge_by_recorded_order(
    partitions: list[Iterator[tuple[dict[str, Any], int, int | None, int, int]]],
) -> Iterator[tuple[dict[str, Any], int, int | None]]:
    """Merge per-partition (event, L, served_at, partition, offset) streams, each kept in its
    own order, by (L, event time): an order in which one learner could have scored them
    (events with the same L saw the same model, so their relative order does not matter)."""
    def keyed(it: Iterator[tuple[dict[str, Any], int, int | None, int, int]]) -> Iterator[tuple[Any, ...]]:
        for ev, labels, served_at, p, off in it:
            yield labels, ev["event_time"], p, off, served_at, ev

    for labels, _, _, _, served_at, ev in heapq.merge(*(keyed(it) for it in partitions)):
        yield ev, labels, served_at


def arrival_steps(
    events: list[dict[str, Any]],
    feedback: list[tuple[int, dict[str, Any]]],
    batch: int = 256,
) -> Iterator[Step]:
    """Events in the given (event-time) order; each (arrival time, label) learned before the
    first event whose time is past its arrival. ``feedback`` must be sorted by arrival."""
    i = 0
    buf: list[dict[str, Any]] = []
    for ev in events:
        if i < len(feedback) and feedback[i][0] < ev["event_time"]:
            if buf:
                yield Step("score", buf)
                buf = []
            labels = []
            while i < len(feedback) and feedback[i][0] < ev["event_time"]:
                labels.append(feedback[i][1])
                i += 1
            for j in range(0, len(labels), batch):
                yield Step("learn", labels[j : j + batch])
        buf.append(ev)
        if len(buf) >= batch:
            yield Step("score", buf)
            buf = []
    if buf:
        yield Step("score", buf)
    rest = [fb for _, fb in feedback[i:]]
    for j in range(0, len(rest), batch):
        yield Step("learn", rest[j : j + batch])
