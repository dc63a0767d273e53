"""Kafka clients for CLI commands: quiet unless ``--verbose``, and a fast, clear "cannot reach".

librdkafka logs every failed connection attempt to stderr by itself (hundreds of lines a
minute against a wrong address) and a producer only gives up on a message after
``message.timeout.ms``. The CLI instead routes client logs to a Python logger that is
silent unless ``--verbose``, records the client's errors (``error_cb``), and checks the
broker with one metadata request before it starts, so an unreachable broker is one line
naming the address and what to check, within :data:`CONNECT_TIMEOUT_S`.
"""

from __future__ import annotations

import logging
from typing import Any

from streamlearn.cli.errors import CliError, one_line
from streamlearn.settings import Settings

CONNECT_TIMEOUT_S = 8.0
_LOG = logging.getLogger("streamlearn.cli.kafka.client")


class ClientErrors:
    """An ``error_cb`` that keeps the client's errors (the first says why it cannot connect)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.codes: set[int] = set()

    def __call__(self, err: Any) -> None:
        text = err.str() if hasattr(err, "str") else str(err)
        _LOG.info("client error: %s", text)
        if hasattr(err, "code"):
            self.codes.add(err.code())
        if len(self.errors) < 20:
            self.errors.append(text)

    def first(self) -> str | None:
        return self.errors[0] if self.errors else None


def set_verbose(verbose: bool) -> None:
    """Client logs (librdkafka) to stderr with ``--verbose``; silent otherwise."""
    _LOG.propagate = False
    _LOG.handlers[:] = [logging.StreamHandler() if verbose else logging.NullHandler()]
    _LOG.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)


def quiet_config(verbose: bool = False, errors: ClientErrors | None = None) -> dict[str, Any]:
    """Extra confluent-kafka config: logs through a quiet logger, errors to ``errors``."""
    set_verbose(verbose)
    conf: dict[str, Any] = {"logger": _LOG}
    if errors is not None:
        conf["error_cb"] = errors
    return conf


def unreachable(settings: Settings, detail: str | None) -> CliError:
    return CliError(
        f"cannot reach the Kafka broker at {settings.kafka_bootstrap}"
        + (f" ({one_line(detail)})" if detail else "")
        + "; check KAFKA_BOOTSTRAP (and the security settings) and that the broker is running")


def check_broker(settings: Settings, verbose: bool = False, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Metadata requests until one is answered; a one-line :class:`CliError` at ``timeout``,
    or as soon as the client reports every bootstrap broker down."""
    import time

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors = ClientErrors()
    admin = AdminClient(settings.confluent_config(**quiet_config(verbose, errors)))
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))  # all: one could auto-create
            return
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: the connection error says more than "timed out"
            err = exc.args[0] if exc.args else exc
            if time.monotonic() >= deadline or KafkaError._ALL_BROKERS_DOWN in errors.codes:
                raise unreachable(settings, errors.first() or (err.str() if hasattr(err, "str") else str(err))) \
                    from None


def group_has_commits(settings: Settings, group: str, topic: str, verbose: bool = False) -> bool:
    """True if consumer group ``group`` has a committed offset on some partition of ``topic``
    (asked without joining the group)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(settings.confluent_config(**{"group.id": group, "enable.auto.commit": False},
                                           **quiet_config(verbose)))
    try:
        md = c.list_topics(topic, timeout=CONNECT_TIMEOUT_S).topics.get(topic)
        parts = sorted(md.partitions) if md is not None and md.partitions else []
        if not parts:
            return False
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=CONNECT_TIMEOUT_S)
        return any(tp.offset >= 0 for tp in got)
    finally:
        c.close()
