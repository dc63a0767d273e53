"""A user's mistakes with ``init``, ``features --sample`` and a project's sample file are one
``streamlearn: ...`` line (file and line where there is one) and exit 2, never a traceback;
an event ``features`` refuses is one the worker would dead-letter (validated and decoded as
the worker decodes it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamlearn.cli import app
from streamlearn.cli.errors import run
from streamlearn.project import Project, ProjectError, load_events
from streamlearn.settings import get_settings


@pytest.fixture
def cli(monkeypatch, capsys):
    monkeypatch.setenv("STREAMLEARN_PROJECT", "")  # restored after: --project sets it
    get_settings.cache_clear()

    def call(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            run(app, list(argv))
        out, err = capsys.readouterr()
        get_settings.cache_clear()
        return info.value.code, out, err

    yield call
    get_settings.cache_clear()


def _one_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamlearn: ") and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_init_mistakes_are_one_line(tmp_path: Path, cli) -> None:
    code, _, err = cli("init", str(tmp_path / "p"), "--task", "regresion")
    assert code == 2
    _one_line(err, "--task must be binary, multiclass or regression", "'regresion'")
    code, out, _ = cli("init", str(tmp_path / "p"), "--task", "multiclass")
    assert code == 0 and "streamlearn.toml" in out
    code, _, err = cli("init", str(tmp_path / "p"), "--task", "multiclass")
    assert code == 2
    _one_line(err, "streamlearn.toml exists already (--force to overwrite)")


@pytest.mark.parametrize("change, message", [
    (lambda ev: {**ev, "event_time": "yesterday"}, "line 2: schema: invalid value for streamlearn.v1.Event.event_time"),
    (lambda ev: {k: v for k, v in ev.items() if k != "event_time"},
     "line 2: schema: missing required field 'event_time'"),
    (lambda ev: {**ev, "features": {**ev["features"], "amount": "ten"}},
     "line 2: field 'amount' is declared numeric but got str 'ten'"),
])
def test_features_of_a_sample_the_worker_would_refuse_is_one_line_with_its_line(tmp_path: Path, cli, change,
                                                                                message) -> None:
    assert cli("init", str(tmp_path / "p"))[0] == 0
    ev = json.loads((tmp_path / "p" / "sample.jsonl").read_text().splitlines()[0])
    sample = tmp_path / "events.jsonl"
    sample.write_text(json.dumps(ev) + "\n" + json.dumps({**change(ev), "event_id": "second"}) + "\n")
    code, out, err = cli("--project", str(tmp_path / "p"), "features", "--sample", str(sample))
    assert code == 2 and out == ""
    _one_line(err, f"{sample}: {message}")
    # the first event alone is fine, and shown as the worker would compute it
    sample.write_text(json.dumps(ev) + "\n")
    code, out, err = cli("--project", str(tmp_path / "p"), "features", "--sample", str(sample))
    assert code == 0 and ev["event_id"] in out and "amount" in out, err


def test_features_of_a_missing_sample_is_a_usage_error(tmp_path: Path, cli) -> None:
    assert cli("init", str(tmp_path / "p"))[0] == 0
    code, _, err = cli("--project", str(tmp_path / "p"), "features", "--sample", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("line, message", [("{not json", "not JSON"), ("[1, 2]", "expected a JSON object, got list")])
def test_a_project_sample_line_that_is_not_an_event_object_names_file_and_line(tmp_path: Path, cli, line,
                                                                               message) -> None:
    assert cli("init", str(tmp_path / "p"))[0] == 0
    sample = tmp_path / "p" / "sample.jsonl"
    n = len(sample.read_text().splitlines())
    sample.write_text(sample.read_text() + line + "\n")
    with pytest.raises(ProjectError, match=f"sample.jsonl: line {n + 1}: {message}") as info:
        list(load_events(Project.load(tmp_path / "p").sample))  # (loading reads the sample already)
    assert "\n" not in str(info.value)
    code, _, err = cli("--project", str(tmp_path / "p"), "plan")
    assert code == 2
    _one_line(err, f"sample.jsonl: line {n + 1}: {message}")


def test_an_unknown_spec_name_is_named_with_the_nearest_and_the_projects_own(tmp_path: Path, cli) -> None:
    assert cli("init", str(tmp_path / "p"), "--task", "multiclass")[0] == 0
    project = Project.load(tmp_path / "p")
    assert project.resolve_spec("main") == project.champion and sorted(project.specs) == ["main", "tree"]
    with pytest.raises(ProjectError, match=r"unknown model spec 'mian' \(did you mean 'main'\?\); "
                                           r"the project's: \['main', 'tree'\], presets: \[") as info:
        project.resolve_spec("mian")
    assert "\n" not in str(info.value)
    # the demo refuses it before starting a broker, Redis or a worker (a one-line exit 2)
    code, _, err = cli("--project", str(tmp_path / "p"), "demo", "--spec", "mian", "--events", "50")
    assert code == 2
    _one_line(err, "unknown model spec 'mian' (did you mean 'main'?)")
    # the same in the project file, with its file and key
    toml = tmp_path / "p" / "streamlearn.toml"
    toml.write_text(toml.read_text().replace('champion = "main"', 'champion = "mian"'))
    with pytest.raises(ProjectError, match=r"streamlearn.toml: models.champion: unknown model spec 'mian' "
                                           r"\(did you mean 'main'\?\)"):
        Project.load(tmp_path / "p")


def test_a_misspelt_task_names_the_file_key_and_the_nearest_task(tmp_path: Path, cli) -> None:
    assert cli("init", str(tmp_path / "p"), "--task", "multiclass")[0] == 0
    toml = tmp_path / "p" / "streamlearn.toml"
    toml.write_text(toml.read_text().replace('task = "multiclass"', 'task = "multiclas"', 1))
    code, _, err = cli("--project", str(tmp_path / "p"), "plan")
    assert code == 2
    _one_line(err, "streamlearn.toml: project.task: must be one of binary, multiclass, regression, not 'multiclas' "
                   "(did you mean multiclass?)")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("task, good, bad, reason", [
    ("multiclass", "high", "medium", "label 'medium' is not one of the declared classes ['high', 'low', 'mid'] "
                                     "(task: multiclass)"),
    ("regression", 12.5, "12.5", "regression label must be a finite number, got str '12.5' (task: regression)"),
    ("binary", 1, 2, "binary label must be a bool or 0/1 (or declare two classes), got int 2 (task: binary)"),
])
def test_feedback_refuses_a_label_the_worker_would_dead_letter_before_sending_anything(
        tmp_path: Path, cli, monkeypatch, task, good, bad, reason) -> None:
    assert cli("init", str(tmp_path / "p"), "--task", task)[0] == 0
    # no broker: a refused file never gets as far as connecting to one
    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"127.0.0.1:{_closed_port()}")
    labels = tmp_path / "labels.jsonl"
    rows = [{"event_id": f"e{i}", "label": good, "label_time": 1} for i in range(5)]
    rows[1]["label"] = rows[3]["label"] = bad
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli("--project", str(tmp_path / "p"), "feedback", "--input", str(labels))
    assert code == 2 and out == ""
    _one_line(err, f"{labels}: line 2: label: {reason}; 1 more invalid line(s): 4; nothing was sent")
    # the same labels as CSV (cells typed by their text) are refused the same way
    if task != "regression":  # (a CSV cell "12.5" is a number: the string label needs JSON)
        csv_file = tmp_path / "labels.csv"
        csv_file.write_text("event_id,label\n" + "".join(f"{r['event_id']},{r['label']}\n" for r in rows))
        code, out, err = cli("--project", str(tmp_path / "p"), "feedback", "--input", str(csv_file))
        assert code == 2
        _one_line(err, f"{csv_file}: line 3: label: {reason}; 1 more invalid line(s): 5; nothing was sent")
    # without the bad lines the file passes the check and only then looks for the broker
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] == good))
    code, _, err = cli("--project", str(tmp_path / "p"), "feedback", "--input", str(labels))
    assert code == 1
    _one_line(err, "cannot reach the Kafka broker")


def test_feedback_checks_labels_with_the_workers_own_check(tmp_path: Path) -> None:
    """One check, two callers: the worker's label check (schemas.validation.check_label) is what
    the CLI runs, on the label as the worker decodes it."""
    from streamlearn.cli.io import label_check
    from streamlearn.project.scaffold import init_project
    from streamlearn.schemas import InvalidRecord
    from streamlearn.schemas.validation import check_label

    init_project(tmp_path / "p", "multiclass", None, False)
    project = Project.load(tmp_path / "p")
    check = label_check(project.settings)
    check({"event_id": "e1", "label": "low", "label_time": 1})
    for label in ("medium", 1, True):
        with pytest.raises(InvalidRecord) as cli_says:
            check({"event_id": "e1", "label": label, "label_time": 1})
        with pytest.raises(InvalidRecord) as worker_says:
            check_label({"event_id": "e1", "label": label}, project.task)
        assert (cli_says.value.reason, cli_says.value.detail) == (worker_says.value.reason, worker_says.value.detail)
        assert cli_says.value.reason == "label"


@pytest.mark.parametrize("args, message", [
    (("--spec", "bogus"), "spec: unknown model spec 'bogus'; presets: ['arf', 'hat', 'ht', 'linreg', 'logreg', "
                          "'nb', 'prior'], or a factory 'module:function'"),
    (("--spec", "logrge"), "spec: unknown model spec 'logrge' (did you mean 'logreg'?)"),
    (("--dataset", "card"), "--dataset: unknown dataset 'card'; one of: cards, drift, phishing"),
])
def test_a_builtin_demo_refuses_an_unknown_spec_or_dataset_before_starting_anything(cli, args, message) -> None:
    # addresses where nothing listens: the refusal comes before any broker, Redis or worker is used
    port = _closed_port()
    code, out, err = cli("demo", *args, "--events", "50", "--kafka", f"127.0.0.1:{port}",
                         "--redis-url", f"redis://127.0.0.1:{port}/0")
    assert code == 2 and out == ""
    _one_line(err, message)


def test_plan_tells_declared_features_from_vector_columns_and_fits_80_columns(tmp_path: Path, cli,
                                                                             monkeypatch) -> None:
    assert cli("init", str(tmp_path / "p"))[0] == 0
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    code, out, err = cli("--project", str(tmp_path / "p"), "plan")
    assert code == 0, err
    lines = out.splitlines()
    project = Project.load(tmp_path / "p")
    declared = project.view.describe(list(load_events(project.sample)))
    n, observed = len(declared["features"]), len(declared["observed_features"])
    assert (n, observed) == (15, 29)  # one hashed field (16 buckets), one function: more columns than rows
    assert f"  {n} declared features (rows below); the sample's vectors have {observed} columns" in lines
    start = lines.index("    feature                  kind                 cols  declared at")
    table = lines[start + 1:start + 1 + n]
    assert all(len(line) <= 80 for line in lines[start:start + 1 + n]), "\n".join(lines[start:start + 1 + n])
    # every row's columns, and they add up to the vector's
    rows = {line.split()[0]: line for line in table}
    assert rows["merchant#<0..15>"].split()[-2] == "15"  # the buckets the sample hit
    assert rows["ent_merchant_distinct"].endswith(" 1  aggregates[3]")  # 'distinct (KMV k=16)' fits its column
    assert rows["<project:amount_band>"].split()[-3:] == ["function", "1", "functions[0]"]
    assert sum(int(line.split()[-2]) for line in table) == observed
    # offline: it says plainly that only Redis knows whether the definition changed since it was served
    said = "whether version 1's definition changed since a worker first served it is recorded only in that Redis"
    assert any(said in line and "bump features.version to 2" in line for line in lines), out
