"""A worker's status shows its partitions and the role they give it together (a real Redis)."""

from __future__ import annotations

import asyncio
import json
import os

from streamlearn.tools.worker_harness import fresh_runtime


def test_status_never_shows_the_feedback_partition_without_the_learner_role() -> None:
    with fresh_runtime(None, "roles") as (rt, r):
        s = rt.settings
        key = rt.loop.keys.worker(s.app_id, os.getpid())

        async def status() -> dict:
            await rt.worker_status()
            return json.loads(r.get(key))

        async def go() -> list[dict]:
            await rt.loop.restore()
            rt.ready.set()
            restore, release = rt.loop.restore, asyncio.Event()

            async def slow_restore() -> int:  # the learner's restore takes a while (a big log)
                await release.wait()
                return await restore()

            rt.loop.restore = slow_restore
            seen = [await status()]
            owned = [(s.topic_events, 0), (s.topic_feedback, 0)]
            taking = asyncio.ensure_future(rt.on_assigned(owned))
            await asyncio.sleep(0)  # on_assigned is now inside the restore
            seen.append(await status())
            release.set()
            await taking
            seen.append(await status())
            await rt.on_revoked()
            seen.append(await status())
            return seen

        seen = asyncio.run(go())
    states = [(st["assigned"], st["is_learner"]) for st in seen]
    for assigned, learner in states:  # owning the feedback partition and being the learner go together
        assert any(t == s.topic_feedback for t, _ in assigned) == learner, states
    assert seen[2]["is_learner"] and not seen[3]["is_learner"] and seen[3]["assigned"] == []
