"""How the ``streamlearn`` command fails: one line a person can act on, never a traceback.

Expected failures -- a wrong setting, a bad project, an unreachable broker or Redis, a
worker child that died, a refused operator command -- print ``streamlearn: <what, where,
what to check>`` on stderr and exit non-zero (2 for configuration, 1 for the rest unless
the command says otherwise). Anything else is a bug and keeps its traceback.

>>> one_line("first\\n  second  line\\n")
'first; second line'
>>> describe(CliError("no worker", code=3))
('no worker', 3)
>>> from streamlearn.settings import SettingsError
>>> describe(SettingsError("STREAMLEARN_TOPIC_PARTITIONS='abc': not an integer"))
("STREAMLEARN_TOPIC_PARTITIONS='abc': not an integer", 2)
>>> describe(KeyError("a bug")) is None
True
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

PROG = "streamlearn"
EXIT_FAILED, EXIT_CONFIG = 1, 2


class CliError(Exception):
    """An expected failure a command reports as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: Any) -> str:
    """Lines joined with '; ', runs of blanks collapsed."""
    return "; ".join(" ".join(line.split()) for line in str(text).splitlines() if line.strip())


# configuration errors (one line, exit 2), imported when one is raised; a missing one is skipped
CONFIG_ERRORS = (
    ("streamlearn.settings", "SettingsError"),
    ("streamlearn.project", "ProjectError"),
    ("streamlearn.featurestore.catalog", "ViewChanged"),
    ("streamlearn.featurestore.errors", "FeatureConfigError"),
    ("streamlearn.featurestore.errors", "FeatureError"),
)


def _config_error(exc: BaseException) -> bool:
    import importlib

    for module, name in CONFIG_ERRORS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(exc, cls):
            return True
    return False


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for an expected user/environment error, None for a bug."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if _config_error(exc):
        return one_line(exc), EXIT_CONFIG
    from streamlearn.tools.harness import ChildExited

    if isinstance(exc, ChildExited):
        return str(exc), EXIT_FAILED  # the child's last log lines: several lines on purpose
    mod = type(exc).__module__
    if mod.startswith("redis"):
        import redis

        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return (f"cannot reach Redis: {one_line(exc).rstrip('.')}; check REDIS_URL and that Redis is running",
                    EXIT_FAILED)
    if mod.startswith("cimpl") or mod.startswith("confluent_kafka"):
        from confluent_kafka import KafkaException

        if isinstance(exc, KafkaException):
            err = exc.args[0] if exc.args else exc
            text = err.str() if hasattr(err, "str") else str(err)
            return f"Kafka: {one_line(text)}; check KAFKA_BOOTSTRAP and that the broker is running", EXIT_FAILED
    return None


def run(app: Callable[..., Any], argv: list[str] | None = None) -> None:
    """Run the typer ``app`` on ``argv`` (default: the process's), reporting expected errors."""
    from streamlearn.cli.compat import rewrite

    args, warnings = rewrite(list(sys.argv[1:] if argv is None else argv))
    for w in warnings:
        print(f"{PROG}: warning: {w}", file=sys.stderr)
    import typer

    cx = _click_exceptions()
    try:
        # not standalone: click raises its usage errors instead of printing typer's box, so they
        # are one line like every other mistake (docs/producing.md, "CLI conventions")
        rv = app(args=args, prog_name=PROG, standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except getattr(cx, "NoArgsIsHelpError", ()) as exc:  # bare `streamlearn` or a group: its help, as before
        print(exc.ctx.get_help() if exc.ctx else exc.format_message(), file=sys.stderr)
        sys.exit(exc.exit_code)
    except cx.UsageError as exc:
        print(f"{PROG}: {usage_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except cx.ClickException as exc:
        print(f"{PROG}: {one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print(f"{PROG}: aborted", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        found = describe(exc)
        if found is None:
            raise
        print(f"{PROG}: {found[0]}", file=sys.stderr)
        sys.exit(found[1])
    # click returns an explicit exit code (typer.Exit, --help) as an int; commands return None
    sys.exit(rv if isinstance(rv, int) else 0)


def _click_exceptions() -> Any:
    """The click exceptions typer raises: typer >= 0.24 vendors click as ``typer._click``."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def usage_line(exc: Any) -> str:
    """A click usage error as one line: the command, click's message, the command's usage
    (``models canary: Got unexpected extra argument(s) (0.1); usage: streamlearn models canary
    [OPTIONS] VERSION (--help for more)``)."""
    message = one_line(exc.format_message()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    path = ctx.command_path
    usage = one_line(ctx.command.get_usage(ctx)).removeprefix("Usage: ")
    where = path.removeprefix(PROG).strip()
    return f"{where + ': ' if where else ''}{message}; usage: {usage} (--help for more)"
