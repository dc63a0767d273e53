"""The learner's per-label work in-process, for profiling: ``python -m streamlearn.tools.learner_harness``.

What the bench's ``learner`` variant does minus the broker and Redis: the worker's loop
(``streams.worker.build_loop``: default settings, lifecycle on) on a MemoryBackend scores
the cards stream's events first, then takes the labels in batches the way
``WorkerRuntime.on_feedback`` does (Avro decode + validation, ``Task.check_label``,
``OnlineLoop.learn_batch``). Prints the CPU microseconds per label of that second phase
(process time, so less distorted by other load than wall time) and a digest of what was
learned (every model's pickled state, metrics and label count, and the learn log), so two
builds can be compared for exactness as well as cost; ``--profile`` adds cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import pickle
import pstats
import time
from typing import Any


def prepare(n_events: int, batch: int, seed: int = 7) -> tuple[Any, Any, Any, list[bytes]]:
    from streamlearn import datasets
    from streamlearn.featurestore.backend import MemoryBackend
    from streamlearn.schemas import AvroCodec
    from streamlearn.settings import Settings
    from streamlearn.streams.worker import build_loop

    settings = Settings()
    loop = build_loop(settings, MemoryBackend())
    stream = list(datasets.arrival_order(datasets.cards(n_events, seed=seed, n_cards=2000)))
    events = [r for k, r in stream if k == "event"]

    async def score() -> None:
        for i in range(0, len(events), 500):
            await loop.score_batch(events[i:i + 500])

    asyncio.run(score())
    codec = AvroCodec.default()
    enc = codec.encoder("feedback")
    return settings, loop, codec, [enc(r) for k, r in stream if k == "feedback"]


def learn_labels(settings: Any, loop: Any, codec: Any, wire: list[bytes], batch: int) -> float:
    """CPU seconds to decode, check and learn every label, ``batch`` at a time."""
    from streamlearn.schemas.validation import Limits, decode_feedback

    limits = Limits.from_settings(settings)
    task = loop.champion.task

    async def go() -> None:
        for i in range(0, len(wire), batch):
            good = []
            for m in wire[i:i + batch]:
                fb = decode_feedback(m, codec, limits)
                fb["label"] = task.check_label(fb["label"])
                good.append(fb)
            await loop.learn_batch(good)

    t0 = time.process_time()
    asyncio.run(go())
    return time.process_time() - t0


def state_digest(loop: Any) -> str:
    """A hash of what the labels changed: each model's pickled state, its metrics and label
    count, in version order, and the learn log. (The champion's metrics alone cannot tell two
    builds apart here: every event is scored before any label, so every prediction is the
    untrained model's.)"""
    h = hashlib.sha256()
    for v, learner in sorted(loop.models.learners.items()):
        h.update(f"{v}:{learner.labels_learned}:{sorted(learner.metric_values().items())!r}".encode())
        h.update(pickle.dumps(learner.model, protocol=5))
    for entry in asyncio.run(loop.backend.read_list(loop.keys.learn_log)):
        h.update(entry)
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100, help="labels per learn_batch")
    ap.add_argument("--profile", action="store_true", help="cProfile the label phase (slower)")
    a = ap.parse_args(argv)
    settings, loop, codec, wire = prepare(a.events, a.batch)
    prof = cProfile.Profile() if a.profile else None
    if prof:
        prof.enable()
    cpu = learn_labels(settings, loop, codec, wire, a.batch)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    print(f"{len(wire):,} labels, batches of {a.batch}: {cpu / len(wire) * 1e6:.1f} CPU us per label "
          f"({loop.counters.labels_learned:,} learned); digest {state_digest(loop)}")


if __name__ == "__main__":
    main()
