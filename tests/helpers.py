"""Test helpers: drive real workers, produce and read real topics, wait on conditions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamlearn.schemas import AvroCodec
from streamlearn.settings import Settings
from streamlearn.streams.transport import make_producer
from streamlearn.tools.harness import WorkerProcess, scrape
from streamlearn.tools.harness import wait_until as wait_for

REG = AvroCodec.default()
OPEN_CLIENTS: list[Any] = []  # closed after each test by the autouse fixture in conftest


@dataclass
class WorkerHandle:
    settings: Settings
    log_path: Path
    process: WorkerProcess | None = None

    def start(self) -> WorkerHandle:
        self.process = WorkerProcess(self.settings.to_env(), self.log_path).start()
        return self

    def wait_assigned(self, timeout: float = 60.0, topics: tuple[str, ...] | None = None) -> None:
        from streamlearn.tools import demo  # not at import: it loads River and every model (the xdist controller
        # and unit-only runs import this module through conftest and never need it)

        def ok() -> bool:
            self.assert_alive()
            return demo.worker_assigned(self.settings, self.process.proc.pid, topics)

        wait_for(ok, timeout, "worker partition assignment")

    def worker_status(self) -> dict[str, Any]:
        from streamlearn.tools import demo

        return demo.worker_status(self.settings, self.process.proc.pid)

    def assert_alive(self) -> None:
        assert self.process is not None and self.process.proc is not None
        rc = self.process.proc.poll()
        if rc is not None:
            raise AssertionError(f"worker exited with {rc}:\n{self.log()[-4000:]}")

    def status(self) -> dict[str, Any]:
        from streamlearn.tools import demo

        return demo.read_status(self.settings)

    def counters(self) -> dict[str, int]:
        return self.status().get("counters", {})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None

    def kill(self) -> None:
        if self.process:
            self.process.kill()


class Sender:
    """Produces events, feedback and raw bytes to a test's topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = make_producer(settings, **{"linger.ms": 0})
        OPEN_CLIENTS.append(self)
        self.enc_event = REG.encoder("event")
        self.enc_fb = REG.encoder("feedback")

    def events(self, events: Iterable[dict[str, Any]]) -> None:
        for ev in events:
            self.producer.produce(self.settings.topic_events, self.enc_event(ev), ev["entity"].encode())
        self.flush()

    def feedback(self, items: Iterable[dict[str, Any]]) -> None:
        for fb in items:
            self.producer.produce(self.settings.topic_feedback, self.enc_fb(fb), fb["event_id"].encode())
        self.flush()

    def raw(self, topic: str, values: Iterable[bytes]) -> None:
        for v in values:
            self.producer.produce(topic, v, b"raw")
        self.flush()

    def flush(self) -> None:
        assert self.producer.flush(30) == 0

    def close(self) -> None:
        self.producer.flush(5)


class TopicReader:
    """Reads a topic from the beginning (all partitions), decoding with a subject."""

    def __init__(self, settings: Settings, topic: str, subject: str) -> None:
        self.subject = subject
        self.consumer = Consumer(settings.confluent_config(**{
            "group.id": f"reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
        self.records: list[dict[str, Any]] = []
        self._closed = False
        OPEN_CLIENTS.append(self)

    def poll(self) -> list[dict[str, Any]]:
        for m in self.consumer.consume(1000, 0.1):
            if not m.error():
                self.records.append(REG.decode(self.subject, m.value()))
        return self.records

    def wait_count(self, n: int, timeout: float = 60.0, key: str | None = None) -> list[dict[str, Any]]:
        def enough() -> bool:
            recs = self.poll()
            return (len({r[key] for r in recs}) if key else len(recs)) >= n

        wait_for(enough, timeout, f"{n} records on {self.subject}")
        return self.records

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.consumer.close()


def make_events(n: int, seed: int = 1, start: int = 0, n_entities: int = 13) -> list[dict[str, Any]]:
    """Deterministic events with a learnable label (returned separately by ``label_of``)."""
    import random

    rnd = random.Random(seed)
    out = []
    for i in range(start, start + n):
        amount = round(rnd.uniform(1, 100), 2)
        out.append({"event_id": f"e{seed}-{i}", "entity": f"ent-{i % n_entities}", "event_time": 1_000 * i,
                    "features": {"amount": amount, "kind": rnd.choice(["a", "b", "c"]), "flag": rnd.random() < 0.5}})
    return out


def label_of(ev: dict[str, Any]) -> bool:
    f = ev["features"]
    return f["amount"] + (40 if f["flag"] else 0) > 70  # linearly separable


def feedback_for(ev: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": ev["event_id"], "label": label_of(ev), "label_time": ev["event_time"] + 5_000}


def scrape_metrics(port: int, timeout: float = 15.0) -> dict[str, dict[tuple, float]]:
    """A worker's real ``GET /metrics``: ``{sample name: {sorted label items: value}}``."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in scrape(port, timeout).values():
        for (name, labels), value in fam.items():
            out.setdefault(name, {})[labels] = value
    return out
