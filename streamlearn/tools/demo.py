"""``streamlearn demo``: the whole loop on an embedded broker and Redis, from one command.

Starts tansu + Valkey (unless addresses are given), a worker subprocess (the same
``streamlearn worker`` that production runs), streams a dataset with delayed labels
through it, follows the predictions topic with a progress bar and prints a summary.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamlearn import datasets
from streamlearn.featurestore.keys import Keys
from streamlearn.project import Project, builtin_spec, project_for
from streamlearn.schemas import AvroCodec
from streamlearn.settings import Settings, redact_url
from streamlearn.streams.transport import ensure_topics, make_producer
from streamlearn.tools.harness import WorkerProcess, percentile, wait_until
from streamlearn.tools.infra import EmbeddedInfra

console = Console()


def read_status(settings: Settings, client: redis.Redis | None = None) -> dict[str, Any]:
    client = client or redis.Redis.from_url(settings.redis_url)
    raw = client.get(Keys.from_settings(settings).status)
    return json.loads(raw) if raw else {}


def worker_status(settings: Settings, pid: int) -> dict[str, Any]:
    """One worker's own status (assignment, role, counters); expires when the worker dies."""
    raw = redis.Redis.from_url(settings.redis_url).get(Keys.from_settings(settings).worker(settings.app_id, pid))
    return json.loads(raw) if raw else {}


def worker_assigned(settings: Settings, pid: int, topics: tuple[str, ...] | None = None) -> bool:
    """True once worker ``pid`` owns partitions of ``topics`` (default: events and feedback)."""
    wanted = set(topics or (settings.topic_events, settings.topic_feedback))
    return wanted <= {t for t, _ in worker_status(settings, pid).get("assigned", [])}


# ------------------------------------------------------------------ producing
BAD_MESSAGES = [
    (b"\x00\x01not an event", "unknown_format"),
    (b'{"event_id": "bad-1", "entity": "x", "event_time": "yesterday", "features": {}}', "schema"),
    (b'{"event_id": "bad-2", "entity": "x", "event_time": 1, "features": {"amount": NaN}}', "non_finite"),
]


def produce_stream(settings: Settings, items: list[datasets.Item], rate: float | None, bad: int = 0,
                   on_event: Callable[[], None] | None = None,
                   stop: threading.Event | None = None) -> tuple[int, int]:
    """Send events and labels in arrival order (optionally paced). Returns (events, labels).
    Once ``stop`` is set (Ctrl-C) it sends nothing more and drops what is queued: a producer
    left running holds its connection, and the embedded broker waits for it on shutdown."""
    reg = AvroCodec.default()
    enc_event, enc_fb = reg.encoder("event"), reg.encoder("feedback")
    producer = make_producer(settings)
    n_ev = n_fb = 0
    start = time.monotonic()
    bad_every = max(1, len(items) // (bad + 1)) if bad else 0
    for kind, rec in datasets.arrival_order(items):
        if stop is not None and stop.is_set():
            producer.purge()
            producer.flush(1)
            return n_ev, n_fb
        if kind == "event":
            producer.produce(settings.topic_events, enc_event(rec), rec["entity"].encode())
            n_ev += 1
            if bad_every and n_ev % bad_every == 0 and n_ev // bad_every <= bad:
                raw, _ = BAD_MESSAGES[(n_ev // bad_every - 1) % len(BAD_MESSAGES)]
                producer.produce(settings.topic_events, raw, b"bad")
            if on_event:
                on_event()
            if rate:
                ahead = n_ev / rate - (time.monotonic() - start)
                if ahead > 0:
                    if stop is not None:
                        stop.wait(ahead)
                    else:
                        time.sleep(ahead)
        else:
            producer.produce(settings.topic_feedback, enc_fb(rec), rec["event_id"].encode())
            n_fb += 1
        producer.poll(0)
    producer.flush(60)
    return n_ev, n_fb


# ------------------------------------------------------------------ following predictions
class PredictionFollower:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reg = AvroCodec.default()
        self.consumer = Consumer(settings.confluent_config(**{
            "group.id": f"demo-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        }))
        parts = [TopicPartition(settings.topic_predictions, p, 0) for p in range(settings.topic_partitions)]
        self.consumer.assign(parts)
        self.ids: set[str] = set()
        self.latencies: list[float] = []
        self.messages = 0

    def poll(self, timeout: float = 0.2) -> int:
        new = 0
        for m in self.consumer.consume(2000, timeout):
            if m.error():
                continue
            p = self.reg.decode("prediction", m.value())
            self.messages += 1
            if p["event_id"] not in self.ids:
                self.ids.add(p["event_id"])
                self.latencies.append(p["latency_ms"])
                new += 1
        return new

    def close(self) -> None:
        self.consumer.close()


# ------------------------------------------------------------------ the demo
def run_demo(dataset: str = "cards", events: int | None = None, rate: float | None = None, spec: str | None = None,
             bad: int = 3, seed: int = 7, compare: bool = True, kafka: str | None = None,
             redis_url: str | None = None, workdir: Path | None = None, replay: bool = True,
             project_dir: str | None = None, keep: bool = False) -> dict[str, Any]:
    """The whole loop on the embedded broker and Redis. With ``project_dir``, the project's
    stream ([demo] generator), features, models and task; else a built-in dataset.

    The run's folder keeps only its logs and the backtest's small outputs at exit (success,
    error or Ctrl-C alike), unless ``keep``: see :func:`tidy_run_dir`."""
    project = Project.load(project_dir) if project_dir else None
    if project is not None:
        spec = project.resolve_spec(spec) if spec else project.champion
        items = project.demo_items(events, seed)
        dataset = project.name
    else:  # spec names checked before any broker, Redis or worker starts (as a project's are)
        spec = builtin_spec(spec or "logreg")
        items = datasets.load(dataset, events or 20_000, seed)
    infra = None
    run_dir: Path | None = None  # the run's folder: tidied at exit
    summary: dict[str, Any] | None = None
    worker = None
    follower = None
    producing: threading.Thread | None = None
    stop_producing = threading.Event()
    try:
        isolated: dict[str, str] = {}  # on a broker/Redis the demo did not start: names of its own
        if kafka and redis_url:
            addresses = {"KAFKA_BOOTSTRAP": kafka, "REDIS_URL": redis_url}
            isolated = run_names(f"sl-demo-{uuid.uuid4().hex[:8]}")
            console.print(f"[bold]using[/] {kafka} and {redact_url(redis_url)} with names of this run only: "
                          f"topics {isolated['topic_events'].removesuffix('.events')}.*, consumer group/app id "
                          f"{isolated['app_id']}, Redis prefix {isolated['redis_prefix']}")
        else:
            console.print("[bold]starting[/] embedded broker (tansu) and Redis (valkey) ...")
            infra = EmbeddedInfra(**({"workdir": workdir} if workdir else {}))
            run_dir = infra.workdir  # (its logs say why, if a server does not start)
            infra.start()
            addresses = infra.env()
        if project is not None:
            view = project.view.name
            env = {**addresses, "STREAMLEARN_PROJECT": str(project.directory), "STREAMLEARN_MODEL_SPEC": spec}
            settings = Settings(kafka_bootstrap=addresses["KAFKA_BOOTSTRAP"], redis_url=addresses["REDIS_URL"],
                                project=str(project.directory), model_spec=spec, **isolated)
        else:
            view = "entity_v1" if dataset == "cards" else "raw_v1"  # only cards has entities
            env = {**addresses, "STREAMLEARN_MODEL_SPEC": spec, "STREAMLEARN_FEATURE_VIEW": view}
            settings = Settings(kafka_bootstrap=addresses["KAFKA_BOOTSTRAP"], redis_url=addresses["REDIS_URL"],
                                model_spec=spec, feature_view=view, **isolated)
        # the worker reads the same names (the environment wins over a project's [settings])
        env.update({f"STREAMLEARN_{k.upper()}": v for k, v in isolated.items()})
        ensure_topics(settings)
        # never the current directory: the worker log, the replay and Faust data go with the run
        log_dir = run_dir = Path(workdir or run_dir or tempfile.mkdtemp(prefix="streamlearn-demo-"))
        worker = WorkerProcess(env, Path(log_dir) / "worker.log", cwd=Path(log_dir)).start()
        console.print(f"  broker   {addresses['KAFKA_BOOTSTRAP']}\n  redis    {addresses['REDIS_URL']}\n"
                      f"  worker   pid {worker.proc.pid}, log {worker.log_path}\n"
                      f"  metrics  http://127.0.0.1:{worker.web_port}/metrics")
        follower = PredictionFollower(settings)
        wait_until(lambda: worker_assigned(settings, worker.proc.pid), 90, "the worker to join its group",
                   check=lambda: worker.check("at start"))
        t0 = time.monotonic()
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("predictions", total=len(items))
            counts: dict[str, int] = {}

            def produce() -> None:
                counts["events"], counts["labels"] = produce_stream(settings, items, rate, bad,
                                                                    stop=stop_producing)

            th = producing = threading.Thread(target=produce, daemon=True)
            th.start()
            r = redis.Redis.from_url(settings.redis_url)
            deadline = time.monotonic() + 300 + len(items) / 200
            while len(follower.ids) < len(items):
                progress.update(task, advance=follower.poll())
                worker.check("while the stream was produced")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(follower.ids)} of {len(items)} predictions arrived")
            t_pred = time.monotonic() - t0
            th.join()
            n_labels = counts["labels"]
            wait_until(lambda: read_status(settings, r).get("counters", {}).get("labels_learned", 0) >= n_labels,
                       120, "all labels learned", check=lambda: worker.check("while learning the labels"))
        status = read_status(settings, r)
        summary = {
            "isolated_names": isolated or None,
            "dataset": dataset, "events": counts["events"], "predictions": len(follower.ids),
            "prediction_messages": follower.messages, "labels_sent": n_labels,
            "counters": status.get("counters", {}), "metrics": status.get("metrics", {}),
            "deadlettered": status.get("deadlettered", 0), "malformed_sent": bad, "seconds": t_pred,
            "events_per_s": counts["events"] / t_pred,
            "latency_ms_p50": percentile(follower.latencies, 0.5),
            "latency_ms_p99": percentile(follower.latencies, 0.99),
            "model_spec": spec, "feature_view": view,
            "models": status.get("models", []), "decisions": status.get("history", []),
            # a project's spec names, by the canonical spec the worker reports (shown by name)
            "spec_names": {v: k for k, v in project.specs.items()} if project is not None else {},
            "keep": keep,
        }
        if replay:
            console.print("[bold]archiving[/] the run and replaying it in-process (backtest) ...")
            summary["replay"] = replay_check(settings, status, Path(log_dir) / f"replay-{uuid.uuid4().hex[:6]}")
        if compare and dataset == "cards" and project is None:
            from streamlearn.replay.backtest.inprocess import run

            summary["feature_store_comparison"] = {
                v: run(datasets.arrival_order(items), v, spec)[0].champion.metric_values()
                for v in ("entity_v1", "raw_v1")
            }
        print_summary(summary)
        return summary
    finally:
        if producing is not None and producing.is_alive():  # interrupted mid-stream
            stop_producing.set()
            producing.join(10)
        if follower:
            follower.close()
        if worker:
            worker.stop()
        if infra:
            infra.stop()
        if run_dir is not None and run_dir.is_dir():  # after the servers stopped writing to it
            # a folder the caller chose (workdir) is theirs: reported, never tidied
            tidied = tidy_run_dir(run_dir, keep or workdir is not None)
            console.print(tidied["line"])
            if summary is not None:
                summary["run_dir"] = tidied
                if not keep and summary.get("replay"):
                    summary["replay"]["archive"] = None  # removed: --keep keeps it


def run_names(run: str) -> dict[str, str]:
    """Topic names, consumer group/app id and Redis prefix that belong to one run only: the
    demo uses them on a broker and Redis it did not start, so it neither reads what others
    produced to the default topics nor writes into their topics and keys.

    >>> names = run_names("sl-demo-1a2b")
    >>> names["topic_events"], names["app_id"], names["redis_prefix"]
    ('sl-demo-1a2b.events', 'sl-demo-1a2b', 'sl-demo-1a2b')
    """
    topics = ("events", "predictions", "feedback", "deadletter", "shadow", "lifecycle", "drift")
    return {**{f"topic_{t}": f"{run}.{t}" for t in topics}, "app_id": run, "redis_prefix": run}


# What a run's folder keeps at exit without --keep: what the summary points at (the backtest's
# PNG/CSV/JSON) and the logs (error messages name them). The rest -- Redis's append-only file,
# the archive, the backtest's predictions.jsonl -- is ~20 MB for the default 20,000 events.
KEPT_FILES = ("replay-*/backtest/metrics.png", "replay-*/backtest/metrics.csv", "replay-*/backtest/metrics.json",
              "replay-*/backtest/summary.json")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def tidy_run_dir(run_dir: Path, keep: bool = False) -> dict[str, Any]:
    """Remove the bulky data of a demo run from its folder, keeping the files of
    :data:`KEPT_FILES` and its top-level ``*.log`` (everything with ``keep``). Returns
    what was kept and removed, and a line for the user saying so."""
    kept: list[str] = []
    kept_bytes = removed_bytes = 0
    for path in sorted(run_dir.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(run_dir)
        size = path.lstat().st_size
        if keep or (len(rel.parts) == 1 and rel.suffix == ".log") or any(rel.match(p) for p in KEPT_FILES):
            kept.append(str(rel))
            kept_bytes += size
        else:
            path.unlink()
            removed_bytes += size
    if not keep:  # folders left empty (Redis's, the archive's) go too
        for path in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(path.iterdir()):
                path.rmdir()
    if keep:
        line = (f"  kept everything of this run in {run_dir} ({_size(kept_bytes)}: Redis data, archive, backtest "
                f"outputs, logs); remove it with: rm -r {run_dir}")
    else:
        line = (f"  removed this run's data ({_size(removed_bytes)}: Redis, the archive, the backtest's "
                f"predictions.jsonl; --keep keeps them); kept in {run_dir} ({_size(kept_bytes)}): its logs"
                + (" and the backtest's metrics PNG/CSV/JSON" if any(k.startswith("replay-") for k in kept) else ""))
    return {"path": str(run_dir), "kept": kept, "kept_bytes": kept_bytes, "removed_bytes": removed_bytes,
            "keep": keep, "line": line}


def replay_check(settings: Settings, status: dict[str, Any], root: Path) -> dict[str, Any]:
    """Archive the live run (events, labels, predictions), backtest it with the live spec
    and lifecycle, and compare with what the worker served and reported: the backtest must
    reproduce every prediction of the initial model (v1) and its final online metrics."""
    from streamlearn.models.governance.lifecycle import LifecycleConfig
    from streamlearn.replay.archive.archiver import Archiver
    from streamlearn.replay.archive.reader import Archive
    from streamlearn.replay.backtest.runner import run_backtest

    project = project_for(settings)
    a = settings.model_copy(update={"archive_dir": str(root / "archive"),
                                    "archive_group_id": f"demo-archiver-{uuid.uuid4().hex[:8]}"})
    stats = Archiver(a).run(exit_when_idle_s=1.0)
    archive = Archive.open(root / "archive")
    live: dict[str, tuple[int, float]] = {}
    for tp in archive.partitions("prediction"):
        for _, p in archive.decoded(archive.partition_records("prediction", *tp)):
            if p["model_version"] == 1:
                live.setdefault(p["event_id"], (p["labels_learned"], p["score"]))
    lifecycle = LifecycleConfig.from_settings(settings, task=project.task, challenger_spec=project.challenger)
    r = run_backtest(archive, [project.champion], view=project.view, out=root / "backtest", rows=20,
                     reference=(settings.model_name, 1), lifecycle=lifecycle, task=project.task)
    replayed: dict[str, tuple[int, float]] = {}
    with open(root / "backtest" / "predictions.jsonl", encoding="utf-8") as fo:
        for line in fo:
            p = json.loads(line)
            if p["model"] == project.champion:
                replayed.setdefault(p["event_id"], (p["labels_learned"], p["score"]))
    same = sum(1 for eid, v in live.items() if replayed.get(eid) == v)
    live_v1 = next((m["metrics"] for m in status.get("models", []) if m["version"] == 1), status.get("metrics", {}))
    return {
        "archived_records": stats.records, "archive": str(root / "archive"), "out": str(root / "backtest"),
        "mode": r.plan.mode, "events": r.plan.n_events, "live_predictions_v1": len(live),
        "identical_predictions_v1": same, "divergences": len(r.divergences),
        "metrics_equal": r.final[project.champion] == live_v1,
        "lifecycle_decisions": [f"{e['time']} {e['action']} {e['model']}: {e['reason']}"
                                for e in r.lifecycle_events if e["kind"] == "lifecycle"],
        "drift_alarms": sum(1 for e in r.lifecycle_events if e["kind"] == "drift"),
        "events_per_s": r.events_per_s, "bare_events_per_s": r.bare["events_per_s"] if r.bare else None,
    }


def print_summary(s: dict[str, Any]) -> None:
    named = s.get("spec_names", {})  # a project's models by their spec names
    t = Table(title=f"streamlearn demo: {s['dataset']} with {named.get(s['model_spec'], s['model_spec'])} "
                    f"on {s['feature_view']}")
    t.add_column("", style="bold")
    t.add_column("value", justify="right")
    c = s["counters"]
    rows = [
        ("events produced", f"{s['events']:,}"),
        ("predictions (distinct events)", f"{s['predictions']:,}"),
        ("labels sent / learned", f"{s['labels_sent']:,} / {c.get('labels_learned', 0):,}"),
        ("labels joined before their event", f"{c.get('labels_joined_late', 0):,}"),
        ("duplicate labels ignored", f"{c.get('labels_duplicate', 0):,}"),
        # the malformed messages the demo mixes in on purpose (--bad) go there: say so
        ("dead-lettered messages", f"{s['deadlettered']:,}" + (f" ({s['malformed_sent']} malformed on purpose, --bad)"
                                                              if s.get("malformed_sent") else "")),
    ]
    rows += [(f"online {k} (progressive)", f"{v:.4f}") for k, v in s["metrics"].items()]
    rows += [
        ("throughput", f"{s['events_per_s']:,.0f} events/s"),
        ("latency p50 / p99 (event -> prediction)", f"{s['latency_ms_p50']:.1f} / {s['latency_ms_p99']:.1f} ms"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if s.get("models"):
        mt = Table(title="models (champion serves; shadows learn the same labels)")
        metric_names = list(s["models"][0]["metrics"])  # the task's metrics (binary, multiclass, regression)
        for col in ("version", "spec", "stage", "labels learned", *metric_names):
            mt.add_column(col)
        for m in s["models"]:
            met = m["metrics"]
            # a challenger started late may not have scored any labeled event yet: no metrics
            scored = m.get("scored_labels", m["labels_learned"]) > 0
            mt.add_row(str(m["version"]), named.get(m["spec"], m["spec"]), m["stage"], f"{m['labels_learned']:,}",
                       *(f"{met.get(k, float('nan')):.4f}" if scored else "n/a" for k in metric_names))
        console.print(mt)
    for d in s.get("decisions", []):
        console.print(f"  lifecycle: v{d['version']} -> {d['stage']}: {d['reason']}")
    rp = s.get("replay")
    if rp:
        rt = Table(title="replay: the archive of this run, backtested in-process through the same code")
        rt.add_column("", style="bold")
        rt.add_column("value", justify="right")
        rt.add_row("records archived", f"{rp['archived_records']:,}")
        rt.add_row("v1 predictions reproduced exactly",
                   f"{rp['identical_predictions_v1']:,} / {rp['live_predictions_v1']:,}")
        rt.add_row("final metrics equal the worker's", "yes" if rp["metrics_equal"] else "NO")
        rt.add_row("order divergences", f"{rp['divergences']:,}")
        rt.add_row("lifecycle decisions / drift alarms", f"{len(rp['lifecycle_decisions'])} / {rp['drift_alarms']}")
        speed = f"{rp['events_per_s']:,.0f} events/s"
        if rp.get("bare_events_per_s"):
            speed += f" (bare River loop {rp['bare_events_per_s']:,.0f})"
        rt.add_row("backtest speed", speed)
        console.print(rt)
        files = "metrics.png, metrics.csv, predictions.jsonl" if s.get("keep", True) else "metrics.png, metrics.csv"
        console.print(f"  backtest outputs ({files}): {rp['out']}")
    comp = s.get("feature_store_comparison")
    if comp:
        ct = Table(title="same stream, in-process: with vs without per-entity features")
        ct.add_column("feature view")
        for m in next(iter(comp.values())):
            ct.add_column(m, justify="right")
        for view, ms in comp.items():
            ct.add_row(view, *[f"{v:.4f}" for v in ms.values()])
        console.print(ct)
