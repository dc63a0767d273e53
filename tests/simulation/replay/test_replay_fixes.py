"""What a newcomer's walk through docs/replay.md found (pure, no broker): metrics over time end
after the last label; a job reads only the topics of the settings in use when several
deployments archive into one directory; labels the worker refuses are skipped, as live."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamlearn import datasets
from streamlearn.models.task import Task
from streamlearn.replay.archive.archiver import archived_topics
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.archive.republish import merged_by_timestamp
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import archive_items, records_for
from streamlearn.replay.archive.writer import write_records
from streamlearn.replay.backtest.runner import run_backtest
from streamlearn.replay.retrain.retrainer import RetrainConfig, retrain
from streamlearn.settings import Settings
from tests.helpers import feedback_for, make_events

OTHER = {"event": "other.events.v1", "feedback": "other.feedback.v1"}


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    return subprocess.run([sys.executable, "-m", "streamlearn", *args], capture_output=True, text=True,
                          timeout=180, env={**base, **(env or {})}, cwd=cwd)


# ---------------------------------------------------------------- 1. metrics over time
def _labels_after_the_last_event(tmp_path: Path, n: int) -> Path:
    """Every label arrives after the last event (a short stream, or the tail of any stream)."""
    events = make_events(n, seed=3)
    stream = [("event", e) for e in events] + [("feedback", feedback_for(e)) for e in events]
    write_records(LocalStorage(tmp_path / "a"), records_for(stream))
    return tmp_path / "a"


@pytest.mark.parametrize("n", [30, 600])
def test_metrics_over_time_end_with_the_final_metrics_after_the_last_label(tmp_path, n):
    r = run_backtest(_labels_after_the_last_event(tmp_path, n), ["logreg", "hat"], rows=5, bare=False)
    last = r.rows[-1]
    for label in ("logreg", "hat"):
        assert r.counters[label]["labels_learned"] == n
        assert last["models"][label]["cumulative"] == r.final[label], label
        assert sum(row["models"][label]["window"]["labels"] for row in r.rows) == n
    assert last["labels"] == n and last["events"] == n
    frame = r.metrics_frame()
    for label in ("logreg", "hat"):
        tail = frame[frame["model"] == label].iloc[-1]
        assert tail["labels"] == n
        assert {k: tail[k] for k in r.final[label]} == r.final[label]


def test_rows_hold_the_labels_that_arrived_before_the_next_event(tmp_path):
    """A row is taken just before the next event is scored: the labels in between count in it,
    so the frame has the same number of rows and the last is the final state."""
    items = datasets.cards(n=3000, seed=8)
    archive_items(LocalStorage(tmp_path / "a"), items, partitions=2)
    r = run_backtest(tmp_path / "a", ["logreg"], rows=10, bare=False)
    assert len(r.rows) == 10 and r.rows[-1]["events"] == 3000
    assert r.rows[-1]["models"]["logreg"]["cumulative"] == r.final["logreg"]
    labeled = sum(1 for it in items if it.label is not None)
    assert r.rows[-1]["labels"] == r.counters["logreg"]["labels_learned"] == labeled


# ---------------------------------------------------------------- 2. own topics only
def _two_deployments(tmp_path: Path) -> tuple[Path, int, int]:
    """Default settings' topics (cards, 400 events) and another deployment's (60 events)."""
    root = tmp_path / "shared"
    archive_items(LocalStorage(root), datasets.cards(n=400, seed=4, fraud_rate=0.2, label_delay_s=5))
    other = make_events(60, seed=5)
    write_records(LocalStorage(root), records_for([("event", e) for e in other]
                                                  + [("feedback", feedback_for(e)) for e in other], topics=OTHER))
    return root, 400, 60


def test_only_topics_reads_the_settings_topics_and_names_the_others(tmp_path):
    root, own, _ = _two_deployments(tmp_path)
    archive = Archive.open(root)
    assert len(archive.partitions("feedback")) == 2  # two topics, not two partitions
    others = archive.only_topics(archived_topics(Settings()))
    assert others == [("event", OTHER["event"]), ("feedback", OTHER["feedback"])]
    assert archive.partitions("feedback") == [("streamlearn.feedback.v1", 0)]
    assert sum(1 for _ in merged_by_timestamp(archive, "event")) == own  # what republish sends


def test_backtest_and_retrain_commands_read_only_the_settings_topics(tmp_path):
    root, own, _ = _two_deployments(tmp_path)
    note = f"note: archive also holds topics {OTHER['event']}, {OTHER['feedback']} of other settings: not read"
    bt = _run("backtest", "--archive", str(root), "--spec", "logreg", "--out", str(tmp_path / "bt"),
              "--no-progress", "--no-lifecycle", cwd=tmp_path)
    assert bt.returncode == 0, bt.stdout + bt.stderr
    assert f"backtest (arrival): {own} events" in bt.stdout and note in bt.stderr.splitlines()
    rt = _run("retrain", "--archive", str(root), "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert rt.returncode == 0, rt.stdout + rt.stderr
    assert note in rt.stderr.splitlines()
    lineage = json.loads(next((tmp_path / "m").glob("*/lineage.json")).read_text())
    assert {f["topic"] for f in lineage["archive"]["files"]} == {"streamlearn.events.v1", "streamlearn.feedback.v1"}


def test_an_archive_without_the_settings_topics_is_an_error_naming_what_it_holds(tmp_path):
    root, _, _ = _two_deployments(tmp_path)
    env = {"STREAMLEARN_TOPIC_EVENTS": "mine.events", "STREAMLEARN_TOPIC_FEEDBACK": "mine.feedback",
           "STREAMLEARN_TOPIC_PREDICTIONS": "mine.predictions", "STREAMLEARN_TOPIC_SHADOW": "mine.shadow"}
    for args in (["backtest", "--no-progress", "--out", str(tmp_path / "bt")],
                 ["retrain", "--out", str(tmp_path / "m")],
                 ["replay", "republish", "--topic", "mine.events", "--no-progress"]):
        proc = _run(*args, "--archive", str(root), env=env, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        line, = proc.stderr.strip().splitlines()
        assert line.startswith("streamlearn: the archive at ") and "mine.events" in line, line
        assert f"it holds {OTHER['event']}, {OTHER['feedback']}, streamlearn.events.v1" in line, line


# ---------------------------------------------------------------- 3. labels the worker refuses
def _with_a_refused_label(tmp_path: Path) -> tuple[Path, Path]:
    """The same stream twice: as produced (one 12.5 label on a binary task, which the worker
    dead-letters: the feedback topic still holds it) and as the worker learned it."""
    items = datasets.cards(n=1500, seed=9, fraud_rate=0.1)
    unlabeled = next(i for i, it in enumerate(items) if it.label is None and 100 < i < 1000)
    stream = list(datasets.arrival_order(items))
    bad = {"event_id": items[unlabeled].event["event_id"], "label": 12.5,
           "label_time": items[unlabeled].event["event_time"] + 1}
    at = next(i for i, (k, r) in enumerate(stream) if k == "event" and r["event_time"] > bad["label_time"])
    write_records(LocalStorage(tmp_path / "sent"), records_for(stream[:at] + [("feedback", bad)] + stream[at:]))
    write_records(LocalStorage(tmp_path / "learned"), records_for(stream))
    return tmp_path / "sent", tmp_path / "learned"


def test_retrain_skips_labels_the_worker_refuses_and_counts_them(tmp_path):
    sent, learned = _with_a_refused_label(tmp_path)
    proc = _run("retrain", "--archive", str(sent), "--out", str(tmp_path / "m"), "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # was: exit 2, sklearn's "Unknown label type"
    assert "skipped 1 label(s) the worker refuses (dead-lettered live): binary label must be a bool or 0/1" \
        in proc.stdout and "12.5" in proc.stdout
    cfg = RetrainConfig(epochs=1, threads=1)
    got = retrain(sent, cfg, None, b"k" * 32, task=Task("binary"))
    ref = retrain(learned, cfg, None, b"k" * 32, task=Task("binary"))
    assert got.lineage["data"]["labels_refused"] == 1
    assert got.metrics == ref.metrics and got.lineage["data"]["train_label_counts"] == \
        ref.lineage["data"]["train_label_counts"]


def test_backtest_refuses_the_label_as_the_live_worker_did(tmp_path):
    sent, learned = _with_a_refused_label(tmp_path)
    got = run_backtest(sent, ["logreg"], out=tmp_path / "o1", rows=5, bare=False, task=Task("binary"))
    ref = run_backtest(learned, ["logreg"], out=tmp_path / "o2", rows=5, bare=False, task=Task("binary"))
    assert (tmp_path / "o1" / "predictions.jsonl").read_bytes() == (tmp_path / "o2" / "predictions.jsonl").read_bytes()
    assert got.final == ref.final and got.counters == ref.counters
    assert got.plan.counts["labels_refused"] == 1 and any("12.5" in n for n in got.plan.notes)


def test_inspect_lists_every_topic_by_its_whole_name(tmp_path):
    from streamlearn.replay.archive.inspect import format_summary, summarize

    root, _, _ = _two_deployments(tmp_path)
    long = "a.deployment.with.a.rather.long.name.events.v1"
    write_records(LocalStorage(root), records_for([("event", e) for e in make_events(5, seed=6)],
                                                  topics={"event": long}))
    text = format_summary(summarize(Archive.open(root)))
    for topic in (long, *OTHER.values(), "streamlearn.events.v1", "streamlearn.feedback.v1"):
        assert f" {topic} " in text, topic


def test_a_projects_backtest_from_python_reads_its_own_topics_of_a_directory(tmp_path):
    from streamlearn.project import project_for
    from streamlearn.replay.backtest import backtest

    root, own, _ = _two_deployments(tmp_path)
    project = project_for(Settings())
    assert backtest(project, root, models=["logreg"], bare=False, lifecycle=False).plan.n_events == own
    with pytest.raises(ValueError, match="holds none of the topics of the settings in use"):
        backtest(project_for(Settings(topic_events="x.events", topic_feedback="x.feedback")), root,
                 models=["logreg"], bare=False, lifecycle=False)
