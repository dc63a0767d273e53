"""Run a stream through the online loop in-process: no broker, state in memory.

The same :class:`~streamlearn.streams.loop.OnlineLoop` the worker runs, so results
differ from a live run only by the order in which events and labels interleave. Used by
backtests, the demo's feature-store comparison and the tests. Its memory backend keeps
objects, which the loop reads and writes directly (no write batches, coroutines or JSON per
batch for them): tests/simulation/replay/test_replay_objects_exact.py holds that path equal to
every value stored as bytes through the backend, as on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from streamlearn.featurestore.backend import MemoryBackend
from streamlearn.featurestore.definitions import FeatureView, as_view
from streamlearn.featurestore.keys import Keys
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.governance.lifecycle import Lifecycle, LifecycleConfig
from streamlearn.models.modelset import ModelSet
from streamlearn.schemas.records import Prediction
from streamlearn.streams.loop import OnlineLoop


def _replay_backend() -> MemoryBackend:
    # served records and entity states kept as objects, not bytes: exact (see
    # streams/loop/served.py and scoring.py), and the replay neither encodes nor decodes them
    return MemoryBackend(keep_objects=True)


def memory_loop(view: str | FeatureView, spec: str, name: str = "replay", task: Any = None) -> OnlineLoop:
    return OnlineLoop(as_view(view), Learner(name, spec, task=task), _replay_backend(), Keys("replay", name),
                      artifact_key=b"in-process")


def memory_models_loop(view: str | FeatureView, specs: Sequence[str], name: str = "replay",
                       lifecycle: LifecycleConfig | None = None,
                       clock: Callable[[], float] | None = None, task: Any = None) -> OnlineLoop:
    """One loop over several models, as the worker runs them: ``specs[0]`` is the champion
    (version 1), the rest are shadow challengers (versions 2..n), all scoring every event
    and learning every label. With ``lifecycle``, the gate, canary and drift detectors act
    on their own, on ``clock`` (the backtest passes event time)."""
    models = ModelSet.fresh(name, specs[0], task=task)
    for spec in specs[1:]:
        models.add_challenger(spec, "backtest: compared side by side")
    return OnlineLoop(as_view(view), models, _replay_backend(), Keys("replay", name), artifact_key=b"in-process",
                      lifecycle=Lifecycle(lifecycle) if lifecycle is not None else None, clock=clock or time.time)


class YoungFrozen:
    """While a replay runs (inside :func:`older_objects_frozen`), what it keeps (its
    predictions, records, states: a few tracked objects per event) is frozen too, every
    :attr:`EVERY` batches (``gc.freeze`` is a constant-time list merge and resets the young
    generation's count): otherwise every such object is walked by a young and a middle
    collection (10-20% of a replay), which never find garbage there. Cyclic garbage made
    meanwhile would wait until the replay ends, so once any collection finds some (one in
    :attr:`CHECK_EVERY` freezes first collects the youngest objects, to look), the replay's
    objects are left to the collector's usual policy from then on. Results do not depend on it."""

    EVERY = 64
    CHECK_EVERY = 16

    def __init__(self, active: bool) -> None:
        self.active = active
        self._batches = 0
        self._freezes = 0

    def seen(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry: a collection that found garbage ends the freezing."""
        if phase == "stop" and (info.get("collected") or info.get("uncollectable")):
            self.active = False

    def batch_done(self) -> None:
        self._batches += 1
        if self._batches < self.EVERY or not self.active:
            return
        self._batches = 0
        self._freezes += 1
        if self._freezes % self.CHECK_EVERY == 0:
            gc.collect(0)  # the youngest objects only: cheap; :meth:`seen` learns what it found
            if not self.active:
                return
        gc.freeze()


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[YoungFrozen]:
    """For a replay's duration, the objects that exist before it (the stream itself, imported
    modules, models) are out of the garbage collector's sight (``gc.freeze``), then returned
    to it. A replay keeps a few tracked objects per event (its predictions), which trigger
    full collections; each would otherwise walk the whole heap (~0.3 s with a 20k-event stream
    held in memory, 10-15% of such a replay). Results do not depend on it. Left alone when the
    process has frozen objects itself (the worker does) or the collector is off. Yields the
    :class:`YoungFrozen` the replay tells of each batch done."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield YoungFrozen(False)
        return
    young = YoungFrozen(True)
    gc.callbacks.append(young.seen)
    gc.freeze()
    try:
        yield young
    finally:
        gc.unfreeze()
        gc.callbacks.remove(young.seen)


async def run_stream(
    loop: OnlineLoop, stream: Iterable[tuple[str, dict[str, Any]]], batch: int = 256
) -> list[Prediction]:
    """Feed ("event", e) / ("feedback", f) items in order, batching consecutive items of a kind."""
    preds: list[Prediction] = []
    score, learn = loop.score_batch_locked, loop.learn_batch_locked
    kind, buf = None, []
    # per item and per batch work is kept small here: interleaved events and labels make
    # batches of one or two items (each batch is one loop call, as live). The loop's lock is
    # taken once for the whole stream: nothing else uses this loop meanwhile.
    async with loop.lock:
        with older_objects_frozen() as young:
            for k, rec in stream:
                if k != kind or len(buf) >= batch:
                    if kind == "event":
                        preds.extend(await score(buf))
                    elif kind == "feedback":
                        await learn(buf)
                    young.batch_done()
                    kind, buf = k, []
                buf.append(rec)
            if kind == "event":
                preds.extend(await score(buf))
            elif kind == "feedback":
                await learn(buf)
    return preds


def run(stream: Iterable[tuple[str, dict[str, Any]]], view: str | FeatureView, spec: str, batch: int = 256,
        task: Any = None) -> tuple[OnlineLoop, list[Prediction]]:
    loop = memory_loop(view, spec, task=task)
    preds = asyncio.run(run_stream(loop, stream, batch))
    return loop, preds
