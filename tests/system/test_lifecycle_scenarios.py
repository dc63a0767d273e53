"""The automatic lifecycle, run through the real online loop in-process (fast, deterministic)."""

from __future__ import annotations

import asyncio

from streamlearn import datasets
from streamlearn.featurestore.backend import MemoryBackend
from streamlearn.featurestore.definitions import get_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.governance.gate import GateConfig
from streamlearn.models.governance.lifecycle import Lifecycle, LifecycleConfig
from streamlearn.models.modelset import HISTORY_MAX, ModelSet
from streamlearn.streams.loop import OnlineLoop

POSITION = 5_000


def make_loop(models, *, auto=True, canary=False, min_samples=300, max_actions=3, cooldown_s=0.0, **cfg):
    lc = Lifecycle(LifecycleConfig(
        gate=GateConfig(min_samples=min_samples), use_canary=canary,
        concept={"grace": 1000, "min_gap": 1000},
        limits={"max_actions": max_actions, "window_s": 3600.0, "cooldown_s": cooldown_s}, **cfg)) if auto else None
    return OnlineLoop(get_view("raw_v1"), models, MemoryBackend(), Keys("t", "m"), artifact_key=b"k", lifecycle=lc)


def run(loop, items, batch=50):
    """Arrival order, small batches; returns (hit per event, lifecycle records, drift records)."""
    hits: dict[str, bool] = {}
    truth = {it.event["event_id"]: it.label for it in items}

    async def go():
        kind, buf = None, []

        async def flush():
            if kind == "event":
                for p in await loop.score_batch(buf):
                    hits[p.event_id] = p.predicted == truth[p.event_id]
            elif kind == "feedback":
                await loop.learn_batch(buf)

        for k, rec in datasets.arrival_order(items):
            if k != kind or len(buf) >= batch:
                await flush()
                kind, buf = k, []
            buf.append(rec)
        await flush()

    asyncio.run(go())
    order = [it.event["event_id"] for it in items]
    life = [r for s, r in loop.outbox if s == "lifecycle"]
    drift = [r for s, r in loop.outbox if s == "drift"]
    return [hits[i] for i in order], life, drift


def test_drift_is_detected_a_challenger_is_promoted_and_accuracy_recovers():
    items = datasets.drift(12_000, position=POSITION, seed=7)
    off_hits, _, _ = run(make_loop(Learner("m", "nb"), auto=False), items)
    on_hits, life, drift = run(make_loop(Learner("m", "nb")), items)

    concept = [d for d in drift if d["detector"].startswith("concept")]
    assert concept, "the concept drift was detected"
    delay = concept[0]["position"] - POSITION
    assert 0 <= delay <= 600, f"detection delay {delay} labels"
    assert "start_challenger" in concept[0]["action"]
    actions = [(r["action"], r["version"]) for r in life]
    assert ("challenger_started", 2) in actions and ("promoted", 2) in actions
    assert actions.index(("challenger_started", 2)) < actions.index(("promoted", 2))
    promoted = next(r for r in life if r["action"] == "promoted")
    assert int(promoted["details"]["n"]) >= 300 and float(promoted["details"]["lower_bound"]) > 0

    after = slice(POSITION + 2_000, None)  # once the new model has had time to serve
    acc_off = sum(off_hits[after]) / len(off_hits[after])
    acc_on = sum(on_hits[after]) / len(on_hits[after])
    print(f"detection delay {delay} labels; accuracy after drift: off {acc_off:.3f}, lifecycle {acc_on:.3f}")
    assert acc_on > acc_off + 0.04


def test_no_drift_no_concept_alarm_and_no_promotion():
    items = datasets.drift(12_000, position=None, seed=8)
    _, life, drift = run(make_loop(Learner("m", "logreg")), items)
    concept = [d for d in drift if d["detector"].startswith("concept")]
    print(f"false concept alarms on 12k drift-free events: {len(concept)}")
    assert concept == [] and not [r for r in life if r["action"] == "promoted"]


def test_a_worse_challenger_is_never_promoted_a_better_one_is():
    items = datasets.drift(8_000, position=None, seed=9)
    ms = ModelSet.fresh("m", "logreg")
    ms.add_challenger("prior", "deliberately worse")
    _, life, _ = run(make_loop(ms), items)
    assert all(r["action"] != "promoted" for r in life), "the worse challenger must never win"

    ms = ModelSet.fresh("m", "prior")
    ms.add_challenger("logreg", "better")
    _, life, _ = run(make_loop(ms), items)
    promoted = [r for r in life if r["action"] == "promoted"]
    assert [r["version"] for r in promoted] == [2]
    print(f"better challenger promoted after {promoted[0]['details']['n']} paired labels")


def test_action_limits_hold_under_a_flood_of_better_candidates():
    """Four challengers, all better than the champion: one promotion in the window, and with
    the kill switch on none at all, each refusal recorded with its reason (once)."""
    items = datasets.drift(6_000, position=None, seed=10)

    def flood():
        ms = ModelSet.fresh("m", "prior")
        for spec in ("logreg", "nb", "hat", "logreg"):
            ms.add_challenger(spec, "flood")
        return ms

    _, life, _ = run(make_loop(flood(), max_actions=1, cooldown_s=3600.0), items)
    assert [r["action"] for r in life].count("promoted") == 1

    loop = make_loop(flood())
    loop.lifecycle.limits.frozen = True  # the kill switch (setting promotions_frozen)
    _, life, _ = run(loop, items)
    assert [r["action"] for r in life].count("promoted") == 0
    refused = [r for r in life if r["action"] == "refused"]
    assert refused and {r["reason"] for r in refused} == {"frozen"}
    assert len(refused) == len({r["version"] for r in refused}), "each refusal announced once"


def test_a_worse_canary_is_rolled_back_automatically():
    items = datasets.drift(8_000, position=None, seed=11)
    ms = ModelSet.fresh("m", "logreg")
    v = ms.add_challenger("prior", "worse")
    loop = make_loop(ms, canary=True)
    loop.lifecycle.config.canary = type(loop.lifecycle.config.canary)(fraction=0.5, window=2000, threshold=0.02)
    ms.start_canary(v, 0.5, "operator canary")
    _, life, _ = run(loop, items)
    rolled = [r for r in life if r["action"] == "rolled_back"]
    assert rolled and rolled[0]["version"] == v and rolled[0]["details"]["by"] == "canary"
    assert loop.models.canary is None and loop.models.champion == 1


def test_the_model_sets_history_is_bounded_and_rollback_still_finds_the_previous_champion():
    """The history travels in every checkpoint: capped, but the current champion's last
    promotion (what rollback reads) survives any number of later stage changes."""
    ms = ModelSet.fresh("m", "prior")
    v2 = ms.add_challenger("prior", "test")
    ms.promote(v2, "test")  # champion v2, previous v1
    for _ in range(3 * HISTORY_MAX):  # churn of challengers that come and go
        v = ms.add_challenger("prior", "churn")
        ms.retire(v, "churn")
    assert len(ms.history) <= HISTORY_MAX + 1
    assert ms.rollback("test") == 1 and ms.champion == 1
