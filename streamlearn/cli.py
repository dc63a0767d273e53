"""The ``streamlearn`` command."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import typer

from streamlearn import cli_io
from streamlearn.cli_models import app as models_app
from streamlearn.replay import cli as replay_cli
from streamlearn.tools import bench as bench_cli

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Streaming online learning on Kafka + Redis (Faust agents, River models).")
infra_app = typer.Typer(no_args_is_help=True, help="Embedded broker + Redis for manual use.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
app.add_typer(infra_app, name="infra")
app.add_typer(topics_app, name="topics")
app.add_typer(models_app, name="models")


@app.command()
def demo(
    dataset: str = typer.Option(
        "cards", help="cards (entity-keyed, with drift), drift (SEA concept drift: try --spec nb), phishing (River's)"),
    events: int = typer.Option(20_000, help="number of events (cards)"),
    rate: float | None = typer.Option(None, help="events per second; default: as fast as possible"),
    spec: str = typer.Option("logreg", help="model spec: logreg, hat, arf, linreg"),
    bad: int = typer.Option(3, help="malformed messages to mix in (they go to the dead-letter topic)"),
    seed: int = typer.Option(7),
    compare: bool = typer.Option(True, help="also compare with/without entity features in-process"),
    replay: bool = typer.Option(True, help="archive the run, backtest it and check it reproduces the live run"),
    kafka: str | None = typer.Option(None, help="use this broker instead of starting one"),
    redis_url: str | None = typer.Option(None, help="use this Redis instead of starting one"),
    json_out: Path | None = typer.Option(None, "--json", help="write the summary as JSON here"),
) -> None:
    """Start broker + Redis + worker, stream a dataset with delayed labels through the loop."""
    from streamlearn.tools.demo import run_demo

    summary = run_demo(dataset, events, rate, spec, bad, seed, compare, kafka, redis_url, replay=replay)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2, default=str))


@app.command()
def worker(loglevel: str = typer.Option("info")) -> None:
    """Run a worker against the configured broker and Redis (KAFKA_BOOTSTRAP, REDIS_URL, ...)."""
    from streamlearn.settings import get_settings
    from streamlearn.streams.app import run_worker

    run_worker(get_settings(), loglevel)


@infra_app.command("up")
def infra_up(
    workdir: Path | None = typer.Option(None, help="data and log directory"),
    create_topics: bool = typer.Option(True, help="also create the configured topics"),
) -> None:
    """Start the embedded broker and Redis, print their addresses, run until Ctrl-C."""
    from streamlearn.settings import Settings
    from streamlearn.streams.transport import ensure_topics
    from streamlearn.tools.infra import EmbeddedInfra

    infra = EmbeddedInfra(**({"workdir": workdir} if workdir else {})).start()
    try:
        if create_topics:
            ensure_topics(Settings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url))
        typer.echo(f"export KAFKA_BOOTSTRAP={infra.kafka_bootstrap}")
        typer.echo(f"export REDIS_URL={infra.redis_url}")
        typer.echo(f"# logs and data in {infra.workdir}; Ctrl-C stops both", err=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        infra.stop()


@topics_app.command("create")
def topics_create() -> None:
    """Create the configured topics (idempotent)."""
    from streamlearn.settings import get_settings
    from streamlearn.streams.transport import ensure_topics, topic_names

    s = get_settings()
    ensure_topics(s)
    typer.echo("\n".join(topic_names(s)))


@app.command()
def settings() -> None:
    """Print the effective settings (secrets masked)."""
    from streamlearn.settings import get_settings

    typer.echo(json.dumps(get_settings().redacted(), indent=2, default=str))


@app.command("gate-eval")
def gate_eval(
    runs: int = typer.Option(2000, help="simulated champion/challenger pairs per scenario"),
    horizon: int = typer.Option(10_000, help="paired labeled events per run (the gate is checked after each)"),
    seed: int = typer.Option(0),
) -> None:
    """Simulate the promotion gate: false promotions under continuous monitoring, events to promote."""
    from streamlearn.models.governance.gate import GateConfig
    from streamlearn.models.governance.gate_eval import report
    from streamlearn.settings import get_settings

    typer.echo(report(runs, horizon, seed, GateConfig.from_settings(get_settings())))


@app.command("drift-eval")
def drift_eval(
    seeds: int = typer.Option(5, help="seeded streams per scenario"),
    length: int = typer.Option(20_000, help="events per stream"),
    sea: bool = typer.Option(True, help="include River's ConceptDriftStream (SEA) with a live model"),
) -> None:
    """Score the configured drift detectors on streams with known drift points, beside a dummy."""
    from streamlearn.models.governance.drift_eval import report_from_settings
    from streamlearn.settings import get_settings

    typer.echo(report_from_settings(get_settings(), seeds, length, sea))


cli_io.register(app)  # produce, feedback, tail (streamlearn/cli_io.py)
bench_cli.register(app)  # bench (streamlearn/tools/bench.py)
replay_cli.register(app)  # archive run, replay inspect/republish, backtest, retrain (replay/cli.py)


def main() -> None:
    app()
