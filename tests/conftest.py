"""Session fixtures: one real broker (tansu) and one real Redis (valkey) for the whole suite.

The test tree mirrors the layers: ``tests/unit`` (pure logic, no broker or Redis, seconds),
``tests/simulation`` (pure logic too, but long: two code paths held equal over whole streams
of thousands of events, error rates over many simulated runs, lifecycle backtests),
``tests/integration`` (the real broker and Redis, started once per session) and
``tests/system`` (whole processes: the demo, kill -9, outages, the benchmark). Each test is
marked with its tier (``-m unit`` ...), and a unit or simulation test that asks for the
broker or Redis fails at once.

Tests isolate themselves by names, not by servers: each gets its own topics, consumer
group and Redis key prefix. Workers run as real subprocesses (``streamlearn worker``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from streamlearn.settings import Settings
from streamlearn.streams.transport import ensure_topics
from streamlearn.tools.infra import EmbeddedInfra
from tests.helpers import OPEN_CLIENTS, WorkerHandle

TIERS = ("unit", "simulation", "integration", "system")
PURE = ("unit", "simulation")  # no broker or Redis: one thread per test process


def tier_of(path: Path) -> str | None:
    return next((t for t in TIERS if f"tests/{t}/" in path.as_posix()), None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """The pure tiers run scikit-learn, OpenMP and BLAS with one thread per test process.

    Three xdist processes share two cores, so a thread pool per process only adds threads
    that spin waiting for descheduled siblings: a HistGradientBoosting fit or prediction
    enters one OpenMP region per tree, and the batch-scoring tests took 15-110 s of CPU
    instead of ~2 s, depending on the machine's load. What the tests compare does not depend
    on the thread count (each row is predicted by one thread either way; fits are compared
    with themselves). Module scope: the bound ends with the module, so an integration test
    run later in the same process has the default pool. Tests of the thread bound itself
    raise the pool on purpose (tests/unit/models/test_batch_threads.py)."""
    if tier_of(request.path) not in PURE:
        yield
        return
    from threadpoolctl import threadpool_limits  # sklearn and numpy are loaded by collection

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def _session_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedInfra]:
    with EmbeddedInfra(workdir=tmp_path_factory.mktemp("infra")) as infra:
        yield infra


@pytest.fixture
def infra(request: pytest.FixtureRequest, _session_infra: EmbeddedInfra) -> EmbeddedInfra:
    """The session's broker and Redis (started on first use); not for unit or simulation tests."""
    if tier_of(request.node.path) in PURE:
        pytest.fail("a unit or simulation test asked for the broker/Redis: move it to tests/integration")
    return _session_infra


@pytest.fixture
def redis_client(infra: EmbeddedInfra) -> redis.Redis:
    return redis.Redis.from_url(infra.redis_url)


@pytest.fixture
def make_settings(infra: EmbeddedInfra) -> Callable[..., Settings]:
    """Settings with unique topics, group and Redis prefix; topics are created."""

    def make(**overrides) -> Settings:
        tag = uuid.uuid4().hex[:8]
        values = dict(
            kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url,
            topic_events=f"t{tag}.events", topic_predictions=f"t{tag}.predictions",
            topic_feedback=f"t{tag}.feedback", topic_deadletter=f"t{tag}.deadletter",
            topic_shadow=f"t{tag}.shadow", topic_lifecycle=f"t{tag}.lifecycle", topic_drift=f"t{tag}.drift",
            app_id=f"t{tag}-worker", redis_prefix=f"t{tag}", checkpoint_interval_s=1.0,
        )
        values.update(overrides)
        settings = Settings(**values)
        ensure_topics(settings)
        return settings

    return make


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerHandle]]:
    workers: list[WorkerHandle] = []

    def start(settings: Settings, wait_assigned: bool = True, name: str = "worker") -> WorkerHandle:
        w = WorkerHandle(settings, tmp_path / f"{name}-{len(workers)}.log").start()
        workers.append(w)
        if wait_assigned:
            w.wait_assigned()
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()
