"""Archive, reader and backtest logic without a broker (the wiring is in tests/integration/replay/test_archiver.py;
whole archived streams backtested twice: tests/simulation/replay/test_archive_and_backtest.py)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from streamlearn import datasets
from streamlearn.replay.archive.archiver import apply_retention
from streamlearn.replay.archive.format import MANIFEST_SUFFIX, Manifest
from streamlearn.replay.archive.inspect import summarize
from streamlearn.replay.archive.reader import Archive
from streamlearn.replay.archive.storage import LocalStorage
from streamlearn.replay.archive.synthetic import archive_items
from streamlearn.replay.archive.writer import ArchiveWriter
from streamlearn.replay.backtest.inprocess import memory_loop
from streamlearn.replay.backtest.runner import run_backtest
from streamlearn.replay.backtest.schedule import RecordedSchedule
from streamlearn.schemas import AvroCodec
from streamlearn.schemas.records import KafkaRecord
from tests.helpers import feedback_for, make_events

REG = AvroCodec.default()


def _event_records(events, topic="events", partition=0, start_offset=0, ts=None):
    enc = REG.encoder("event")
    return [KafkaRecord("event", topic, partition, start_offset + i, ts or ev["event_time"], 1,
                        ev["entity"].encode(), enc(ev)) for i, ev in enumerate(events)]


# ---------------------------------------------------------------------- writer
def test_restart_skips_redelivered_offsets_and_resumes_after_published_files(tmp_path):
    store = LocalStorage(tmp_path)
    recs = _event_records(make_events(30, seed=1))
    w = ArchiveWriter(store, roll_bytes=10**9)
    for r in recs[:10]:
        w.append(r)
    assert len(w.roll_all()) == 1
    for r in recs[10:20]:
        w.append(r)  # in staging only: a crash here loses nothing (Kafka re-delivers)

    w2 = ArchiveWriter(store, roll_bytes=10**9)  # "restart"
    assert w2.position("events", 0) == 10
    w2.prepare_partition("events", 0)
    assert not list(store.staging_dir().iterdir()), "the crashed writer's staging file is removed"
    for r in recs[5:30]:  # Kafka re-delivers from the last commit, which may be earlier
        w2.append(r)
    w2.roll_all()
    assert w2.duplicates_skipped == 5
    a = Archive(store)
    assert [rec["offset"] for m in a.files() for rec in a.read(m)] == list(range(30))


def test_published_file_without_manifest_is_not_listed_and_removed_on_restart(tmp_path):
    store = LocalStorage(tmp_path)
    w = ArchiveWriter(store)
    for r in _event_records(make_events(5, seed=2)):
        w.append(r)
    (m,) = w.roll_all()
    store.delete(m.path + MANIFEST_SUFFIX)  # as if killed between publishing the data and its manifest
    store.delete("_state/events/0.json")
    a = Archive(store)
    assert a.files() == [] and a.orphans == [m.path]
    w2 = ArchiveWriter(store)
    assert w2.position("events", 0) is None, "the orphan does not move the resume point"
    w2.prepare_partition("events", 0)
    assert m.path not in store.list()


def test_files_roll_by_size_and_by_utc_date(tmp_path):
    store = LocalStorage(tmp_path)
    events = make_events(40, seed=3)
    day = 86_400_000
    recs = _event_records(events[:20], ts=10 * day - 1000) + _event_records(events[20:], start_offset=20,
                                                                             ts=10 * day + 1000)
    w = ArchiveWriter(store, roll_bytes=1500)
    for r in recs:
        w.append(r)
    files = w.roll_all() and Archive(store).files()
    assert len(files) > 2 and {m.date for m in files} == {"1970-01-10", "1970-01-11"}
    assert all(m.date == ("1970-01-10" if m.last_offset < 20 else "1970-01-11") for m in files)
    assert sum(m.record_count for m in files) == 40
    m = files[0]
    assert m.writer_fingerprints == {REG.current("event").fingerprint.hex(): m.record_count}
    assert m.first_event_time == events[0]["event_time"] and len(m.sha256) == 64


def test_retention_deletes_old_files_but_not_the_resume_point(tmp_path):
    store = LocalStorage(tmp_path)
    w = ArchiveWriter(store)
    for r in _event_records(make_events(10, seed=4), ts=1_000):
        w.append(r)
    w.roll_all()
    deleted = apply_retention(store, retention_days=1, now_ms=5 * 86_400_000)
    assert len(deleted) == 1 and Archive(store).files() == []
    assert ArchiveWriter(store).position("events", 0) == 10, "deleted history is not archived again"


# ---------------------------------------------------------------------- bad input
def test_corrupt_file_and_unknown_fingerprint_are_named_and_the_rest_loads(tmp_path, caplog):
    store = LocalStorage(tmp_path / "a")
    archive_items(store, datasets.cards(n=1500, seed=5), partitions=2, roll_bytes=20_000)
    files = Archive(store).files("event")
    assert len(files) >= 4
    bad = files[1]
    path = Path(store.describe(bad.path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # a record written with a schema this registry has never seen
    ev = make_events(1, seed=6)[0]
    foreign = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + REG.encode("event", ev)[10:]
    w = ArchiveWriter(store)
    w.append(KafkaRecord("event", "events", 5, 0, ev["event_time"], 1, b"k", foreign))
    w.append(_event_records([make_events(2, seed=6)[1]], partition=5, start_offset=1)[0])
    (odd,) = w.roll_all()

    a = Archive(store)
    assert any(odd.path in p.path and "0123456789abcdef" in p.detail for p in a.problems), a.problems
    events = list(a.decoded(a.by_event_time("event")))
    named = [p for p in a.problems if bad.path in p.path]
    assert named and "sha256" in named[0].detail, "the corrupt file is named"
    assert any(p.offset == 0 and odd.path in p.path for p in a.problems), "the unknown record is named with its offset"
    expected = sum(m.record_count for m in a.files("event")) - bad.record_count - 1
    assert len(events) == expected, "every other record loads"
    assert bad.path in caplog.text
    s = summarize(a, verify=True)
    assert any(bad.path in p for p in s["problems"])

    result = run_backtest(a, ["logreg"], bare=False)  # and a backtest still runs on the rest
    assert result.plan.n_events == expected and result.final["logreg"]["accuracy"] > 0.5


def test_unreadable_manifest_is_reported(tmp_path):
    store = LocalStorage(tmp_path)
    archive_items(store, datasets.cards(n=200, seed=7))
    name = next(n for n in store.list() if n.endswith(MANIFEST_SUFFIX))
    store.write(name, b"{not json")
    a = Archive(store)
    assert any(name in p.path and "manifest" in p.detail for p in a.problems)
    assert a.files("feedback") or a.files("event")


# ---------------------------------------------------------------------- recorded replay
def _interleaving(rng: random.Random, n: int):
    """A live arrival order: events; each label 2-40 items later, sometimes resent, sometimes
    early (0.5-6 items before its event)."""
    events = make_events(n, seed=rng.randrange(1000))
    items: list[tuple[float, str, dict]] = []
    for i, ev in enumerate(events):
        items.append((i, "event", ev))
        fb = feedback_for(ev)
        if rng.random() < 0.1:
            at = i - rng.uniform(0.5, 6)
        else:
            at = i + rng.uniform(2, 40)
        items.append((at, "feedback", fb))
        if rng.random() < 0.05:
            items.append((at + rng.uniform(0, 20), "feedback", fb))
    items.sort(key=lambda t: t[0])
    return [(k, r) for _, k, r in items]


async def _live(order, rng: random.Random):
    """What a worker does: take micro-batches of 1-6 consecutive items of one kind. Returns
    predictions with their served time and labels with their (Kafka) time, on a batch clock."""
    loop = memory_loop("entity_v1", "logreg")
    preds, fb_order = [], []
    i = clock = 0
    while i < len(order):
        clock += 1
        kind = order[i][0]
        j = i
        while j < len(order) and order[j][0] == kind and j - i < rng.randint(1, 6):
            j += 1
        batch = [r for _, r in order[i:j]]
        if kind == "event":
            preds += [(p, clock) for p in await loop.score_batch(batch)]
        else:
            fb_order += [(fb, clock) for fb in batch]
            await loop.learn_batch(batch)
        i = j
    return loop, preds, fb_order


@pytest.mark.parametrize("seed", range(12))
def test_recorded_schedule_reproduces_any_micro_batching(seed):
    """A worker's run, whatever its micro-batches, is reproduced from its events' recorded
    labels_learned (and served times) and the feedback order: every score, every count, the
    metrics. Early labels arrive for several events at once, in any order."""
    rng = random.Random(seed)
    order = _interleaving(rng, 150)
    by_id = {r["event_id"]: r for k, r in order if k == "event"}
    live_loop, served, fb_order = asyncio.run(_live(order, rng))
    preds = [p for p, _ in served]
    sched = RecordedSchedule([(by_id[p.event_id], p.labels_learned, t) for p, t in served], fb_order)
    replay = memory_loop("entity_v1", "logreg")

    async def run():
        out = []
        for step in sched.steps():
            if step.kind == "score":
                out += await replay.score_batch(step.items)
            else:
                await replay.learn_batch(step.items)
            assert replay.champion.labels_learned == step.expect
        return out
    replayed = asyncio.run(run())
    assert sched.divergences == []
    assert [(p.event_id, p.labels_learned, p.score) for p in replayed] == \
           [(p.event_id, p.labels_learned, p.score) for p in preds]
    assert replay.champion.metric_values() == live_loop.champion.metric_values()
    assert replay.champion.labels_learned == live_loop.champion.labels_learned


def test_the_interleavings_exercise_early_and_duplicate_labels():
    joined = dup = 0
    for seed in range(12):
        rng = random.Random(seed)
        loop, _, _ = asyncio.run(_live(_interleaving(rng, 150), rng))
        joined += loop.counters.labels_joined_late
        dup += loop.counters.labels_duplicate
    assert joined > 5 and dup > 5


# ---------------------------------------------------------------------- arrival backtest


def test_time_range_and_bad_arguments(tmp_path):
    items = datasets.cards(n=2000, seed=9)
    archive_items(LocalStorage(tmp_path), items)
    t0, t1 = items[500].event["event_time"], items[1500].event["event_time"]
    r = run_backtest(tmp_path, ["logreg"], start=t0, end=t1, bare=False)
    assert r.plan.n_events == 1000
    with pytest.raises(ValueError, match="unknown model spec"):
        run_backtest(tmp_path, ["nope"])
    with pytest.raises(ValueError, match="no predictions"):
        run_backtest(tmp_path, ["logreg"], join="recorded")
    with pytest.raises(ValueError, match="no events to replay"):
        run_backtest(tmp_path, ["logreg"], start=t1 + 10**9)


def test_manifest_round_trips():
    m = Manifest(path="p", kind="event", topic="t", partition=0, date="2024-01-01", first_offset=0, last_offset=1,
                 record_count=2, first_event_time=1, last_event_time=2, first_timestamp=1, last_timestamp=2,
                 bytes=10, sha256="0" * 64)
    assert Manifest.from_json(m.to_json()) == m


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "streamlearn", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_inspect_reports_counts_gaps_and_unfinished_files(tmp_path):
    from streamlearn.replay.archive.inspect import format_summary

    store = LocalStorage(tmp_path)
    w = ArchiveWriter(store, roll_bytes=1500)
    for r in _event_records(make_events(50, seed=11)):
        w.append(r)
    w.flush()
    assert w.open, "the last file is still being written"
    files = Archive(store).files()
    assert len(files) >= 3
    mid = files[1]
    store.delete(mid.path + MANIFEST_SUFFIX)
    store.delete(mid.path)
    s = summarize(Archive(store))
    (p,) = s["partitions"]
    assert p["gaps"] == [[mid.first_offset, mid.last_offset]] and p["missing_offsets"] == mid.record_count
    assert p["records"] == sum(m.record_count for m in files) - mid.record_count
    assert s["unfinished_staging_files"] and s["problems"] == []
    text = format_summary(s)
    assert f"missing offsets {mid.first_offset}..{mid.last_offset}" in text and "unfinished" in text


@pytest.mark.parametrize("seed", range(6))
def test_recorded_replay_of_two_event_partitions_consumed_at_random_relative_speeds(seed):
    """One learner consuming two event partitions and the feedback partition in random
    micro-batches (a lagging partition makes many labels arrive before their events):
    merging the partitions by (labels_learned, event time) reproduces it."""
    from streamlearn.replay.backtest.schedule import merge_by_recorded_order

    rng = random.Random(100 + seed)
    order = _interleaving(rng, 160)
    parts: list[list[dict]] = [[], []]
    for k, r in order:
        if k == "event":
            parts[int(r["entity"].split("-")[1]) % 2].append(r)
    feedback = [r for k, r in order if k == "feedback"]
    live = memory_loop("entity_v1", "logreg")
    recorded: list[list[tuple]] = [[], []]
    stamped: list[tuple[dict, int]] = []  # labels with the (batch) clock they were consumed at
    pos, clock = [0, 0, 0], [0]

    async def run_live():
        while pos[0] < len(parts[0]) or pos[1] < len(parts[1]) or pos[2] < len(feedback):
            q = rng.choice([i for i in range(3) if pos[i] < (len(feedback) if i == 2 else len(parts[i]))])
            n = rng.randint(1, 6)
            clock[0] += 1
            if q == 2:
                batch = feedback[pos[2] : pos[2] + n]
                stamped.extend((fb, clock[0]) for fb in batch)
                await live.learn_batch(batch)
            else:
                batch = parts[q][pos[q] : pos[q] + n]
                for ev, p in zip(batch, await live.score_batch(batch)):
                    recorded[q].append((ev, p.labels_learned, clock[0], q, len(recorded[q]), p.score))
            pos[q] += n
    asyncio.run(run_live())

    events = list(merge_by_recorded_order([iter([r[:5] for r in recorded[q]]) for q in (0, 1)]))
    sched = RecordedSchedule(events, stamped)
    replay = memory_loop("entity_v1", "logreg")

    async def run_replay():
        out = {}
        for step in sched.steps():
            if step.kind == "score":
                for p in await replay.score_batch(step.items):
                    out[p.event_id] = (p.labels_learned, p.score)
            else:
                await replay.learn_batch(step.items)
        return out
    replayed = asyncio.run(run_replay())
    assert sched.divergences == []
    assert replayed == {r[0]["event_id"]: (r[1], r[5]) for q in (0, 1) for r in recorded[q]}
    assert replay.champion.metric_values() == live.champion.metric_values()


def test_recorded_parked_flags_place_each_label_where_the_worker_learned_it():
    """Both labels were produced before their events were served, but the worker had only
    e2's parked (its feedback consumer was behind for e1): e2's label is learned right after
    the step, e1's on arrival later. Times alone would park both and learn them in event
    order (e1, e2); the recorded flags give the worker's order (e2, e1)."""
    from streamlearn.replay.backtest.schedule import Served

    e1, e2, e3 = ({"event_id": f"e{i}", "event_time": i} for i in (1, 2, 3))
    f1, f2, f3 = ({"event_id": f"e{i}", "label": True} for i in (1, 2, 3))
    feedback = [(f2, 5), (f1, 6), (f3, 40)]  # all produced before e1/e2 were served (at 10)

    def order(events):
        steps = list(RecordedSchedule(events, feedback).steps())
        return [(s.kind, [i["event_id"] for i in s.items]) for s in steps]

    flagged = [(e1, 0, Served(10, False)), (e2, 0, Served(10, True)), (e3, 2, Served(30, False))]
    assert order(flagged) == [("learn", ["e2"]), ("score", ["e1", "e2"]), ("learn", ["e1"]),
                              ("score", ["e3"]), ("learn", ["e3"])]
    unrecorded = [(e1, 0, 10), (e2, 0, 10), (e3, 2, 30)]  # v1 predictions: the time heuristic
    assert order(unrecorded)[:2] == [("learn", ["e2", "e1"]), ("score", ["e1", "e2"])]


@pytest.mark.parametrize("seed", range(12))
def test_recorded_flags_reproduce_runs_whose_feedback_consumer_lagged(seed):
    """Labels stamped up to 12 batches before the worker consumed them (a lagging feedback
    consumer: the time heuristic's blind spot). With the predictions' label_joined flags
    the replay still reproduces every score and count exactly."""
    from streamlearn.replay.backtest.schedule import Served

    rng = random.Random(1000 + seed)
    order = _interleaving(rng, 150)
    by_id = {r["event_id"]: r for k, r in order if k == "event"}
    live_loop, served, fb_order = asyncio.run(_live(order, rng))
    lagged = [(fb, t - rng.uniform(0, 12)) for fb, t in fb_order]
    sched = RecordedSchedule([(by_id[p.event_id], p.labels_learned, Served(t, p.label_joined)) for p, t in served],
                             lagged)
    replay = memory_loop("entity_v1", "logreg")

    async def run():
        out = []
        for step in sched.steps():
            out += await (replay.score_batch(step.items) if step.kind == "score" else _learn(replay, step.items))
            assert replay.champion.labels_learned == step.expect
        return out

    async def _learn(loop, items):
        await loop.learn_batch(items)
        return []

    replayed = asyncio.run(run())
    assert sched.divergences == []
    assert [(p.event_id, p.labels_learned, p.score) for p in replayed] == \
           [(p.event_id, p.labels_learned, p.score) for p, _ in served]
    assert replay.champion.metric_values() == live_loop.champion.metric_values()
    assert sum(p.label_joined for p, _ in served) > 0  # the case is exercised
