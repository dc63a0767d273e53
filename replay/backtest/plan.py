"""Planning a backtest: the archive's events and labels as steps, in the order to replay.

*recorded*: the live run's own order, from its predictions (``labels_learned``,
``label_joined``) when the archive holds them, so the replay reproduces every prediction;
*arrival*: the archive's arrival order otherwise (:mod:`.schedule` builds both).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streamlearn.models.task import Task
from streamlearn.replay.archive.reader import Archive, refused_note, worker_labels
from streamlearn.replay.backtest.schedule import RecordedSchedule, Served, Step, arrival_steps, merge_by_recorded_order

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What to run: steps plus how they were derived."""

    mode: str
    steps: list[Step]
    n_events: int
    notes: list[str] = field(default_factory=list)
    reference: tuple[str, int] | None = None  # (model name, version) whose record is reproduced
    schedule: RecordedSchedule | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _reference_predictions(archive: Archive, reference: tuple[str, int] | None
                           ) -> tuple[tuple[str, int] | None, dict[str, deque[tuple[int, int, bool | None]]]]:
    """(reference model, event id -> its predictions' (labels_learned, served_at, label_joined))."""
    preds: list[tuple[str, str, int, int, int, bool | None]] = []
    for tp in archive.partitions("prediction"):
        for _, p in archive.decoded(archive.partition_records("prediction", *tp)):
            preds.append((p["event_id"], p["model_name"], p["model_version"], p["labels_learned"], p["served_at"],
                          p.get("label_joined")))
    if not preds:
        return None, {}
    # served and shadow topics: per event, its predictions in the order they were made
    preds.sort(key=lambda t: t[4])
    if reference is None:  # the model with most predictions (ties: the oldest): the one to reproduce
        counts = Counter((name, v) for _, name, v, _, _, _ in preds)
        reference = min(counts, key=lambda k: (-counts[k], k))
    by_event: dict[str, deque[tuple[int, int, bool | None]]] = defaultdict(deque)
    for eid, name, v, labels, served_at, joined in preds:
        if (name, v) == reference:
            by_event[eid].append((labels, served_at, joined))
    return reference, by_event


def _feedback_offset_order(archive: Archive, task: Any, refused: Counter
                           ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Feedback as the learner consumed it: offset order (one partition by design; several
    are merged by Kafka timestamp, which is then not exact), less the labels the worker's
    check refuses for ``task`` (dead-lettered live: never learned), counted in ``refused``."""
    task = Task.parse(task)  # None: binary, the worker's default
    parts = [worker_labels(archive.decoded(archive.partition_records("feedback", *tp)), task, refused)
             for tp in archive.partitions("feedback")]
    if len(parts) == 1:
        yield from parts[0]
        return
    keyed = (((r["timestamp"], r["partition"], r["offset"]), (r, v)) for it in parts for r, v in it)
    for _, item in sorted(keyed, key=lambda kv: kv[0]):
        yield item


def plan_recorded(archive: Archive, end: int | None, reference: tuple[str, int] | None = None,
                  task: Any = None) -> Plan:
    refused: Counter = Counter()
    ref, recorded = _reference_predictions(archive, reference)
    if ref is None:
        raise ValueError("the archive holds no predictions: a recorded replay needs them (use --join arrival)")
    missing = 0

    def partition_events(topic: str, partition: int) -> Iterator[tuple[Any, ...]]:
        nonlocal missing
        last = 0
        for rec, ev in archive.decoded(archive.partition_records("event", topic, partition)):
            if end is not None and ev["event_time"] >= end:
                continue
            q = recorded.get(ev["event_id"])
            served_at, joined = None, None
            if q:
                last, served_at, joined = q.popleft()
            else:  # no prediction of the reference model: keep the partition's last count
                missing += 1
            yield ev, last, Served(served_at, joined), partition, rec["offset"]

    events = list(merge_by_recorded_order([partition_events(*tp) for tp in archive.partitions("event")]))
    sched = RecordedSchedule(events, ((fb, rec["timestamp"] or None)
                                      for rec, fb in _feedback_offset_order(archive, task, refused)))
    steps = list(sched.steps())
    notes = [f"recorded: reproducing {ref[0]} v{ref[1]} (labels_learned of its predictions)"]
    if missing:
        notes.append(f"{missing} event(s) have no prediction of the reference model: scored with the "
                     "previous event's label count (not an exact reproduction there)")
    if len(archive.partitions("feedback")) > 1:
        notes.append("feedback has several partitions: merged by Kafka timestamp (not exact)")
    if note := refused_note(refused):
        notes.append(note)
    return Plan("recorded", steps, len(events), notes, ref, sched,
                {"events_without_prediction": missing, "labels_never_joined": sched.unjoined,
                 "labels_refused": sum(refused.values())})


def plan_arrival(archive: Archive, start: int | None, end: int | None, batch: int = 256, task: Any = None) -> Plan:
    refused: Counter = Counter()
    events: list[dict[str, Any]] = []
    seen: dict[str, tuple[int, int]] = {}
    for rec, ev in archive.decoded(archive.by_event_time("event", start, end)):
        events.append(ev)
        seen.setdefault(ev["event_id"], (ev["event_time"], rec["timestamp"]))
    feedback: list[tuple[int, int, dict[str, Any]]] = []
    dropped = 0
    for seq, (rec, fb) in enumerate(_feedback_offset_order(archive, task, refused)):
        got = seen.get(fb["event_id"])
        if got is None:
            dropped += 1  # its event is outside the range (or was never archived)
            continue
        event_time, event_ts = got
        feedback.append((event_time + max(0, rec["timestamp"] - event_ts), seq, fb))
    feedback.sort(key=lambda t: (t[0], t[1]))
    steps = list(arrival_steps(events, [(t, fb) for t, _, fb in feedback], batch))
    notes = ["arrival: labels joined at their event's time plus the delay production saw"]
    if note := refused_note(refused):
        notes.append(note)
    return Plan("arrival", steps, len(events), notes,
                counts={"labels_outside_range": dropped, "labels_refused": sum(refused.values())})


def make_plan(archive: Archive, start: int | None = None, end: int | None = None, join: str = "auto",
              reference: tuple[str, int] | None = None, task: Any = None) -> Plan:
    """``task``: the champion's, which the worker checks labels with (None: binary)."""
    if join not in ("auto", "recorded", "arrival"):
        raise ValueError(f"--join must be auto, recorded or arrival, not {join!r}")
    has_preds = bool(archive.files("prediction"))
    if join == "recorded" and start is not None:
        raise ValueError("a recorded replay starts where the live model started: drop --from or use --join arrival")
    if join == "recorded" or (join == "auto" and has_preds and start is None):
        return plan_recorded(archive, end, reference, task)
    plan = plan_arrival(archive, start, end, task=task)
    if join == "auto" and has_preds:
        plan.notes.append("predictions are archived but --from was given: a recorded replay must start "
                          "with the live model, so labels are joined by arrival")
    return plan
