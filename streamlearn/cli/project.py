"""Projects: ``init`` (scaffold one), ``plan`` (what it declares, what changed), ``features``
(the vectors of sample events). Every command takes ``--project DIR`` (or ``STREAMLEARN_PROJECT``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        directory: Path = typer.Argument(..., help="the project folder to create"),
        task: str = typer.Option("binary", help="binary, multiclass or regression"),
        name: str | None = typer.Option(None, help="project name (topics, Redis prefix); default: the folder's"),
        force: bool = typer.Option(False, help="overwrite an existing streamlearn.toml"),
    ) -> None:
        """Create a project: streamlearn.toml (features, models, settings), project.py, a sample."""
        from streamlearn.project.scaffold import init_project

        for path in init_project(directory, task, name, force):
            typer.echo(f"wrote {path}")
        typer.echo(f"next: streamlearn --project {directory} plan; streamlearn --project {directory} demo")

    @app.command()
    def plan(
        json_out: bool = typer.Option(False, "--json", help="print JSON instead of text"),
    ) -> None:
        """What the project declares (features, entity state, Redis bytes per entity, models, task)
        and what changed against the feature-view version Redis last recorded."""
        from streamlearn.project.plan import make_plan, render_plan
        from streamlearn.settings import get_settings

        report = make_plan(get_settings())
        typer.echo(json.dumps(report, indent=2, default=str) if json_out else render_plan(report))

    @app.command()
    def features(
        sample: Path = typer.Option(..., "--sample", exists=True, dir_okay=False, readable=True,
                                    help="events: JSON lines or CSV (the produce format)"),
        n: int = typer.Option(5, "-n", min=1, help="how many events to show"),
        json_out: bool = typer.Option(False, "--json", help="one JSON vector per line"),
    ) -> None:
        """The feature vectors of the first events of a file, as the live loop would serve them."""
        from streamlearn.cli.errors import CliError
        from streamlearn.cli.io import guess_format, read_rows
        from streamlearn.featurestore.errors import FeatureError
        from streamlearn.project import project_for
        from streamlearn.schemas import AvroCodec, InvalidRecord
        from streamlearn.schemas.validation import Limits, decode_event
        from streamlearn.sdk.producers import encode_event
        from streamlearn.settings import get_settings

        project = project_for(get_settings())
        codec, limits = AvroCodec.default(), Limits()
        events, lines = [], []
        with open(sample) as fh:
            fmt = guess_format(str(sample), "auto", fh.readline())
            fh.seek(0)
            for line_no, row in read_rows(fh, fmt, "event"):
                try:
                    if isinstance(row, InvalidRecord):
                        raise row
                    # validated and decoded as the worker decodes it: the same event it computes on
                    events.append(decode_event(encode_event(row, limits, codec), codec, limits))
                except InvalidRecord as exc:
                    raise CliError(f"{sample}: line {line_no}: {exc.reason}: {exc.detail}", code=2) from None
                lines.append(line_no)
                if len(events) >= n:
                    break
        vectors = []
        try:
            for x in project.iter_features(events):
                vectors.append(x)
        except FeatureError as exc:  # the event after the last vector made
            raise CliError(f"{sample}: line {lines[len(vectors)]}: {exc}", code=2) from None
        for ev, x in zip(events, vectors):
            if json_out:
                typer.echo(json.dumps({"event_id": ev.get("event_id"), "features": x}, sort_keys=True))
            else:
                typer.echo(f"{ev.get('event_id')} ({ev.get('entity')}):")
                for k, v in x.items():
                    typer.echo(f"  {k:<40} {v:.6g}")
