"""Label joining: each label is joined to the record served for its event and learned once.

Learning a batch writes the "learned" markers and appends (event id, label) to the model's
learn log atomically, so a restarted learner (snapshot + log replay) equals the crashed one.
A label whose event has not been served yet is parked, unless another worker served the
event meanwhile; serving takes parked labels in the same transaction (:mod:`.scoring`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamlearn.featurestore.backend import MemoryBackend, WriteBatch
from streamlearn.schemas.records import Prediction
from streamlearn.streams.loop import served as srv
from streamlearn.streams.loop.serde import dumps

if TYPE_CHECKING:
    from streamlearn.streams.loop.core import OnlineLoop


@dataclass
class LearnReport:
    learned: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def learn_all(loop: OnlineLoop, y: Any, rec: dict[str, Any]) -> None:
    """Every model learns the label; each is scored against its own served prediction."""
    x, served = rec["x"], rec["m"]
    for v, learner in loop.models.learners.items():
        learner.learn(x, y, served.get(str(v)))
    if loop.lifecycle is not None:
        loop.lifecycle.on_label(loop.models, y, served, rec.get("s"))


def learn_one(loop: OnlineLoop, eid: str, y: Any, rec: dict[str, Any], wb: WriteBatch, report: LearnReport,
              raw: bytes) -> None:
    learn_many(loop, [(eid, y, rec, raw)], wb, report)


def learn_many(loop: OnlineLoop, todo: Sequence[tuple[str, Any, dict[str, Any], bytes]], wb: WriteBatch | None,
               report: LearnReport) -> None:
    """Learn each ``(event id, label, served record, stored record)`` in order, as
    :func:`learn_all` one by one would: every model and the lifecycle see the labels in the
    same order and nothing of one reads another, so each takes the batch whole (its per-label
    set-up done once). ``on_learn`` hooks then see each label in order (they read no model).
    The learned flags and learn-log entries go into ``wb``, or with ``wb`` None (the plain
    path of a backend the loop uses directly: every stored record a kept one) straight into
    the backend, as applying them would."""
    if not todo:
        return
    models = loop.models
    for v, learner in models.learners.items():
        key = str(v)
        learner.learn_many([(rec["x"], y, rec["m"].get(key)) for _, y, rec, _ in todo])
    if loop.lifecycle is not None:
        loop.lifecycle.on_labels(models, [(y, rec["m"], rec.get("s")) for _, y, rec, _ in todo])
    if wb is None:
        backend: MemoryBackend = loop.backend  # type: ignore[assignment]
        now, _ = backend.moment()
        ttl, key, put = loop.served_ttl_s, loop.keys.served, backend.put
        for eid, _, _, raw in todo:
            put(key(eid), (True, *raw[1:]), ttl, now)  # type: ignore[arg-type]  # (mark_learned's)
        backend.extend_list(loop.keys.learn_log, [dumps({"id": eid, "y": y}) for eid, y, _, _ in todo])
    else:
        for eid, _, _, raw in todo:
            srv.mark_learned(loop, wb, eid, raw)  # the stored record ``raw`` flagged, or an old one's marker
        wb.appends.setdefault(loop.keys.learn_log, []).extend([dumps({"id": eid, "y": y}) for eid, y, _, _ in todo])
    report.learned.extend([eid for eid, _, _, _ in todo])
    loop.counters.labels_learned += len(todo)
    loop.dirty = True
    if loop.on_learn is not None:
        for eid, y, rec, _ in todo:
            loop.on_learn(eid, y, rec)


async def learn_parked(loop: OnlineLoop, parked: list[tuple[str, Any]], preds: list[Prediction],
                       served_now: dict[str, dict[str, Any]], served_raw: dict[str, bytes]) -> None:
    """Labels taken while serving their events: learned now (learner) or handed back."""
    wb = WriteBatch()
    if loop.is_learner:
        joined = {eid for eid, _ in parked}
        for p in preds:
            if p.event_id in joined:  # its first prediction (not a duplicate's)
                joined.discard(p.event_id)
                p.label_joined = True
                for sp in p.shadows:
                    sp.label_joined = True
        report = LearnReport()
        learn_many(loop, [(eid, y, served_now[eid], served_raw[eid]) for eid, y in parked], wb, report)
        loop.counters.labels_joined_late += len(report.learned)
        loop.log_len += len(report.learned)
    else:  # only the learner learns: hand the label back to it through the feedback topic
        now = int(loop.clock() * 1000)
        for eid, y in parked:
            loop.outbox.put("feedback", {"event_id": eid, "label": y, "label_time": now})
    await loop.write(wb, "learn write")


async def learn_locked(loop: OnlineLoop, feedback: Sequence[dict[str, Any]]) -> LearnReport:
    """Join labels to what was served and learn each exactly once, in order (lock held)."""
    report = LearnReport()
    backend = loop.backend
    if backend.direct and (todo := _plain(loop, feedback)) is not None:
        learn_many(loop, todo, None, report)
        loop.log_len += len(report.learned)
        if loop.lifecycle is not None:
            await loop.decide_locked()
        return report
    keys = loop.keys
    ids = []
    read_keys = []
    learned_keys = []
    for fb in feedback:  # one loop, no comprehensions: each is a function object and a frame per batch
        i = fb["event_id"]
        ids.append(i)
        read_keys.append(keys.served(i))
        learned_keys.append(keys.learned(i))
    read_keys += learned_keys
    objects = backend.direct
    if objects:  # an in-process replay's memory backend, read directly (as scoring does)
        raw = backend.get_all(read_keys)  # type: ignore[attr-defined]
    else:
        raw = await loop.read(read_keys, "learn read")
    served, marked = raw[: len(ids)], raw[len(ids) :]
    recs = await srv.decode_many(loop, served, "learn read")
    wb = WriteBatch()
    seen: set[str] = set()
    unmatched: list[dict[str, Any]] = []
    todo: list[tuple[str, Any, dict[str, Any], bytes]] = []  # learned after the park: the same order
    is_learned = srv.ServedCodec.is_learned
    for fb, stored, rec, mark in zip(feedback, served, recs, marked):
        eid = fb["event_id"]
        if mark is not None or eid in seen or (stored is not None and is_learned(stored)):
            report.duplicate.append(eid)
        elif rec is None:
            unmatched.append(fb)
        else:
            todo.append((eid, fb["label"], rec, stored))
        seen.add(eid)
    if unmatched:  # park, unless another worker served the event meanwhile
        got = await loop.io(lambda: loop.backend.park_unless_present(
            [(keys.pending(fb["event_id"]), dumps({"y": fb["label"]}), loop.pending_ttl_s,
              keys.served(fb["event_id"])) for fb in unmatched]), "park")
        got_recs = await srv.decode_many(loop, got, "park")
        for fb, stored, rec in zip(unmatched, got, got_recs):
            if rec is None:
                report.unmatched.append(fb["event_id"])
            elif srv.ServedCodec.is_learned(stored):  # served and learned meanwhile elsewhere
                report.duplicate.append(fb["event_id"])
            else:
                todo.append((fb["event_id"], fb["label"], rec, stored))
    learn_many(loop, todo, wb, report)
    # in-memory model is ahead of the store until this lands: retry, never re-learn
    if objects:
        backend.apply(wb)  # type: ignore[attr-defined]
    else:
        await loop.write(wb, "learn write")
    loop.log_len += len(report.learned)
    if loop.lifecycle is not None:  # (nothing to decide without one)
        await loop.decide_locked()
    return report


def _plain(loop: OnlineLoop, feedback: Sequence[dict[str, Any]]) -> list[tuple[str, Any, dict[str, Any], Any]] | None:
    """On a backend the loop uses directly (an in-process replay): the labels to learn, in
    order, when every label is plain: its id once in the batch, its event served (a record
    kept as objects), not learned before. Then :func:`learn_locked` learns them all without
    its general path (lists of keys, decoding, parking); None, having changed nothing, when
    any label is not plain (that batch takes the general path). Held equal to the general
    path on bytes by tests/simulation/replay/test_replay_objects_exact.py."""
    backend = loop.backend
    keys = loop.keys
    now, fresh = backend.moment()  # type: ignore[attr-defined]
    get = backend.get  # type: ignore[attr-defined]
    todo = []
    for fb in feedback:
        eid = fb["event_id"]
        raw = get(keys.served(eid), now, fresh)
        if raw is None or raw.__class__ is not srv.Kept or raw[0] or get(keys.learned(eid), now, fresh) is not None:
            return None
        todo.append((eid, fb["label"], raw))
    if len(todo) > 1 and len({eid for eid, _, _ in todo}) != len(todo):
        return None
    unkeep = srv.unkeep
    return [(eid, y, unkeep(raw), raw) for eid, y, raw in todo]
