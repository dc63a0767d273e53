"""``streamlearn bench`` works end to end at a tiny size (its speed is not tested here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from streamlearn.tools.bench import VARIANTS


def test_bench_smoke_prints_table_ratios_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # short session timeouts: tansu answers a join after half of it (shared notes), 4 joins here
    # no --workdir: the bench makes its own folder (under TMPDIR) and removes it after a run
    # that succeeded (a failed run keeps it: the error names it)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "STREAMLEARN_SESSION_TIMEOUT_S": "2", "STREAMLEARN_HEARTBEAT_INTERVAL_S": "0.25",
           "TMPDIR": str(tmp)}
    proc = subprocess.run(
        [sys.executable, "-m", "streamlearn", "bench", "--events", "2000", "--min-seconds", "0.3",
         "--rss-interval", "0.2", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("streamlearn-")], "the bench's folder is left"
    lines = proc.stdout.rstrip("\n").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    table = lines[header + 2 : header + 2 + len(VARIANTS) + 4]  # + half load, its floor, quarters, 2 workers
    assert [row.split()[0] for row in table if not row.startswith("  ")] == [
        "bare", "end-to-end", "naive", "backtest", "faust-ceiling", "transport-ceiling", "learner",
        "scale-out"]
    assert any(row.strip().startswith("at half load") for row in table)
    assert any(row.strip().startswith("2 workers (x") for row in table)

    report = json.loads(out.read_text())
    assert set(report) >= {"config", "machine", "workload", "variants", "ratios", "targets"}
    v = report["variants"]
    assert set(v) == set(VARIANTS)
    for name, r in v.items():
        assert r["events_per_s"] > 0 and r["seconds"] > 0, name
        assert r["peak_rss_mb"] > 50, name  # a Python process with River/Faust loaded
    # the learner: every label of the stream learned on its own, per-label CPU measured
    learner = v["learner"]
    assert learner["labels_learned"] == learner["labels"] == report["workload"]["labels"]
    assert learner["labels_per_s"] > 0 and learner["cpu_us_per_event"] > 0
    # scale-out: both runs saw every event and learned every label, two workers' CPU summed
    scale = v["scale-out"]
    assert scale["workers"] == 2 and scale["one_worker"]["workers"] == 1 and scale["partitions"] == 2
    for r in (scale, scale["one_worker"]):
        assert r["events"] == 2000 and r["labels_learned"] == report["workload"]["labels"]
    assert scale["scaling"] == scale["events_per_s"] / scale["one_worker"]["events_per_s"]
    assert v["transport-ceiling"]["cpu"]["worker"] > 0
    e2e, n_labels = v["end-to-end"], report["workload"]["labels"]
    assert e2e["events"] == 2000 and e2e["labels_learned"] == n_labels, "every label learned exactly once"
    assert e2e["prediction_messages"] >= 2000
    assert 0 <= e2e["latency_ms_p50"] <= e2e["latency_ms_p99"]
    assert e2e["half_load"]["rate_limit"] == e2e["events_per_s"] / 2
    assert e2e["half_load"]["latency_ms_p99"] >= e2e["half_load"]["latency_ms_p50"] >= 0
    floor = e2e["half_load"]["floor"]  # the same paced events, read by a consumer with no work
    assert floor["events"] >= e2e["half_load"]["events"]
    assert floor["latency_ms_p99"] >= floor["latency_ms_p50"] >= 0
    assert any(row.strip().startswith("floor: no work") for row in table)
    # p50 per quarter of the paced run (arrival order), the worker's and the floor's, printed too
    for r in (e2e["half_load"], floor):
        assert len(r["latency_ms_p50_quarters"]) == 4 and all(x >= 0 for x in r["latency_ms_p50_quarters"])
    assert any(row.strip().startswith("p50 ms by quarter of the run: ") and "; floor " in row for row in table)
    assert len(e2e["rss_curve"]) >= 2 and all(p["rss_mb"] > 0 for p in e2e["rss_curve"])
    last = e2e["rss_curve"][-1]  # Redis and the broker are sampled with the worker
    assert last["redis_keys"] > 2000 and last["redis_used_mb"] > 0 and last["broker_rss_mb"] > 0
    assert any(line.startswith("end-to-end Redis used_memory: ") for line in lines)

    # the last three lines, readable by scripts, agree with the JSON
    r1 = re.fullmatch(r"ratio end-to-end/faust-ceiling: (\d+\.\d\d)", lines[-3])
    r2 = re.fullmatch(r"ratio end-to-end/bare: (\d+\.\d\d)", lines[-2])
    r3 = re.fullmatch(r"ratio end-to-end/transport-ceiling: (\d+\.\d\d)", lines[-1])
    assert r1 and r2 and r3, lines[-3:]
    assert float(r1[1]) == round(e2e["events_per_s"] / v["faust-ceiling"]["events_per_s"], 2)
    assert float(r2[1]) == round(e2e["events_per_s"] / v["bare"]["events_per_s"], 2)
    assert float(r3[1]) == round(e2e["events_per_s"] / v["transport-ceiling"]["events_per_s"], 2)


def test_bench_runs_a_projects_own_stream_view_and_model(tmp_path: Path) -> None:
    """`--project`: the bench measures the user's workload, not the cards demo."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "streamlearn", "--project", str(root / "examples" / "trips"), "bench",
         "--events", "400", "--min-seconds", "0.1", "--only", "bare,backtest", "--json-out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["config"]["project"].endswith("examples/trips")
    assert report["config"]["spec"].startswith("project:") and report["config"]["view"] != "entity_v1"
    assert report["variants"]["backtest"]["events"] >= 400 and report["variants"]["bare"]["events"] >= 400
