"""kill -9 changes nothing: a worker killed mid-stream and restarted ends with the same model
as an uninterrupted run, every event predicted, every label learned exactly once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson
import redis

from streamlearn.featurestore.keys import Keys
from streamlearn.project import Project, view_namespace
from streamlearn.replay.backtest.inprocess import memory_loop, run_stream
from streamlearn.streams.loop import read_checkpoint
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def live_keys(s, project: Project) -> Keys:
    """The keys a worker with these settings uses for the project's view."""
    return Keys.from_settings(s, view_namespace(project.view))


def _kill_when(worker, ready, what: str, restart):
    """Once ``ready()`` holds, kill -9 ``worker`` and return ``restart()``: its successor."""
    wait_for(ready, 60, what)
    worker.kill()
    return restart()


def _final_models(s):
    blob = redis.Redis.from_url(s.redis_url).get(Keys.from_settings(s).checkpoint)
    return read_checkpoint(blob, s.artifact_key.get_secret_value().encode())[0]


def test_kill_9_at_random_points_changes_nothing(make_settings, start_worker):
    # short sessions so a restarted worker rejoins quickly after its predecessor vanished
    s = make_settings(session_timeout_s=2.0, heartbeat_interval_s=0.25, batch_max=100)
    rnd = random.Random(5)
    events = make_events(2500, seed=51, n_entities=30)
    labels = [feedback_for(e) for e in events]
    send = Sender(s)
    preds = TopicReader(s, s.topic_predictions, "prediction")
    worker = start_worker(s, name="w0")
    kills = 0

    # phase 1: events, killed at random points while scoring
    send.events(events)
    for i in range(2):
        target = rnd.randint(300 + 900 * i, 700 + 900 * i)
        kills += 1
        worker = _kill_when(worker, lambda t=target: len(preds.poll()) >= t, f"{target} predictions",
                            lambda k=kills: start_worker(s, name=f"w{k}"))
    preds.wait_count(len(events), timeout=90, key="event_id")

    # phase 2: labels (after their events are served, so the learning order is the feedback order)
    send.feedback(labels)
    send.feedback(labels[:100])  # a resend: duplicates must be ignored
    def learned() -> int:  # cumulative: a restarted learner resumes its count from the checkpoint
        return worker.worker_status().get("counters", {}).get("labels_learned", 0)

    for i in range(2):
        target = rnd.randint(200 + 1000 * i, 900 + 1000 * i)
        kills += 1
        worker = _kill_when(worker, lambda t=target: learned() >= t, f"{target} labels learned",
                            lambda k=kills: start_worker(s, name=f"w{k}"))
    wait_for(lambda: worker.status().get("labels_learned") == len(events), 90, "every label learned")
    assert worker.stop() == 0  # a clean stop checkpoints

    ids = [p["event_id"] for p in preds.poll()]
    assert set(ids) == {e["event_id"] for e in events}, "every event has a prediction"
    assert len(ids) >= len(events)  # at least once; repeats carry the same event id

    live = _final_models(s)
    assert live.champion_learner.labels_learned == len(events), "no label learned twice, none lost"

    # the uninterrupted reference: same events, then the same labels, in-process
    ref = memory_loop(s.feature_view, s.model_spec)
    asyncio.run(run_stream(ref, [("event", e) for e in events] + [("feedback", f) for f in labels]))
    probe = [e for e in make_events(50, seed=52)]
    xs = [s_x for s_x in (ref.view.compute(e, None)[0] for e in probe)]
    assert [live.champion_learner.model.predict_proba_one(x) for x in xs] == \
        [ref.champion.model.predict_proba_one(x) for x in xs]
    assert live.champion_learner.metric_values() == ref.champion.metric_values()


def test_kill_9_changes_nothing_on_a_users_regression_project(make_settings, start_worker):
    """The same promise for a project a user writes (examples/trips, as `streamlearn init` makes
    them): a regression task, one-hot fields, window, decayed, since-last and distinct aggregates
    and a feature function with its own per-entity state, all checkpointed through the kills."""
    project = Project.load(EXAMPLES / "trips")  # its folder on sys.path: the factories import
    s = make_settings(project=str(project.directory), lifecycle_auto=False, session_timeout_s=2.0,
                      heartbeat_interval_s=0.25, batch_max=100)
    items = project.demo_items(1500, seed=41)
    events = [it.event for it in items]
    labels = [{"event_id": it.event["event_id"], "label": it.label, "label_time": it.label_time}
              for it in items if it.label is not None]
    assert len(labels) > 1000 and any(e["entity"] == events[0]["entity"] for e in events[1:])
    rnd = random.Random(8)
    send, preds = Sender(s), TopicReader(s, s.topic_predictions, "prediction")
    worker = start_worker(s, name="p0")

    send.events(events)
    target = rnd.randint(300, 900)
    worker = _kill_when(worker, lambda: len(preds.poll()) >= target, f"{target} predictions",
                        lambda: start_worker(s, name="p1"))
    preds.wait_count(len(events), timeout=90, key="event_id")

    send.feedback(labels)
    send.feedback(labels[:50])  # a resend: duplicates must be ignored
    target = rnd.randint(200, 800)
    worker = _kill_when(worker, lambda: worker.worker_status().get("counters", {}).get("labels_learned", 0) >= target,
                        f"{target} labels learned", lambda: start_worker(s, name="p2"))
    wait_for(lambda: worker.status().get("labels_learned") == len(labels), 90, "every label learned")
    assert worker.stop() == 0

    assert {p["event_id"] for p in preds.poll()} == {e["event_id"] for e in events}, "every event has a prediction"
    live = _final_models(s)
    assert live.champion_learner.labels_learned == len(labels), "no label learned twice, none lost"

    # the uninterrupted reference, in-process, with the project's own view, champion and task
    ref = memory_loop(project.view, project.champion, task=project.task)
    asyncio.run(run_stream(ref, [("event", e) for e in events] + [("feedback", f) for f in labels]))
    # the entity states the killed workers left equal the reference's, function state included
    client = redis.Redis.from_url(s.redis_url)
    for entity in sorted({e["entity"] for e in events})[:10]:
        got = orjson.loads(client.get(live_keys(s, project).entity(entity)))
        assert "fn:zone_switch" in got and "w2h:distance_km" in got, sorted(got)  # the function's and window's state
        assert got == orjson.loads(orjson.dumps(ref.backend.get(ref.keys.entity(entity), 0.0, True))), entity
    probe = [it.event for it in project.demo_items(40, seed=42)]
    xs = [ref.view.compute(e, None)[0] for e in probe]
    assert [live.champion_learner.model.predict_one(x) for x in xs] == [ref.champion.model.predict_one(x) for x in xs]
    assert live.champion_learner.metric_values() == ref.champion.metric_values()
