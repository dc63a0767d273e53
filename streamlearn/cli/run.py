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
        kafka_port: int | None = typer.Option(None, min=1, max=65535, help="broker port (default: a free one)"),
        redis_port: int | None = typer.Option(None, min=1, max=65535, help="Redis port (default: a free one)"),
        keep: bool = typer.Option(False, "--keep", help="keep the data and logs folder at Ctrl-C (it is removed "
                                                        "unless --workdir was given or a server failed)"),
    ) -> None:
        """Start the embedded broker and Redis, print their addresses, run until Ctrl-C."""
        import os
        import shlex
        import socket

        from streamlearn.cli.errors import CliError
        from streamlearn.settings import Settings
        from streamlearn.streams.transport import ensure_topics
        from streamlearn.tools import infra as embedded
        from streamlearn.tools.infra import finish_workdir

        for name, port in (("--kafka-port", kafka_port), ("--redis-port", redis_port)):
            if port is not None:  # a busy port would look "up" (something listens) and mislead
                with socket.socket() as sock:
                    try:
                        sock.bind(("127.0.0.1", port))
                    except OSError as exc:
                        raise CliError(f"{name} {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                                       "pick a free port or leave it out", code=2) from None
        infra = embedded.EmbeddedInfra(**({"workdir": workdir} if workdir else {}))
        if kafka_port is None and redis_port is None:
            infra.start()
        else:  # EmbeddedInfra.start() with the given ports
            os.environ.update(embedded.DEVELOPMENT_ENV)
            infra.workdir.mkdir(parents=True, exist_ok=True)
            infra.broker = embedded.start_broker(infra.workdir, kafka_port)
            try:
                infra.redis = embedded.start_redis(infra.workdir, redis_port)
            except BaseException:
                infra.stop()
                raise
        # a folder of our own choosing goes at a clean stop (as the demo's and the bench's do);
        # a chosen one (--workdir), --keep, or a failure (its logs say why) keeps it
        remove = workdir is None and not keep
        failed = True
        try:
            if create_topics:
                ensure_topics(Settings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url))
            for k, v in infra.env().items():  # STREAMLEARN_DEVELOPMENT=1 too: workers need it for the dev key
                typer.echo(f"export {k}={shlex.quote(v)}")
            typer.echo(f"# logs and data in {infra.workdir}; Ctrl-C stops both"
                       + (" and removes it (--keep keeps it)" if remove else ""), err=True)
            stop = []
            signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
            while not stop:
                time.sleep(0.5)
            failed = False
        except KeyboardInterrupt:
            failed = False
        finally:
            infra.stop()
            finish_workdir(infra.workdir, remove and not failed, lambda line: typer.echo(f"# {line}", err=True))


    @topics_app.command("create")
    def topics_create() -> None:
        """Create the configured topics (idempotent)."""
        from streamlearn.cli.kafka import check_broker
        from streamlearn.settings import get_settings
        from streamlearn.streams.transport import ensure_topics, topic_names

        s = get_settings()
        check_broker(s)  # an unreachable broker: one line, not a TimeoutError traceback
        ensure_topics(s)
        typer.echo("\n".join(topic_names(s)))


    @app.command()
    def settings() -> None:
        """Print the effective settings (secrets masked)."""
        from streamlearn.settings import get_settings

        typer.echo(json.dumps(get_settings().redacted(), indent=2, default=str))
