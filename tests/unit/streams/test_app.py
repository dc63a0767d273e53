"""The worker's Faust app leaves nothing in the working directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamlearn.settings import Settings
from streamlearn.streams.app import WorkerApp
from streamlearn.tools.bench_apps import faust_app


@pytest.mark.parametrize("make", [
    lambda: WorkerApp("t-datadir", store="memory://", autodiscover=False),
    lambda: faust_app(Settings(app_id="t-datadir-bench")),
], ids=["worker", "bench"])
def test_first_start_creates_no_data_directory(make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = make()
    asyncio.run(app.on_first_start())  # where Faust creates <id>-data/v1/tables
    assert list(tmp_path.iterdir()) == []
