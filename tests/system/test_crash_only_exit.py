"""Crash-only workers: a Faust timer that raises ends the process at once with exit code 70
(``EXIT_AGENT_CRASHED``) and one log line naming it, as a crashed agent does (Faust alone
would run its crash shutdown and exit 1)."""

from __future__ import annotations

import inspect

from pydantic import SecretStr

from streamlearn.streams.app import EXIT_AGENT_CRASHED, crash_only, create_app
from tests.helpers import Sender, feedback_for, make_events, wait_for


def test_timer_that_raises_exits_the_worker(make_settings, start_worker) -> None:
    """Two replicas whose artifact keys differ (the key rotated on one of them only). The
    scoring-only replica cannot verify the learner's checkpoint: its housekeeping timer, which
    follows the learner's checkpoints, raises ``ArtifactError``, which must end the process."""
    s = make_settings(topic_partitions=2, artifact_key="key-of-the-first-replica")
    first = start_worker(s, wait_assigned=False, name="first")
    second = start_worker(s.model_copy(update={"artifact_key": SecretStr("key-rotated-on-the-second")}),
                          wait_assigned=False, name="second")

    def settled() -> bool:  # one events partition each: the rebalance has both of them
        for w in (first, second):
            w.assert_alive()
        views = [w.worker_status().get("assigned", []) for w in (first, second)]
        return all(sum(t == s.topic_events for t, _ in v) == 1 for v in views)

    wait_for(settled, 60, "both replicas in the group")
    roles = [w.worker_status()["is_learner"] for w in (first, second)]
    assert sorted(roles) == [False, True], roles  # feedback has one partition: one learner
    learner, follower = (first, second) if roles[0] else (second, first)

    events = make_events(20, seed=70)
    send = Sender(s)
    send.events(events)
    wait_for(lambda: learner.assert_alive() or sum(w.worker_status()["counters"].get("events_scored", 0)
                                                   for w in (first, second)) >= len(events), 30, "events scored")
    send.feedback([feedback_for(e) for e in events])  # the learner learns, then checkpoints (1 s)

    wait_for(lambda: follower.process.proc.poll() is not None, 30, "the follower to exit")
    assert follower.process.proc.returncode == EXIT_AGENT_CRASHED, follower.log()[-3000:]
    log = follower.log()
    assert "housekeeping crashed: ArtifactError('artifact signature does not verify" in log, log[-3000:]
    learner.assert_alive()  # its own checkpoints are fine


def test_every_task_and_timer_of_the_worker_is_crash_only(make_settings) -> None:
    """The worker's real Faust app: each task and timer it registers runs inside crash_only,
    so one added later without it fails here rather than in production."""
    app, runtime = create_app(make_settings())
    runtime.out.producer.close()  # never used: not left to reconnect after the session's broker stops

    async def nothing() -> None:
        pass

    guarded = crash_only("probe", nothing).__code__
    bodies = [inspect.unwrap(task) for task in app._app_tasks]  # Faust's registry of tasks and timers
    assert [b.__name__ for b in bodies if b.__code__ is not guarded] == []
    assert {b.__name__ for b in bodies} == {"startup", "consume", "announce", "checkpoint", "housekeeping",
                                          "retrain_schedule", "status"}
