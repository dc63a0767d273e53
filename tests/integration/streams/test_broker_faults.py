"""The embedded broker's faults, through real workers and consumers (see streams/gapguard.py).

* Concurrent producers on one partition: tansu can hand out a later batch before an earlier
  one is readable; an unguarded consumer skips the hole for good. Whether a run hits the
  race is chance, so the outcomes are asserted always (every event scored once, every label
  learned once, every record read once) and the guard's metric is checked against what the
  guard reported: each gap it counted is one warning with its offsets in the log.
* A long partition of one-record batches: with a short fetch wait tansu returns nothing
  from a partition of more than ~35-40k batches; the worker must still drain it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

from confluent_kafka import Producer

from streamlearn.replay.archive.archiver import Archiver
from streamlearn.replay.archive.reader import Archive
from streamlearn.sdk import PredictionConsumer, RecordConsumer
from tests.helpers import REG, TopicReader, feedback_for, make_events, scrape_metrics, wait_for

GAP_LOG = re.compile(r"offset gap on (\S+)\[(\d+)\]: expected offset (\d+), the broker returned (\d+)")


def _producer(settings, **extra) -> Producer:
    # small batches: each produce request is a batch of its own (linger 0, few messages)
    conf = settings.confluent_config(**{"linger.ms": 0, "batch.num.messages": 5, "enable.idempotence": False})
    conf.update(extra)
    return Producer(conf)


def _concurrent_send(settings, events: list[dict], writers: int, rate_per_writer: float) -> None:
    """``writers`` threads, each with its own producer, send their share of the events and, right
    after each event, its label: both partitions see several producers at once."""
    enc_ev, enc_fb = REG.encoder("event"), REG.encoder("feedback")
    errors: list[str] = []

    def run(share: list[dict]) -> None:
        p = _producer(settings)
        start = time.monotonic()
        for i, ev in enumerate(share):
            p.produce(settings.topic_events, enc_ev(ev), ev["entity"].encode())
            p.produce(settings.topic_feedback, enc_fb(feedback_for(ev)), ev["event_id"].encode())
            p.poll(0)
            ahead = (i + 1) / rate_per_writer - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        if p.flush(30):
            errors.append("undelivered")

    threads = [threading.Thread(target=run, args=(events[k::writers],)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _gaps_in_log(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in GAP_LOG.finditer(text):
        out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def test_concurrent_producers_one_partition_every_event_scored_and_learned_once(make_settings, start_worker):
    s = make_settings(topic_partitions=1)
    worker = start_worker(s)
    events = make_events(20_000, seed=18, n_entities=97)
    # paced so the worker stays at the end of both partitions, where the race is
    _concurrent_send(s, events, writers=4, rate_per_writer=200)

    n = len(events)
    try:
        wait_for(lambda: worker.counters().get("labels_learned", 0) >= n, 45, f"{n} labels learned")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counters {worker.counters()}") from None
    c = worker.counters()
    assert c["labels_learned"] == n and c["labels_duplicate"] == 0, c
    assert c["events_duplicate"] == 0, c

    preds = TopicReader(s, s.topic_predictions, "prediction").wait_count(n, timeout=30)
    ids = [p["event_id"] for p in preds]
    assert len(ids) == n and set(ids) == {e["event_id"] for e in events}, "exactly one prediction per event"

    metrics = scrape_metrics(worker.process.web_port)
    counted = {dict(k)["topic"]: v for k, v in metrics.get("streamlearn_consumer_offset_gaps_total", {}).items()}
    logged = _gaps_in_log(worker.log())
    assert {t: int(v) for t, v in counted.items() if v} == logged, (counted, logged)
    assert set(counted) == {s.topic_events, s.topic_feedback}, "both series exist from the start"
    print(f"\noffset gaps closed by the worker's guard: {logged or 'none this run'}")


def test_long_partition_of_one_record_batches_is_drained(make_settings, start_worker):
    s = make_settings(topic_partitions=1)
    n = 50_000  # a 20 ms fetch wait starves from ~35-40k one-record batches
    enc = REG.encoder("event")
    p = _producer(s, **{"batch.num.messages": 1, "queue.buffering.max.messages": 200_000})
    for ev in make_events(n, seed=60, n_entities=500):
        p.produce(s.topic_events, enc(ev), ev["entity"].encode())
        p.poll(0)
    assert p.flush(60) == 0
    worker = start_worker(s)
    t0 = time.monotonic()
    try:
        wait_for(lambda: worker.counters().get("events_scored", 0) >= n, 55, f"all {n} events scored")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; scored {worker.counters().get('events_scored', 0)}") from None
    print(f"\n{n} one-record batches scored in {time.monotonic() - t0:.1f}s after assignment")


def test_sdk_consumers_and_archiver_read_every_record_once_under_concurrent_producers(make_settings, tmp_path):
    """PredictionConsumer, RecordConsumer (which ``tail`` uses) and the archiver at the end of a
    partition that four producers write at once: every record once, none archived twice."""
    s = make_settings(topic_partitions=1)
    a = s.model_copy(update=dict(archive_dir=str(tmp_path / "archive"), archive_group_id=f"arch-{uuid.uuid4().hex[:8]}",
                                 session_timeout_s=2.0, heartbeat_interval_s=0.25))
    enc = REG.encoder("prediction")
    total, writers = 8_000, 4
    archiver = Archiver(a)
    stats: list = []
    arch = threading.Thread(target=lambda: stats.append(archiver.run(exit_when_idle_s=4.0)))
    arch.start()
    wait_for(lambda: (s.topic_predictions, 0) in archiver.assigned, 30, "archiver assignment")
    with PredictionConsumer(s) as preds, RecordConsumer(s, s.topic_predictions, "prediction") as raw:
        got: dict[str, list[int]] = {"preds": [], "raw": []}

        def drain(name: str, consumer, out: list[int]) -> None:
            for item in consumer.iter(idle_timeout=8, max_items=total):
                out.append(int(item.event_id if name == "preds" else item.value["event_id"]))

        readers = [threading.Thread(target=drain, args=("preds", preds, got["preds"])),
                   threading.Thread(target=drain, args=("raw", raw, got["raw"]))]
        for t in readers:
            t.start()

        def write(k: int) -> None:
            prod = _producer(s)
            start = time.monotonic()
            for i in range(k, total, writers):
                prod.produce(s.topic_predictions, enc(_prediction(i)), b"k")
                prod.poll(0)
                ahead = (i // writers + 1) / 400 - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            assert prod.flush(30) == 0

        ws = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
        for t in ws:
            t.start()
        for t in ws + readers:
            t.join()
        arch.join(60)
        for name, consumer in (("preds", preds), ("raw", raw)):
            assert sorted(got[name]) == list(range(total)), (
                f"{name}: {total - len(set(got[name]))} missing, {len(got[name]) - len(set(got[name]))} repeated")
            assert consumer.consumed == total and consumer.gap_guard.open_gaps == 0
    assert not arch.is_alive() and stats, "the archiver finished"
    archive = Archive.open(a.archive_dir)
    offsets = [r["offset"] for m in archive.files("prediction") if m.topic == s.topic_predictions
               for r in archive.read(m)]
    assert offsets == list(range(total)), (
        f"archive: {total - len(set(offsets))} missing, {len(offsets) - len(set(offsets))} doubled")
    print(f"\noffset gaps closed: PredictionConsumer {preds.offset_gaps}, RecordConsumer {raw.offset_gaps}, "
          f"archiver {getattr(stats[0], 'offset_gaps', '-')}")


def _prediction(i: int) -> dict:
    return {"event_id": str(i), "entity": "e", "event_time": i, "model_name": "m", "model_version": 1,
            "labels_learned": 0, "score": 0.5, "predicted": True, "probabilities": {}, "served_at": i,
            "latency_ms": 1.0}


def test_from_the_end_starts_at_the_true_end_not_inside_the_last_batch(make_settings):
    """tansu lists "latest" as the start of the last batch + 1: a reader from the end must not
    replay the rest of that batch. The batches here hold 100 records each."""
    s = make_settings(topic_partitions=1)
    enc = REG.encoder("prediction")
    p = _producer(s, **{"linger.ms": 50, "batch.num.messages": 100})
    for i in range(2_000):
        p.produce(s.topic_predictions, enc(_prediction(i)), b"k")
    assert p.flush(30) == 0
    with PredictionConsumer(s) as preds:
        for i in range(2_000, 2_005):
            p.produce(s.topic_predictions, enc(_prediction(i)), b"k")
        assert p.flush(30) == 0
        got = [int(x.event_id) for x in preds.iter(idle_timeout=3)]
    assert got == list(range(2_000, 2_005)), f"{len(got)} records, first {got[:3]}"


def test_partition_watch_warns_once_about_a_long_partition(make_settings, infra, caplog):
    from streamlearn.tools.infra import PartitionWatch

    s = make_settings(topic_partitions=1)
    p = _producer(s)
    for i in range(60):
        p.produce(s.topic_predictions, REG.encoder("prediction")(_prediction(i)), b"k")
    assert p.flush(30) == 0
    watch = PartitionWatch(infra.kafka_bootstrap, limit=50)
    with caplog.at_level("WARNING"):
        found = watch.check()
        assert watch.check() == [], "once per partition"
    assert [(t, part) for t, part, _ in found if t.startswith(s.topic_predictions)] == [(s.topic_predictions, 0)]
    assert any(s.topic_predictions in r.getMessage() for r in caplog.records)
