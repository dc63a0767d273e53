"""``streamlearn bench`` works end to end at a tiny size (its speed is not tested here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from streamlearn.tools.bench import VARIANTS, build_workload, redis_growth, rss_flatness, rss_growth, summarize_profile


def test_bench_smoke_prints_table_ratios_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # short session timeouts: tansu answers a join after half of it (shared notes), 4 joins here
    env = {**os.environ, "STREAMLEARN_SESSION_TIMEOUT_S": "2", "STREAMLEARN_HEARTBEAT_INTERVAL_S": "0.25"}
    proc = subprocess.run(
        [sys.executable, "-m", "streamlearn", "bench", "--events", "2000", "--min-seconds", "0.3",
         "--rss-interval", "0.2", "--json", str(out), "--workdir", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=170, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.rstrip("\n").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    table = lines[header + 2 : header + 2 + len(VARIANTS) + 1]
    assert [row.split()[0] for row in table if not row.startswith("  ")] == [
        "bare", "end-to-end", "naive", "backtest", "faust-ceiling", "batch-consumer"]
    assert any(row.strip().startswith("at half load") for row in table)

    report = json.loads(out.read_text())
    assert set(report) >= {"config", "machine", "workload", "variants", "ratios", "targets"}
    v = report["variants"]
    assert set(v) == set(VARIANTS)
    for name, r in v.items():
        assert r["events_per_s"] > 0 and r["seconds"] > 0, name
        assert r["peak_rss_mb"] > 50, name  # a Python process with River/Faust loaded
    e2e, n_labels = v["end-to-end"], report["workload"]["labels"]
    assert e2e["events"] == 2000 and e2e["labels_learned"] == n_labels, "every label learned exactly once"
    assert e2e["prediction_messages"] >= 2000
    assert 0 <= e2e["latency_ms_p50"] <= e2e["latency_ms_p99"]
    assert e2e["half_load"]["rate_limit"] == e2e["events_per_s"] / 2
    assert e2e["half_load"]["latency_ms_p99"] >= e2e["half_load"]["latency_ms_p50"] >= 0
    assert len(e2e["rss_curve"]) >= 2 and all(p["rss_mb"] > 0 for p in e2e["rss_curve"])
    last = e2e["rss_curve"][-1]  # Redis and the broker are sampled with the worker
    assert last["redis_keys"] > 2000 and last["redis_used_mb"] > 0 and last["broker_rss_mb"] > 0
    assert any(line.startswith("end-to-end Redis used_memory: ") for line in lines)

    # the last two lines, readable by scripts, agree with the JSON
    r1 = re.fullmatch(r"ratio end-to-end/faust-ceiling: (\d+\.\d\d)", lines[-2])
    r2 = re.fullmatch(r"ratio end-to-end/bare: (\d+\.\d\d)", lines[-1])
    assert r1 and r2, lines[-2:]
    assert float(r1[1]) == round(e2e["events_per_s"] / v["faust-ceiling"]["events_per_s"], 2)
    assert float(r2[1]) == round(e2e["events_per_s"] / v["bare"]["events_per_s"], 2)


def test_workload_prefix_keeps_only_the_labels_of_its_events_in_order() -> None:
    wl = build_workload(300, seed=3)
    sub = wl.prefix(100)
    events = [r["event_id"] for k, r in sub.stream if k == "event"]
    assert events == [r["event_id"] for k, r in wl.stream if k == "event"][:100]
    labels = [r["event_id"] for k, r in sub.stream if k == "feedback"]
    assert set(labels) <= set(events) and sub.n_labels == len(labels) > 80
    full_order = [(k, r["event_id"]) for k, r in wl.stream]
    kept = [(k, r["event_id"]) for k, r in sub.stream]
    assert kept == [x for x in full_order if x[1] in set(events)], "arrival order unchanged"
    assert len(sub.wire) == len(sub.stream) and all(w[0] == (k == "event") for w, (k, _) in zip(sub.wire, sub.stream))


def test_profile_summary_charges_samples_to_the_innermost_known_layer(tmp_path: Path) -> None:
    root = "thread (0x1): MainThread;run (mode/worker.py:1);_run_once (asyncio/base_events.py:2)"
    stacks = tmp_path / "p.txt"
    stacks.write_text("\n".join([
        f"{root};WorkerRuntime.on_events (streams/worker.py:3);learn_one (river/linear_model/log_reg.py:4) 6",
        f"{root};WorkerRuntime.on_events (streams/worker.py:3);dumps (json/__init__.py:5) 3",
        f"{root};Service.wait_first (mode/services.py:6);create_task (asyncio/base_events.py:7) 1",
        "thread (0x2): Thread-1;fetch (aiokafka/consumer/fetcher.py:8) 4",
    ]))
    p = summarize_profile(stacks, wall_s=0.2, rate=100)
    assert p["samples_by_thread"] == {"MainThread": 10, "Thread-1": 4}
    assert p["categories_pct"] == {"River (predict/learn/metrics)": 60.0, "JSON (entity state, served vectors)": 30.0,
                                   "Faust/mode machinery (per-message delivery, streams)": 10.0}
    assert p["inclusive_pct"]["WorkerRuntime.on_events"] == 90.0
    assert p["main_thread_busy"] == 0.5


def test_rss_growth_slope() -> None:
    curve = [{"events": e, "rss_mb": 100 + e / 10_000} for e in range(0, 100_001, 10_000)]
    g = rss_growth(curve)
    assert g is not None and abs(g["slope_mb_per_100k_events"] - 10.0) < 1e-6 and g["growth_mb"] == 5.0


def test_rss_flatness_compares_the_quarter_point_with_the_end() -> None:
    warm = [{"events": e, "rss_mb": 100 + min(e, 20_000) / 1_000} for e in range(0, 100_001, 10_000)]
    f = rss_flatness(warm)  # grows during warm-up only: 120 MB from the 25% point on
    assert f is not None and f["flat"] and f["from_events"] == 30_000 and f["growth_pct"] == 0.0
    leak = [{"events": e, "rss_mb": 100 + e / 1_000} for e in range(0, 100_001, 10_000)]
    f = rss_flatness(leak)  # 130 -> 200 MB
    assert f is not None and not f["flat"] and f["growth_pct"] == 53.8
    assert rss_flatness(leak[:1]) is None


def test_redis_growth_per_event_and_key() -> None:
    curve = [{"events": 0, "redis_used_mb": 1.0, "redis_keys": 0},
             {"events": 1024, "redis_used_mb": 2.0, "redis_keys": 2048}]
    g = redis_growth(curve)
    assert g == {"from_mb": 1.0, "to_mb": 2.0, "keys": 2048, "bytes_per_event": 1024, "bytes_per_key": 512}
