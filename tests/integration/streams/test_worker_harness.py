"""The in-process worker harness runs the worker's batch path on a real Redis, reproducibly."""

from __future__ import annotations

from streamlearn.tools.worker_harness import run


def test_two_passes_publish_the_same_predictions():
    a = run(events=300, window=40)  # each on a private Redis it starts (it flushes its database)
    b = run(events=300, window=40)
    assert a["published"] >= 300 and a["labels_learned"] > 250
    assert a["digest"] == b["digest"]
    assert a["cpu_us_per_event"] > 0
