"""Evaluations by simulation: ``gate-eval`` (the promotion gate) and ``drift-eval`` (the detectors)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("gate-eval")
    def gate_eval(
        runs: int = typer.Option(2000, min=1, help="simulated champion/challenger pairs per scenario"),
        horizon: int = typer.Option(10_000, min=1, help="paired labeled events per run (gate checked after each)"),
        seed: int = typer.Option(0),
        task: str = typer.Option("binary", help="binary, multiclass or regression (the gate's paired loss follows it)"),
        classes: int = typer.Option(5, min=3, help="classes in the multiclass scenario"),
    ) -> None:
        """Simulate the promotion gate: false promotions under continuous monitoring, events to promote."""
        from streamlearn.models.governance.gate import GateConfig
        from streamlearn.models.governance.gate_eval import report
        from streamlearn.settings import get_settings

        typer.echo(report(runs, horizon, seed, GateConfig.from_settings(get_settings()), task=task, classes=classes))


    @app.command("drift-eval")
    def drift_eval(
        seeds: int = typer.Option(5, min=1, help="seeded streams per scenario"),
        length: int | None = typer.Option(
            None, min=1, help="events per synthetic stream (default 20,000; the data/entities stream keeps "
                              "100,000) and per live-like cards run (default 100,000)"),
        sea: bool = typer.Option(True, help="include SEA concept drift: River's ConceptDriftStream among the "
                                            "synthetic streams and the live-like 'alarms that pay off' runs"),
    ) -> None:
        """Score the configured drift detectors on streams with known drift points, beside a dummy."""
        from streamlearn.models.governance.drift_eval import report_from_settings
        from streamlearn.replay.backtest.drift_live import report as live_report
        from streamlearn.settings import get_settings

        s = get_settings()
        live_length = {"length": length} if length else {}  # their own default: 100,000
        typer.echo(report_from_settings(s, seeds, length or 20_000, sea) + "\n\n"
                   + live_report(s, payoff_specs=("ht", "nb", "logreg") if sea else (), **live_length))
