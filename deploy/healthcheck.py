"""Container healthcheck for processes without an HTTP port (the archiver).

    python /opt/streamlearn/healthcheck.py archiver

Healthy when the archiver's consumer group (``STREAMLEARN_ARCHIVE_GROUP_ID``) is stable or
rebalancing, i.e. has a live member: one that polls and heartbeats (a stuck one is dropped after
``max.poll.interval``, and a group without members is EMPTY). With several archivers, any
member counts (they share the work).
Exit 0 when healthy; else 1 with one line saying what is wrong.
"""

from __future__ import annotations

import sys

TIMEOUT_S = 8.0


def archiver() -> str | None:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    from streamlearn.settings import load_settings

    s = load_settings(strict_env=False)
    group = s.archive_group_id
    admin = AdminClient(s.confluent_config(**{"log_level": 3}))
    try:
        (fut,) = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S).values()
        desc = fut.result(TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said in one line
        return f"archiver: cannot describe consumer group {group} at {s.kafka_bootstrap}: {exc}"
    # the group's state, not its member list: the embedded broker (tansu) lists no members
    live = (ConsumerGroupState.STABLE, ConsumerGroupState.PREPARING_REBALANCING,
            ConsumerGroupState.COMPLETING_REBALANCING)
    if desc.state not in live:
        return f"archiver: consumer group {group} has no live member (state {desc.state.name})"
    return None


CHECKS = {"archiver": archiver}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: healthcheck.py {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 2
    problem = CHECKS[argv[0]]()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
