"""CLI commands of the replay package, registered on the main ``streamlearn`` app:

``archive run``, ``replay inspect``, ``replay republish``, ``backtest``, ``retrain``.
Heavy imports happen inside the commands so ``streamlearn --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import typer

archive_app = typer.Typer(no_args_is_help=True, help="The replay archive (events, feedback, predictions, shadow).")
replay_app = typer.Typer(no_args_is_help=True, help="Look into and replay the archive.")

ARCHIVE_OPT = typer.Option(None, "--archive", help="archive directory (default: settings.archive_dir)")


def _archive_dir(archive: Path | None) -> str:
    from streamlearn.settings import get_settings

    return str(archive) if archive is not None else get_settings().archive_dir


def _fail(msg: str) -> NoReturn:
    from streamlearn.cli.errors import CliError

    raise CliError(msg, code=2)  # printed as one `streamlearn: ...` line


def _open(archive: Path | None):  # noqa: ANN202 - Archive
    from streamlearn.replay.archive.reader import Archive
    from streamlearn.schemas.validation import Limits
    from streamlearn.settings import get_settings

    location = _archive_dir(archive)
    if not Path(location).is_dir():
        _fail(f"no archive at {location}")
    return Archive.open(location, limits=Limits.from_settings(get_settings()))


def _open_own(archive: Path | None):  # noqa: ANN202 - Archive
    """The archive, read for the topics of the settings in use only: several deployments can
    archive into one directory (the default ``streamlearn-archive``), and a job of one must not
    read another's records. One line names the topics left unread; none of ours there: exit 2."""
    from streamlearn.replay.archive.reader import read_own_topics
    from streamlearn.settings import get_settings

    arch = _open(archive)
    try:
        read_own_topics(arch, get_settings(), _archive_dir(archive), say=lambda m: typer.echo(f"note: {m}", err=True))
    except ValueError as exc:
        _fail(str(exc))
    return arch


@archive_app.command("run")
def archive_run(
    archive: Path | None = ARCHIVE_OPT,
    exit_when_idle: float | None = typer.Option(
        None, help="exit once caught up with every partition and idle this many seconds (batch use)"),
    loglevel: str = typer.Option("info"),
) -> None:
    """Run the archiver: copy events, feedback, predictions and shadow into Avro files (Ctrl-C/SIGTERM stops)."""
    from streamlearn.replay.archive.archiver import Archiver
    from streamlearn.replay.archive.storage import open_storage
    from streamlearn.settings import get_settings

    logging.basicConfig(level=loglevel.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    s = get_settings()
    archiver = Archiver(s, open_storage(_archive_dir(archive)))
    stats = archiver.run(exit_when_idle_s=exit_when_idle, handle_signals=True)
    typer.echo(json.dumps({"records": stats.records, "duplicates_skipped": stats.duplicates_skipped,
                           "files": stats.files, "errors": stats.errors[:5]}))


@replay_app.command("inspect")
def replay_inspect(
    archive: Path | None = ARCHIVE_OPT,
    verify: bool = typer.Option(False, help="read every file and check it against its manifest"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """What the archive holds: time ranges, counts and offset gaps per topic/partition."""
    from streamlearn.replay.archive.inspect import format_summary, summarize

    s = summarize(_open(archive), verify=verify)
    typer.echo(json.dumps(s, indent=1) if as_json else format_summary(s))


REPUBLISH_KINDS = {"event": "event", "events": "event", "feedback": "feedback", "feedbacks": "feedback",
                   "label": "feedback", "labels": "feedback"}


@replay_app.command("republish")
def replay_republish(
    topic: str = typer.Option(..., "--topic", help="target topic (was --to TOPIC: deprecated spelling)"),
    archive: Path | None = ARCHIVE_OPT,
    speed: str = typer.Option("max", help="10x (original timing, 10 times faster), 1x, or max"),
    kind: str = typer.Option("event", help="events or feedback (singular or plural)"),
    start: str | None = typer.Option(None, "--from", help="ISO-8601 or epoch ms (record time)"),
    end: str | None = typer.Option(None, "--to", help="ISO-8601 or epoch ms, exclusive (--to-time: deprecated)"),
    progress: bool = typer.Option(True, help="show a progress bar (on stderr)"),
) -> None:
    """Push archived messages back to a topic with their original keys, in per-key order."""
    from streamlearn.formats import parse_time
    from streamlearn.replay.archive.republish import parse_speed, republish
    from streamlearn.settings import get_settings

    if kind.lower() not in REPUBLISH_KINDS:
        _fail(f"--kind must be events or feedback, not {kind!r}")
    kind = REPUBLISH_KINDS[kind.lower()]
    try:
        factor, t0, t1 = parse_speed(speed), parse_time(start), parse_time(end)
    except ValueError as exc:
        _fail(str(exc))
    arch = _open_own(archive)
    total = sum(m.record_count for m in arch.files(kind)) if start is None and end is None else None
    with _progress(progress, f"{kind} → {topic}", total) as advance:
        stats = republish(arch, get_settings(), topic, kind=kind, speed=factor, start=t0, end=t1,
                          on_sent=advance)
    typer.echo(f"republished {stats.sent} {kind} message(s) to {topic} in {stats.seconds:.2f}s "
               f"(source span {stats.source_span_ms / 1000:.1f}s)")


@contextlib.contextmanager
def _progress(show: bool, what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (``advance(n)``), or a no-op."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def backtest(
    archive: Path | None = ARCHIVE_OPT,
    model: list[str] | None = typer.Option(
        None, "--spec", help="model spec (a project's spec name too); repeat to compare side by side "
                             "(default: the champion; --model: deprecated)"),
    start: str | None = typer.Option(None, "--from", help="ISO-8601 or epoch ms (event time)"),
    end: str | None = typer.Option(None, "--to", help="ISO-8601 or epoch ms, exclusive"),
    view: str | None = typer.Option(None, help="feature view (default: settings.feature_view)"),
    out: Path = typer.Option(Path("backtest-out"), help="output directory"),
    join: str = typer.Option("auto", help="auto, recorded (reproduce the live run) or arrival"),
    rows: int = typer.Option(50, help="rows in the metrics-over-time table"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    lifecycle: bool | None = typer.Option(
        None, help="let the gate, canary and drift detectors act as live (default: settings.lifecycle_auto)"),
) -> None:
    """Replay the archive through the online loop in-process; metrics over time, PNG, predictions."""
    from streamlearn.formats import parse_time
    from streamlearn.models.governance.lifecycle import LifecycleConfig
    from streamlearn.project import project_for
    from streamlearn.replay.backtest.report import format_report
    from streamlearn.replay.backtest.runner import run_backtest
    from streamlearn.settings import get_settings

    s = get_settings()
    project = project_for(s)
    use_lifecycle = s.lifecycle_auto if lifecycle is None else lifecycle
    arch = _open_own(archive)
    try:
        specs = [project.resolve_spec(m) for m in model] if model else [project.champion]
        config = LifecycleConfig.from_settings(s, task=project.task, challenger_spec=project.challenger)
        result = run_backtest(arch, specs, view=view or project.view, start=parse_time(start),
                              end=parse_time(end), join=join, out=out, rows=rows, progress=progress,
                              lifecycle=config if use_lifecycle else None, task=project.task)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(format_report(result, reproduced_predictions(arch, result)))


def reproduced_predictions(archive, result) -> tuple[int, int] | None:  # noqa: ANN001 - Archive, BacktestResult
    """(live predictions of the reference model that the backtest's first model reproduced
    exactly -- same score after the same number of labels --, live predictions compared), or
    None when the run is not a reproduction (no recorded predictions, or no output written)."""
    ref = result.plan.reference
    if ref is None or result.plan.schedule is None or result.out is None:
        return None
    live: dict[str, tuple[int, float]] = {}
    for tp in archive.partitions("prediction"):
        for _, p in archive.decoded(archive.partition_records("prediction", *tp)):
            if (p["model_name"], p["model_version"]) == tuple(ref):
                live.setdefault(p["event_id"], (p["labels_learned"], p["score"]))
    first = next(iter(result.final))
    replayed: dict[str, tuple[int, float]] = {}
    with open(result.out / "predictions.jsonl", encoding="utf-8") as fo:
        for line in fo:
            p = json.loads(line)
            if p["model"] == first and p["event_id"] in live:
                replayed.setdefault(p["event_id"], (p["labels_learned"], p["score"]))
    return sum(1 for eid, v in live.items() if replayed.get(eid) == v), len(live)


def retrain(
    archive: Path | None = ARCHIVE_OPT,
    estimator: str = typer.Option("sgd", help="sgd (out-of-core, chunked) or hgb (in memory)"),
    train_from: str | None = typer.Option(
        None, "--from", help="start of the training window, event time (default: archive start; --train-from: "
              "deprecated)"),
    cutoff: str | None = typer.Option(
        None, help="end of training = start of the held-out window, event time (default: 80%)"),
    eval_to: str | None = typer.Option(
        None, "--to", help="end of the held-out window, event time (default: archive end; --eval-to: deprecated)"),
    view: str | None = typer.Option(None, help="feature view (default: settings.feature_view)"),
    chunk_size: int = typer.Option(5000, help="rows per out-of-core chunk"),
    epochs: int = typer.Option(3, help="passes over the training chunks (sgd)"),
    name: str = typer.Option("batch", help="model id prefix"),
    threads: int | None = typer.Option(None, help="threads while fitting (default: all cores)"),
    out: Path = typer.Option(Path("retrain-out"), help="output directory (artifact + lineage)"),
    register: str | None = typer.Option(
        None, help="register as a shadow challenger of this model name in the model registry (settings.registry_url)"),
) -> None:
    """Fit a scikit-learn model on a point-in-time training set from the archive; sign it with lineage."""
    from streamlearn.formats import parse_time
    from streamlearn.project import project_for
    from streamlearn.replay.retrain.retrainer import RetrainConfig, format_result
    from streamlearn.replay.retrain.retrainer import retrain as run_retrain
    from streamlearn.settings import get_settings

    s = get_settings()
    try:
        project = project_for(s)
        project_view = None if view else project.view
        cfg = RetrainConfig(view=view or project_view.name, estimator=estimator, train_from=parse_time(train_from),
                            cutoff=parse_time(cutoff), eval_to=parse_time(eval_to), chunk_size=chunk_size,
                            epochs=epochs, name=name, threads=threads)
        registry = None
        if register:
            from streamlearn.models.registry.versions import open_registry

            registry = open_registry(s)
        # the project's task: labels the worker's check refuses (dead-lettered live) are skipped
        result = run_retrain(_open_own(archive), cfg, out, s.artifact_key.get_secret_value().encode(),
                             registry=registry, register_as=register, view=project_view, task=project.task)
    except ValueError as exc:  # RegistryError is a ValueError too: bad name, unknown parent
        _fail(str(exc))
    typer.echo(format_result(result))


def register(app: typer.Typer) -> None:
    app.add_typer(archive_app, name="archive")
    app.add_typer(replay_app, name="replay")
    app.command("backtest")(backtest)
    app.command("retrain")(retrain)
