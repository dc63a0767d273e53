"""Model specs: presets and factories by import path, canonical strings, clear errors, registry records."""

from __future__ import annotations

import json
import pickle
import textwrap

import pytest
import river
from river import compose

from streamlearn.models.estimators.learner import Learner
from streamlearn.models.estimators.spec import SPECS, ModelSpec, build_model, describe_spec
from streamlearn.models.modelset import ModelSet
from streamlearn.models.registry.versions import DirectoryStore, ModelRegistry

FACTORIES = '''
from river import linear_model, optim, preprocessing, tree


def make_pipeline(lr=0.05, l2=0.0):
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2)


def make_tree(grace_period=50, seed=7, split={"criterion": "gini"}):
    return tree.HoeffdingTreeClassifier(grace_period=grace_period, split_criterion=split["criterion"])


def make_regressor():
    return preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.01))


def broken():
    raise RuntimeError("no GPU here\\nsecond line")


def not_a_model():
    return {"weights": [1, 2]}


NOT_CALLABLE = 3
'''


@pytest.fixture()
def factories(tmp_path, monkeypatch):
    """A user's own module, outside the package (as a project folder would hold it)."""
    (tmp_path / "userfactories_spec.py").write_text(textwrap.dedent(FACTORIES))
    (tmp_path / "userbroken_spec.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userfactories_spec"


def test_presets_are_unchanged_and_their_string_is_their_name():
    for name in SPECS:
        spec = ModelSpec.parse(name)
        assert str(spec) == name and not spec.is_factory and spec.to_json() == {"preset": name}
        assert ModelSpec.from_json(spec.to_json()) == spec
        assert type(build_model(spec)) is type(build_model(name))


@pytest.mark.parametrize("params", [
    {"lr": 0.05}, {"lr": 1, "l2": 1e-4}, {"name": "adam", "n": 3, "flag": True, "none": None},
    {"text": "0.05"}, {"text": "true"}, {"text": " padded "}, {"text": ""}, {"text": "a&b=c?d#e%f"},
    {"nested": {"b": [1, 2.5, "x"], "a": {"z": None}}}, {"odd key&=": 1}, {"unicode": "café ✓"},
])
def test_factory_specs_round_trip_through_their_canonical_string_and_json(params):
    spec = ModelSpec.parse({"factory": "mypkg.models:make_pipeline", "params": params})
    text = str(spec)
    assert ModelSpec.parse(text) == spec and str(ModelSpec.parse(text)) == text
    assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert spec.kwargs == params
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(ModelSpec.parse(text))


def test_the_canonical_string_does_not_depend_on_parameter_order():
    a = ModelSpec.parse("mypkg.models:make?b=2&a=1")
    b = ModelSpec.parse({"factory": "mypkg.models:make", "params": {"a": 1, "b": 2}})
    assert a == b and str(a) == str(b) == "mypkg.models:make?a=1&b=2"
    assert ModelSpec.parse("mypkg.models:make?lr=0.05").kwargs == {"lr": 0.05}
    assert ModelSpec.parse("mypkg.models:make?opt=adam").kwargs == {"opt": "adam"}


def test_a_factory_builds_any_river_pipeline_and_rebuilds_it_exactly(factories):
    spec = f"{factories}:make_pipeline?lr=0.1&l2=0.001"
    model = build_model(spec)
    assert isinstance(model, compose.Pipeline)
    assert model["LogisticRegression"].l2 == 0.001 and model["LogisticRegression"].optimizer.lr.learning_rate == 0.1
    again = build_model(ModelSpec.parse(spec).to_json())
    stream = [({"a": float(i % 7), "b": float(i % 3)}, (i % 7) > 3) for i in range(300)]
    for x, y in stream:
        assert model.predict_proba_one(x) == again.predict_proba_one(x)
        model.learn_one(x, y)
        again.learn_one(x, y)
    tree = build_model({"factory": f"{factories}:make_tree", "params": {"split": {"criterion": "hellinger"}}})
    assert tree.split_criterion == "hellinger"


def test_learners_and_model_sets_keep_a_factory_spec_as_its_canonical_string(factories):
    spec = ModelSpec.parse({"factory": f"{factories}:make_regressor"})
    learner = Learner("trips", spec, task="regression")
    assert learner.spec == f"{factories}:make_regressor" and isinstance(learner.spec, str)
    ms = ModelSet.fresh("trips", "linreg")
    v = ms.add_challenger(learner.spec, reason="user pipeline")
    assert ms.learners[v].spec == learner.spec and ms.learners[v].task.kind == "regression"
    restored = pickle.loads(pickle.dumps(ms))
    assert restored.learners[v].spec == learner.spec


@pytest.mark.parametrize("spec,message", [
    ("nowhere_at_all.models:make", "cannot import module 'nowhere_at_all.models': No module named"),
    ("userbroken_spec:make", "cannot import module 'userbroken_spec': No module named 'does_not_exist_anywhere'"),
    ("userfactories_spec:missing", "module 'userfactories_spec' has no attribute 'missing'"),
    ("userfactories_spec:NOT_CALLABLE", "'NOT_CALLABLE' is not callable"),
    ("userfactories_spec:make_pipeline?learning_rate=0.1", "rejected params {'learning_rate': 0.1}"),
    ("userfactories_spec:broken", "raised RuntimeError: no GPU here"),
    ("userfactories_spec:not_a_model", "returned dict, not a River classifier or regressor"),
])
def test_factory_errors_are_one_line_and_name_the_path(factories, spec, message):
    with pytest.raises(ValueError) as e:
        build_model(spec)
    text = str(e.value)
    assert "\n" not in text and message in text
    assert text.startswith(f"model factory '{spec.partition('?')[0]}'")


@pytest.mark.parametrize("bad,message", [
    ("nosuchpreset", "unknown model spec 'nosuchpreset'"),
    ("logreg?lr=0.1", "takes no params"),
    ("a:b:c", "expected 'package.module:callable'"),
    (":make", "expected 'package.module:callable'"),
    ("pkg.mod:make?lr", "is not key=value"),
    ({"factory": "pkg.mod:make", "params": {"obj": object()}}, "is not a JSON value"),
    ({"factory": "pkg.mod:make", "params": {"x": float("nan")}}, "not a finite number"),
    ({"factory": "pkg.mod:make", "preset": "logreg"}, "'preset' or 'factory'"),
    ({"factroy": "pkg.mod:make"}, "'preset' or 'factory'"),
    ("", "needs a preset name or a factory path"),
])
def test_malformed_specs_are_refused(bad, message):
    with pytest.raises(ValueError) as e:
        build_model(bad)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_registry_records_the_full_spec(factories, tmp_path):
    reg = ModelRegistry(DirectoryStore(str(tmp_path / "reg")), key=b"k")
    spec = ModelSpec.parse(f"{factories}:make_pipeline?lr=0.1")
    mv = reg.register("m", build_model(spec), spec=spec, stage="champion")
    assert mv.spec == f"{factories}:make_pipeline?lr=0.1"
    assert mv.spec_detail == {"spec": mv.spec, "factory": f"{factories}:make_pipeline", "params": {"lr": 0.1},
                              "package": factories, "package_version": None, "river": river.__version__}
    assert reg.get("m", 1) == mv  # survives the JSON index
    # an installed package's factory records its version; presets record River's
    assert describe_spec("river.linear_model:LinearRegression")["package_version"] == river.__version__
    assert describe_spec("hat") == {"spec": "hat", "preset": "hat", "river": river.__version__}
    assert build_model(reg.get("m", 1).spec).__class__ is compose.Pipeline  # rebuilt from the record
    # a free-form label is still accepted, as before
    assert reg.register("m", {"w": 1}, spec="logreg-offline", parent=1).spec_detail["spec"] == "logreg-offline"


def test_registry_entries_written_before_spec_detail_still_load(tmp_path):
    store = DirectoryStore(str(tmp_path / "reg"))
    reg = ModelRegistry(store, key=b"k")
    reg.register("m", {"w": 1}, spec="logreg", stage="champion")
    raw = json.loads(store.read("m"))
    for v in raw["versions"]:
        del v["spec_detail"]  # the index layout of earlier releases
    assert store.compare_and_set("m", store.read("m"), json.dumps(raw, sort_keys=True).encode())
    old = reg.get("m", 1)
    assert old.spec == "logreg" and old.spec_detail == {} and reg.load("m", 1) == {"w": 1}
