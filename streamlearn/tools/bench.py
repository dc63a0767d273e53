"""``streamlearn bench``: the pipeline held to the bare River loop, side by side in one run.

On an embedded broker and Redis it starts itself, over one generated stream
(``datasets.cards``, fixed seed; events and labels in ``datasets.arrival_order``):

1. ``bare``: the same feature view and model spec, ``predict_proba_one`` + ``learn_one`` in
   a plain loop, entity states in a dict (the physical limit for a pure-Python model);
2. ``end-to-end``: produce -> broker -> ``streamlearn worker`` subprocess (features in Redis,
   score, publish) with labels flowing back and learned; then again with the producer
   paced at half the measured rate, for latency at half load;
3. ``naive``: a per-event Faust agent (``streamlearn/tools/bench_apps.py``);
4. ``backtest``: the replay path (``replay.inprocess.run_stream``: OnlineLoop + MemoryBackend);
5. ``faust-ceiling``: a Faust agent that only counts raw events in ``take()`` batches;
6. ``transport-ceiling``: the worker's message traffic and nothing else: the worker's own
   consumer (``streams.consumer.BatchConsumer``) on the events and the feedback topic (raw
   bytes) producing one message per event through the worker's producer path;
7. ``learner``: the events scored first, then only their labels streamed to the worker (the
   model's single learner, the part that does not scale out): labels/s and CPU per label;
8. ``scale-out``: end-to-end on 2 event partitions with 1 worker, then with 2 workers (one
   of them the learner): the scaling factor measured, not assumed.

Broker variants are timed from the first event produced to the last prediction seen with
every label learned. Messages are Avro-encoded before the clock starts so the producer
costs the machine as little as possible. In-process variants repeat whole passes over the
stream (fresh model and state each), a pass of each in turn, until each has run
``--min-seconds``: their ratio is measured side by side, not on two stretches of a shared
machine whose speed drifts.

Memory: peak RSS (``VmHWM``) of the process doing the work (the subprocess for 2, 3, 5;
this process for 1 and 4, with its peak reset before each pass). For broker variants the
worker's RSS, Redis ``used_memory`` and key count and the broker's RSS are also sampled
over the run (``--events 1000000 --only end-to-end`` answers "RSS flat over 1M events":
``rss flat: yes/no``, growth from 25% to 100% of the events under 10%). Redis is expected
to grow: served vectors and learned markers live for their TTL (3 d by default), so its
state is bounded by time, not by event count. ``--profile DIR`` samples each broker
variant's process with py-spy at max load and prints where the time goes.

The output ends with ``ratio end-to-end/faust-ceiling: X.XX``, ``ratio end-to-end/bare: X.XX``
and ``ratio end-to-end/transport-ceiling: X.XX`` (``nan`` when a side was not run).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlearn.tools.harness import (
    ChildProcess,
    Families,
    WorkerProcess,
    percentile,
    quarter_p50s,
    sample_total,
    scrape,
    wait_until,
)

VARIANTS = ("bare", "end-to-end", "naive", "backtest", "faust-ceiling", "transport-ceiling",
            "learner", "scale-out")
BROKER_VARIANTS = ("faust-ceiling", "transport-ceiling", "end-to-end", "naive", "learner",
                   "scale-out")
DEFAULT_EVENTS = 300_000  # >= 20 s for the fastest broker variant (Faust ceiling ~15k/s) on 2 cores


# ------------------------------------------------------------------ the workload
@dataclass
class Workload:
    """One generated stream in arrival order, as dicts (in-process) and as wire bytes (broker)."""

    n_events: int
    n_labels: int
    stream: list[tuple[str, dict[str, Any]]]
    wire: list[tuple[bool, bytes, bytes]]  # (is_event, value, key), Avro single-object encoded

    def prefix(self, n_events: int) -> Workload:
        """The first ``n_events`` events and the labels of exactly those events, same order."""
        if n_events >= self.n_events:
            return self
        keep: set[str] = set()
        stream, wire = [], []
        for (kind, rec), msg in zip(self.stream, self.wire):
            if kind == "event":
                if len(keep) >= n_events:
                    continue
                keep.add(rec["event_id"])
            elif rec["event_id"] not in keep:
                continue
            stream.append((kind, rec))
            wire.append(msg)
        return Workload(n_events, sum(1 for k, _ in stream if k == "feedback"), stream, wire)


def build_workload(n_events: int, seed: int, entities: int = 2_000, project: Any = None) -> Workload:
    """The cards stream, or a project's own (its ``[demo] generator``)."""
    from streamlearn import datasets
    from streamlearn.schemas import AvroCodec

    reg = AvroCodec.default()
    enc_event, enc_fb = reg.encoder("event"), reg.encoder("feedback")
    items = project.demo_items(n_events, seed) if project is not None else \
        datasets.cards(n_events, seed=seed, n_cards=entities)
    stream = list(datasets.arrival_order(items))
    wire = [(True, enc_event(r), r["entity"].encode()) if k == "event" else
            (False, enc_fb(r), r["event_id"].encode()) for k, r in stream]
    return Workload(n_events, sum(1 for k, _ in stream if k == "feedback"), stream, wire)


# ------------------------------------------------------------------ process measurements (Linux /proc)
def _status_kb(pid: int | str, field_name: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int | str = "self") -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb(pid: int | str = "self") -> float | None:
    kb = _status_kb(pid, "VmHWM")
    return kb / 1024 if kb is not None else None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so a peak is per variant."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU time of a process, all threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


# ------------------------------------------------------------------ 1 and 4: in-process
def _passes(runs: dict[str, Callable[[], None]], n_events: int, min_seconds: float,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, dict[str, Any]]:
    """Whole passes (fresh state each) of every variant in ``runs``, taken in turn (one pass of
    each, then again) until each has run ``min_seconds``: a machine whose speed drifts (shared
    cores) slows them alike, so their ratio is side by side, not one stretch against another.
    Per variant: events/s over all its passes, its CPU, the peak RSS of its passes. (``clock``:
    a test's, so the turn-taking is checked without timing real work on a loaded machine.)"""
    base = rss_mb()
    acc = {name: {"passes": 0, "seconds": 0.0, "cpu_s": 0.0, "peak": None} for name in runs}
    while any(a["seconds"] < min_seconds for a in acc.values()):
        for name, one_pass in runs.items():
            a = acc[name]
            if a["seconds"] >= min_seconds and a["passes"]:
                continue
            reset = reset_peak_rss()
            cpu0, t0 = cpu_seconds(), clock()
            one_pass()
            a["seconds"] += clock() - t0
            cpu1 = cpu_seconds()
            a["passes"] += 1
            a["cpu_s"] = a["cpu_s"] + (cpu1 - cpu0) if cpu0 is not None and a["cpu_s"] is not None else None
            if reset:
                a["peak"] = max(a["peak"] or 0.0, peak_rss_mb() or 0.0)
    return {name: {"events": n_events * a["passes"], "passes": a["passes"], "seconds": a["seconds"],
                   "events_per_s": n_events * a["passes"] / a["seconds"], "peak_rss_mb": a["peak"],
                   "rss_before_mb": base, "cpu": a["cpu_s"] / a["seconds"] if a["cpu_s"] is not None else None,
                   "rss_of": "this process (dataset included)"}
            for name, a in acc.items()}


def bare_pass(stream: Sequence[tuple[str, dict[str, Any]]], view_name: Any, spec: str) -> Callable[[], None]:
    from streamlearn.featurestore.definitions import as_view
    from streamlearn.models.estimators.spec import build_model

    compute = as_view(view_name).compute

    def one_pass() -> None:
        model = build_model(spec)
        # a classifier's probabilities, a regressor's estimate: the same work the worker does
        predict = getattr(model, "predict_proba_one", None) or model.predict_one
        learn = model.learn_one
        states: dict[str, Any] = {}
        served: dict[str, dict[str, float]] = {}
        for kind, rec in stream:
            if kind == "event":
                ent = rec["entity"]
                x, states[ent] = compute(rec, states.get(ent))
                predict(x)
                served[rec["event_id"]] = x
            else:  # labels in arrival order, each joined to the vector its event was scored with
                learn(served.pop(rec["event_id"]), rec["label"])

    return one_pass


def backtest_pass(stream: Sequence[tuple[str, dict[str, Any]]], view_name: Any, spec: str,
                  task: Any = None) -> Callable[[], None]:
    from streamlearn.replay.backtest.inprocess import memory_loop, run_stream

    def one_pass() -> None:
        loop = memory_loop(view_name, spec, task=task)
        preds = asyncio.run(run_stream(loop, stream))
        assert loop.counters.labels_learned == sum(1 for k, _ in stream if k == "feedback"), "labels lost"
        assert len(preds) == sum(1 for k, _ in stream if k == "event"), "predictions lost"

    return one_pass


# ------------------------------------------------------------------ py-spy profile of a subprocess
PROFILE_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("River (predict/learn/metrics)", ("river/",)),
    ("features (view.compute)", ("featurestore/definitions.py",)),
    ("metrics (prometheus, instrumented store)", ("prometheus_client/", "streamlearn/metrics.py",
                                                  "featurestore/instrumented.py")),
    ("JSON (entity state, served vectors)", ("json/",)),
    ("Avro decode/encode + validation", ("fastavro", "schemas/codec.py", "schemas/validation.py")),
    ("Redis client (redis-py)", ("redis/", "featurestore/backend.py")),
    ("producing (confluent-kafka)", ("confluent_kafka", "streams/transport.py")),
    ("online loop (loop, learner)",
     ("streams/loop/", "models/estimators/learner.py", "models/modelset.py")),
    ("worker runtime (worker.py, app.py)", ("streams/worker.py", "streams/app.py", "streams/web.py")),
    ("consumer (aiokafka fetch, protocol, group; consumer.py)", ("aiokafka/", "kafka/", "streams/consumer.py")),
    # the loop's own root: only asyncio frames between it and the leaf = scheduling, select, socket I/O
    ("asyncio event loop (scheduling, select, sockets)", ("mode/worker.py", "asyncio/runners.py")),
    ("Faust/mode machinery (per-message delivery, streams)", ("faust/", "mode/")),
)
# frames of no listed layer (asyncio, logging, ...) are charged to the nearest listed caller:
# asyncio.create_task called by Faust's per-message delivery is Faust's cost
KEY_FRAMES = ("WorkerRuntime.on_events", "WorkerRuntime.on_feedback", "OnlineLoop.score_batch",
              "OnlineLoop.learn_batch", "decode_event", "decode_feedback", "FeatureView.compute", "Learner.predict",
              "Learner.learn", "BatchProducer.produce", "BatchProducer.flush", "AvroCodec.encoder.<locals>.encode",
              "AvroCodec.decode", "RedisBackend.read_many", "RedisBackend.write_batch",
              "RedisBackend.park_unless_present", "_dumps", "dumps", "loads", "BatchConsumer._process",
              "BatchConsumer._fetch_aligned", "Learner.learn_many", "Metrics.loop_batch",
              "Metrics.predictions_delivered", "Metrics.sync_counters")


def _category(frames: list[str]) -> str:
    """Layer of the innermost frame that belongs to a known layer (leaf first)."""
    for frame in reversed(frames):
        where = frame[frame.rfind("(") + 1:]
        for name, patterns in PROFILE_CATEGORIES:
            if any(p in where for p in patterns):
                return name
    return "other"


def summarize_profile(path: Path, wall_s: float, rate: int) -> dict[str, Any]:
    """Collapsed py-spy stacks -> share of samples per layer and per key function, by thread."""
    by_thread: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    main_total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        thread = re.sub(r"^thread \(\w+\): ?", "", frames[0]) or "thread"
        frames = frames[1:]
        by_thread[thread] += count
        if thread != "MainThread":  # the event loop; executor threads only wait on flush()
            continue
        main_total += count
        cats[_category(frames)] += count
        if frames:
            leaves[re.sub(r" \(.*:\d+\)$", "", frames[-1]) + " (" + frames[-1].rsplit("(", 1)[-1]] += count
        names = {re.sub(r" \(.*\)$", "", f) for f in frames}
        for key in KEY_FRAMES:
            if key in names:
                inclusive[key] += count
    expected = wall_s * rate
    return {
        "samples_by_thread": dict(by_thread.most_common()),
        "main_thread_busy": (main_total / expected) if expected else None,  # share of wall time on CPU
        "main_thread_samples": main_total,
        "categories_pct": {k: round(100 * v / main_total, 1) for k, v in cats.most_common()} if main_total else {},
        "inclusive_pct": {k: round(100 * v / main_total, 1) for k, v in inclusive.most_common()} if main_total else {},
        "top_leaves_pct": {k: round(100 * v / main_total, 1) for k, v in leaves.most_common(15)} if main_total else {},
        "raw": str(path),
    }


class Profiler:
    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out, self.rate, self.t0 = out, rate, time.monotonic()
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("--profile needs py-spy on PATH (pip install py-spy)")
        # blocking mode (pauses the process per sample, ~1% at 100 Hz): --nonblocking reads torn stacks
        # and over-counts long native calls (fastavro), which skewed the split
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--threads", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=open(str(out) + ".log", "wb"))

    def stop(self) -> dict[str, Any] | None:
        wall = time.monotonic() - self.t0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not self.out.exists():
            return None
        return summarize_profile(self.out, wall, self.rate)


# ------------------------------------------------------------------ 2, 3, 5: on the broker
def produce(settings: Any, wire: Sequence[tuple[bool, bytes, bytes]], rate: float | None,
            done: dict[str, float]) -> None:
    """Send pre-encoded events and labels in arrival order; events paced at ``rate`` if given."""
    from streamlearn.streams.transport import make_producer

    # paced (a latency run): each event sent at once, as a latency-sensitive client does; the
    # default 5 ms linger would add up to 5 ms to every event's latency before the broker has it
    producer = make_producer(settings, **({"linger.ms": 0} if rate else {}))
    t_events, t_fb = settings.topic_events, settings.topic_feedback
    start, n_ev = time.monotonic(), 0
    for i, (is_event, value, key) in enumerate(wire):
        while True:
            try:
                producer.produce(t_events if is_event else t_fb, value, key)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
        if is_event:
            n_ev += 1
            if rate:
                ahead = n_ev / rate - (time.monotonic() - start)
                if ahead > 0.002:  # sleep granularity: a few events at a time
                    time.sleep(ahead)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    done["produced_at"] = time.time()


def _scrape(port: int) -> Families:
    try:
        return scrape(port, timeout=5)
    except OSError:  # not listening yet, or gone
        return {}


def worker_breakdown(m: Families, n_events: int) -> dict[str, Any]:
    """The worker's own timers (histogram sums) per event: store I/O, features + model, batch sizes."""
    out: dict[str, Any] = {}
    for op in ("score", "learn"):
        out[f"model_{op}_us_per_event"] = _r(1e6 * sample_total(m, "streamlearn_model_batch_seconds_sum", op=op)
                                             / max(1, n_events), 1)
        s, c = (sample_total(m, "streamlearn_batch_size_sum", op=op),
                sample_total(m, "streamlearn_batch_size_count", op=op))
        out[f"{op}_batches"] = int(c)
        out[f"{op}_mean_batch"] = _r(s / c if c else None, 1)
    out["store_us_per_event"] = _r(1e6 * sample_total(m, "streamlearn_feature_store_seconds_sum") / max(1, n_events), 1)
    out["store_calls"] = int(sample_total(m, "streamlearn_feature_store_seconds_count"))
    # labels that overtook their event (a backlog of events) are parked and learned when it is scored
    out["labels"] = {o: int(sample_total(m, "streamlearn_labels_total", outcome=o))
                     for o in ("learned", "joined_late", "unmatched", "duplicate")}
    return out


class Bench:
    """Embedded broker + Redis and the runs on them (each run: fresh topics, group, prefix)."""

    def __init__(self, view: str, spec: str, workdir: Path | None, rss_interval: float,
                 say: Callable[[str], None], project: str = "") -> None:
        from streamlearn.tools.infra import EmbeddedInfra

        self.view, self.spec, self.rss_interval, self.say = view, spec, rss_interval, say
        self.project = project  # a project directory: every process runs its view, models and task
        # a fresh directory per invocation: Redis would reload an earlier run's append-only file
        run_dir = workdir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}" if workdir else None
        self.infra = EmbeddedInfra(**({"workdir": run_dir} if run_dir else {})).start()
        # a folder of our own choosing (no --workdir) is removed after a run that succeeded:
        # broker/Redis data and Faust's data directories, tens of MB per run
        self.own_workdir = run_dir is None

    def close(self, failed: bool = False) -> None:
        """Stop broker and Redis. The run's folder (process logs, data) is kept when the run
        failed (errors name it) or was asked for (``--workdir``), else removed."""
        self.infra.stop()
        from streamlearn.tools.infra import finish_workdir

        finish_workdir(self.infra.workdir, self.own_workdir and not failed, self.say)

    def settings(self, kind: str, partitions: int = 1) -> Any:
        from streamlearn.settings import Settings
        from streamlearn.streams.transport import ensure_topics

        tag = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
        # Redis keys under the default prefix, as a deployment has them (key names are part of
        # the bytes per event); each run starts from an empty Redis (``_cleanup`` flushes it)
        s = Settings(kafka_bootstrap=self.infra.kafka_bootstrap, redis_url=self.infra.redis_url,
                     topic_events=f"{tag}.events", topic_predictions=f"{tag}.predictions",
                     topic_feedback=f"{tag}.feedback", topic_deadletter=f"{tag}.deadletter",
                     topic_shadow=f"{tag}.shadow", topic_lifecycle=f"{tag}.lifecycle", topic_drift=f"{tag}.drift",
                     app_id=tag, topic_partitions=partitions, model_spec=self.spec, feature_view=self.view,
                     project=self.project)
        ensure_topics(s)
        return s

    def _cleanup(self, s: Any) -> None:
        """Free the run's data so the next run starts from the same broker and Redis state."""
        import redis
        from confluent_kafka.admin import AdminClient

        from streamlearn.streams.transport import topic_names

        redis.Redis.from_url(self.infra.redis_url).flushdb()
        try:
            for fut in AdminClient(s.confluent_config()).delete_topics(topic_names(s), request_timeout=10).values():
                fut.result(10)
        except Exception:  # noqa: BLE001 - only memory hygiene; the next run uses new names anyway
            pass

    def _memory(self, pid: int, r: Any) -> dict[str, Any]:
        """One sample: the worker's RSS, Redis ``used_memory`` and key count, the broker's RSS."""
        out: dict[str, Any] = {"rss_mb": _r(rss_mb(pid)), "broker_rss_mb": _r(rss_mb(self.infra.broker.proc.pid))}
        try:
            out["redis_used_mb"] = _r(r.info("memory")["used_memory"] / 2**20, 2)
            out["redis_keys"] = r.dbsize()
        except Exception:  # noqa: BLE001 - a sample, never a reason to fail the run
            pass
        return out

    def _start(self, kind: str, s: Any, wl: Workload, workers: int) -> tuple[list[ChildProcess], tuple[str, ...]]:
        from streamlearn.tools.bench_apps import EXPECT_ENV, LABELS_ENV

        procs: list[ChildProcess] = []
        for i in range(workers):
            name = s.app_id if i == 0 else f"{s.app_id}-{i}"
            env = {**s.to_env(), EXPECT_ENV: str(wl.n_events), LABELS_ENV: str(wl.n_labels),
                   # Faust's data directory defaults to the current one: keep it with the run's logs
                   "APP_DATADIR": str(self.infra.workdir / f"{name}-data")}
            log_path = self.infra.workdir / f"{name}.log"
            if kind in ("end-to-end", "learner"):
                procs.append(WorkerProcess(env, log_path).start())
            else:
                app = {"naive": "naive", "faust-ceiling": "ceiling", "transport-ceiling": "transport"}[kind]
                procs.append(ChildProcess(["streamlearn.tools.bench_apps", app], env, log_path).start())
        topics = (s.topic_events,) if kind == "faust-ceiling" else (s.topic_events, s.topic_feedback)
        return procs, topics

    def _wait_joined(self, kind: str, s: Any, procs: list[ChildProcess], topics: tuple[str, ...]) -> None:
        """Every process has joined; with several, each owns an events partition and together
        they own every partition (the group has settled)."""
        from streamlearn.streams.transport import partitions_of
        from streamlearn.tools.demo import worker_assigned, worker_status

        wanted = {(t, p) for t in topics for p in range(partitions_of(s, t))}

        def joined() -> bool:
            for p in procs:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"{kind} process exited with {p.proc.returncode}; see {self.infra.workdir}")
            if len(procs) == 1:
                return worker_assigned(s, procs[0].proc.pid, topics)
            owned = [{tuple(tp) for tp in worker_status(s, p.proc.pid).get("assigned", [])} for p in procs]
            return all(any(t == s.topic_events for t, _ in o) for o in owned) and wanted <= set().union(*owned)

        wait_until(joined, 120, f"the {kind} process(es) to join the group")

    def run(self, kind: str, wl: Workload, rate: float | None = None,
            profile: Path | None = None, partitions: int = 1, workers: int = 1) -> dict[str, Any]:
        """One broker variant: start its process(es), produce, wait for all outputs, measure.
        ``workers`` > 1 (end-to-end only) runs that many worker processes in one group; their
        CPU is summed under "worker", RSS is the first one's."""
        import redis

        from streamlearn.tools.bench_apps import status_key
        from streamlearn.tools.demo import PredictionFollower

        s = self.settings(kind, partitions)
        procs, topics = self._start(kind, s, wl, workers)
        proc = procs[0]
        pid = proc.proc.pid
        pids = [p.proc.pid for p in procs]
        log_path = self.infra.workdir / f"{s.app_id}.log"
        r = redis.Redis.from_url(s.redis_url)
        follower = profiler = floor = None
        try:
            self._wait_joined(kind, s, procs, topics)
            if rate is not None and kind == "end-to-end":
                floor = self._start_floor(s)
            follower = PredictionFollower(s) if kind not in ("faust-ceiling", "transport-ceiling") else None
            others = {"broker": self.infra.broker.proc.pid, "redis": self.infra.redis.proc.pid, "bench": "self"}
            cpu0 = {"worker": _cpu_sum(pids), **{name: cpu_seconds(p) for name, p in others.items()}}
            if profile is not None:
                profiler = Profiler(pid, profile)
            produced: dict[str, float] = {}
            t0 = time.time()
            th = threading.Thread(target=produce, args=(s, wl.wire, rate, produced), daemon=True)
            th.start()
            curve: list[dict[str, float]] = []
            next_sample = 0.0
            t_pred = t_labels = None
            deadline = time.monotonic() + 120 + wl.n_events / 100
            while t_pred is None or t_labels is None:
                if follower is not None:
                    follower.poll(0.05)
                    if t_pred is None and len(follower.ids) >= wl.n_events:
                        t_pred = time.time()
                else:
                    time.sleep(0.05)
                now = time.time()
                if now >= next_sample:
                    seen = len(follower.ids) if follower else json.loads(r.get(status_key(s)) or "{}").get("events", 0)
                    curve.append({"t": round(now - t0, 2), "events": seen, **self._memory(pid, r),
                                  "cpu_s": _r(cpu_seconds(pid), 2)})
                    next_sample = now + self.rss_interval
                if kind == "end-to-end":
                    if t_pred is not None and t_labels is None:
                        # the worker's status key is written once a second; /models is live
                        if _learned(procs) >= wl.n_labels:
                            t_labels = time.time()
                else:
                    st = json.loads(r.get(status_key(s)) or "{}")
                    if kind == "faust-ceiling" and st.get("t_events_done"):
                        t_pred = t_labels = st["t_events_done"]
                    elif kind == "transport-ceiling":
                        if st.get("t_events_done") and st.get("t_labels_done"):
                            t_pred, t_labels = st["t_events_done"], st["t_labels_done"]
                    elif st.get("t_labels_done"):  # naive
                        t_labels = st["t_labels_done"]
                for p in procs:
                    if p.proc.poll() is not None:
                        raise RuntimeError(f"{kind} process exited with {p.proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    got = len(follower.ids) if follower else "?"
                    raise TimeoutError(f"{kind}: {got} of {wl.n_events} events done before the deadline")
            end = max(t_pred, t_labels)
            wall = end - t0
            prof = profiler.stop() if profiler else None
            log_left = _wait_log_trimmed(r, s) if kind == "end-to-end" else None
            curve.append({"t": round(time.time() - t0, 2), "events": wl.n_events, **self._memory(pid, r)})
            cpu1 = {"worker": _cpu_sum(pids), **{name: cpu_seconds(p) for name, p in others.items()}}
            th.join(60)
            out: dict[str, Any] = {
                "events": wl.n_events, "labels": wl.n_labels, "seconds": wall, "events_per_s": wl.n_events / wall,
                "peak_rss_mb": peak_rss_mb(pid), "rate_limit": rate, "partitions": partitions, "workers": workers,
                "rss_of": f"{kind} subprocess" + (f" (the first of {workers})" if workers > 1 else ""),
                "producer_done_s": _r(produced.get("produced_at", float("nan")) - t0, 2),
                "last_prediction_s": _r(t_pred - t0, 2), "labels_done_s": _r(t_labels - t0, 2),
                "cpu": {name: _r((cpu1[name] - cpu0[name]) / wall, 2) if cpu0[name] is not None else None
                        for name in cpu0},
                "rss_curve": curve,
                "rss_flat": rss_flatness(curve),
                "redis_memory": redis_growth(curve),
            }
            if follower is not None:
                out["latency_ms_p50"] = percentile(follower.latencies, 0.5)
                out["latency_ms_p99"] = percentile(follower.latencies, 0.99)
                out["latency_ms_max"] = max(follower.latencies, default=float("nan"))
                out["latency_ms_p50_quarters"] = quarter_p50s(follower.latencies)
                out["prediction_messages"] = follower.messages
            if floor is not None:
                out["floor"] = self._floor_result(*floor, wl.n_events)
            if kind == "end-to-end":
                if workers == 1:
                    out["worker_timers"] = worker_breakdown(_scrape(proc.web_port), wl.n_events)
                out["labels_learned"] = int(_learned(procs))
            if prof is not None:
                out["profile"] = prof
            out["redis_stats"] = _redis_stats(r)
            if log_left is not None:
                out["redis_stats"]["learn_log_at_end"] = log_left
            return out
        finally:
            if profiler is not None and profiler.proc.poll() is None:
                profiler.proc.kill()
            if follower is not None:
                follower.close()
            for p in procs + ([floor[1]] if floor else []):
                p.stop()
            self._cleanup(s)

    def _start_floor(self, s: Any) -> tuple[Any, ChildProcess]:
        """The paced run's latency floor (``bench_apps.floor``): the worker's consumer with no
        work, in a group of its own, on the same events topic at the same time."""
        fs = s.model_copy(update={"app_id": f"{s.app_id}-floor"})
        proc = ChildProcess(["streamlearn.tools.bench_apps", "floor"], fs.to_env(),
                            self.infra.workdir / f"{fs.app_id}.log").start()
        self._wait_joined("floor", fs, [proc], (fs.topic_events,))
        return fs, proc

    def _floor_result(self, fs: Any, proc: ChildProcess, n_events: int) -> dict[str, Any]:
        import redis

        from streamlearn.tools.bench_apps import status_key

        r = redis.Redis.from_url(fs.redis_url)

        def state() -> dict[str, Any]:
            return json.loads(r.get(status_key(fs)) or "{}")

        # its summary is published every 0.5 s; the events may reach it after the worker's outputs
        wait_until(lambda: state().get("latency_n", 0) >= n_events, 60, "the latency floor to see every event")
        st = state()
        return {"latency_ms_p50": st["latency_ms_p50"], "latency_ms_p99": st["latency_ms_p99"],
                "latency_ms_p50_quarters": st["latency_ms_p50_quarters"],
                "events": st["latency_n"], "cpu_s": _r(cpu_seconds(proc.proc.pid), 2)}

    def run_learner(self, wl: Workload) -> dict[str, Any]:
        """Learner capacity: every event scored first, then only the labels streamed to the
        worker (the model's single learner): labels/s from the first label produced to the
        last learned, and the worker's CPU over that span per label."""
        from streamlearn.tools.demo import PredictionFollower

        s = self.settings("learner")
        procs, topics = self._start("learner", s, wl, 1)
        proc = procs[0]
        pid = proc.proc.pid
        follower = None
        try:
            self._wait_joined("learner", s, procs, topics)
            follower = PredictionFollower(s)
            deadline = time.monotonic() + 120 + wl.n_events / 100
            produced: dict[str, float] = {}
            produce(s, [m for m in wl.wire if m[0]], None, produced)
            while len(follower.ids) < wl.n_events:
                follower.poll(0.05)
                if proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"learner: {len(follower.ids)} of {wl.n_events} events scored; see "
                                       f"{self.infra.workdir}")
            labels = [m for m in wl.wire if not m[0]]
            before = _learned(procs)
            cpu0, t0 = cpu_seconds(pid), time.time()
            th = threading.Thread(target=produce, args=(s, labels, None, produced), daemon=True)
            th.start()
            while (left := before + len(labels) - _learned(procs)) > 0:
                time.sleep(_poll_pause(left))
                if proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"learner: {_learned(procs) - before:.0f} of {len(labels)} labels learned; "
                                       f"see {self.infra.workdir}")
            wall = time.time() - t0
            cpu1 = cpu_seconds(pid)
            th.join(60)
            scraped = _scrape(proc.web_port)
            return {"events": len(labels), "labels": len(labels), "seconds": wall,
                    "events_per_s": len(labels) / wall, "labels_per_s": len(labels) / wall,
                    "peak_rss_mb": peak_rss_mb(pid), "rss_of": "worker subprocess",
                    "cpu": {"worker": _r((cpu1 - cpu0) / wall, 2) if cpu0 is not None and cpu1 is not None else None},
                    "labels_learned": int(_learned(procs) - before),
                    "labels_unmatched": int(sample_total(scraped, "streamlearn_labels_total", outcome="unmatched")),
                    "what": "labels of events scored beforehand, streamed alone to the learner"}
        finally:
            if follower is not None:
                follower.close()
            proc.stop()
            self._cleanup(s)


def _wait_log_trimmed(r: Any, s: Any, timeout: float = 15.0) -> int:
    """Until the worker's first checkpoint after the last label has trimmed the learn log (one
    every ``checkpoint_interval_s``): the last Redis sample then holds what stays per event (served
    records, entity state), not the 0-5 s of learn log a checkpoint is about to drop (up to ~30 B
    per event in a 30k-event run). Returns the entries left (0 unless the deadline passed)."""
    from streamlearn.featurestore.keys import Keys

    key = Keys.from_settings(s).learn_log
    deadline = time.monotonic() + timeout
    while (left := r.llen(key)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _redis_stats(r: Any) -> dict[str, Any]:
    """Where Redis' memory is at the end of a run (MEMORY STATS, keys by kind)."""
    out: dict[str, Any] = {}
    try:
        st = r.memory_stats()
        out = {k: st[k] for k in ("total.allocated", "dataset.bytes", "overhead.total", "keys.count",
                                  "clients.normal", "aof.buffer", "lua.caches", "functions.caches")
               if k in st}
        kinds: Counter[str] = Counter()
        srv = [0, 0, 0]  # served records sampled: count, MEMORY USAGE, value bytes
        for key in r.scan_iter(count=1000):
            parts = key.decode(errors="replace").split(":")
            kinds[parts[2] if len(parts) > 2 else "?"] += 1
            if parts[2:3] == ["srv"] and srv[0] < 2000:
                srv[0] += 1
                srv[1] += r.memory_usage(key, samples=0) or 0
                srv[2] += r.strlen(key)
        out["keys_by_kind"] = dict(kinds.most_common(12))
        if srv[0]:
            out["served_sample"] = {"keys": srv[0], "memory_usage": round(srv[1] / srv[0], 1),
                                    "value_len": round(srv[2] / srv[0], 1)}
    except Exception:  # noqa: BLE001 - diagnostics only
        pass
    return out


def _cpu_sum(pids: Sequence[int]) -> float | None:
    got = [cpu_seconds(p) for p in pids]
    return None if any(c is None for c in got) else sum(got)  # type: ignore[misc]


def _learned(procs: Sequence[ChildProcess]) -> float:
    """Labels learned, summed over the processes' loop counters in ``/models`` (only the learner
    has any; parked labels learned when their event came included). Not ``/metrics``: a scrape
    refreshes every gauge and checks readiness (a Redis ping and a broker metadata request),
    6-8 ms of the worker's CPU each, against 0.4-0.8 ms for ``/models``: polled every 20 ms,
    /metrics took ~8% of the learner row's worker CPU."""
    total = 0
    for p in procs:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p.web_port}/models", timeout=5) as resp:  # type: ignore[attr-defined]
                total += json.loads(resp.read())["counters"]["labels_learned"]
        except OSError:  # not listening yet, or gone
            pass
    return total


def _poll_pause(left: float, rate: float = 50_000.0) -> float:
    """How long to wait before asking again with ``left`` labels to go: a fifth of the time
    they take at ``rate`` (above any rate seen), between 20 and 250 ms, so the end is seen
    within 20 ms and the worker is asked ~20 times a run, not 50 times a second."""
    return min(0.25, max(0.02, left / rate))


# ------------------------------------------------------------------ reporting
def rss_growth(curve: list[dict[str, float]]) -> dict[str, Any] | None:
    """RSS over the second half of the events: growth in MB and its slope per 100k events."""
    pts = [(p["events"], p["rss_mb"]) for p in curve if p.get("rss_mb") is not None]
    if len(pts) < 4 or pts[-1][0] <= 0:
        return None
    half = [(e, m) for e, m in pts if e >= pts[-1][0] / 2]
    if len(half) < 2:
        return None
    n = len(half)
    me, mm = sum(e for e, _ in half) / n, sum(m for _, m in half) / n
    var = sum((e - me) ** 2 for e, _ in half)
    slope = sum((e - me) * (m - mm) for e, m in half) / var if var else 0.0
    return {"from_mb": half[0][1], "to_mb": half[-1][1], "growth_mb": round(half[-1][1] - half[0][1], 1),
            "slope_mb_per_100k_events": round(slope * 100_000, 2)}


RSS_FLAT_FROM = 0.25  # warm-up (model, River metrics, client buffers, allocator arenas) ends well before
RSS_FLAT_MAX_PCT = 10.0  # ~20 MB of a ~200 MB worker over 750k events: ~27 B/event, less than one
# small object (an event id str is ~60 B) kept per event, so a per-event leak cannot pass


def rss_flatness(curve: list[dict[str, Any]], key: str = "rss_mb", start: float = RSS_FLAT_FROM,
                 max_pct: float = RSS_FLAT_MAX_PCT) -> dict[str, Any] | None:
    """Memory at the first sample with >= ``start`` of the events vs the last sample (all events
    scored, all labels learned): flat when it grew less than ``max_pct`` percent."""
    pts = [(p["events"], p[key]) for p in curve if p.get(key) is not None]
    if len(pts) < 2 or pts[-1][0] <= 0:
        return None
    total = pts[-1][0]
    first = next((i for i, (e, _) in enumerate(pts) if e >= start * total), None)
    if first is None or first == len(pts) - 1:
        return None
    (e0, m0), (e1, m1) = pts[first], pts[-1]
    growth = 100.0 * (m1 - m0) / m0 if m0 else float("nan")
    return {"from_events": e0, "from_mb": m0, "to_events": e1, "to_mb": m1,
            "peak_mb": max(m for _, m in pts[first:]), "growth_pct": round(growth, 1),
            "max_growth_pct": max_pct, "flat": bool(growth < max_pct)}


def redis_growth(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Redis ``used_memory`` first -> last sample, per event and per key added."""
    pts = [p for p in curve if p.get("redis_used_mb") is not None]
    if len(pts) < 2 or pts[-1]["events"] <= pts[0]["events"]:
        return None
    a, b = pts[0], pts[-1]
    d_mb = b["redis_used_mb"] - a["redis_used_mb"]
    d_keys = (b.get("redis_keys") or 0) - (a.get("redis_keys") or 0)
    return {"from_mb": a["redis_used_mb"], "to_mb": b["redis_used_mb"], "keys": b.get("redis_keys"),
            "bytes_per_event": round(d_mb * 2**20 / (b["events"] - a["events"])),
            "bytes_per_key": round(d_mb * 2**20 / d_keys) if d_keys > 0 else None}


def _fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def cpu_us_per_event(r: dict[str, Any]) -> float | None:
    """CPU time of the working process per event: robust to a shared machine, unlike events/s."""
    cpu = r.get("cpu")
    cpu = cpu.get("worker") if isinstance(cpu, dict) else cpu
    return None if cpu is None else cpu * r["seconds"] / r["events"] * 1e6


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float:
    if not a or not b:
        return float("nan")
    return a["events_per_s"] / b["events_per_s"]


def render(report: dict[str, Any]) -> str:
    v = report["variants"]
    bare = v.get("bare")
    lines = []
    cfg = report["config"]
    lines.append(f"streamlearn bench: {cfg['events']:,} events ({report['workload']['labels']:,} labels), "
                 f"cards seed {cfg['seed']} ({cfg.get('entities', 2_000):,} entities), {cfg['spec']} on {cfg['view']}")
    m = report["machine"]
    lines.append(f"machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}; load average "
                 f"{m['load_start']} at start, {m['load_end']} at end")
    lines.append("")
    # latency columns hold a backlog's minutes too (a 1M-event run at max load: p50 ~270,000 ms)
    head = f"{'variant':<22}{'events':>10}{'seconds':>9}{'events/s':>10}{'x bare':>8}{'peak RSS MB':>13}" \
           f"{'p50 ms':>11}{'p99 ms':>11}{'CPU':>6}{'CPU us/ev':>11}"
    lines.append(head)
    lines.append("-" * len(head))

    def row(name: str, r: dict[str, Any]) -> None:
        cpu = r.get("cpu")
        cpu = cpu.get("worker") if isinstance(cpu, dict) else cpu
        lines.append(f"{name:<22}{_fmt(r['events']):>10}{_fmt(r['seconds'], '.1f'):>9}"
                     f"{_fmt(r['events_per_s']):>10}{_fmt(ratio(r, bare), '.2f'):>8}{_fmt(r.get('peak_rss_mb')):>13}"
                     f"{_fmt(r.get('latency_ms_p50'), ',.1f'):>11}{_fmt(r.get('latency_ms_p99'), ',.1f'):>11}"
                     f"{_fmt(cpu, '.2f'):>6}{_fmt(cpu_us_per_event(r), ',.0f'):>11}")

    for name in VARIANTS:
        if name not in v:
            continue
        if name == "scale-out":  # the same stream on 2 event partitions: 1 worker, then 2
            row("scale-out 1 worker", v[name]["one_worker"])
            row(f"  2 workers (x{_fmt(v[name]['scaling'], '.2f')})", v[name])
            continue
        row("learner (labels)" if name == "learner" else name, v[name])
        if name == "end-to-end" and "half_load" in v[name]:
            half = v[name]["half_load"]
            row(f"  at half load ({_fmt(half['rate_limit'])}/s)", half)
            if "floor" in half:  # the same events read by a consumer doing nothing, in the same run
                fl = half["floor"]
                lines.append(f"{'    floor: no work':<22}{_fmt(fl['events']):>10}{'':>9}{'':>10}{'':>8}{'':>13}"
                             f"{_fmt(fl['latency_ms_p50'], ',.1f'):>11}{_fmt(fl['latency_ms_p99'], ',.1f'):>11}")
            if "latency_ms_p50_quarters" in half:  # level over the run, or growing with it?
                q = " / ".join(_fmt(x, ",.1f") for x in half["latency_ms_p50_quarters"])
                fq = " / ".join(_fmt(x, ",.1f") for x in half.get("floor", {}).get("latency_ms_p50_quarters", []))
                lines.append(f"    p50 ms by quarter of the run: {q}" + (f"; floor {fq}" if fq else ""))
    lines.append("(events/s: in-process variants over whole passes; broker variants from first event produced to"
                 " last output seen, all labels learned. CPU: cores used by the process doing the work;")
    lines.append(" CPU us/ev: its CPU time per event (with the event's label), the figure least distorted by other"
                 " load on the machine.")
    lines.append(" transport-ceiling: the worker's messages (events and labels in, one message out per event)"
                 " through the worker's consumer and producer with no other work.")
    lines.append(" floor: during the half-load run, the same events read by the worker's consumer doing nothing"
                 " (a group of its own): the delay from produce() to any consumer on this broker and machine.")
    lines.append(" learner: events scored first, then the labels alone to the model's learner: labels, labels/s,"
                 " CPU us per label.")
    lines.append(" scale-out: end-to-end on 2 event partitions, 1 worker then 2 (one of them the learner),"
                 " CPU summed.)")
    e2e = v.get("end-to-end")
    if e2e:
        c = e2e["cpu"]
        lines.append(f"end-to-end CPU (cores): worker {c['worker']}, broker {c['broker']}, redis {c['redis']}, "
                     f"bench process (producer + follower) {c['bench']}")
        t = e2e.get("worker_timers") or {}
        if t:
            lines.append("end-to-end worker's own timers, wall per event (lock waits included): "
                         f"features+predict {t['model_score_us_per_event']} us,"
                         f" learn {t['model_learn_us_per_event']} us, Redis {t['store_us_per_event']} us "
                         f"({t['store_calls']:,} calls); mean batch {t['score_mean_batch']} events, "
                         f"{t['learn_mean_batch']} labels; labels learned on arrival {t['labels']['learned']:,}, "
                         f"parked then learned {t['labels']['joined_late']:,}")
        growth = rss_growth(e2e["rss_curve"])
        curve = e2e["rss_curve"]
        # one point per distinct progress value (the label tail repeats the last count), at most ~12
        distinct = [p for i, p in enumerate(curve) if i + 1 == len(curve) or curve[i + 1]["events"] != p["events"]]
        step = max(1, len(distinct) // 12)
        pts = distinct[::step] + ([distinct[-1]] if (len(distinct) - 1) % step else [])
        lines.append("end-to-end worker RSS: " + ", ".join(
            f"{_fmt(p['events'])} ev {_fmt(p['rss_mb'], '.0f')} MB" for p in pts))
        if growth:
            lines.append(f"  second half of the events: {growth['from_mb']:.0f} -> {growth['to_mb']:.0f} MB, "
                         f"slope {growth['slope_mb_per_100k_events']:+.2f} MB per 100k events")
        flat = rss_flatness(curve)
        if flat:
            lines.append(f"rss flat: {'yes' if flat['flat'] else 'no'} (growth {flat['growth_pct']:+.1f}% from "
                         f"{RSS_FLAT_FROM:.0%} to 100% of events: {flat['from_mb']:.0f} -> {flat['to_mb']:.0f} MB, "
                         f"peak {flat['peak_mb']:.0f} MB; flat means < {RSS_FLAT_MAX_PCT:.0f}%)")
        if any(p.get("redis_used_mb") is not None for p in pts):
            lines.append("end-to-end Redis used_memory: " + ", ".join(
                f"{_fmt(p['events'])} ev {_fmt(p.get('redis_used_mb'), '.0f')} MB" for p in pts))
            rg = redis_growth(curve)
            if rg:
                lines.append(f"  {rg['from_mb']:.0f} -> {rg['to_mb']:.0f} MB, {_fmt(rg['keys'])} keys, "
                             f"~{_fmt(rg['bytes_per_event'])} B per event: by design, not a leak. Served records "
                             "(learned flag included) live 3 d, entity state 7 d (TTL), so Redis holds about "
                             "that many bytes per event of the last 3 days; bounded by TTL, not by count")
            ss = e2e.get("redis_stats", {}).get("served_sample")
            if ss:
                lines.append(f"  served record: {ss['value_len']:.1f} B value, {ss['memory_usage']:.1f} B by MEMORY "
                             f"USAGE (mean of {ss['keys']:,}); learn log at the last sample: "
                             f"{_fmt(e2e['redis_stats'].get('learn_log_at_end'))} entries")
        if any(p.get("broker_rss_mb") is not None for p in pts):
            lines.append("end-to-end broker RSS (tansu keeps topics in memory; grows with what was produced): "
                         + ", ".join(f"{_fmt(p['events'])} ev {_fmt(p.get('broker_rss_mb'), '.0f')} MB"
                                     for p in pts))
    for name in VARIANTS:
        prof = v.get(name, {}).get("profile")
        if not prof:
            continue
        cpu = v[name]["cpu"]["worker"]
        lines.append(f"{name} profile (py-spy, event-loop thread on CPU {_fmt(prof['main_thread_busy'], '.0%')} of "
                     f"wall time; process CPU {_fmt(cpu, '.2f')} cores), share of the loop thread's samples:")
        cats = list(prof["categories_pct"].items())
        for k, pct in cats if name == "end-to-end" else cats[:4]:
            lines.append(f"  {pct:5.1f}%  {k}")
        if name == "end-to-end":
            lines.append("  inclusive: " + ", ".join(f"{k} {p}%" for k, p in prof["inclusive_pct"].items()))
        lines.append(f"  collapsed stacks: {prof['raw']}")
    lines.append("")
    lines.append("targets, from this run:")
    for name, (value, goal, ok) in report["targets"].items():
        verdict = "-" if ok is None else ("met" if ok else "NOT met")
        lines.append(f"  {name:<42}{_fmt(value, '.2f'):>10}  (goal {goal})  {verdict}")
    lines.append("")
    r = report["ratios"]
    lines.append(f"ratio end-to-end/faust-ceiling: {r['end-to-end/faust-ceiling']:.2f}")
    lines.append(f"ratio end-to-end/bare: {r['end-to-end/bare']:.2f}")
    lines.append(f"ratio end-to-end/transport-ceiling: {r['end-to-end/transport-ceiling']:.2f}")
    return "\n".join(lines)


def targets(v: dict[str, Any]) -> dict[str, tuple[float, str, bool | None]]:
    e2e = v.get("end-to-end")
    half = (e2e or {}).get("half_load")

    def t(value: float, goal: str, ok: Callable[[float], bool]) -> tuple[float, str, bool | None]:
        return value, goal, None if math.isnan(value) else ok(value)

    nan = float("nan")
    p50 = half["latency_ms_p50"] if half else nan
    p99 = half["latency_ms_p99"] if half else nan
    flat = rss_flatness(e2e["rss_curve"]) if e2e else None
    grow = flat["growth_pct"] if flat else nan
    cpu = cpu_us_per_event(e2e) if e2e else None
    mem = (e2e or {}).get("redis_memory") or {}
    learner = v.get("learner")
    return {
        "end-to-end / transport-ceiling": t(ratio(e2e, v.get("transport-ceiling")), ">= 0.6", lambda x: x >= 0.6),
        "worker CPU us per event (with its label)": t(nan if cpu is None else cpu, "<= 200", lambda x: x <= 200),
        "p50 ms at half load": t(p50, "< 5", lambda x: x < 5),
        "p99 ms at half load": t(p99, "< 15", lambda x: x < 15),
        "learner labels/s": t(learner["labels_per_s"] if learner else nan, ">= 10,000", lambda x: x >= 10_000),
        "backtest / bare": t(ratio(v.get("backtest"), v.get("bare")), ">= 0.5", lambda x: x >= 0.5),
        "Redis bytes per event": t(float(mem.get("bytes_per_event", nan)), "<= 250", lambda x: x <= 250),
        # judged only on long runs (>= 200k events): warm-up and GC noise dominate a short one
        f"worker RSS growth % ({RSS_FLAT_FROM:.0%}->100% of events)": (
            grow, f"< {RSS_FLAT_MAX_PCT:.0f} over 1M events", None if math.isnan(grow) or (
                e2e or {}).get("events", 0) < 200_000 else grow < RSS_FLAT_MAX_PCT),
    }


# ------------------------------------------------------------------ driver
@dataclass
class BenchConfig:
    events: int = DEFAULT_EVENTS
    seed: int = 7
    entities: int = 2_000  # cards (the dataset's default)
    spec: str = "logreg"
    view: str = "entity_v1"
    only: tuple[str, ...] = VARIANTS
    min_seconds: float = 20.0
    half_load: bool = True
    rss_interval: float = 1.0
    profile_dir: Path | None = None
    workdir: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    project: Any = None  # a streamlearn.project.Project: its stream, view, champion and task


def run_bench(cfg: BenchConfig, say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)
              ) -> dict[str, Any]:
    unknown = set(cfg.only) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(terse=True), "python": platform.python_version(),
               "load_start": [round(x, 2) for x in os.getloadavg()]}
    say(f"generating {cfg.events:,} events (cards, seed {cfg.seed}, {cfg.entities:,} entities) ...")
    wl = build_workload(cfg.events, cfg.seed, cfg.entities, cfg.project)
    view = cfg.project.view if cfg.project is not None else cfg.view
    task = cfg.project.task if cfg.project is not None else None
    variants: dict[str, dict[str, Any]] = {}
    in_process = {}
    if "bare" in cfg.only:
        in_process["bare"] = bare_pass(wl.stream, view, cfg.spec)
    if "backtest" in cfg.only:
        in_process["backtest"] = backtest_pass(wl.stream, view, cfg.spec, task)
    if in_process:
        say(f"{' and '.join(in_process)} (in-process, a pass of each in turn) ...")
        variants.update(_passes(in_process, wl.n_events, cfg.min_seconds))
    broker = [k for k in BROKER_VARIANTS if k in cfg.only]
    if broker:
        say("starting the embedded broker and Redis ...")
        bench = Bench(cfg.view, cfg.spec, cfg.workdir, cfg.rss_interval, say,
                      project=str(cfg.project.directory) if cfg.project is not None else "")
        failed = True
        try:
            for kind in broker:
                say(f"{kind}: {wl.n_events:,} events through the broker ...")
                prof = None
                if cfg.profile_dir is not None:  # every broker variant at max load, one py-spy each
                    cfg.profile_dir.mkdir(parents=True, exist_ok=True)
                    prof = cfg.profile_dir / f"{kind}.pyspy.txt"
                if kind == "learner":
                    variants[kind] = bench.run_learner(wl)
                    say(f"  {variants[kind]['labels_per_s']:,.0f} labels/s")
                    continue
                if kind == "scale-out":
                    one = bench.run("end-to-end", wl, partitions=2, workers=1)
                    say(f"  1 worker on 2 partitions: {one['events_per_s']:,.0f} events/s; now 2 workers ...")
                    variants[kind] = bench.run("end-to-end", wl, partitions=2, workers=2)
                    variants[kind]["one_worker"] = one
                    variants[kind]["scaling"] = variants[kind]["events_per_s"] / one["events_per_s"]
                    say(f"  2 workers: {variants[kind]['events_per_s']:,.0f} events/s")
                    continue
                variants[kind] = bench.run(kind, wl, profile=prof)
                say(f"  {variants[kind]['events_per_s']:,.0f} events/s")
                if kind == "end-to-end" and cfg.half_load:
                    rate = variants[kind]["events_per_s"] / 2
                    # long enough for steady latencies, never longer than the stream
                    sub = wl.prefix(max(1000, int(rate * cfg.min_seconds)))
                    say(f"end-to-end at half load: {sub.n_events:,} events at {rate:,.0f}/s ...")
                    variants[kind]["half_load"] = bench.run(kind, sub, rate=rate)
            failed = False
        finally:
            bench.close(failed)
    machine["load_end"] = [round(x, 2) for x in os.getloadavg()]
    for r in [*variants.values(), *(x[sub] for x in variants.values() for sub in ("half_load", "one_worker")
                                    if sub in x)]:
        r["cpu_us_per_event"] = cpu_us_per_event(r)
    report = {
        "config": {"events": cfg.events, "seed": cfg.seed, "entities": cfg.entities, "spec": cfg.spec,
                   "view": cfg.view, "only": list(cfg.only), "min_seconds": cfg.min_seconds,
                   "project": str(cfg.project.directory) if cfg.project is not None else None},
        "machine": machine,
        "workload": {"events": wl.n_events, "labels": wl.n_labels},
        "variants": variants,
        "ratios": {
            "end-to-end/faust-ceiling": ratio(variants.get("end-to-end"), variants.get("faust-ceiling")),
            "end-to-end/transport-ceiling": ratio(variants.get("end-to-end"), variants.get("transport-ceiling")),
            "end-to-end/bare": ratio(variants.get("end-to-end"), variants.get("bare")),
            "end-to-end/naive": ratio(variants.get("end-to-end"), variants.get("naive")),
            "backtest/bare": ratio(variants.get("backtest"), variants.get("bare")),
            "faust-ceiling/bare": ratio(variants.get("faust-ceiling"), variants.get("bare")),
        },
    }
    report["targets"] = targets(variants)
    return report
