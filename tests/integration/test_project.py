"""A project the user owns, in a temporary folder outside the package, through the worker,
the backtest and the retrainer on the real broker and Redis.

Its streamlearn.toml declares typed fields, per-entity aggregates and a custom feature
function; its Python module a River pipeline factory with parameters. The live predictions
must equal a plain River loop over the same features and model on the same interleaving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
import uuid
from pathlib import Path

import pytest
from river import metrics

from streamlearn.featurestore import catalog
from streamlearn.featurestore.declare import view_from_dict
from streamlearn.featurestore.functions import resolve_import
from streamlearn.models.estimators.spec import build_model
from streamlearn.project import Project
from streamlearn.replay.archive.archiver import Archiver
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.backtest import backtest
from streamlearn.replay.retrain.retrainer import RetrainConfig, retrain
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for

MODULE = "userproj_" + uuid.uuid4().hex[:8]  # a module name no other test has imported

TOML = """
[project]
name = "payments"
task = "binary"
sample = "sample.jsonl"

[features]
name = "payments"
version = {version}

[[features.fields]]
name = "amount"
type = "numeric"
missing = "zero"

[[features.fields]]
name = "kind"
type = "categorical"

[[features.fields]]
name = "flag"
type = "boolean"

[[features.aggregates]]
kind = "decayed"
on = ["amount"]
half_lives = ["{half_life}"]
stats = ["mean", "zscore"]

[[features.aggregates]]
kind = "window"
on = "amount"
duration = "30s"
stats = ["count", "max"]

[[features.functions]]
fn = "{module}:amount_flags"

[models]
name = "payments"
champion = "main"

[models.specs.main]
factory = "{module}:make_pipeline"
params = {{ lr = 0.1 }}
"""

PY = '''
from river import linear_model, optim, preprocessing


def amount_flags(event, state):
    amount = event["features"].get("amount")
    if amount == 13.0:  # a user bug on one value: its event is dead-lettered, the rest goes on
        raise KeyError("unlucky")
    return {"big": 1.0 if amount and amount > 80 else 0.0}


def make_pipeline(lr=0.05):
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(lr))
'''


def write_project(root: Path, version: int = 1, half_life: str = "1h") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "streamlearn.toml").write_text(TOML.format(version=version, half_life=half_life, module=MODULE))
    (root / f"{MODULE}.py").write_text(textwrap.dedent(PY))
    with open(root / "sample.jsonl", "w") as fo:
        for ev in make_events(20, seed=99):
            fo.write(json.dumps(ev) + "\n")
    return root


def test_a_user_project_runs_through_worker_backtest_and_retrain_and_equals_a_plain_river_loop(
        tmp_path, make_settings, start_worker):
    root = write_project(tmp_path / "payments")
    s = make_settings(project=str(root), lifecycle_auto=False)
    worker = start_worker(s)
    send, preds = Sender(s), TopicReader(s, s.topic_predictions, "prediction")
    dead = TopicReader(s, s.topic_deadletter, "deadletter")
    events = make_events(240, seed=5)
    events[37]["features"]["amount"] = 13.0  # the feature function raises on this one
    bad_id = events[37]["event_id"]
    good = [e for e in events if e["event_id"] != bad_id]
    labels: list[dict] = []
    for j in range(0, len(events), 40):
        send.events(events[j : j + 40])
        preds.wait_count(len([e for e in events[: j + 40] if e["event_id"] != bad_id]), key="event_id")
        ready = [feedback_for(e) for e in good[len(labels) : max(0, j + 40 - 15)] if e["event_id"] != bad_id]
        send.feedback(ready)
        labels.extend(ready)
    rest = [feedback_for(e) for e in good[len(labels) :]]
    send.feedback(rest + [{"event_id": good[0]["event_id"], "label": "yes", "label_time": 1}])  # wrong type
    labels.extend(rest)
    wait_for(lambda: worker.counters().get("labels_learned") == len(good), 60, "every label learned")
    published = preds.wait_count(len(good))
    assert [p["event_id"] for p in published] == [e["event_id"] for e in good]

    reasons = {d["reason"] for d in dead.wait_count(2)}
    assert reasons == {"feature_error", "label"}, "a raising feature function and a string label are dead-lettered"
    worker.assert_alive()

    # a plain River loop: the same declared features, a fresh model from the same factory
    project = Project.load(root, redis_url=s.redis_url, redis_prefix=s.redis_prefix)  # its folder on sys.path
    table = tomllib.loads((root / "streamlearn.toml").read_text())["features"]
    view = view_from_dict(table, resolve=resolve_import)
    model = resolve_import(f"{MODULE}:make_pipeline")(lr=0.1)
    acc, auc = metrics.Accuracy(), metrics.ROCAUC()
    states: dict[str, dict] = {}
    served: dict[str, tuple[dict, dict]] = {}
    learned = 0

    def learn_next() -> None:
        nonlocal learned
        fb = labels[learned]
        x, proba = served[fb["event_id"]]
        acc.update(fb["label"], max(proba, key=proba.get))
        auc.update(fb["label"], proba)
        model.learn_one(x, fb["label"])
        learned += 1

    for ev, p in zip(good, published):
        while learned < p["labels_learned"]:
            learn_next()
        x, states[ev["entity"]] = view.compute(ev, states.get(ev["entity"]))
        proba = model.predict_proba_one(x)
        served[ev["event_id"]] = (x, proba)
        assert p["score"] == proba[True], f"score differs at {ev['event_id']} after {learned} labels"
    while learned < len(labels):
        learn_next()
    online = worker.status()["metrics"]
    assert (online["accuracy"], online["roc_auc"]) == (acc.get(), auc.get())
    assert acc.get() > 0.7

    # the project's state lives in its own namespace; the version is bound to the definition
    assert project.keys.entity("x") == f"{s.redis_prefix}:ent:payments.v1:x"
    import redis

    client = redis.Redis.from_url(s.redis_url)
    assert client.exists(f"{s.redis_prefix}:ent:payments.v1:{good[0]['entity']}")
    assert catalog.recorded(client, s.redis_prefix, "payments", 1)["fingerprint"] == view.fingerprint

    # backtest from Python: the archive of this run reproduces every live prediction
    archive_dir = tmp_path / "archive"
    Archiver(s.model_copy(update={"archive_dir": str(archive_dir),
                                  "archive_group_id": f"arch-{uuid.uuid4().hex[:6]}"})).run(exit_when_idle_s=1.0)
    result = backtest(project, Archive.open(archive_dir), out=tmp_path / "bt", reference=(s.model_name, 1),
                      lifecycle=False)
    replayed = {}
    for line in (tmp_path / "bt" / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        replayed.setdefault(p["event_id"], p["score"])
    assert {p["event_id"]: p["score"] for p in published} == replayed
    frame = result.metrics_frame()
    assert list(frame["model"].unique()) == [project.champion] and len(frame) == len(result.rows)
    assert {"time", "events", "accuracy", "roc_auc", "log_loss"} <= set(frame.columns)
    assert result.final[project.champion]["accuracy"] == acc.get()

    # batch retraining on the archive with the same declared view
    r = retrain(archive_dir, RetrainConfig(view=project.view.name, epochs=1), None, b"k", view=project.view)
    assert r.lineage["view"]["fingerprint"] == project.view.fingerprint
    assert set(r.lineage["features"]) >= {"amount", "big", "flag"}


def test_changing_a_view_without_a_version_bump_is_refused_and_a_bump_starts_a_new_namespace(
        tmp_path, make_settings, start_worker):
    root = write_project(tmp_path / "payments")
    s = make_settings(project=str(root), lifecycle_auto=False)
    worker = start_worker(s)
    Sender(s).events(make_events(30, seed=8))
    TopicReader(s, s.topic_predictions, "prediction").wait_count(30)
    worker.stop()

    write_project(root, version=1, half_life="2h")  # a changed definition, same version
    env = {**os.environ, **s.to_env()}
    proc = subprocess.run([sys.executable, "-m", "streamlearn", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "version 1 was first served with another definition" in err[0] \
        and "features.version = 2" in err[0], proc.stderr
    plan = subprocess.run([sys.executable, "-m", "streamlearn", "plan"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert "changed: version 1 was first served" in plan.stdout and "half_lives" in plan.stdout, plan.stdout

    write_project(root, version=2, half_life="2h")  # bumped: served from a fresh namespace
    s2 = s.model_copy(update={"app_id": s.app_id + "-2"})
    start_worker(s2)
    Sender(s2).events(make_events(10, seed=9, start=500))
    TopicReader(s2, s2.topic_predictions, "prediction").wait_count(40)
    import redis

    client = redis.Redis.from_url(s.redis_url)
    assert client.keys(f"{s.redis_prefix}:ent:payments.v2:*") and client.keys(f"{s.redis_prefix}:ent:payments.v1:*")
    assert catalog.versions(client, s.redis_prefix, "payments") == [1, 2]
    old = catalog.rebuild(catalog.recorded(client, s.redis_prefix, "payments", 1), resolve=resolve_import)
    assert old.fingerprint == catalog.recorded(client, s.redis_prefix, "payments", 1)["fingerprint"]
    assert old.version == 1 and old.fingerprint != Project.load(root, redis_url=s.redis_url).view.fingerprint


@pytest.mark.parametrize("old, new, message", [
    ('champion = "main"', 'champion = "main"\nchampoin = 1', "models.champoin: unknown key (did you mean "),
    ("MODULE:make_pipeline", "nowhere:make", "models.specs.main: "),  # the named spec's own table
    ('name = "flag"', 'name = "flagg"', "flagg"),
])
def test_project_mistakes_are_one_line_errors_before_any_consumer_joins(tmp_path, old, new, message):
    root = write_project(tmp_path / "p")
    path = root / "streamlearn.toml"
    path.write_text(path.read_text().replace(old.replace("MODULE", MODULE), new))
    env = {**os.environ, "STREAMLEARN_PROJECT": str(root), "KAFKA_BOOTSTRAP": "127.0.0.1:1",
           "STREAMLEARN_DEVELOPMENT": "1"}
    proc = subprocess.run([sys.executable, "-m", "streamlearn", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and message in err[0] and "streamlearn.toml" in err[0], proc.stderr


def test_build_model_of_a_project_spec_is_the_factory_with_its_params(tmp_path):
    root = write_project(tmp_path / "p")
    project = Project.load(root)
    assert project.champion == f"{MODULE}:make_pipeline?lr=0.1"
    assert repr(build_model(project.champion)) == repr(resolve_import(f"{MODULE}:make_pipeline")(lr=0.1))
