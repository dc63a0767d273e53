"""The worker's Faust app leaves nothing in the working directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamlearn.settings import Settings


# the apps are imported when a test makes one, not at collection: Faust and the worker's web
# app cost every xdist worker ~0.5 s CPU
def _worker_app():
    from streamlearn.streams.app import WorkerApp

    return WorkerApp("t-datadir", store="memory://", autodiscover=False)


def _bench_app():
    from streamlearn.tools.bench_apps import faust_app

    return faust_app(Settings(app_id="t-datadir-bench"))


@pytest.mark.parametrize("make", [_worker_app, _bench_app], ids=["worker", "bench"])
def test_first_start_creates_no_data_directory(make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = make()
    asyncio.run(app.on_first_start())  # where Faust creates <id>-data/v1/tables
    assert list(tmp_path.iterdir()) == []
