"""A backtest's outputs: predictions.jsonl, metrics.json/.csv, metrics.png, summary.json,
and the summary printed on the terminal."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamlearn.featurestore.definitions import FeatureView
from streamlearn.formats import iso
from streamlearn.replay.archive.reader import Archive

if TYPE_CHECKING:
    from streamlearn.replay.backtest.runner import BacktestResult

log = logging.getLogger(__name__)


def write_outputs(result: BacktestResult, archive: Archive, specs: list[str], view: FeatureView,
                  start: int | None, end: int | None, out: Path) -> None:
    labels = list(result.final)
    metrics = {
        "archive": str(getattr(archive.storage, "root", archive.storage)),
        "range": {"from": start, "to": end, "from_iso": iso(start), "to_iso": iso(end)},
        "mode": result.plan.mode, "view": view.name, "view_version": view.version,
        "view_fingerprint": view.fingerprint, "models": dict(zip(labels, specs)),
        "events": result.plan.n_events, "rows": result.rows, "final": result.final,
        "lifecycle_events": result.lifecycle_events, "stages": result.stages,
        "lifecycle": "evaluated on event time: the gate, canary and drift detectors acted as live"
        if result.lifecycle else "not evaluated (--no-lifecycle): models compared side by side only",
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    _write_csv(result.rows, labels, out / "metrics.csv")
    summary = {
        "mode": result.plan.mode, "notes": result.plan.notes, "events": result.plan.n_events,
        "reference_model": list(result.plan.reference) if result.plan.reference else None,
        "counts": result.plan.counts, "counters": result.counters,
        "divergences": len(result.divergences), "divergence_examples": result.divergences[:20],
        "archive_problems": [str(p) for p in archive.problems],
        "seconds": {"read_and_plan": round(result.read_seconds, 3), "loop": round(result.loop_seconds, 3)},
        "events_per_s": round(result.events_per_s, 1), "bare_river_loop": result.bare,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    from streamlearn.replay.backtest.plot import plot_metrics

    plot_metrics(metrics, out / "metrics.png")


def _write_csv(rows: list[dict[str, Any]], labels: list[str], path: Path) -> None:
    names: list[str] = []
    for r in rows:
        for label in labels:
            for scope in ("cumulative", "window"):
                for k in r["models"].get(label, {}).get(scope, {}):
                    col = f"{label}.{scope}.{k}"
                    if col not in names:
                        names.append(col)
    with open(path, "w", newline="") as fo:
        w = csv.writer(fo, lineterminator="\n")
        w.writerow(["row", "events", "event_time", "time", "labels", *names])
        for r in rows:
            vals = []
            for col in names:
                label, scope, k = col.rsplit(".", 2)
                v = r["models"].get(label, {}).get(scope, {}).get(k)  # a model started mid-run
                vals.append("" if v is None else repr(v))
            w.writerow([r["row"], r["events"], r["event_time"], r["time"], r["labels"], *vals])


def format_report(result: BacktestResult, reproduced: tuple[int, int] | None = None) -> str:
    """The terminal summary; ``reproduced``: (live predictions of the reference model the
    first model reproduced exactly, live predictions compared), when the caller checked."""
    lines = [f"backtest ({result.plan.mode}): {result.plan.n_events} events, "
             f"{len(result.final)} model(s)"]
    lines += [f"  note: {n}" for n in result.plan.notes]
    for label, m in result.final.items():
        vals = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if v is not None)
        stage = f" [{result.stages[label]}]" if result.lifecycle and label in result.stages else ""
        lines.append(f"  {label:<14} {vals}{stage}")
    if result.lifecycle:
        decisions = [e for e in result.lifecycle_events if e["kind"] == "lifecycle"]
        alarms = len(result.lifecycle_events) - len(decisions)
        lines.append(f"  lifecycle (event time): {alarms} drift alarm(s), {len(decisions)} decision(s)")
        for e in decisions[:12]:
            lines.append(f"    {e['time']}  {e['action']:<18} {e['model']}: {e['reason']}")
        if len(decisions) > 12:
            lines.append(f"    ... {len(decisions) - 12} more in metrics.json")
    lines.append(f"  speed: backtest {result.events_per_s:,.0f} events/s (loop only, {len(result.final)} model(s)); "
                 f"reading + planning {result.read_seconds:.2f}s")
    if result.bare:
        b = result.bare
        ratio = b["events_per_s"] / result.events_per_s if result.events_per_s else float("nan")
        same = {True: "identical scores", False: "SCORES DIFFER", None: "scores not compared"}[b["scores_identical"]]
        one = "" if len(result.final) == 1 else ", one model"
        lines.append(f"         bare River loop ({b['spec']}{one}): {b['events_per_s']:,.0f} events/s "
                     f"({ratio:.1f}x the backtest; {same})")
    if reproduced is not None and result.plan.reference is not None:
        name, version = result.plan.reference
        same, total = reproduced
        lines.append(f"  reproduced {same:,} of {total:,} live predictions of {name}@v{version} exactly "
                     f"(score and labels learned, by {next(iter(result.final))})")
    if result.divergences:
        lines.append(f"  {len(result.divergences)} divergence(s) from the recorded run, first: {result.divergences[0]}")
    elif result.plan.schedule is not None:
        lines.append("  0 divergences from the recorded run")
    if result.out:
        lines.append(f"  wrote {result.out}/predictions.jsonl, metrics.json, metrics.csv, metrics.png, summary.json")
    return "\n".join(lines)
