"""``streamlearn produce / feedback / tail`` as subprocesses against the real broker and worker."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from streamlearn import datasets
from streamlearn.cli.io import TailUnavailable, resolve_tail_source
from streamlearn.schemas import AvroCodec
from streamlearn.settings import Settings
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for


def cli(settings: Settings, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([sys.executable, "-m", "streamlearn", *args], env=env, input=stdin, text=True,
                          capture_output=True, timeout=timeout)


def cli_background(settings: Settings, out: Path, err: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen([sys.executable, "-m", "streamlearn", *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=out.open("w"), stderr=err.open("w"), text=True)


def test_produce_feedback_and_tail_with_a_running_worker(make_settings, start_worker, tmp_path):
    s = make_settings()
    worker = start_worker(s)
    tail_out, tail_err = tmp_path / "tail.out", tmp_path / "tail.err"
    tail = cli_background(s, tail_out, tail_err, "tail", "predictions", "--max", "5", "--timeout", "90")
    try:
        wait_for(lambda: "following" in tail_err.read_text() or tail.poll() is not None, 60, "tail to start")
        assert tail.poll() is None, tail_err.read_text()

        good = make_events(5, seed=21)
        bad_lines = {
            2: ('{"event_id": "x1", "entity": ', "invalid_json"),
            4: ('{"event_id": "x2", "entity": "c", "event_time": "yesterday", "features": {}}', "event_time"),
            6: ('{"event_id": "x3", "entity": "c", "event_time": 1, "features": {"amount": NaN}}',
                "'features.amount' is nan"),
        }
        lines, g = [], iter(good)
        for n in range(1, 9):
            lines.append(bad_lines[n][0] if n in bad_lines else ("" if n == 8 else json.dumps(next(g))))
        lines.append(json.dumps(next(g)))  # line 9, after a blank line 8
        src = tmp_path / "events.jsonl"
        src.write_text("\n".join(lines) + "\n")

        r = cli(s, "produce", "--from", str(src), "--skip-invalid")
        assert r.returncode == 0, r.stderr
        assert "sent 5 events" in r.stdout and "5 delivered, 0 failed" in r.stdout
        assert "skipped 3 invalid row(s), line(s) 2, 4, 6" in r.stdout
        for n, (_, detail) in bad_lines.items():
            assert f"line {n}" in r.stderr and detail in r.stderr, r.stderr

        # good lines are scored (and only they)
        preds = TopicReader(s, s.topic_predictions, "prediction").wait_count(5, timeout=60)
        assert sorted(p["event_id"] for p in preds) == sorted(e["event_id"] for e in good)

        # tail printed them while the worker ran
        assert tail.wait(90) == 0, tail_err.read_text()
        printed = tail_out.read_text().splitlines()
        assert len(printed) == 5
        assert sorted(line.split()[1] for line in printed) == sorted(e["event_id"] for e in good)
        assert all("score=" in line and f"model={s.model_name}@v" in line for line in printed)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()

    # labels from CSV: one row lacks its label and is reported by line; the others are learned
    labels = tmp_path / "labels.csv"
    rows = [f"{f['event_id']},{str(f['label']).lower()},{f['label_time']}" for f in map(feedback_for, good)]
    rows.insert(2, f"{good[0]['event_id']}-x,,1")
    labels.write_text("event_id,label,label_time\n" + "\n".join(rows) + "\n")
    r = cli(s, "feedback", "--from", str(labels), "--skip-invalid")
    assert r.returncode == 0, r.stderr
    assert "sent 5 labels" in r.stdout and "line(s) 4" in r.stdout and "line 4" in r.stderr
    wait_for(lambda: worker.counters().get("labels_learned") == 5, 60, "5 labels learned")

    # dead letters as JSON lines: the raw bytes come back base64-encoded
    junk = b"\x00\x01junk"
    Sender(s).raw(s.topic_events, [junk])
    r = cli(s, "tail", "dead-letters", "--json", "--from-beginning", "--max", "1", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    dead = json.loads(r.stdout.splitlines()[0])
    assert base64.b64decode(dead["raw"]) == junk and dead["reason"] == "unknown_format"
    worker.assert_alive()


def test_produce_csv_fail_fast_stdin_and_generated_scenario(make_settings, tmp_path):
    s = make_settings()
    src = tmp_path / "events.csv"
    src.write_text(
        "event_id,entity,event_time,amount,category,zip,vip\n"
        "c1,card-1,2023-11-14T22:13:20Z,12.5,fuel,007,true\n"
        "c2,card-2,1700000001000,3,grocery,,FALSE\n"
        "c3,card-3,soon,1,fuel,1,true\n"
        "c4,card-4,1700000003000,1,fuel,1,true\n"
    )
    r = cli(s, "produce", "--from", str(src))  # fail-fast is the default: a file is checked whole first
    assert r.returncode == 2
    assert f"{src}: line 4: schema:" in r.stderr and "event_time" in r.stderr and "nothing was sent" in r.stderr
    assert "sent" not in r.stdout
    # the same file less its line 4
    src.write_text("".join(line for i, line in enumerate(src.read_text().splitlines(True), 1) if i != 4))
    r = cli(s, "produce", "--from", str(src), "--fail-fast")
    assert r.returncode == 0 and "sent 3 events" in r.stdout, r.stderr
    # stdin is a stream: checked line by line as it is sent, stopping at the first invalid one
    lines = [json.dumps({"event_id": f"s{i}", "entity": "card-8", "event_time": 1, "features": {}}) for i in (1, 2)]
    r = cli(s, "produce", "--from", "-", stdin=lines[0] + "\n" + '{"event_id": "s-bad"}\n' + lines[1] + "\n")
    assert r.returncode == 1 and "line 2" in r.stderr
    assert "sent 1 events" in r.stdout and "nothing after line 2 was read" in r.stdout

    # a sentinel through stdin: everything the CSV run sent precedes it on the topic
    sentinel = {"event_id": "end", "entity": "card-9", "event_time": 1, "features": {}}
    r = cli(s, "produce", "--from", "-", stdin=json.dumps(sentinel) + "\n")
    assert r.returncode == 0 and "sent 1 events" in r.stdout, r.stderr
    events = TopicReader(s, s.topic_events, "event").wait_count(5)
    assert [e["event_id"] for e in events] == ["c1", "c2", "c4", "s1", "end"]
    assert events[0] == {"event_id": "c1", "entity": "card-1", "event_time": 1_700_000_000_000,
                         "features": {"amount": 12.5, "category": "fuel", "zip": "007", "vip": True}}
    assert events[1]["features"] == {"amount": 3, "category": "grocery", "zip": None, "vip": False}

    # a generated scenario, then its labels with the same seed
    r = cli(s, "produce", "--generate", "cards", "--events", "60", "--seed", "3")
    assert r.returncode == 0 and "sent 60 events" in r.stdout, r.stderr
    r = cli(s, "feedback", "--generate", "cards", "--events", "60", "--seed", "3")
    assert r.returncode == 0, r.stderr
    items = datasets.cards(n=60, seed=3)
    events = TopicReader(s, s.topic_events, "event").wait_count(5 + 60)
    assert events[5:] == [it.event for it in items]
    expected = sorted((it.feedback for it in items if it.feedback), key=lambda f: f["label_time"])
    assert 0 < len(expected) < 60  # some labels never arrive, by design of the scenario
    assert f"sent {len(expected)} labels" in r.stdout
    assert TopicReader(s, s.topic_feedback, "feedback").wait_count(len(expected)) == expected


def test_tail_sources_are_one_mapping_and_missing_ones_fail_clearly(make_settings):
    s = make_settings(topic_drift=f"t{uuid.uuid4().hex[:8]}.drift")  # the default name is shared
    reg = AvroCodec.default()
    for kind in ("predictions", "shadow", "dead-letters", "drift", "lifecycle"):
        topic, subject = resolve_tail_source(s, kind, codec=reg)
        assert topic and subject in reg.subjects()
    with pytest.raises(TailUnavailable, match="no 'topic_audit' setting"):
        resolve_tail_source(s, "audit", {"audit": ("topic_audit", "audit")})
    with pytest.raises(TailUnavailable, match="no 'audit' schema"):
        resolve_tail_source(s, "audit", {"audit": ("topic_events", "audit")})
    with pytest.raises(TailUnavailable, match="unknown kind 'nope'"):
        resolve_tail_source(s, "nope")

    r = cli(s, "tail", "nope")
    assert r.returncode == 2 and "unknown kind 'nope'" in r.stderr
    r = cli(s, "tail", "drift", "--from-beginning", "--timeout", "1")  # exists now, empty
    assert r.returncode == 0 and "following" in r.stderr and "0 record(s)" in r.stderr, r.stderr
