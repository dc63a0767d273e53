"""Replay archive on the real broker: round trip live run -> archive -> backtest, archiver crash,
republish. (Pure archive/backtest logic: tests/unit/replay/test_archive_and_backtest.py;
retraining: tests/unit/replay/test_retrain.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from streamlearn.replay.archive.archiver import Archiver
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.backtest.runner import run_backtest
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for


def archiver_settings(s, tmp_path: Path, **extra):
    """The test's topics, its own archive dir and group; short sessions so joins take ~1 s."""
    values = dict(archive_dir=str(tmp_path / "archive"), archive_group_id=f"arch-{uuid.uuid4().hex[:8]}",
                  session_timeout_s=2.0, heartbeat_interval_s=0.25)
    values.update(extra)
    return s.model_copy(update=values)


def test_round_trip_backtest_reproduces_the_live_run_exactly(make_settings, start_worker, tmp_path):
    """Live worker on the broker (two event partitions; delayed, duplicate and early labels) ->
    archiver -> backtest: every score and the final online metrics equal the live run's; two
    backtests are byte-identical."""
    s = make_settings(topic_partitions=2)
    worker = start_worker(s)
    send, preds = Sender(s), TopicReader(s, s.topic_predictions, "prediction")
    events = make_events(300, seed=31)
    delay, chunk = 20, 25
    labeled = 0  # labels sent for events[:labeled] in order
    duplicates = parked = 0
    for j in range(0, len(events), chunk):
        send.events(events[j : j + chunk])
        preds.wait_count(j + chunk, key="event_id")
        ready = [feedback_for(e) for e in events[labeled : max(0, j + chunk - delay)]]
        labeled += len(ready)
        if ready and j % 100 == 0:  # a resent label: learned once
            ready.append(ready[0])
            duplicates += 1
        early = j + 2 * chunk <= len(events) and j % 75 == 0
        if early:
            # a label that arrives before its event: parked, learned when the event is scored,
            # and its regular copy later is a duplicate
            ready.append(feedback_for(events[j + chunk + 3]))
            duplicates += 1
            parked += 1
        send.feedback(ready)
        if early:  # make sure the worker has it parked before the event is sent
            wait_for(lambda n=parked: worker.counters().get("labels_unmatched", 0) >= n, 30, "label parked")
    rest = [feedback_for(e) for e in events[labeled:]]
    send.feedback(rest + rest[:2])
    duplicates += 2
    wait_for(lambda: worker.counters().get("labels_learned") == len(events), 60, "all labels learned")
    wait_for(lambda: worker.counters().get("labels_duplicate") == duplicates, 30, "duplicates counted")
    live = preds.wait_count(len(events))
    assert len(live) == len(events)
    live_metrics = worker.status()["metrics"]
    assert worker.counters()["labels_joined_late"] == parked, "early labels were learned when their events came"

    a = archiver_settings(s, tmp_path)
    stats = Archiver(a).run(exit_when_idle_s=1.0)
    # events + predictions + every label message sent (each event's once, plus the extra copies)
    assert stats.records == 2 * len(events) + len(events) + duplicates

    out1, out2 = tmp_path / "bt1", tmp_path / "bt2"
    r1 = run_backtest(a.archive_dir, [s.model_spec], view=s.feature_view, out=out1)
    assert r1.plan.mode == "recorded" and r1.divergences == []
    replayed = [json.loads(line) for line in (out1 / "predictions.jsonl").read_text().splitlines()]
    assert len(replayed) == len(live)
    assert {p["event_id"]: (p["labels_learned"], p["score"]) for p in replayed} == \
           {p["event_id"]: (p["labels_learned"], p["score"]) for p in live}, "every score reproduced"
    assert r1.final[s.model_spec] == live_metrics, "final online metrics reproduced exactly"
    assert r1.bare is not None and r1.bare["scores_identical"] and r1.bare["events_per_s"] > 0

    r2 = run_backtest(a.archive_dir, [s.model_spec], view=s.feature_view, out=out2)
    assert (out1 / "predictions.jsonl").read_bytes() == (out2 / "predictions.jsonl").read_bytes()
    assert (out1 / "metrics.json").read_bytes() == (out2 / "metrics.json").read_bytes()
    assert r2.final == r1.final
    assert (out1 / "metrics.png").stat().st_size > 10_000 and (out1 / "metrics.csv").read_text().count("\n") > 2
    preds.close()


def _start_archiver(a, log_path: Path, *extra: str) -> subprocess.Popen:
    from streamlearn.tools.harness import die_with_parent

    env = {**os.environ, **a.to_env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "streamlearn", "archive", "run", *extra], env=env,
                            stdin=subprocess.DEVNULL, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)


def _offsets_by_file(archive: Archive, kind: str) -> list[int]:
    """Every archived offset of a kind, read file by file (no dedup: a double shows up twice)."""
    return [rec["offset"] for m in archive.files(kind) for rec in archive.read(m)]


def test_archiver_killed_mid_file_leaves_only_complete_files_and_restarts_exactly_once(make_settings, tmp_path):
    s = make_settings()
    a = archiver_settings(s, tmp_path, archive_roll_bytes=8192, archive_roll_s=600.0)
    store = LocalStorage(a.archive_dir)
    send = Sender(s)
    first = make_events(400, seed=41)
    send.events(first)
    send.feedback([feedback_for(e) for e in first])
    log_path = tmp_path / "archiver.log"
    proc = _start_archiver(a, log_path)

    def mid_file() -> bool:
        assert proc.poll() is None, log_path.read_text()
        staged = [p for p in store.staging_dir().glob("*.part") if p.stat().st_size > 1000]
        listed = sum(m.record_count for m in Archive(store).files())
        return bool(staged) and listed >= 600  # several files published, the next ones half written
    wait_for(mid_file, 60, "published files and a half-written one")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    after_kill = Archive(store)
    # (a kill between publishing a file and writing its manifest leaves it unlisted: an orphan)
    assert after_kill.problems == [], "every listed file is complete and readable"
    assert list(store.staging_dir().glob("*.part")), "the killed archiver left an unfinished file"
    assert not any(".part" in name or "_staging" in name for name in store.list()), "never listed"
    listed = _offsets_by_file(after_kill, "event")
    assert listed == list(range(len(listed))) and 0 < len(listed) < len(first), "complete files only, readable"

    second = make_events(200, seed=41, start=400)
    send.events(second)
    send.feedback([feedback_for(e) for e in second])
    proc = _start_archiver(a, log_path, "--exit-when-idle", "1")
    assert proc.wait(90) == 0, log_path.read_text()[-3000:]

    final = Archive(store)
    assert final.problems == [] and final.orphans == [], log_path.read_text()[-3000:]
    assert not list(store.staging_dir().glob("*.part")), "leftovers of the crash were removed"
    n = len(first) + len(second)
    assert _offsets_by_file(final, "event") == list(range(n)), "every event archived exactly once"
    assert _offsets_by_file(final, "feedback") == list(range(n)), "every label archived exactly once"
    ids = [ev["event_id"] for _, ev in final.decoded(final.partition_records("event", s.topic_events, 0))]
    assert ids == [e["event_id"] for e in first + second]


def test_republish_keeps_keys_bytes_and_per_key_order(make_settings, tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    from streamlearn.replay.archive.republish import republish
    from streamlearn.replay.archive.synthetic import records_for
    from streamlearn.replay.archive.writer import write_records

    s = make_settings(topic_partitions=2)
    events = make_events(300, seed=51)
    for i, ev in enumerate(events):
        ev["event_time"] = 1_700_000_000_000 + 10 * i  # a 3 s span: 0.3 s at 10x
    store = LocalStorage(tmp_path / "archive")
    write_records(store, records_for([("event", e) for e in events], partitions=2), roll_bytes=4096)
    archive = Archive(store)
    archived = [r for tp in archive.partitions("event") for r in archive.partition_records("event", *tp)]
    assert len(archive.partitions("event")) == 2 and len(archived) == len(events)

    stats = republish(archive, s, s.topic_events, speed=10.0)
    assert stats.sent == len(events) and stats.seconds >= 0.9 * stats.source_span_ms / 1000 / 10
    consumer = Consumer(s.confluent_config(**{"group.id": f"r-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(s.topic_events, p, 0) for p in range(2)])
    got = []

    def all_read() -> bool:
        got.extend(m for m in consumer.consume(500, 0.2) if not m.error())
        return len(got) >= len(events)
    wait_for(all_read, 30, "republished events")
    consumer.close()

    def per_key(msgs) -> dict[bytes, list[bytes]]:
        out: dict[bytes, list[bytes]] = {}
        for key, value in msgs:
            out.setdefault(key, []).append(value)
        return out
    got_by_partition = sorted(got, key=lambda m: (m.partition(), m.offset()))
    assert per_key((m.key(), m.value()) for m in got_by_partition) == \
           per_key((r["key"], r["value"]) for r in archived), "same keys, same bytes, same order per key"
    assert len(got) == len(events)
