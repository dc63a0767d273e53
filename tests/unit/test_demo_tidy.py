"""A demo run leaves its logs and the backtest's small outputs, not its data: the folder of a
20,000-event run held ~20 MB (Redis's append-only file, the archive, the backtest's
predictions.jsonl) after every run. ``--keep`` keeps everything."""

from __future__ import annotations

from pathlib import Path

from streamlearn.tools.demo import tidy_run_dir

SMALL = ["worker.log", "broker.log", "redis.log", "replay-ab12/backtest/metrics.png",
         "replay-ab12/backtest/metrics.csv", "replay-ab12/backtest/metrics.json", "replay-ab12/backtest/summary.json"]
BULKY = ["appendonlydir/appendonly.aof.1.incr.aof", "appendonlydir/appendonly.aof.manifest", "redis-6379.conf",
         "replay-ab12/backtest/predictions.jsonl", "replay-ab12/archive/event/t/date=x/partition=0/0-9.avro",
         "replay-ab12/archive/_state/offsets.json", "faust-data/000003.log"]  # a nested .log is data


def _run_dir(root: Path) -> Path:
    for rel in SMALL + BULKY:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * (10_000 if rel in BULKY else 10))
    return root


def test_a_run_keeps_its_logs_and_backtest_outputs_and_removes_its_data(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "streamlearn-x")
    out = tidy_run_dir(run)
    assert sorted(out["kept"]) == sorted(SMALL)
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == sorted(SMALL + ["replay-ab12", "replay-ab12/backtest"])  # emptied folders are gone
    assert (out["kept_bytes"], out["removed_bytes"]) == (10 * len(SMALL), 10_000 * len(BULKY))
    line = out["line"]
    assert "\n" not in line and "removed this run's data (70 kB" in line and "--keep keeps them" in line
    assert f"kept in {run} (0 kB): its logs and the backtest's metrics PNG/CSV/JSON" in line


def test_keep_keeps_everything_and_says_how_to_remove_it(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "streamlearn-x")
    out = tidy_run_dir(run, keep=True)
    assert sorted(out["kept"]) == sorted(SMALL + BULKY) and out["removed_bytes"] == 0
    assert all((run / rel).is_file() for rel in SMALL + BULKY)
    assert f"kept everything of this run in {run}" in out["line"] and f"rm -r {run}" in out["line"]


def test_a_run_that_failed_before_its_backtest_keeps_its_logs(tmp_path: Path) -> None:
    run = tmp_path / "streamlearn-x"
    (run / "appendonlydir").mkdir(parents=True)
    (run / "appendonlydir" / "appendonly.aof.1.incr.aof").write_bytes(b"x" * 5000)
    (run / "worker.log").write_text("Traceback ...\nValueError: model factory ...\n")
    out = tidy_run_dir(run)
    assert out["kept"] == ["worker.log"] and sorted(p.name for p in run.iterdir()) == ["worker.log"]
    assert out["line"].endswith(f"kept in {run} (0 kB): its logs")
