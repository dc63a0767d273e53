"""The backtest's picture: windowed metrics per model over event time (matplotlib, Agg).

One panel per metric (ROC AUC, log loss, accuracy for classifiers; MAE, RMSE for
regressors); a thin dashed line of the same colour is the cumulative (progressive) value
the worker would report. Lifecycle decisions are solid vertical lines, drift alarms dotted.
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


def plot_metrics(metrics: dict[str, Any], path: Path) -> None:
    rows = [r for r in metrics["rows"] if r["event_time"] is not None]
    labels = list(dict.fromkeys(lb for r in rows for lb in r["models"]))  # incl. models started mid-run
    names = [n for n in _ORDER if rows and any(n in r["models"][lb]["window"] for r in rows[:1] for lb in r["models"])]
    fig, axes = plt.subplots(len(names) or 1, 1, figsize=(11, 2.8 * max(1, len(names)) + 0.8),
                             sharex=True, squeeze=False)
    times = [datetime.fromtimestamp(r["event_time"] / 1000, tz=UTC) for r in rows]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes[:, 0], names):
        for i, label in enumerate(labels):
            c = colors[i % len(colors)]
            win = [r["models"].get(label, {}).get("window", {}).get(name) for r in rows]
            cum = [r["models"].get(label, {}).get("cumulative", {}).get(name) for r in rows]
            ax.plot(times, [float("nan") if v is None else v for v in win], color=c, lw=1.6,
                    marker="o", ms=2.5, label=f"{label} (window)")
            ax.plot(times, [float("nan") if v is None else v for v in cum], color=c, lw=1, ls="--", alpha=0.7,
                    label=f"{label} (cumulative)")
        for ev in metrics.get("lifecycle_events", []):
            if ev.get("event_time") and ev.get("kind") == "lifecycle":  # decisions; drift alarms: dotted
                ax.axvline(datetime.fromtimestamp(ev["event_time"] / 1000, tz=UTC), color="black", lw=0.9)
            elif ev.get("event_time"):
                ax.axvline(datetime.fromtimestamp(ev["event_time"] / 1000, tz=UTC), color="grey", lw=0.7, ls=":")
        ax.set_title(_TITLES.get(name, name), loc="left", fontsize=10)
        ax.grid(alpha=0.3)
    handles, names_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names_, loc="upper center", bbox_to_anchor=(0.5, 0.965), fontsize=8,
               ncol=min(4, 2 * len(labels)), frameon=False)
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    axes[-1, 0].set_xlabel("event time (UTC)")
    rng = metrics.get("range", {})
    span = f"{rng.get('from_iso') or 'start'} .. {rng.get('to_iso') or 'end'}"
    fig.suptitle(f"backtest ({metrics['mode']}), {metrics['events']:,} events, {span}", fontsize=11)
    fig.autofmt_xdate()
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # room for the title and the legend above the panels
    fig.savefig(path, dpi=110)
    plt.close(fig)
