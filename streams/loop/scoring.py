"""Scoring: features from entity state -> every model's prediction -> one atomic write.

Events are idempotent by event id: an entity's new state and the served record (features
plus what each model predicted) are written in one atomic batch, and a re-delivered event
finds its served record, reuses it and leaves entity state alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streamlearn.featurestore.backend import WriteBatch
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
    scored = [(v, learner, learner.predict_many(xs)) for v, learner in models.learners.items()]
    out = []
    for i, (ev, _) in enumerate(items):
        serving = models.serving_version(ev["entity"])
        eid, entity, event_time = ev["event_id"], ev["entity"], ev["event_time"]
        per_model: dict[str, Any] = {}
        main: Prediction | None = None
        shadows: list[Prediction] = []
        for v, learner, results in scored:
            s = results[i]
            n = learner.labels_learned
            p = Prediction(event_id=eid, entity=entity, event_time=event_time, model_name=learner.name,
                           model_version=v, labels_learned=n, score=s.score, predicted=s.predicted,
                           probabilities=s.probabilities)
            per_model[str(v)] = {"score": s.score, "pred": s.predicted, "proba": s.probabilities, "n": n}
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
    too), so the per-batch work is kept to one pass and each key is built once."""
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
    raw = await loop.read(ent_keys + srv_keys, "score read")
    n_ent = len(entities)
    states: dict[str, Any] = {}
    for e, v in zip(entities, raw):
        states[e] = loads(v) if v else None
    served_before = raw[n_ent:]
    prior_recs = (served_before if served_before.count(None) == len(served_before)
                  else await served.decode_many(loop, served_before, "score read"))

    batch = WriteBatch()
    changed: dict[str, None] = {}  # entities whose state changed, in order
    served_now: dict[str, dict[str, Any]] = {}
    served_raw: dict[str, Any] = {}
    pending: list[tuple[str, str]] = []  # (event id, its parked label's key), as served now
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
    for (ev, x, srv_key), (p, per_model) in zip(todo, scored):
        preds.append(p)
        if srv_key is None:
            loop.counters.events_duplicate += 1
            continue
        eid = ev["event_id"]
        # what each model predicted is kept with the features: labels are scored against it
        rec = {"x": x, "t": ev["event_time"], "m": per_model, "s": p.model_version}
        served_now[eid] = rec
        served_raw[eid] = served.encode_into(loop, batch, eid, rec, srv_key)
        # a label parked before this event was served is taken in the same transaction
        # that serves it, so another process can never park one in between unseen
        pk = keys.pending(eid)
        batch.getdels.append(pk)
        pending.append((eid, pk))
    for e, k in zip(entities, ent_keys):
        if e in changed:
            batch.set(k, dumps(states[e]), loop.entity_ttl_s)
    taken = await loop.write(batch, "score write")
    loop.counters.events_scored += len(preds)
    parked = []
    for eid, pk in pending:
        if (v := taken.get(pk)) is not None:
            parked.append((eid, loads(v)["y"]))
    if parked:  # labels that arrived before their event
        await labels.learn_parked(loop, parked, preds, served_now, served_raw)
    if loop.lifecycle is not None and loop.is_learner:
        loop.lifecycle.on_scored([rec["x"] for rec in served_now.values()])
        await loop.decide_locked()
    return preds
