"""``streamlearn demo``: the whole loop on an embedded broker and Redis, from one command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        dataset: str = typer.Option(
            "cards",
            help="cards (entity-keyed, with drift), drift (SEA concept drift: try --spec nb), phishing (River's)"),
        events: int | None = typer.Option(
            None, help="number of events (default: 20,000 for a built-in dataset; for a project, its "
                       "\\[demo] events, else 5,000)"),
        rate: float | None = typer.Option(None, help="events per second; default: as fast as possible"),
        spec: str | None = typer.Option(None, help="model spec: logreg (default), hat, arf, nb ...; with a "
                                                    "project, one of its spec names (default: its champion)"),
        bad: int = typer.Option(3, help="malformed messages to mix in (they go to the dead-letter topic)"),
        seed: int = typer.Option(7),
        compare: bool = typer.Option(True, help="cards only (the built-in dataset, no project): also compare "
                                                "with/without entity features in-process"),
        replay: bool = typer.Option(True, help="archive the run, backtest it and check it reproduces the live run"),
        kafka: str | None = typer.Option(None, help="use this broker instead of starting one (with --redis-url; "
                                                    "topics, group and Redis prefix of this run only)"),
        redis_url: str | None = typer.Option(None, help="use this Redis instead of starting one (with --kafka)"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON (tables go to stderr)"),
        json_out: Path | None = typer.Option(None, "--json-out", help="also write the summary as JSON to this file"),
        keep: bool = typer.Option(
            False, "--keep", help="keep all of the run's data in its folder (Redis, the archive for "
                                  "'streamlearn backtest --archive', the backtest's predictions); by default "
                                  "only its logs and the backtest's metrics PNG/CSV/JSON stay"),
    ) -> None:
        """Start broker + Redis + worker, stream a dataset with delayed labels through the loop."""
        from streamlearn import datasets
        from streamlearn.cli.errors import EXIT_CONFIG, CliError
        from streamlearn.tools import demo as tool

        project_dir = os.environ.get("STREAMLEARN_PROJECT") or None
        if project_dir is None and dataset not in datasets.DATASETS:  # before anything starts
            raise CliError(f"--dataset: unknown dataset {dataset!r}; one of: {', '.join(sorted(datasets.DATASETS))}",
                           code=EXIT_CONFIG)
        if as_json:  # stdout carries only the JSON
            tool.console.stderr = True
        summary = tool.run_demo(dataset, events, rate, spec, bad, seed, compare, kafka, redis_url, replay=replay,
                                  project_dir=project_dir, keep=keep)
        text = json.dumps(summary, indent=2, default=str)
        if json_out:
            json_out.write_text(text)
        if as_json:
            typer.echo(text)
