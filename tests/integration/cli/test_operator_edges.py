"""The ``streamlearn`` command against the real broker, Redis and worker: a dead worker
child, a refused operator command, a reused tail group, fixed infra ports, the renamed
republish/backtest options and the backtest's reproduction count."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from streamlearn.replay.archive.archiver import Archiver
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import records_for
from streamlearn.replay.archive.writer import write_records
from streamlearn.schemas import AvroCodec
from streamlearn.settings import Settings
from streamlearn.streams.transport import make_producer
from streamlearn.tools.harness import free_port, wait_until
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for


def cli(settings: Settings | None, *args: str, timeout: float = 120, tmp: Path | None = None
        ) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, **(settings.to_env() if settings else {})}
    if tmp is not None:  # where a command's temporary folders go (the demo's run folder): the test's own,
        env.update(TMPDIR=str(tmp), COLUMNS="200")  # and wide enough to print that longer path on one line
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streamlearn", *args], env=env, text=True, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


def test_demo_reports_a_worker_that_dies_at_start_at_once(infra, tmp_path):
    # a real factory the demo accepts by name, whose build fails in the worker (an unknown
    # parameter): an unknown name is refused before anything starts (tests/unit/test_project_cli_errors.py)
    spec = "river.linear_model:LogisticRegression?no_such_param=1"
    proc, secs = cli(None, "demo", "--kafka", infra.kafka_bootstrap, "--redis-url", infra.redis_url,
                     "--spec", spec, "--events", "50", "--no-replay", "--no-compare", timeout=80, tmp=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "streamlearn: streamlearn worker" in err and "exited with code" in err and "at start" in err
    assert "no_such_param" in err and "unexpected" in err  # the child's own error, from the end of its log
    assert "timed out" not in err
    assert secs < 60  # was a 90 s wait for a group join that could never happen
    # the log it names is kept; nothing else of the run is left (a finished run: tests/system/test_demo.py)
    log = Path(re.search(r"last lines of (\S+/worker\.log)", err).group(1))
    assert sorted(p.name for p in log.parent.iterdir()) == ["worker.log"]
    assert f"kept in {log.parent}" in " ".join(proc.stdout.split()), proc.stdout  # (rich may wrap before the path)


def test_models_commands_print_the_workers_refusal_at_once(make_settings, start_worker, tmp_path):
    s = make_settings()
    start_worker(s)
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in make_events(3, seed=5)))
    proc, _ = cli(s, "produce", "--input", str(src))  # the new spelling of --from FILE
    assert proc.returncode == 0 and "3 delivered" in proc.stdout, proc.stderr
    assert "deprecated" not in proc.stderr

    for args, reason in ((("promote", "99"), "version 99"), (("add", "bogus"), "unknown model spec 'bogus'")):
        proc, _ = cli(s, "models", *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = proc.stderr.strip()
        # the refusal ends the wait: without it the command waits 15 s and says "did not apply"
        # (a line this checks is not there; no wall-clock bound, which a loaded machine breaks)
        assert line.startswith(f"streamlearn: the worker refused {args[0]}: ") and reason in line, line
        assert "\n" not in line and "Traceback" not in proc.stderr and "did not apply" not in line

    proc, _ = cli(s, "models", "add", "hat")  # an accepted command still waits for the status
    assert proc.returncode == 0 and "challenger hat started" in proc.stdout, proc.stderr


def _prediction(i: int) -> dict:
    return {"event_id": f"e{i}", "entity": "c", "event_time": 1, "model_name": "default", "model_version": 1,
            "labels_learned": 0, "score": 0.25, "predicted": False, "probabilities": {}, "served_at": 2,
            "latency_ms": 3.5}


def test_tail_group_is_reusable_after_a_short_run_and_says_it_resumes(make_settings):
    s = make_settings()
    enc = AvroCodec.default().encoder("prediction")
    producer = make_producer(s)

    def publish(i: int) -> None:
        producer.produce(s.topic_predictions, enc(_prediction(i)), b"c")
        assert producer.flush(10) == 0

    group = f"g-{uuid.uuid4().hex[:6]}"
    publish(0)
    proc, _ = cli(s, "tail", "prediction", "--group", group, "--from-beginning", "--max", "1", "--timeout", "30")
    assert proc.returncode == 0 and " e0 " in proc.stdout, proc.stderr
    assert f"group {group} has no committed offsets" in proc.stderr

    # a short run that ends while nothing arrives (before the fix it could end mid-join and
    # leave a member the broker held the group for, for minutes)
    proc, _ = cli(s, "tail", "predictions", "--group", group, "--timeout", "1")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert f"from group {group}'s committed offsets" in proc.stderr and "the end" not in proc.stderr

    publish(1)
    proc, secs = cli(s, "tail", "predictions", "--group", group, "--max", "1", "--timeout", "30")
    assert proc.returncode == 0 and " e1 " in proc.stdout and " e0 " not in proc.stdout, proc.stderr
    assert f"from group {group}'s committed offsets" in proc.stderr
    assert secs < 30


def test_infra_up_takes_fixed_ports_and_prints_every_export(tmp_path):
    kafka_port, redis_port = free_port(), free_port()
    out = tmp_path / "up.out"
    p = subprocess.Popen([sys.executable, "-m", "streamlearn", "infra", "up", "--workdir", str(tmp_path / "w"),
                          "--kafka-port", str(kafka_port), "--redis-port", str(redis_port), "--no-create-topics"],
                         stdout=out.open("w"), stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    def alive() -> None:
        if p.poll() is not None:
            raise AssertionError(f"infra up exited with {p.returncode}: {p.stderr.read()}")

    try:
        wait_until(lambda: "STREAMLEARN_DEVELOPMENT" in out.read_text(), 60, "infra up's exports", check=alive)
        exports = dict(line.removeprefix("export ").split("=", 1) for line in out.read_text().splitlines())
        assert exports == {"KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
                           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "STREAMLEARN_DEVELOPMENT": "1"}

        busy, secs = cli(None, "infra", "up", "--kafka-port", str(kafka_port), timeout=60)
        assert busy.returncode == 2 and busy.stderr.startswith(f"streamlearn: --kafka-port {kafka_port}: ")
        assert len(busy.stderr.strip().splitlines()) == 1
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_republish_new_and_deprecated_spellings(make_settings, tmp_path):
    s = make_settings()
    events = make_events(40, seed=9)
    write_records(LocalStorage(tmp_path / "a"), records_for([("event", e) for e in events],
                                                            topics={"event": s.topic_events}))
    # another deployment archiving into the same directory: its events are not republished
    write_records(LocalStorage(tmp_path / "a"), records_for([("event", e) for e in make_events(7, seed=10)],
                                                            topics={"event": "other.events.v1"}))
    proc, _ = cli(s, "replay", "republish", "--archive", str(tmp_path / "a"), "--topic", s.topic_events,
                  "--kind", "events")
    assert proc.returncode == 0 and f"republished 40 event message(s) to {s.topic_events}" in proc.stdout, proc.stderr
    assert "note: archive also holds topics other.events.v1 of other settings: not read" in proc.stderr
    assert "40/40" in proc.stderr and "deprecated" not in proc.stderr  # the progress bar, on stderr
    proc, _ = cli(s, "replay", "republish", "--archive", str(tmp_path / "a"), "--to", s.topic_events,
                  "--to-time", "2100-01-01T00:00Z", "--no-progress")
    assert proc.returncode == 0 and "republished 40 event" in proc.stdout, proc.stderr
    assert "warning: --to TOPIC is deprecated, use --topic TOPIC" in proc.stderr
    assert "warning: --to-time is deprecated, use --to" in proc.stderr
    got = TopicReader(s, s.topic_events, "event").wait_count(80)
    assert sorted(r["event_id"] for r in got) == sorted(2 * [e["event_id"] for e in events])


def test_backtest_summary_counts_the_reproduced_live_predictions(make_settings, start_worker, tmp_path):
    s = make_settings()
    worker = start_worker(s)
    send, preds = Sender(s), TopicReader(s, s.topic_predictions, "prediction")
    events = make_events(60, seed=17)
    for j in range(0, len(events), 20):
        send.events(events[j : j + 20])
        preds.wait_count(j + 20, key="event_id")
        send.feedback([feedback_for(e) for e in events[j : j + 20]])
        wait_for(lambda n=j + 20: worker.counters().get("labels_learned") == n, 60, "labels learned")
    a = s.model_copy(update={"archive_dir": str(tmp_path / "archive"), "archive_group_id": f"a-{uuid.uuid4().hex[:6]}",
                             "session_timeout_s": 2.0, "heartbeat_interval_s": 0.25})
    Archiver(a).run(exit_when_idle_s=1.0)
    assert Archive.open(tmp_path / "archive").partitions("prediction")

    proc, _ = cli(s, "backtest", "--archive", str(tmp_path / "archive"), "--spec", s.model_spec,
                  "--out", str(tmp_path / "bt"), "--no-progress", "--rows", "5")
    assert proc.returncode == 0, proc.stderr
    assert f"reproduced 60 of 60 live predictions of {s.model_name}@v1 exactly" in proc.stdout, proc.stdout
    assert "0 divergences from the recorded run" in proc.stdout
