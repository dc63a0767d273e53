"""Scoring: features from entity state -> every model's prediction -> one atomic write.

Events are idempotent by event id: an entity's new state and the served record (features
plus what each model predicted) are written in one atomic batch, and a re-delivered event
finds its served record, reuses it and leaves entity state alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streamlearn.featurestore.backend import MemoryBackend, WriteBatch
from streamlearn.featurestore.errors import FeatureError
from streamlearn.schemas.records import Prediction
from streamlearn.streams.loop import labels, served
from streamlearn.streams.loop.serde import dumps, loads

if TYPE_CHECKING:
    from streamlearn.streams.loop.core import OnlineLoop


def score_many(loop: OnlineLoop, items: Sequence[tuple[dict[str, Any], dict[str, float]]]
               ) -> list[tuple[Prediction, dict[str, Any]]]:
    """Score each (event, features) with every model, in order; the serving model's prediction
    carries the others as shadows. Each model is asked for the whole batch at once
    (:meth:`Learner.predict_many`: one call for a batch model); models do not change while a
    batch is scored, so this is event by event's result."""
    models = loop.models
    xs = [x for _, x in items]
    scored = [(v, str(v), learner.name, learner, learner.predict_many(xs)) for v, learner in models.learners.items()]
    canary, champion = models.canary, models.champion  # (the serving version without a call per event)
    out = []
    for i, (ev, _) in enumerate(items):
        entity = ev["entity"]
        serving = champion if canary is None else models.serving_version(entity)
        eid, event_time = ev["event_id"], ev["event_time"]
        per_model: dict[str, Any] = {}
        main: Prediction | None = None
        shadows: list[Prediction] = []
        for v, key, name, learner, results in scored:
            s = results[i]
            n = learner.labels_learned
            # (positional: event_id, entity, event_time, model_name, model_version, labels_learned,
            # score, predicted, probabilities)
            p = Prediction(eid, entity, event_time, name, v, n, s.score, s.predicted, s.probabilities)
            per_model[key] = {"score": s.score, "pred": s.predicted, "proba": s.probabilities, "n": n}
            if v == serving:
                main = p
            else:
                shadows.append(p)
        assert main is not None
        main.shadows = shadows
        out.append((main, per_model))
    return out


async def score_locked(loop: OnlineLoop, events: Sequence[dict[str, Any]]) -> list[Prediction]:
    """Features -> score -> persist, for events in order (the loop's lock is held).

    Batches are small when events and labels interleave (one or two events, in a replay
    too), so the per-batch work is kept to one pass and each key is built once. The state
    access is the backend's (:func:`_read`, :func:`_write`), or, on an in-process replay's
    memory backend that keeps objects, direct (:func:`_read_objects`, :func:`_write_objects`:
    no coroutine, write batch or JSON per batch); the decisions below are the same for both."""
    backend = loop.backend
    objects = backend.direct
    if objects:
        plain = _score_plain(loop, events)
        if plain is not None:
            preds, xs = plain
            if loop.lifecycle is not None:  # (no coroutine per batch for nothing)
                await _scored_hooks(loop, xs)
            return preds
    keys = loop.keys
    # one loop, no comprehensions: each is a function object and a frame per batch
    ent_index: dict[str, None] = {}
    srv_keys = []
    for ev in events:
        ent_index[ev["entity"]] = None
        srv_keys.append(keys.served(ev["event_id"]))
    entities = list(ent_index)
    ent_keys = []
    for e in entities:
        ent_keys.append(keys.entity(e))
    if objects:
        states, served_before = _read_objects(backend, entities, ent_keys, srv_keys)  # type: ignore[arg-type]
    else:
        states, served_before = await _read(loop, entities, ent_keys, srv_keys)
    prior_recs = (served_before if served_before.count(None) == len(served_before)
                  else await served.decode_many(loop, served_before, "score read"))

    changed: dict[str, None] = {}  # entities whose state changed, in order
    served_now: dict[str, dict[str, Any]] = {}
    preds: list[Prediction] = []
    compute = loop.view.compute
    # features first (entity state changes event by event), then every model scores the
    # batch at once: the models do not change while a batch is scored
    todo: list[tuple[dict[str, Any], dict[str, float], str | None]] = []  # (event, x, served key | None: a duplicate)
    first_x: dict[str, dict[str, float]] = {}
    for ev, prior, prior_rec, srv_key in zip(events, served_before, prior_recs, srv_keys):
        eid = ev["event_id"]
        if (prior is not None and prior_rec is not None) or eid in first_x:
            # re-delivered or duplicate id: same features as first served, state untouched
            todo.append((ev, first_x[eid] if eid in first_x else prior_rec["x"], None))
            continue
        entity = ev["entity"]
        try:
            x, new_state = compute(ev, states[entity])
        except FeatureError as exc:  # this event only: its entity's state stays as it was
            loop.feature_errors.append((ev, exc.reason, str(exc)))
            continue
        states[entity] = new_state
        changed[entity] = None
        first_x[eid] = x
        todo.append((ev, x, srv_key))
    scored = score_many(loop, [(ev, x) for ev, x, _ in todo])
    fresh: list[tuple[str, str, dict[str, Any]]] = []  # (event id, served key, record) to store
    for (ev, x, srv_key), (p, per_model) in zip(todo, scored):
        preds.append(p)
        if srv_key is None:
            loop.counters.events_duplicate += 1
            continue
        eid = ev["event_id"]
        # what each model predicted is kept with the features: labels are scored against it
        rec = {"x": x, "t": ev["event_time"], "m": per_model, "s": p.model_version}
        served_now[eid] = rec
        fresh.append((eid, srv_key, rec))
    # the served records, each with any label parked before its event was served (taken in
    # the same transaction that serves it, so another process can never park one in between
    # unseen), and the entities' new states: one atomic write
    if objects:
        served_raw, parked = _write_objects(loop, fresh, entities, ent_keys, states, changed)
    else:
        served_raw, parked = await _write(loop, fresh, entities, ent_keys, states, changed)
    loop.counters.events_scored += len(preds)
    if parked:  # labels that arrived before their event
        await labels.learn_parked(loop, parked, preds, served_now, served_raw)
    await _scored_hooks(loop, [rec["x"] for rec in served_now.values()])
    return preds


async def _scored_hooks(loop: OnlineLoop, xs: list[dict[str, float]]) -> None:
    """After a batch is served: the lifecycle sees the vectors served fresh (in order) and
    decides."""
    if loop.lifecycle is not None and loop.is_learner:
        loop.lifecycle.on_scored(xs)
        await loop.decide_locked()


_ABSENT = object()


def _score_plain(loop: OnlineLoop, events: Sequence[dict[str, Any]]
                 ) -> tuple[list[Prediction], list[dict[str, float]]] | None:
    """:func:`score_locked` on a backend the loop uses directly (an in-process replay), for a
    batch where every event is plain: served for the first time, its id once in the batch, no
    label parked for it. Then the decisions are the plain ones (compute, score, store; nothing
    to reuse or learn late) and the batch is served item by item, without the general path's
    lists of keys, reads and records (a replay's batches hold one or two events; with the
    label side's, ~5% of a replay's instructions). Returns the predictions and the vectors
    served fresh, or None, having changed nothing, when any event is not plain: the general
    path serves that batch. tests/simulation/replay/test_replay_objects_exact.py holds both
    against every value stored as bytes (as on Redis), over streams with re-sent events,
    early labels and feature errors."""
    backend: MemoryBackend = loop.backend  # type: ignore[assignment]
    keys = loop.keys
    now, fresh = backend.moment()
    get = backend.get
    srv_keys = []
    for ev in events:
        eid = ev["event_id"]
        k = keys.served(eid)
        if get(k, now, fresh) is not None or get(keys.pending(eid), now, fresh) is not None:
            return None
        srv_keys.append(k)
    if len(events) > 1 and len({ev["event_id"] for ev in events}) != len(events):
        return None
    compute = loop.view.compute
    # each entity's state as the batch goes, read as the general path reads it (in the order
    # entities first appear: their keys are written in that order too)
    states: dict[str, Any] = {}
    ent_keys: dict[str, str] = {}
    changed: set[str] = set()
    todo = []
    todo_keys = []
    for ev, k in zip(events, srv_keys):
        entity = ev["entity"]
        state = states.get(entity, _ABSENT)
        if state is _ABSENT:
            ek = ent_keys[entity] = keys.entity(entity)
            v = get(ek, now, fresh)
            state = states[entity] = (loads(v) if v.__class__ is bytes else v) if v else None
        try:
            x, new_state = compute(ev, state)
        except FeatureError as exc:  # this event only: its entity's state stays as it was
            loop.feature_errors.append((ev, exc.reason, str(exc)))
            continue
        states[entity] = new_state
        changed.add(entity)
        todo.append((ev, x))
        todo_keys.append(k)
    scored = score_many(loop, todo)
    keep = served.codec(loop).keep
    ttl = loop.served_ttl_s
    put = backend.put
    preds = []
    xs = []
    for (ev, x), (p, per_model), srv_key in zip(todo, scored, todo_keys):
        preds.append(p)
        xs.append(x)
        rec = {"x": x, "t": ev["event_time"], "m": per_model, "s": p.model_version}
        kept = keep(rec) if ttl > 0 else None
        if kept is not None:
            put(srv_key, kept, ttl, now)  # type: ignore[arg-type]
        else:  # bytes (and its layout), as the backend's write does
            wb = WriteBatch()
            served.encode_into(loop, wb, ev["event_id"], rec, srv_key)
            backend.apply(wb)
    ttl = loop.entity_ttl_s
    for e, k in ent_keys.items():
        if e in changed:
            put(k, states[e], ttl, now)
    loop.counters.events_scored += len(preds)
    return preds, xs


async def _read(loop: OnlineLoop, entities: list[str], ent_keys: list[str], srv_keys: list[str]
                ) -> tuple[dict[str, Any], list[Any]]:
    """Entity states (decoded) and the records stored for the events (as stored), one read."""
    raw = await loop.read(ent_keys + srv_keys, "score read")
    states: dict[str, Any] = {}
    for e, v in zip(entities, raw):
        states[e] = loads(v) if v else None
    return states, raw[len(entities):]


async def _write(loop: OnlineLoop, fresh: list[tuple[str, str, dict[str, Any]]], entities: list[str],
                 ent_keys: list[str], states: dict[str, Any], changed: dict[str, None]
                 ) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Store the records and changed states in one atomic write; returns what was stored per
    event and the parked labels it took, as (event id, label)."""
    keys = loop.keys
    batch = WriteBatch()
    served_raw: dict[str, Any] = {}
    pending: list[tuple[str, str]] = []  # (event id, its parked label's key)
    for eid, srv_key, rec in fresh:
        served_raw[eid] = served.encode_into(loop, batch, eid, rec, srv_key)
        pk = keys.pending(eid)
        batch.getdels.append(pk)
        pending.append((eid, pk))
    for e, k in zip(entities, ent_keys):
        if e in changed:
            batch.set(k, dumps(states[e]), loop.entity_ttl_s)
    taken = await loop.write(batch, "score write")
    parked = []
    for eid, pk in pending:
        if (v := taken.get(pk)) is not None:
            parked.append((eid, loads(v)["y"]))
    return served_raw, parked


def _read_objects(backend: MemoryBackend, entities: list[str], ent_keys: list[str], srv_keys: list[str]
                  ) -> tuple[dict[str, Any], list[Any]]:
    """:func:`_read` on a memory backend that keeps objects: entity states are stored as the
    objects the view returned. (The view returns states as JSON gives them back, so a state
    read from Redis equals the object: see FeatureView.compute; within a batch the loop
    always used the object.)"""
    raw = backend.get_all(ent_keys + srv_keys)
    states: dict[str, Any] = {}
    for e, v in zip(entities, raw):
        states[e] = (loads(v) if v.__class__ is bytes else v) if v else None
    return states, raw[len(entities):]


def _write_objects(loop: OnlineLoop, fresh: list[tuple[str, str, dict[str, Any]]], entities: list[str],
                   ent_keys: list[str], states: dict[str, Any], changed: dict[str, None]
                   ) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """:func:`_write` on a memory backend that keeps objects: each record kept as an object
    (:meth:`ServedCodec.keep`; bytes where it cannot be), states as objects, set directly (one
    process, the loop's lock held: nothing sees a half-applied batch)."""
    backend: MemoryBackend = loop.backend  # type: ignore[assignment]
    keys = loop.keys
    now, is_fresh = backend.moment()
    keep = served.codec(loop).keep
    ttl = loop.served_ttl_s
    served_raw: dict[str, Any] = {}
    parked = []
    for eid, srv_key, rec in fresh:
        kept = keep(rec) if ttl > 0 else None
        if kept is not None and backend.get(srv_key, now, is_fresh) is None:  # set if absent
            backend.put(srv_key, kept, ttl, now)  # type: ignore[arg-type]
            served_raw[eid] = kept
        else:  # bytes (and its layout), or a record already there: as the backend's write does
            wb = WriteBatch()
            served_raw[eid] = served.encode_into(loop, wb, eid, rec, srv_key)
            backend.apply(wb)
        v = backend.take(keys.pending(eid), now, is_fresh)
        if v is not None:
            parked.append((eid, loads(v)["y"]))
    ttl = loop.entity_ttl_s
    for e, k in zip(entities, ent_keys):
        if e in changed:
            backend.put(k, states[e], ttl, now)
    return served_raw, parked
