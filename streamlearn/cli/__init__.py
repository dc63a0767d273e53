"""The ``streamlearn`` command: one typer app; each module of this package registers its
commands on it the same way, with ``register(app)``.

| module | commands |
|---|---|
| :mod:`.project` | ``init``, ``plan``, ``features`` |
| :mod:`.run` | ``worker``, ``infra up``, ``topics create``, ``settings`` |
| :mod:`.demo` | ``demo`` |
| :mod:`.io` | ``produce``, ``feedback``, ``tail`` |
| :mod:`.models` | ``models list|show|promote|canary|rollback|retire|add|adopt`` |
| :mod:`.replay` | ``archive run``, ``replay inspect|republish``, ``backtest``, ``retrain`` |
| :mod:`.evaluate` | ``gate-eval``, ``drift-eval`` |
| :mod:`.bench` | ``bench`` |

Commands import their implementation lazily, so ``streamlearn --help`` stays fast.
"""

from __future__ import annotations

import os

import typer

from streamlearn.cli import bench, demo, evaluate, io, models, project, replay, run

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Streaming online learning on Kafka + Redis (River models, Redis feature store).")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"streamlearn {version('streamlearn')}")
        raise typer.Exit()


@app.callback()
def _root(
    project_dir: str | None = typer.Option(
        None, "--project", envvar="STREAMLEARN_PROJECT",
        help="project directory (streamlearn.toml): every command runs on its events, features and models"),
    _: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
) -> None:
    if project_dir:  # one place: every command reads its settings (and workers it starts inherit it)
        os.environ["STREAMLEARN_PROJECT"] = project_dir


for _module in (project, demo, run, io, models, replay, evaluate, bench):
    _module.register(app)


def main() -> None:
    """The console script: expected errors are one ``streamlearn: ...`` line (see :mod:`.errors`)."""
    from streamlearn.cli.errors import run

    run(app)
