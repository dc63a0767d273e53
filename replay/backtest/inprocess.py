"""Run a stream through the online loop in-process: no broker, state in memory.

The same :class:`~streamlearn.streams.loop.OnlineLoop` the worker runs, so results
differ from a live run only by the order in which events and labels interleave. Used by
backtests, the demo's feature-store comparison and the tests.
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
    # served records kept as objects, not bytes: exact (see streams/loop/served.py), and the
    # replay neither encodes nor decodes them
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


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[None]:
    """For a replay's duration, the objects that exist before it (the stream itself, imported
    modules, models) are out of the garbage collector's sight (``gc.freeze``), then returned
    to it. A replay keeps a few tracked objects per event (its predictions), which trigger
    full collections; each would otherwise walk the whole heap (~0.3 s with a 20k-event stream
    held in memory, 10-15% of such a replay). Results do not depend on it. Left alone when the
    process has frozen objects itself (the worker does) or the collector is off."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
        with older_objects_frozen():
            for k, rec in stream:
                if k != kind or len(buf) >= batch:
                    if kind == "event":
                        preds.extend(await score(buf))
                    elif kind == "feedback":
                        await learn(buf)
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
