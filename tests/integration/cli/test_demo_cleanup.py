"""``streamlearn demo`` does not litter: at exit -- done, Ctrl-C or a worker that died -- its
folder keeps the logs and the backtest's metrics PNG/CSV/JSON the summary points at, and
removes Redis's data, the archive and the backtest's predictions (``--keep`` keeps them).
Each demo here starts its own broker and Redis, as a user's does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from streamlearn.settings import Settings
from streamlearn.tools.demo import read_status
from tests.helpers import wait_for

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


def _ctrl_c_as_in_a_terminal() -> None:
    # see tests/system/test_demo.py: a child may inherit an ignored or blocked SIGINT
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_removes_the_data_and_keeps_the_logs(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlearn", "demo", "--events", "50000", "--rate", "2000", "--no-compare"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    lines: list[str] = []

    def worker_started() -> bool:
        lines.append(proc.stdout.readline())
        return "worker   pid" in lines[-1]

    try:
        wait_for(worker_started, 60, "the demo to start its worker", interval=0)
        rest: list[str] = []
        reader = threading.Thread(target=lambda: rest.extend(proc.stdout), daemon=True)
        reader.start()
        run = Path(re.search(r"log (\S+)/worker\.log", lines[-1]).group(1))
        settings = Settings(redis_url=re.search(r"redis +(redis://\S+)", "".join(lines)).group(1))
        wait_for(lambda: read_status(settings).get("counters", {}).get("events_scored", 0) > 0, 60, "scoring")
        assert any(p.startswith("appendonlydir/") for p in _files(run))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _files(run) == {"worker.log", "broker.log", "redis.log"}, _files(run)
    assert f"kept in {run}" in "".join(rest) and "removed this run's data" in "".join(rest)
