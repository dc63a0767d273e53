"""Every example project runs end to end, as ``streamlearn --project examples/NAME demo``:
events in, predictions out, every label learned once, and the archive of the run backtests
to exactly the live predictions of the initial model. One session broker and Redis; each
example has its own topics and Redis prefix (cards: the defaults, as the built-in project), fixed
by its streamlearn.toml: each runs once per session (a second run would resume the first's state)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamlearn.project import Project
from streamlearn.replay.backtest import backtest
from streamlearn.tools.infra import EmbeddedInfra

ROOT = Path(__file__).resolve().parents[2]
METRICS = {"binary": {"accuracy", "roc_auc", "log_loss"},
           "multiclass": {"accuracy", "macro_f1", "log_loss"},
           "regression": {"mae", "rmse", "r2"}}
# (example, task, events): small, so the whole file stays within a few minutes on 2 busy cores
CASES = [("cards", "binary", 1500), ("trips", "regression", 1500), ("segments", "multiclass", 1200)]


def run_example(name: str, events: int, infra: EmbeddedInfra, cwd: Path) -> tuple[dict, str]:
    out = cwd / "summary.json"
    env = {k: v for k, v in os.environ.items() if k != "STREAMLEARN_PROJECT"}
    # --rate: paced, labels reach the worker about when the stream says they arrive (as fast as
    # possible, the events topic can run far ahead of the feedback topic and the model learns
    # nothing before it predicts); cwd: with --kafka the demo writes its worker log, Faust data
    # and the replay archive there
    proc = subprocess.run(
        [sys.executable, "-m", "streamlearn", "--project", str(ROOT / "examples" / name), "demo",
         "--events", str(events), "--rate", "1000", "--kafka", infra.kafka_bootstrap,
         "--redis-url", infra.redis_url, "--json", str(out), "--keep"],  # --keep: the archive is backtested below
        capture_output=True, text=True, timeout=300, cwd=cwd,
        env={**env, **infra.env(), "COLUMNS": "200", "TMPDIR": str(cwd)},  # its run folder under the test's
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    # --keep: everything of the run stays (the archive backtested below), and the summary says how to remove it
    run = s["run_dir"]["path"]
    assert s["run_dir"]["keep"] is True and Path(s["replay"]["archive"]).is_dir()
    said = " ".join(proc.stdout.split())  # (rich may wrap a line before a long path)
    assert f"kept everything of this run in {run}" in said and f"rm -r {run}" in said
    return s, proc.stdout


def backtest_final(summary: dict) -> dict[str, float]:
    """The champion's final metrics as the demo's backtest of the archive computed them."""
    final = json.loads((Path(summary["replay"]["out"]) / "metrics.json").read_text())["final"]
    return final[summary["model_spec"]]


@pytest.mark.parametrize(("name", "task", "events"), CASES, ids=[c[0] for c in CASES])
def test_example_runs_end_to_end_and_its_backtest_reproduces_it(name, task, events, infra, tmp_path):
    s, stdout = run_example(name, events, infra, tmp_path)
    assert s["dataset"] == name
    assert s["events"] == s["predictions"] == events
    assert s["counters"]["labels_learned"] == s["labels_sent"] > 0.9 * events
    assert s["deadlettered"] == 3  # the demo's malformed messages, nothing else
    assert set(s["metrics"]) == METRICS[task]
    assert all(math.isfinite(v) for v in s["metrics"].values())
    champion = s["models"][0]
    assert champion["version"] == 1 and champion["stage"] == "champion"
    # the summary shows the project's spec names, not their canonical factory strings
    names = {spec: n for n, spec in Project.load(ROOT / "examples" / name).specs.items()}
    assert s["spec_names"] == names and f"│ {names.get(champion['spec'], champion['spec'])} " in stdout
    assert set(champion["metrics"]) == METRICS[task]
    rp = s["replay"]
    assert rp["events"] == events and rp["divergences"] == 0
    assert rp["identical_predictions_v1"] == rp["live_predictions_v1"] == events
    assert "v1 predictions reproduced exactly" in stdout
    if task == "multiclass":
        # River's MacroF1 sums per-class F1 over a set of (string) classes: the order, and so
        # the last bit, follows each process's hash seed (worker vs backtest); equal otherwise
        final = backtest_final(s)
        assert final.keys() == s["metrics"].keys()
        assert all(math.isclose(final[k], v, rel_tol=1e-12) for k, v in s["metrics"].items()), (final, s["metrics"])
        assert final["accuracy"] == s["metrics"]["accuracy"] and final["log_loss"] == s["metrics"]["log_loss"]
    else:
        assert rp["metrics_equal"] is True
    # the stream carries the signal the example's features are declared for
    if task == "regression":
        assert s["metrics"]["r2"] > 0.3, s["metrics"]
    elif task == "multiclass":
        assert s["metrics"]["accuracy"] > 0.6, s["metrics"]
    else:
        assert s["metrics"]["accuracy"] > 0.8 and s["metrics"]["roc_auc"] > 0.55, s["metrics"]
    if name == "trips":  # each example's topics and keys are fixed: one run per session
        check_backtest_from_python(name, s)
    shutil.rmtree(s["run_dir"]["path"])  # kept (--keep) for the backtests above


def check_backtest_from_python(name: str, s: dict) -> None:
    """A notebook's view of a run: Project.load + backtest over the archive; its final
    metrics are the worker's, and metrics_frame() gives them over time as a table."""
    # the run used names of its own on the session's broker (--kafka): its archive holds those
    # topics, which a backtest reads only when its settings name them
    assert s["isolated_names"]["topic_events"].startswith("sl-demo-")
    project = Project.load(ROOT / "examples" / name, **s["isolated_names"])
    result = backtest(project, s["replay"]["archive"], models=[project.champion], bare=False)
    assert result.final[project.champion] == s["metrics"]
    frame = result.metrics_frame()
    assert {"time", "events", "labels", "model", "mae", "rmse", "r2"} <= set(frame.columns)
    # rows over event time; the last, after every label (those that arrive after the last event
    # too), holds the final metrics
    assert len(frame) >= 2 and frame["events"].is_monotonic_increasing and frame["events"].max() == s["events"]
    assert frame["labels"].iloc[-1] == result.counters[project.champion]["labels_learned"] <= s["labels_sent"]
    assert frame.loc[frame["labels"] > 0, "mae"].notna().all()
    assert {k: frame[k].iloc[-1] for k in result.final[project.champion]} == result.final[project.champion]
