"""Running the system: ``worker``, ``infra up``, ``topics create``, ``settings``."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    infra_app = typer.Typer(no_args_is_help=True, help="Embedded broker + Redis for manual use.")
    topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
    app.add_typer(infra_app, name="infra")
    app.add_typer(topics_app, name="topics")

    @app.command()
    def worker(loglevel: str = typer.Option("info")) -> None:
        """Run a worker against the configured broker and Redis (KAFKA_BOOTSTRAP, REDIS_URL, ...)."""
        from streamlearn.replay.retrain.retrainer import scheduled_retrain
        from streamlearn.settings import get_settings
        from streamlearn.streams.app import run_worker

        run_worker(get_settings(), loglevel, retrain=scheduled_retrain)


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
