"""Running a backtest: the archive through the online loop, in-process, as fast as the CPU allows.

``streamlearn backtest --archive DIR --model SPEC [--model SPEC2 ...]`` reads the archive,
builds the step order (:mod:`streamlearn.replay.backtest.schedule`: *recorded* when the archive
holds the live run's predictions and no ``--from`` is given, else *arrival*), and runs the
steps through the :class:`~streamlearn.streams.loop.OnlineLoop` the worker runs, on a
:class:`~streamlearn.featurestore.backend.MemoryBackend`
(``replay.inprocess.memory_models_loop``): the first model is the champion, the others
shadow challengers, every model scores every event and learns every label. Writes to ``--out``:

* ``predictions.jsonl`` -- every prediction of every model, in processing order. The same
  archive, range and specs give byte-identical files (no wall clock in it);
* ``metrics.json`` / ``metrics.csv`` -- metrics over time, models side by side: cumulative
  progressive metrics (what the worker reports) and the same metrics over each window;
* ``metrics.png`` -- the windowed metrics per model over event time, lifecycle decisions
  as vertical lines;
* ``summary.json`` -- mode, counts, archive problems, divergences from the record, timing.

It also runs a bare River loop on the same steps (the same feature view and a fresh
model, ``predict_proba_one``/``learn_one`` in a plain loop) and prints both throughputs.

Lifecycle (on unless ``--no-lifecycle``): the loop carries the worker's
:class:`~streamlearn.models.governance.lifecycle.Lifecycle`, configured from the same settings, on an
event-time clock. The drift alarms, challenger starts, canaries, promotions and rollbacks it
takes are the rows' ``lifecycle_events`` -- the decisions the live system would have taken
on this history. Decisions are evaluated after each step (as the worker does after each
batch), so their exact label position can differ from a live run's by a batch.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from river import base

from streamlearn.featurestore.definitions import FeatureView, as_view
from streamlearn.featurestore.errors import FeatureError
from streamlearn.formats import iso
from streamlearn.models.estimators.learner import Learner
from streamlearn.models.estimators.spec import build_model, is_classifier
from streamlearn.models.governance.lifecycle import LifecycleConfig
from streamlearn.models.task import Task, infer_task
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.backtest.inprocess import memory_models_loop, older_objects_frozen
from streamlearn.replay.backtest.plan import Plan, make_plan
from streamlearn.replay.backtest.report import write_outputs
from streamlearn.replay.backtest.schedule import Step
from streamlearn.schemas.records import Prediction
from streamlearn.streams.loop import OnlineLoop

log = logging.getLogger(__name__)


class _NullClassifier(base.Classifier):
    def __init__(self, multiclass: bool = False) -> None:
        self.multiclass = multiclass

    @property
    def _multiclass(self) -> bool:  # River's flag: the estimator handles more than two classes
        return self.multiclass

    def learn_one(self, x, y):  # noqa: ANN001 - River signature
        pass

    def predict_proba_one(self, x):  # noqa: ANN001
        return {}


class _NullRegressor(base.Regressor):
    def learn_one(self, x, y):  # noqa: ANN001
        pass

    def predict_one(self, x):  # noqa: ANN001
        return 0.0


def _window_learner(learner: Learner) -> Learner:
    """A learner without a model: the Learner's own metric code over one window of labels."""
    null = _NullClassifier(learner.task.kind == "multiclass") if learner.classifier else _NullRegressor()
    return Learner(learner.name, learner.spec, version=learner.version, model=null, task=learner.task)


def _served_for(rec: dict[str, Any], version: int) -> dict[str, Any] | None:
    # the served record keeps each model's prediction under "m" (ModelSet); older: flat.
    # None: the model did not exist when the event was served (not scored against it)
    return rec["m"].get(str(version)) if "m" in rec else rec


@dataclass
class ModelRun:
    """One model version in the backtest's loop: its learner (kept after a retirement, so
    its metrics stay reportable) and the metrics of the current window."""

    label: str
    version: int
    learner: Learner
    window: Learner = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.window = _window_learner(self.learner)
        self.window_classes: set[Any] = set()
        self.classes: set[Any] = set()

    def cumulative(self) -> dict[str, float | None]:
        self.classes |= self.window_classes
        return _defined(self.learner.metric_values(), self.classes, self.learner.labels_learned)

    def take_window(self) -> dict[str, float | None]:
        out: dict[str, Any] = _defined(self.window.metric_values(), self.window_classes, self.window.labels_learned)
        out["labels"] = self.window.labels_learned
        self.window = _window_learner(self.learner)
        self.window_classes = set()
        return out


class _Runs:
    """The loop's model versions by label, including challengers the lifecycle starts."""

    def __init__(self, loop: OnlineLoop, labels: list[str]) -> None:
        self.loop = loop
        self.by_version: dict[int, ModelRun] = {}
        for (v, learner), label in zip(sorted(loop.models.learners.items()), labels):
            self.by_version[v] = ModelRun(label, v, learner)
        loop.on_learn = self._on_learn

    @property
    def reference(self) -> ModelRun:
        return self.by_version[1]

    def runs(self) -> list[ModelRun]:
        return [self.by_version[v] for v in sorted(self.by_version)]

    def label(self, version: int) -> str:
        run = self.by_version.get(version)
        return run.label if run is not None else f"v{version}"

    def track(self) -> None:
        for v, learner in self.loop.models.learners.items():
            if v not in self.by_version:  # started by the lifecycle (drift) mid-run
                self.by_version[v] = ModelRun(f"v{v}:{learner.spec}", v, learner)

    def _on_learn(self, eid: str, y: Any, rec: dict[str, Any]) -> None:
        # per label: look up, and track new versions only on a miss (they appear between steps)
        for v in self.loop.models.learners:
            run = self.by_version.get(v)
            if run is None:
                self.track()
                run = self.by_version[v]
            run.window.learn(rec["x"], y, _served_for(rec, v))
            run.window_classes.add(y)


def _defined(values: dict[str, float], classes: set[Any], labels: int = 1) -> dict[str, float | None]:
    """Metrics as numbers, None where undefined (no label yet; ROC AUC needs both classes;
    River says 0 for both)."""
    if labels == 0:
        return dict.fromkeys(values)
    out = {k: _finite(v) for k, v in values.items()}
    if "roc_auc" in out and len(classes) < 2:
        out["roc_auc"] = None
    return out


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _labels(specs: list[str]) -> list[str]:
    seen: Counter = Counter()
    out = []
    for s in specs:
        seen[s] += 1
        out.append(s if seen[s] == 1 else f"{s}#{seen[s]}")
    return out


def _prediction_line(label: str, p: Prediction) -> str:
    return json.dumps({"model": label, "event_id": p.event_id, "entity": p.entity, "event_time": p.event_time,
                       "labels_learned": p.labels_learned, "score": p.score, "predicted": p.predicted,
                       "probabilities": p.probabilities}, sort_keys=True, separators=(",", ":"))


@dataclass
class BacktestResult:
    plan: Plan
    rows: list[dict[str, Any]]
    final: dict[str, dict[str, float | None]]
    counters: dict[str, dict[str, int]]
    divergences: list[str]
    loop_seconds: float
    read_seconds: float
    lifecycle_events: list[dict[str, Any]]
    lifecycle: bool = False
    stages: dict[str, str] = field(default_factory=dict)  # label -> stage at the end
    bare: dict[str, Any] | None = None
    out: Path | None = None

    @property
    def events_per_s(self) -> float:
        return self.plan.n_events / self.loop_seconds if self.loop_seconds > 0 else float("inf")

    def metrics_frame(self, kind: str = "cumulative") -> Any:
        """The metrics over event time as a pandas DataFrame: one row per report row and
        model, columns ``time``, ``events``, ``labels``, ``model``, ``stage`` and each metric
        (``kind``: "cumulative" progressive metrics, or "window" since the previous row)."""
        import pandas as pd

        records = []
        for r in self.rows:
            for label, m in r["models"].items():
                records.append({"time": pd.to_datetime(r["event_time"], unit="ms", utc=True), "events": r["events"],
                                "labels": r["labels"], "model": label, "stage": m["stage"],
                                **{k: v for k, v in m[kind].items() if k != "labels"}})
        return pd.DataFrame.from_records(records)


class _EventClock:
    """The lifecycle's clock in a backtest: event time of the newest scored event, so rate
    limits and cooldowns are measured as production would have measured them, and two runs
    decide identically (no wall clock)."""

    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> float:
        return self.ms / 1000


async def _execute(plan: Plan, loop: OnlineLoop, runs: _Runs, clock: _EventClock, sink: io.TextIOBase | None,
                   every: int, on_progress: Callable[[int], None]
                   ) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]], float]:
    rows: list[dict[str, Any]] = []
    divergences: list[str] = []
    lifecycle: list[dict[str, Any]] = []
    pending_events: list[dict[str, Any]] = []  # lifecycle events since the last row
    scored = last_row_at = 0
    last_time: int | None = None
    elapsed = 0.0
    ref = runs.reference.learner
    with_lifecycle = loop.lifecycle is not None

    def row() -> None:
        nonlocal last_row_at, pending_events
        r: dict[str, Any] = {"row": len(rows), "events": scored, "event_time": last_time,
                             "time": iso(last_time), "labels": ref.labels_learned, "models": {}}
        for run in runs.runs():
            r["models"][run.label] = {
                "stage": loop.models.stage(run.version),
                "cumulative": run.cumulative(),
                "window": run.take_window(),
            }
        if with_lifecycle:
            r["lifecycle_events"], pending_events = pending_events, []
        rows.append(r)
        last_row_at = scored

    def drain_outbox() -> None:
        for subject, rec in loop.outbox.drain():
            if subject not in ("lifecycle", "drift"):
                continue
            ev = {"kind": subject, "event_time": clock.ms, "time": iso(clock.ms),
                  "model": runs.label(rec["version"]), **rec}
            lifecycle.append(ev)
            pending_events.append(ev)

    due = False  # a row is due: taken before the next event is scored, so it holds the labels
    # that arrived after its last event (the last one: after every label, equal to the final metrics)
    for step in plan.steps:
        if step.kind == "score":
            if due:
                row()
                due = False
            clock.ms = max(clock.ms, step.items[-1]["event_time"])
        t0 = time.perf_counter()
        if step.kind == "score":
            preds = await loop.score_batch(step.items)
        else:
            await loop.learn_batch(step.items)
            preds = []
        elapsed += time.perf_counter() - t0
        runs.track()
        if loop.outbox:
            drain_outbox()
        if step.expect is not None and ref.labels_learned != step.expect:
            divergences.append(f"after a {step.kind} step of {len(step.items)} ending at "
                               f"{step.items[-1]['event_id']}: loop learned {ref.labels_learned}, "
                               f"record implies {step.expect}")
        if step.kind == "score":
            if sink is not None:
                by_version = [{q.model_version: q for q in (p, *p.shadows)} for p in preds]
                for run in runs.runs():
                    sink.write("".join(_prediction_line(run.label, got[run.version]) + "\n"
                                       for got in by_version if run.version in got))
            scored += len(step.items)
            last_time = step.items[-1]["event_time"]
            on_progress(len(step.items))
            due = scored - last_row_at >= every
    if scored > last_row_at or not rows:
        row()
    return rows, divergences, lifecycle, elapsed


def bare_river_loop(steps: list[Step], view_name: str | FeatureView, spec: str) -> tuple[float, list[float]]:
    """The same steps with the feature view and a River model in a plain loop: the speed
    reference. Same join rules, so its scores equal the backtest's first model's (binary)."""
    view, model = as_view(view_name), build_model(spec)
    classifier = is_classifier(model)
    states: dict[str, Any] = {}
    served: dict[str, dict[str, float]] = {}
    learned: set[str] = set()
    pending: dict[str, Any] = {}
    scores: list[float] = []
    t0 = time.perf_counter()
    for step in steps:
        if step.kind == "score":
            joined = []
            for ev in step.items:
                eid = ev["event_id"]
                x = served.get(eid)
                if x is None:
                    try:
                        x, states[ev["entity"]] = view.compute(ev, states.get(ev["entity"]))
                    except FeatureError:  # dead-lettered live: never scored
                        continue
                    served[eid] = x
                    if eid in pending:
                        joined.append(eid)
                if classifier:
                    proba = model.predict_proba_one(x)
                    scores.append(float(proba.get(True, proba.get(1, max(proba.values())))) if proba else 0.0)
                else:
                    scores.append(float(model.predict_one(x) or 0.0))
            for eid in joined:
                model.learn_one(served[eid], pending.pop(eid))
                learned.add(eid)
        else:
            seen: set[str] = set()
            for fb in step.items:
                eid = fb["event_id"]
                if eid in learned or eid in seen:
                    pass
                elif eid not in served:
                    pending[eid] = fb["label"]
                else:
                    model.learn_one(served[eid], fb["label"])
                    learned.add(eid)
                seen.add(eid)
    return time.perf_counter() - t0, scores


def run_backtest(
    archive: Archive | str | Path,
    specs: list[str],
    *,
    view: str | FeatureView = "entity_v1",
    start: int | None = None,
    end: int | None = None,
    join: str = "auto",
    reference: tuple[str, int] | None = None,
    out: Path | None = None,
    rows: int = 50,
    progress: bool = False,
    bare: bool = True,
    lifecycle: LifecycleConfig | None = None,
    task: Any = None,
) -> BacktestResult:
    """Replay ``specs`` side by side (``specs[0]`` champion, the rest shadow challengers, as
    the worker runs them). With ``lifecycle``, the gate, canary and drift detectors act as
    they would have live, on event time; their decisions are reported with the rows."""
    if not specs:
        raise ValueError("give at least one --model")
    for s in specs:
        build_model(s)  # unknown spec: a clear error before any work
    view = as_view(view)
    if task is None and lifecycle is not None:
        task = lifecycle.task
    t0 = time.perf_counter()
    if not isinstance(archive, Archive):
        archive = Archive.open(archive)
    # labels are checked with the champion's task, as the worker checks them (what it refused is skipped)
    label_task = Task.parse(task) if task is not None else infer_task(build_model(specs[0]))
    plan = make_plan(archive, start, end, join, reference, task=label_task)
    if plan.n_events == 0:
        raise ValueError(f"no events to replay in the archive between {iso(start) or 'its start'} and "
                         f"{iso(end) or 'its end'}" + (f" ({len(archive.problems)} archive problem(s))"
                                                       if archive.problems else ""))
    read_s = time.perf_counter() - t0
    clock = _EventClock()
    loop = memory_models_loop(view, specs, lifecycle=lifecycle, clock=clock, task=task)
    runs = _Runs(loop, _labels(specs))
    every = max(1, math.ceil(plan.n_events / max(1, rows)))
    sink: io.TextIOBase | None = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        sink = open(out / "predictions.jsonl", "w", encoding="utf-8", newline="\n")
    bar, update = _progress(progress, plan.n_events)
    try:
        with older_objects_frozen():
            rows_out, divergences, events, loop_s = asyncio.run(_execute(plan, loop, runs, clock, sink, every,
                                                                         update))
    finally:
        if bar is not None:
            bar.stop()
        if sink is not None:
            sink.close()
    if plan.schedule is not None:
        divergences = [str(d) for d in plan.schedule.divergences] + divergences
    counters = loop.counters.as_dict()
    result = BacktestResult(
        plan=plan, rows=rows_out,
        # final: exactly what the worker reports (its status metrics), for comparison
        final={r.label: {k: _finite(v) for k, v in r.learner.metric_values().items()} for r in runs.runs()},
        counters={r.label: {**counters, "labels_learned": r.learner.labels_learned} for r in runs.runs()},
        divergences=divergences, loop_seconds=loop_s, read_seconds=read_s, lifecycle_events=events,
        lifecycle=lifecycle is not None, stages={r.label: loop.models.stage(r.version) for r in runs.runs()},
    )
    if bare:
        bare_s, bare_scores = bare_river_loop(plan.steps, view, specs[0])
        first = _first_model_scores(out) if out is not None else None
        result.bare = {"spec": specs[0], "seconds": bare_s,
                       "events_per_s": plan.n_events / bare_s if bare_s > 0 else float("inf"),
                       "scores_identical": (first == bare_scores) if first is not None else None}
    if out is not None:
        result.out = out
        write_outputs(result, archive, specs, view, start, end, out)
    return result


def _first_model_scores(out: Path) -> list[float]:
    label = None
    scores = []
    with open(out / "predictions.jsonl", encoding="utf-8") as fo:
        for line in fo:
            rec = json.loads(line)
            label = label or rec["model"]
            if rec["model"] == label:
                scores.append(rec["score"])
    return scores


def _progress(enabled: bool, total: int):  # noqa: ANN202 - (bar, callback)
    if not enabled:
        return None, lambda n: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                   TimeElapsedColumn(), transient=False)
    task = bar.add_task("backtest", total=total)
    bar.start()
    return bar, lambda n: bar.advance(task, n)
