"""``streamlearn bench`` works end to end at a tiny size (its speed is not tested here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlearn.tools.bench import (
    _passes,
    build_workload,
    redis_growth,
    rss_flatness,
    rss_growth,
    summarize_profile,
)


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


def test_render_shows_learner_scale_out_and_the_transport_ratio_last() -> None:
    from streamlearn.tools.bench import render, targets

    def r(events: int, seconds: float, cpu: float, **kw) -> dict:
        return {"events": events, "seconds": seconds, "events_per_s": events / seconds, "peak_rss_mb": 200.0,
                "cpu": {"worker": cpu}, **kw}

    one = r(1000, 1.0, 0.9, workers=1)
    v = {"transport-ceiling": r(1000, 0.25, 1.0), "learner": r(500, 0.1, 1.0, labels_per_s=5000.0),
         "scale-out": {**r(1000, 0.6, 1.6, workers=2), "one_worker": one, "scaling": 1000 / 0.6 / 1000}}
    report = {"config": {"events": 1000, "seed": 7, "spec": "logreg", "view": "entity_v1"},
              "workload": {"labels": 500},
              "machine": {"cpus": 2, "platform": "x", "python": "3", "load_start": [1], "load_end": [1]},
              "variants": v, "targets": targets(v),
              "ratios": {"end-to-end/faust-ceiling": float("nan"), "end-to-end/bare": float("nan"),
                         "end-to-end/transport-ceiling": float("nan")}}
    lines = render(report).splitlines()
    rows = {line.split("  ")[0].strip(): line for line in lines if line[:1] in "tls " and "  " in line}
    assert "learner (labels)" in rows and rows["learner (labels)"].split()[4] == "5,000"  # labels/s
    assert rows["scale-out 1 worker"].split()[5] == "1,000"
    assert any(line.strip().startswith("2 workers (x1.67)") for line in lines)
    assert lines[-1] == "ratio end-to-end/transport-ceiling: nan"
    t = report["targets"]
    assert t["learner labels/s"] == (5000.0, ">= 10,000", False)


def test_in_process_variants_take_turns_until_each_has_run_long_enough() -> None:
    """A pass of each in turn (side by side on a machine whose speed drifts); each variant is
    timed on its own passes only, and the slower one is not cut short by the faster."""
    order: list[str] = []
    now = [0.0]  # a clock the passes advance: exact on a loaded machine (busy-waiting was not)

    def work(name: str, seconds: float):  # noqa: ANN202
        def one_pass() -> None:
            order.append(name)
            now[0] += seconds
        return one_pass

    out = _passes({"fast": work("fast", 0.002), "slow": work("slow", 0.01)}, n_events=10, min_seconds=0.03,
                  clock=lambda: now[0])
    assert order[:6] == ["fast", "slow"] * 3  # alternating while both still need time
    assert out["slow"]["seconds"] >= 0.03 and out["fast"]["seconds"] >= 0.03
    assert out["fast"]["passes"] == order.count("fast") > out["slow"]["passes"] == order.count("slow") >= 3
    for r in out.values():
        assert r["events"] == 10 * r["passes"]
        assert abs(r["events_per_s"] - r["events"] / r["seconds"]) < 1e-9
    # each timed on its own passes: 0.002 s against 0.01 s a pass
    assert out["fast"]["events_per_s"] / out["slow"]["events_per_s"] == pytest.approx(5)
    assert order == ["fast", "slow"] * 3 + ["fast"] * (order.count("fast") - 3)  # fast alone once slow is done


def test_a_finished_runs_folder_is_removed_or_its_place_said(tmp_path: Path) -> None:
    from streamlearn.tools.infra import finish_workdir

    said: list[str] = []
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    for d in (kept, gone):
        (d / "w-data").mkdir(parents=True)
        (d / "w.log").write_text("log")
    finish_workdir(kept, False, said.append)
    finish_workdir(gone, True, said.append)
    assert (kept / "w.log").exists() and not gone.exists()
    assert said == [f"broker/Redis data and process logs: {kept}"]
