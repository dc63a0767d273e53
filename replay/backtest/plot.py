"""The backtest's picture: windowed metrics per model over event time (matplotlib, Agg).

One panel per metric (ROC AUC, log loss, accuracy for classifiers; MAE, RMSE for
regressors); a thin dashed line of the same colour is the cumulative (progressive) value
the worker would report. Lifecycle decisions are solid vertical lines, drift alarms dotted;
each line is coloured by its kind (``promoted``, ``challenger_started``, ...; for alarms the
detector and severity, e.g. ``concept:adwin critical``), named in a legend of its own and
written beside the line in the top panel, so one sees at a glance why a challenger started.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

_ORDER = ("roc_auc", "log_loss", "accuracy", "mae", "rmse")
_TITLES = {"roc_auc": "ROC AUC (higher is better)", "log_loss": "log loss (lower is better)",
           "accuracy": "accuracy", "mae": "MAE (lower is better)", "rmse": "RMSE (lower is better)"}


def marker_label(ev: dict[str, Any]) -> str:
    """What a vertical line stands for: the decision, or the alarm's detector and severity.

    >>> marker_label({"kind": "lifecycle", "action": "promoted"})
    'promoted'
    >>> marker_label({"kind": "drift", "detector": "data:ks", "severity": "drift", "feature": "amount"})
    'data:ks drift'
    """
    if ev.get("kind") == "lifecycle":
        return str(ev.get("action") or "decision")
    return f"{ev.get('detector') or 'drift'} {ev.get('severity') or ''}".strip()


_MARK_COLORS = ("#000000", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                "#1f77b4", "#ff7f0e", "#2ca02c")


def plot_metrics(metrics: dict[str, Any], path: Path) -> list[str]:
    """Draw the PNG; returns the kinds of vertical line it labelled (legend order)."""
    rows = [r for r in metrics["rows"] if r["event_time"] is not None]
    labels = list(dict.fromkeys(lb for r in rows for lb in r["models"]))  # incl. models started mid-run
    names = [n for n in _ORDER if rows and any(n in r["models"][lb]["window"] for r in rows[:1] for lb in r["models"])]
    fig, axes = plt.subplots(len(names) or 1, 1, figsize=(11, 2.8 * max(1, len(names)) + 0.8),
                             sharex=True, squeeze=False)
    times = [datetime.fromtimestamp(r["event_time"] / 1000, tz=UTC) for r in rows]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    marks = [ev for ev in metrics.get("lifecycle_events", []) if ev.get("event_time")]
    kinds = list(dict.fromkeys(marker_label(ev) for ev in marks))
    mark_colors = {k: _MARK_COLORS[i % len(_MARK_COLORS)] for i, k in enumerate(kinds)}
    written: set[tuple[str, int]] = set()
    for ax, name in zip(axes[:, 0], names):
        for i, label in enumerate(labels):
            c = colors[i % len(colors)]
            win = [r["models"].get(label, {}).get("window", {}).get(name) for r in rows]
            cum = [r["models"].get(label, {}).get("cumulative", {}).get(name) for r in rows]
            ax.plot(times, [float("nan") if v is None else v for v in win], color=c, lw=1.6,
                    marker="o", ms=2.5, label=f"{label} (window)")
            ax.plot(times, [float("nan") if v is None else v for v in cum], color=c, lw=1, ls="--", alpha=0.7,
                    label=f"{label} (cumulative)")
        for ev in marks:
            when = datetime.fromtimestamp(ev["event_time"] / 1000, tz=UTC)
            label = marker_label(ev)
            decision = ev.get("kind") == "lifecycle"  # decisions solid; drift alarms dotted
            ax.axvline(when, color=mark_colors[label], lw=1.0 if decision else 0.8, ls="-" if decision else ":")
            if ax is axes[0, 0] and (label, ev["event_time"]) not in written:
                written.add((label, ev["event_time"]))
                ax.text(when, 1.0, f" {label}", transform=ax.get_xaxis_transform(), rotation=90, va="top",
                        ha="right", fontsize=6, color=mark_colors[label], clip_on=True)
        ax.set_title(_TITLES.get(name, name), loc="left", fontsize=10)
        ax.grid(alpha=0.3)
    handles, names_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names_, loc="upper center", bbox_to_anchor=(0.5, 0.965), fontsize=8,
               ncol=min(4, 2 * len(labels)), frameon=False)
    if kinds:  # what each vertical line means, by kind
        from matplotlib.lines import Line2D

        decision_kinds = {marker_label(ev) for ev in marks if ev.get("kind") == "lifecycle"}
        lines = [Line2D([], [], color=mark_colors[k], lw=1.0, ls="-" if k in decision_kinds else ":") for k in kinds]
        axes[-1, 0].legend(lines, kinds, loc="lower left", fontsize=7, ncol=min(4, len(kinds)), frameon=True,
                           framealpha=0.8, title="decisions (solid) and alarms (dotted)", title_fontsize=7)
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    axes[-1, 0].set_xlabel("event time (UTC)")
    rng = metrics.get("range", {})
    span = f"{rng.get('from_iso') or 'start'} .. {rng.get('to_iso') or 'end'}"
    fig.suptitle(f"backtest ({metrics['mode']}), {metrics['events']:,} events, {span}", fontsize=11)
    fig.autofmt_xdate()
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # room for the title and the legend above the panels
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return kinds
