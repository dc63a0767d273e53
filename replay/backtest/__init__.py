"""Backtests: recorded history through the online loop in-process, reproducing live runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def backtest(project: Any, archive: Any, *, models: list[str] | None = None, **kwargs: Any) -> Any:
    """A project's view and models (default: its champion, and its drift challenger side by
    side) over an archive, with its task and lifecycle policy; the result's
    ``metrics_frame()`` is a pandas DataFrame of the metrics over event time. An archive
    directory is read for the project's topics only (an :class:`Archive` object as it is).

    >>> # from streamlearn.project import Project
    >>> # backtest(Project.load("examples/trips"), "streamlearn-archive").metrics_frame()
    """
    from streamlearn.models.governance.lifecycle import LifecycleConfig
    from streamlearn.replay.backtest.runner import run_backtest

    specs = [project.resolve_spec(m) for m in models] if models else (
        [project.champion] + ([project.challenger] if project.challenger else []))
    kwargs.setdefault("task", project.task)
    lifecycle = kwargs.pop("lifecycle", project.settings.lifecycle_auto)  # True, False or a LifecycleConfig
    if lifecycle is True:
        lifecycle = LifecycleConfig.from_settings(project.settings, task=project.task,
                                                  challenger_spec=project.challenger)
    if lifecycle:
        kwargs["lifecycle"] = lifecycle
    if isinstance(archive, (str, Path)):  # a directory: this project's topics only, as the CLI reads it
        from streamlearn.replay.archive.reader import Archive, read_own_topics

        where, archive = str(archive), Archive.open(str(archive))
        read_own_topics(archive, project.settings, where)
    return run_backtest(archive, specs, view=project.view, **kwargs)


__all__ = ["backtest"]
