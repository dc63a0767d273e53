"""Served records in the store: compact, one key per event, and records written before the
compact encoding (JSON + a marker key per label) still joined and learned exactly once."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from streamlearn.featurestore.backend import MemoryBackend, RedisBackend, WriteBatch
from streamlearn.featurestore.definitions import get_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.learner import Learner
from streamlearn.streams.loop import OnlineLoop
from streamlearn.streams.loop.served import ServedCodec, decode_many
from tests.helpers import feedback_for, make_events


@pytest.fixture(params=["memory", "redis"])
def new_loop(request):
    backend = MemoryBackend() if request.param == "memory" else RedisBackend(request.getfixturevalue("infra").redis_url)
    prefix = f"p{uuid.uuid4().hex[:8]}"

    def make() -> OnlineLoop:
        return OnlineLoop(get_view("entity_v1"), Learner("m", "logreg"), backend, Keys(prefix, "m"),
                          artifact_key=b"k")

    return make


def test_a_label_leaves_no_key_of_its_own_and_a_duplicate_is_still_recognised(new_loop):
    loop = new_loop()
    events = make_events(50, seed=4)
    fbs = [feedback_for(e) for e in events]

    async def go():
        await loop.score_batch(events)
        r1 = await loop.learn_batch(fbs)
        # a restarted learner (snapshot + log) sees the same labels again: all duplicates
        await loop.checkpoint()
        again = new_loop()
        await again.restore()
        r2 = await again.learn_batch(fbs[::3])
        ids = [e["event_id"] for e in events]
        stored = await loop.backend.read_many([loop.keys.served(i) for i in ids])
        markers = await loop.backend.read_many([loop.keys.learned(i) for i in ids])
        return r1, r2, again, stored, markers

    r1, r2, again, stored, markers = asyncio.run(go())
    assert len(r1.learned) == 50 and len(r2.duplicate) == len(fbs[::3]) and not r2.learned
    assert again.champion.labels_learned == 50
    assert all(ServedCodec.is_learned(s) for s in stored) and markers == [None] * 50
    assert max(map(len, stored)) < 160  # JSON was ~450 bytes per record for this view


def test_records_served_before_the_upgrade_are_joined_and_learned_exactly_once(new_loop):
    """Old workers wrote JSON records and a marker key per learned label; new code must learn
    the labels still to come on exactly those features, and refuse the ones already learned."""
    loop = new_loop()
    events = make_events(40, seed=9)
    fbs = [feedback_for(e) for e in events]
    ids = [e["event_id"] for e in events]

    async def go():
        await loop.score_batch(events)
        recs = await decode_many(loop, await loop.backend.read_many([loop.keys.served(i) for i in ids]), "t")
        # rewrite the store as the old code left it: JSON records, 10 labels learned with markers
        wb = WriteBatch()
        for i, rec in zip(ids, recs):
            wb.set(loop.keys.served(i), orjson.dumps(rec), 3600)
        for i in ids[:10]:
            wb.set(loop.keys.learned(i), b"1", 3600)
        await loop.backend.write_batch(wb)
        fresh = new_loop()  # a new process: no layout cache, reads JSON
        r1 = await fresh.learn_batch(fbs)
        r2 = await fresh.learn_batch(fbs[10:20])  # re-delivered after the upgrade
        markers = await loop.backend.read_many([loop.keys.learned(i) for i in ids])
        return recs, fresh, r1, r2, markers

    recs, fresh, r1, r2, markers = asyncio.run(go())
    assert r1.duplicate == ids[:10] and r1.learned == ids[10:]
    assert r2.duplicate == ids[10:20] and not r2.learned
    assert all(m is not None for m in markers)  # old records keep their marker keys
    # learned on exactly the served features: same model as a plain learner fed them
    plain = Learner("m", "logreg")
    for rec, fb in list(zip(recs, fbs))[10:]:
        plain.learn(rec["x"], fb["label"])
    x = recs[0]["x"]
    assert fresh.champion.predict(x).score == plain.predict(x).score


def test_a_redelivered_event_reuses_a_compact_record_from_another_process(new_loop):
    first, second = new_loop(), new_loop()
    events = make_events(20, seed=2)

    async def go():
        p1 = await first.score_batch(events)
        p2 = await second.score_batch(events)  # no layout cached in this process
        return p1, p2

    p1, p2 = asyncio.run(go())
    assert [p.score for p in p1] == [p.score for p in p2]
    assert second.counters.events_duplicate == 20


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_second_serve_of_one_event_keeps_the_first_record_and_its_learned_flag(kind, infra):
    """Two workers serving one event at once (a rebalance): both computed it as new. The
    record is written only if absent, so the learner's flag on the first is never cleared
    and a re-delivered label is still recognised as learned."""
    backend = MemoryBackend() if kind == "memory" else RedisBackend(infra.redis_url)
    key = f"t{uuid.uuid4().hex[:6]}:srv:e1"

    async def go() -> list[bytes | None]:
        first, flagged = WriteBatch(), WriteBatch()
        first.set_if_absent(key, b"first", 60)
        await backend.write_batch(first)
        flagged.set(key, b"first+learned", 60)  # the learner flags it (an unconditional rewrite)
        await backend.write_batch(flagged)
        second = WriteBatch(receipt=(key + ":receipt", "1"))  # the other worker, as the loop writes
        second.set_if_absent(key, b"second", 60)
        await backend.write_batch(second)
        return await backend.read_many([key])

    assert asyncio.run(go()) == [b"first+learned"]
