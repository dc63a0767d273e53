"""The regression project ``streamlearn init --task regression`` writes learns its own demo
stream: through the worker's loop (in-process, labels in arrival order) its champion's
progressive R2 is well above 0. At the former lr 0.01 a few early SGD steps overshot
(R2 0.52 here, -7.8 in a live demo at full speed, where batches are scored before learning)."""

from __future__ import annotations

from pathlib import Path

from streamlearn import datasets
from streamlearn.project import Project
from streamlearn.project.scaffold import init_project
from streamlearn.replay.backtest.inprocess import run


def test_init_regression_champion_learns_its_demo_stream(tmp_path: Path) -> None:
    init_project(tmp_path / "p", task="regression")
    project = Project.load(tmp_path / "p")
    items = project.demo_items(3000, 7)
    loop, _ = run(datasets.arrival_order(items), project.view, project.champion, task=project.task)
    assert loop.champion.metric_values()["r2"] > 0.8
