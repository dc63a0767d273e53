"""``streamlearn bench``: the pipeline beside the bare River loop, side by side in one run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import typer

from streamlearn.tools.bench import DEFAULT_EVENTS, VARIANTS


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        events: int = typer.Option(DEFAULT_EVENTS, help="events in the generated stream (cards)"),
        seed: int = typer.Option(7, help="dataset seed"),
        entities: int = typer.Option(2_000, min=1, help="cards (entities) in the generated stream"),
        spec: str | None = typer.Option(None, help="model spec: logreg (default), hat, arf; with --project, "
                                                    "one of its spec names (default: its champion)"),
        view: str = typer.Option("entity_v1", help="feature view (built-in; a project brings its own)"),
        only: str = typer.Option(",".join(VARIANTS), help="comma-separated variants to run"),
        min_seconds: float = typer.Option(20.0, help="in-process variants repeat passes at least this long; "
                                                     "the half-load run streams about this long"),
        half_load: bool = typer.Option(True, help="also run end-to-end paced at half its max rate"),
        rss_interval: float = typer.Option(1.0, help="seconds between RSS samples of the worker"),
        profile: Path | None = typer.Option(None, help="py-spy each broker variant at max load; stacks go in this dir"),
        workdir: Path | None = typer.Option(
            None, help="keep broker/Redis data and process logs here (default: a temporary folder, "
                       "removed after a run that succeeded, kept after a failure)"),
        as_json: bool = typer.Option(False, "--json", help="print the full report as JSON instead of the table"),
        json_out: Path | None = typer.Option(None, "--json-out", help="also write the full report as JSON here"),
    ) -> None:
        """Benchmark: bare River vs end-to-end vs naive Faust vs backtest vs Faust/transport ceilings,
        plus the learner's capacity and a 2-partition scale-out, in one run."""
        chosen = tuple(x.strip() for x in only.split(",") if x.strip())
        if not chosen or set(chosen) - set(VARIANTS):
            raise typer.BadParameter(f"choose from {', '.join(VARIANTS)}", param_hint="--only")
        if profile is not None and shutil.which("py-spy") is None:
            # checked before minutes of other variants run, not when the first broker variant starts
            raise typer.BadParameter("needs py-spy on PATH (pip install py-spy)", param_hint="--profile")
        from streamlearn.formats import jsonable
        from streamlearn.tools.bench import BenchConfig, render, run_bench

        project = None
        if os.environ.get("STREAMLEARN_PROJECT"):  # the project's own stream, view, champion and task
            from streamlearn.project import project_for
            from streamlearn.settings import get_settings

            project = project_for(get_settings())
            spec, view = project.resolve_spec(spec) if spec else project.champion, project.view.name
        cfg = BenchConfig(events=events, seed=seed, entities=entities, spec=spec or "logreg", view=view,
                          only=chosen, min_seconds=min_seconds, half_load=half_load, rss_interval=rss_interval,
                          profile_dir=profile, workdir=workdir, project=project)
        report = run_bench(cfg)
        text = json.dumps(jsonable(report), indent=2, allow_nan=False)
        if json_out:
            json_out.write_text(text)
        typer.echo(text if as_json else render(report))
