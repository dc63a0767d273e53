"""The online loop's guarantees, run against every backend (in-memory and real Redis)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streamlearn.featurestore.backend import MemoryBackend, RedisBackend
from streamlearn.featurestore.definitions import get_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.artifacts import ArtifactError
from streamlearn.models.estimators.learner import Learner
from streamlearn.streams.loop import OnlineLoop
from tests.helpers import feedback_for, make_events


@pytest.fixture(params=["memory", "redis"])
def new_loop(request):
    """A factory of loops sharing one store (a 'restart' is a new loop on the same store)."""
    if request.param == "memory":
        backend = MemoryBackend()
    else:
        backend = RedisBackend(request.getfixturevalue("infra").redis_url)
    prefix = f"p{uuid.uuid4().hex[:8]}"

    def make(key: bytes = b"k") -> OnlineLoop:
        return OnlineLoop(get_view("entity_v1"), Learner("m", "logreg"), backend, Keys(prefix, "m"),
                          artifact_key=key)

    return make


def run(coro):
    return asyncio.run(coro)


def test_every_label_is_learned_exactly_once(new_loop):
    loop = new_loop()
    events = make_events(60)

    async def go():
        await loop.score_batch(events)
        fbs = [feedback_for(e) for e in events]
        r1 = await loop.learn_batch(fbs[:30] + fbs[:5])  # duplicates inside a batch
        r2 = await loop.learn_batch(fbs[20:])  # and across batches
        return r1, r2

    r1, r2 = run(go())
    assert len(r1.learned) == 30 and len(r1.duplicate) == 5
    assert len(r2.learned) == 30 and len(r2.duplicate) == 10
    assert loop.champion.labels_learned == 60


def test_redelivered_events_reuse_served_features_and_do_not_double_count(new_loop):
    loop = new_loop()
    events = make_events(20, n_entities=2)

    async def go():
        first = await loop.score_batch(events)
        again = await loop.score_batch(events[5:10])  # e.g. re-consumed after a crash
        later = await loop.score_batch(make_events(1, start=20, n_entities=2))
        return first, again, await _served_x(loop, later[0].event_id)

    first, again, x = run(go())
    assert [p.event_id for p in again] == [e["event_id"] for e in events[5:10]]
    assert loop.counters.events_duplicate == 5
    # the next event of entity 0 sees 10 prior events of that entity, not 10 + duplicates
    assert x["ent_count"] == 10.0


async def _served_x(loop, eid):
    from streamlearn.streams.loop.served import decode_many

    raw, = await loop.backend.read_many([loop.keys.served(eid)])
    return (await decode_many(loop, [raw], "test"))[0]["x"]


def test_restart_restores_the_exact_model_from_snapshot_plus_learn_log(new_loop):
    loop = new_loop()
    events = make_events(200)
    fbs = [feedback_for(e) for e in events]

    async def go():
        await loop.score_batch(events)
        await loop.learn_batch(fbs[:80])
        assert await loop.checkpoint()
        await loop.learn_batch(fbs[80:150])  # learned after the last snapshot: only in the log
        restarted = new_loop()
        replayed = await restarted.restore()
        probe = {"amount": 42.0, "kind=a": 1.0, "flag": 1.0}
        same = (restarted.champion.predict(probe) == loop.champion.predict(probe),
                restarted.champion.metric_values() == loop.champion.metric_values())
        # the unacknowledged labels come back from Kafka: learned once, no more
        return restarted, replayed, same, await restarted.learn_batch(fbs[100:])

    restarted, replayed, same, r = run(go())
    assert replayed == 70
    assert loop.champion.labels_learned == 150
    assert same == (True, True), "restored model predicts and scores exactly like the original"
    assert len(r.learned) == 50 and len(r.duplicate) == 50
    assert restarted.champion.labels_learned == 200


def test_a_snapshot_signed_with_another_key_is_refused(new_loop):
    loop = new_loop(b"right")

    async def go():
        await loop.score_batch(make_events(5))
        await loop.learn_batch([feedback_for(e) for e in make_events(5)])
        await loop.checkpoint()
        await new_loop(b"wrong").restore()

    with pytest.raises(ArtifactError, match="signature does not verify"):
        run(go())


def test_label_for_unknown_event_is_counted_and_parked(new_loop):
    loop = new_loop()
    r = run(loop.learn_batch([{"event_id": "nope", "label": True, "label_time": 0}]))
    assert r.unmatched == ["nope"] and loop.champion.labels_learned == 0


def test_a_label_parked_by_another_process_is_never_lost(new_loop):
    """Two loops on one store, as two workers: the learner parks a label for an event the
    other one has not served yet; serving it must hand the label back, whatever the order."""
    learner, scorer = new_loop(), new_loop()
    scorer.is_learner = False
    events = make_events(3, seed=41)
    ev = {**events[0], "event_id": "id:with:colons"}

    async def go():
        r = await learner.learn_batch([{**feedback_for(ev)}])
        await scorer.score_batch([ev])
        return r

    r = run(go())
    assert r.unmatched == ["id:with:colons"]
    handed_back = scorer.outbox.drain()
    assert handed_back == [("feedback", {"event_id": "id:with:colons", "label": feedback_for(ev)["label"],
                                           "label_time": handed_back[0][1]["label_time"]})]


def test_malformed_operator_commands_are_refused_and_the_rest_applied(new_loop):
    """Whatever lands in the control list (not JSON, JSON that is not an object, an unknown
    op), the loop refuses it with a reason and applies the valid command behind it; the list
    is drained, so a bad entry cannot crash every restart."""
    from streamlearn.featurestore.backend import WriteBatch

    loop = new_loop()

    async def go():
        wb = WriteBatch()
        for item in (b"{not json", b"[]", b"42", b'"add"', b'{"op": "explode"}', b'{"op": "add", "spec": "hat"}'):
            wb.append(loop.keys.control, item)
        await loop.backend.write_batch(wb)
        applied = await loop.drain_control()
        return applied, await loop.backend.read_list(loop.keys.control)

    applied, left = run(go())
    assert applied == 6 and left == []
    refused = [r for s, r in loop.outbox if s == "lifecycle" and r["action"] == "refused"]
    assert len(refused) == 5 and all(r["reason"].startswith("bad command") for r in refused)
    assert sorted(loop.models.learners) == [1, 2] and loop.models.learners[2].spec == "hat"
