"""``streamlearn demo`` does not litter: at exit -- done, Ctrl-C or a worker that died -- its
folder keeps the logs and the backtest's metrics PNG/CSV/JSON the summary points at, and
removes Redis's data, the archive and the backtest's predictions (``--keep`` keeps them).
Each demo here starts its own broker and Redis, as a user's does. After Ctrl-C:
tests/system/test_demo.py's Ctrl-C test; after a worker that died: test_operator_edges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SMALL = {"metrics.png", "metrics.csv", "metrics.json", "summary.json"}


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def _demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlearn", "demo", "--no-compare", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def test_a_demo_keeps_its_logs_and_backtest_outputs_and_removes_its_data(tmp_path):
    out = tmp_path / "summary.json"
    proc = _demo("--events", "400", "--rate", "2000", "--json-out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    run = Path(s["run_dir"]["path"])
    backtest = Path(s["replay"]["out"])
    assert backtest.parent.parent == run and s["replay"]["archive"] is None
    assert _files(run) == {"worker.log", "broker.log", "redis.log"} | {
        str((backtest / f).relative_to(run)) for f in SMALL}
    assert s["run_dir"]["removed_bytes"] > s["run_dir"]["kept_bytes"] > 0
    assert f"kept in {run}" in proc.stdout and "removed this run's data" in proc.stdout
    assert "backtest outputs (metrics.png, metrics.csv):" in proc.stdout


def test_keep_keeps_the_archive_a_backtest_can_replay(tmp_path):
    out = tmp_path / "summary.json"
    proc = _demo("--events", "400", "--rate", "2000", "--keep", "--json-out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    run = Path(s["run_dir"]["path"])
    archive = Path(s["replay"]["archive"])
    assert archive.is_dir() and (Path(s["replay"]["out"]) / "predictions.jsonl").is_file()
    assert any(p.startswith("appendonlydir/") for p in _files(run))  # Redis's data too
    assert f"kept everything of this run in {run}" in proc.stdout and f"rm -r {run}" in proc.stdout
    r = subprocess.run([sys.executable, "-m", "streamlearn", "backtest", "--archive", str(archive), "--out",
                        str(tmp_path / "bt"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (tmp_path / "bt" / "metrics.csv").is_file(), r.stdout[-2000:] + r.stderr[-2000:]
    subprocess.run(["rm", "-r", str(run)], check=True)  # as the summary says
