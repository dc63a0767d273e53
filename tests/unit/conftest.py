"""The unit tier runs scikit-learn, OpenMP and BLAS with one thread per test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_process() -> Iterator[None]:
    """Three xdist processes share two cores, so a thread pool per process only adds threads
    that spin waiting for descheduled siblings: a HistGradientBoosting fit or prediction
    enters one OpenMP region per tree, and the batch-scoring tests took 15-110 s of CPU
    instead of ~2 s, depending on the machine's load. What the tests compare does not depend
    on the thread count (each row is predicted by one thread either way; fits are compared
    with themselves). Module scope: the bound ends with the module, so an integration test
    run later in the same process has the default pool. Tests of the thread bound itself
    raise the pool on purpose (tests/unit/models/test_batch_threads.py)."""
    from threadpoolctl import threadpool_limits  # sklearn and numpy are loaded by collection

    with threadpool_limits(limits=1):
        yield
