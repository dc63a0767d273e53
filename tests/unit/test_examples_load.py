"""Every project in examples/ loads as a user's would (no broker, no Redis): its TOML is
valid, its sample carries every declared field, its factories build models of its task, its
demo generator is deterministic and gives labels of the right type, and `plan` renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlearn.project import Project
from streamlearn.project.plan import make_plan, render_plan
from streamlearn.settings import PROJECT_FILE, Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = sorted(p.parent.name for p in EXAMPLES.glob(f"*/{PROJECT_FILE}"))
TASKS = {"cards": "binary", "trips": "regression", "segments": "multiclass"}
NO_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: plan says "not compared"


def load(name: str) -> Project:
    return Project.load(EXAMPLES / name, redis_url=NO_REDIS)


def test_the_three_examples_are_there():
    assert set(TASKS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_and_its_sample_fits_its_features(name):
    p = load(name)
    assert p.name == name and p.directory is not None
    if name in TASKS:
        assert p.task.kind == TASKS[name]
    assert p.sample is not None and p.check_sample() == []
    xs = p.features(list(_sample(p)))
    assert len(xs) >= 20 and all(xs)  # every sample event gives a non-empty vector
    readme = (EXAMPLES / name / "README.md").read_text()
    assert f"--project examples/{name}" in readme


@pytest.mark.parametrize("name", NAMES)
def test_example_models_learn_its_demo_stream(name):
    p = load(name)
    items = p.demo_items(80, seed=3)
    assert items == p.demo_items(80, seed=3)  # seeded: a backtest regenerates the same stream
    assert len(items) == 80 and len({it.event["event_id"] for it in items}) == 80
    labeled = [it for it in items if it.label is not None]
    assert len(labeled) > 60
    for it in labeled:
        assert p.task.check_label(it.label) == it.label
        assert it.label_time >= it.event["event_time"]  # labels come after their event
    xs = p.features([it.event for it in items])
    for spec in [p.champion] + ([p.challenger] if p.challenger else []):
        model = p.build_model(spec)
        for x, it in zip(xs, items):
            model.predict_one(x)
            if it.label is not None:
                model.learn_one(x, it.label)
        y = model.predict_one(xs[-1])
        if p.task.kind == "regression":
            assert isinstance(y, float)
        else:
            assert y in {it.label for it in labeled}


@pytest.mark.parametrize("name", NAMES)
def test_plan_renders_without_redis(name):
    p = load(name)
    plan = make_plan(p.settings, p)
    text = render_plan(plan)
    assert plan["recorded"]["status"] == "not compared"
    assert f"feature view {p.view.name} v{p.view.version} (fingerprint {p.view.fingerprint})" in text
    assert plan["view"]["problems"] == []


def test_cards_is_exactly_the_builtin_project():
    builtin = Project.from_settings(Settings(redis_url=NO_REDIS))
    cards = load("cards")
    assert (cards.view.name, cards.view.version) == ("entity_v1", 1)
    assert cards.view.fingerprint == builtin.view.fingerprint
    assert cards.champion == builtin.champion == "logreg"
    assert cards.task == builtin.task
    assert cards.keys == builtin.keys  # same Redis keys: the default, unnamespaced ones
    defaults = Settings(redis_url=NO_REDIS)
    for field in ("topic_events", "topic_predictions", "topic_feedback", "app_id", "redis_prefix", "model_name"):
        assert getattr(cards.settings, field) == getattr(defaults, field), field


def test_other_examples_keep_to_their_own_topics_and_keys():
    seen: dict[str, str] = {}
    defaults = Settings(redis_url=NO_REDIS)
    for name in NAMES:
        if name == "cards":
            continue
        s = load(name).settings
        names = [s.redis_prefix, s.app_id] + [getattr(s, f"topic_{k}") for k in (
            "events", "predictions", "feedback", "deadletter", "shadow", "lifecycle", "drift")]
        for n in names:
            assert n not in seen, f"{name} and {seen.get(n)} share {n}"
            seen[n] = name
        assert s.redis_prefix != defaults.redis_prefix and s.topic_events != defaults.topic_events


def test_segments_declares_imagesegments_classes():
    from river import datasets

    p = load("segments")
    assert set(p.task.classes) == {y for _, y in datasets.ImageSegments()}


def _sample(p: Project):
    from streamlearn.project import load_events

    return load_events(p.sample)
